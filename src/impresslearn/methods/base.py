"""The role a continual-learning method plays, and the method registry.

A method is a small role, not a base class with hooks (see STYLE.md): it is told when a task
begins and ends, hands the training loop the parameters to optimise, and selects a task's state
for evaluation through a context manager.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol

import numpy as np
from torch import Tensor, nn

from impresslearn.layers import DensityRule, MaskedLayer, norm_stats, use_coeffs
from impresslearn.registry import Registry
from impresslearn.seeding import PURPOSE_SCORES, generator
from impresslearn.train import TrainConfig

# Trains the given scores on a task's training data with plain cross-entropy and ``TrainConfig``:
# ``trainer(params, task_id, train_config, description)``. The runner provides it, so methods
# that learn masks outside the stream (ImpressLearn's impressions) need no data plumbing.
MaskTrainer = Callable[[list[nn.Parameter], int, TrainConfig, str], None]


class Method(Protocol):
    """What the experiment runner needs from SupSup, ImpressLearn, ..."""

    name: str
    model: nn.Module

    def prepare(self, trainer: MaskTrainer, num_tasks: int) -> None:
        """Work before the stream starts (e.g. learning ImpressLearn's impressions)."""

    def begin_task(self, task_id: int) -> None:
        """Prepare the trainable state of a new task."""

    def training_context(self) -> AbstractContextManager[None]:
        """Within the block, ``model(x)`` computes the current task's outputs for training."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser may update for the current task (never frozen weights)."""

    def loss_regulariser(self) -> Tensor | None:
        """An extra loss term for the current task, or ``None``."""

    def end_task(self, task_id: int) -> None:
        """Freeze what the task learned; nothing of it changes afterwards."""

    def task_context(self, task_id: int) -> AbstractContextManager[None]:
        """Within the block, ``model(x)`` computes task ``task_id``'s outputs."""

    def learned_tasks(self) -> list[int]:
        """Learned task ids, in the order of beta's entries in task inference."""

    def mixed_coeffs(self, beta: Tensor) -> Tensor | list[Tensor]:
        """Coeffs (for :func:`~impresslearn.layers.use_coeffs`) superposing the learned tasks
        weighted by ``beta``."""

    def after_task(self, task_id: int, trainer: MaskTrainer, evaluate: Callable[[], float]) -> None:
        """Reference measurements after a task (``evaluate()`` = accuracy on its test set)."""

    def extra_metrics(self, matrix: np.ndarray) -> dict[str, Any]:
        """Method-specific entries of ``metrics.json``."""

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Per-task state beyond the layers' banks: tensors and JSON-able metadata."""

    def restore_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`checkpoint_state` on a freshly built method."""

    def bytes_per_task(self) -> dict[str, int]:
        """Storage one task costs, by kind (``mask``, ``coeffs``, ``norm_stats``), at 1 bit per
        mask weight and 4 bytes per float."""


METHODS: Registry[Any] = Registry("method")


def begin_masks(
    layers: list[MaskedLayer], rule: DensityRule, kind: str, seed: int, seed_key: int
) -> list[nn.Parameter]:
    """Start learning a new mask in every layer: fresh scores seeded by ``(seed, seed_key, layer)``
    at the density ``rule`` gives each layer's shape. Returns the scores (the trainable tensors)."""
    return [
        layer.begin_scores(
            rule.for_shape(tuple(layer.weight.shape)),
            kind,
            generator(seed, PURPOSE_SCORES, seed_key, layer.layer_index),
        )
        for layer in layers
    ]


@contextmanager
def use_task(
    model: nn.Module,
    coeffs: Tensor | Sequence[Tensor],
    norm_key: str | int,
    *,
    learn_norm: bool = False,
) -> Iterator[None]:
    """Select a task's state for the block: its masks as ``coeffs @ bank`` and the batch-norm
    statistics of ``norm_key`` (learned from the batches, with ``learn_norm``). Backbones without
    batch norm ignore the key."""
    with use_coeffs(model, coeffs), norm_stats(model, norm_key, learn=learn_norm):
        yield
