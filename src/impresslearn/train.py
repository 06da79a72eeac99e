"""The training loop: it knows parameters to optimise and a loss, nothing about methods.

Like minGPT's trainer: an ordinary function. Batches are drawn from an explicit generator, the
optimiser and schedule come from :class:`TrainConfig`.

Data parallel over the processes of a :class:`~impresslearn.runtime.Runtime`: every process draws
the same global batch (the same generator), computes the loss on its contiguous share of the rows
weighted by the share's size, and the gradients are summed across processes before each step. The
weighted gradients add up to the global batch's mean gradient, so ``train.batch_size`` stays the
global batch and a term the loss adds for every share (a regulariser) counts once in total.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from impresslearn.errors import ConfigError
from impresslearn.runtime import Runtime
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

    def unused_settings(self) -> dict[str, str]:
        """The fields these settings do not read, and why."""
        if self.optimizer == "adam":
            return {"momentum": "the adam optimiser has no momentum setting (use sgd or rmsprop)"}
        return {}

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
    data: TaskData,
    batch_size: int,
    num_steps: int,
    gen: torch.Generator,
    runtime: Runtime | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``num_steps`` batches: reshuffled passes over ``data`` (the last short batch of a pass is
    kept), augmented by ``data.augment`` if set, drawn with ``gen`` only.

    The order is drawn on the generator's device (the CPU) and the rows are gathered on the
    data's device, so the batches are the same on every device. Streamed data is decoded by its
    source's workers (under ``runtime``'s processes, each decodes only its share)."""
    if data.source is not None:
        share = runtime.rows if runtime is not None and runtime.distributed else None
        for x, y in data.source.train_batches(data.x, data.y, batch_size, num_steps, gen, share):
            yield (x if data.prepare is None else data.prepare(x)), y
        return
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


def backward(
    params: list[nn.Parameter],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    parallel: Runtime | None = None,
) -> Tensor:
    """Gradients of ``loss_fn`` on the global batch ``(x, y)`` into ``params``' ``.grad``.

    With ``parallel`` (several processes, each given the same global batch) this process takes
    its contiguous share of the rows, weights its loss by the share's size over the batch's, and
    the gradients are summed over the processes: the global batch's mean gradient, up to
    summation order. Returns this process's (weighted) loss."""
    if parallel is None or not parallel.distributed:
        loss = loss_fn(x, y)
        loss.backward()
        return loss
    total = len(y)
    rows = parallel.rows(total)
    x, y = x[rows], y[rows]
    loss = torch.zeros((), device=y.device)
    if len(y):  # a share may be empty (a global batch smaller than the processes)
        loss = loss_fn(x, y) * (len(y) / total)
        loss.backward()
    parallel.all_reduce_gradients(params)
    return loss


def train_step(
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    parallel: Runtime | None = None,
) -> Tensor:
    """One optimiser step on the global batch ``(x, y)``: the step every training loop takes
    (:func:`fit`, and the NNs stream, which decides between steps whether a new task began).
    Gradients as :func:`backward` computes them (shared among ``parallel``'s processes). Returns
    this process's (weighted) loss."""
    optimizer.zero_grad(set_to_none=True)
    loss = backward(params, loss_fn, x, y, parallel)
    optimizer.step()
    return loss


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
    runtime: Runtime | None = None,
    on_loss: Callable[[int, float], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    steps: int | None = None,
) -> TrainStats:
    """Minimise ``loss_fn(x, y)`` (a mean over the rows) over ``params`` on batches of ``data``;
    data parallel over ``runtime``'s processes when it has several. ``on_loss(step, loss)`` is
    told the loss every 50 steps and at the last; ``on_step(done)`` is called after every
    optimiser step with the number of steps taken so far (e.g. to evaluate along the way).
    ``steps`` overrides the count ``config`` gives for ``data`` (e.g. a subset trained as long
    as the whole)."""
    parallel = runtime if runtime is not None and runtime.distributed else None
    steps = config.num_steps(len(data)) if steps is None else steps
    optimizer = make_optimizer(params, config)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
        if config.schedule == "cosine"
        else None
    )
    loss_value = float("nan")
    bar = tqdm(total=steps, desc=description, disable=not progress, leave=False, mininterval=0.5)
    batches = iterate_batches(data, config.batch_size, steps, gen, runtime)
    for step, (x, y) in enumerate(batches):
        loss = train_step(optimizer, params, loss_fn, x, y, parallel)
        if scheduler is not None:
            scheduler.step()
        if step % 50 == 0 or step == steps - 1:
            loss_value = loss.item() if parallel is None else sum(parallel.sum([loss.item()]))
            bar.set_postfix(loss=f"{loss_value:.3f}", refresh=False)
            if on_loss is not None:
                on_loss(step, loss_value)
        if on_step is not None:
            on_step(step + 1)
        bar.update(1)
    bar.close()
    return TrainStats(steps=steps, final_loss=loss_value)


@torch.no_grad()
def count_correct(
    model: nn.Module,
    data: TaskData,
    batch_size: int,
    num_classes: int,
    runtime: Runtime | None = None,
) -> int:
    """Examples of ``data`` classified correctly, among the first ``num_classes`` outputs (the
    rest are SupSup's superfluous outputs, never targets). With several processes each evaluates
    whole batches dealt round-robin, so every batch is computed exactly as by one process, and
    the counts are summed."""
    correct = 0
    for x, y in data.batches(batch_size, None if runtime is None else runtime.mine):
        correct += int((model(x)[:, :num_classes].argmax(1) == y).sum())
    if runtime is not None and runtime.distributed:
        correct = int(runtime.sum([correct])[0])
    return correct


def accuracy(
    model: nn.Module,
    data: TaskData,
    batch_size: int,
    num_classes: int,
    runtime: Runtime | None = None,
) -> float:
    """Fraction of ``data`` classified correctly."""
    return count_correct(model, data, batch_size, num_classes, runtime) / len(data)
