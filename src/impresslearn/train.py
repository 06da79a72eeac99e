"""The training loop: it knows parameters to optimise and a loss, nothing about methods.

Like minGPT's trainer: an ordinary function. Batches are drawn from an explicit generator, the
optimiser and schedule come from :class:`TrainConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from impresslearn.errors import ConfigError
from impresslearn.scenarios import TaskData

OPTIMIZERS = ("rmsprop", "adam", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    """How each task is trained.

    Give ``iterations`` (optimiser steps per task) or ``epochs`` (passes over the task's training
    set), not both; setting one in an override clears the other.
    """

    optimizer: str = "rmsprop"
    lr: float = 1e-4
    batch_size: int = 128
    iterations: int | None = 1000
    epochs: int | None = None
    weight_decay: float = 0.0
    momentum: float = 0.0
    schedule: str = "constant"
    seed: int = 0

    # Fields that exclude each other: an override of one sets the other to None.
    exclusive = {"iterations": "epochs", "epochs": "iterations"}

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(
                f"train.optimizer={self.optimizer!r} is unknown; use one of {OPTIMIZERS}"
            )
        if self.schedule not in SCHEDULES:
            raise ConfigError(
                f"train.schedule={self.schedule!r} is unknown; use one of {SCHEDULES}"
            )
        if (self.iterations is None) == (self.epochs is None):
            raise ConfigError("set exactly one of train.iterations and train.epochs")
        for key in ("iterations", "epochs", "batch_size"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {value}")
        if not self.lr > 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or self.momentum < 0:
            raise ConfigError("train.weight_decay and train.momentum must be >= 0")

    def num_steps(self, num_examples: int) -> int:
        """Optimiser steps for a task of ``num_examples`` training examples."""
        if self.iterations is not None:
            return self.iterations
        return self.epochs * math.ceil(num_examples / self.batch_size)


def make_optimizer(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser of ``config`` over ``params``."""
    if not params:
        raise ValueError("nothing to train: the method returned no trainable parameters")
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum
        )
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum
    )


def iterate_batches(
    data: TaskData, batch_size: int, num_steps: int, gen: torch.Generator
) -> Iterator[tuple[Tensor, Tensor]]:
    """``num_steps`` batches: reshuffled passes over ``data`` (the last short batch of a pass is
    kept), augmented by ``data.augment`` if set, drawn with ``gen`` only.

    The order is drawn on the generator's device (the CPU) and the rows are gathered on the
    data's device, so the batches are the same on every device."""
    n = len(data)
    steps = 0
    while True:
        order = torch.randperm(n, generator=gen)
        for start in range(0, n, batch_size):
            if steps == num_steps:
                return
            idx = order[start : start + batch_size].to(data.device)
            x = data.inputs(idx)
            yield (x if data.augment is None else data.augment(x, gen)), data.y[idx]
            steps += 1


@dataclass(frozen=True)
class TrainStats:
    steps: int
    final_loss: float


def fit(
    params: list[nn.Parameter],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    data: TaskData,
    config: TrainConfig,
    gen: torch.Generator,
    *,
    progress: bool = False,
    description: str = "train",
) -> TrainStats:
    """Minimise ``loss_fn(x, y)`` over ``params`` on batches of ``data``."""
    steps = config.num_steps(len(data))
    optimizer = make_optimizer(params, config)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        if config.schedule == "cosine"
        else None
    )
    loss_value = float("nan")
    bar = tqdm(total=steps, desc=description, disable=not progress, leave=False, mininterval=0.5)
    for step, (x, y) in enumerate(iterate_batches(data, config.batch_size, steps, gen)):
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(x, y)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if step % 50 == 0 or step == steps - 1:
            loss_value = loss.item()
            bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
        bar.update(1)
    bar.close()
    return TrainStats(steps=steps, final_loss=loss_value)


@torch.no_grad()
def count_correct(model: nn.Module, data: TaskData, batch_size: int, num_classes: int) -> int:
    """Examples of ``data`` classified correctly, among the first ``num_classes`` outputs (the
    rest are SupSup's superfluous outputs, never targets)."""
    correct = 0
    for x, y in data.batches(batch_size):
        correct += int((model(x)[:, :num_classes].argmax(1) == y).sum())
    return correct


def accuracy(model: nn.Module, data: TaskData, batch_size: int, num_classes: int) -> float:
    """Fraction of ``data`` classified correctly."""
    return count_correct(model, data, batch_size, num_classes) / len(data)
