"""The role a continual-learning method plays, and the method registry.

A method is a small role, not a base class with hooks (see STYLE.md): it is told when a task
begins and ends, hands the training loop the parameters to optimise, and selects a task's state
for evaluation through a context manager.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from torch import Tensor, nn

from impresslearn.registry import Registry


class Method(Protocol):
    """What the experiment runner needs from SupSup, ImpressLearn, ..."""

    name: str
    model: nn.Module

    def begin_task(self, task_id: int) -> None:
        """Prepare the trainable state of a new task."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser may update for the current task (never frozen weights)."""

    def loss_regulariser(self) -> Tensor | None:
        """An extra loss term for the current task, or ``None``."""

    def end_task(self, task_id: int) -> None:
        """Freeze what the task learned; nothing of it changes afterwards."""

    def task_context(self, task_id: int) -> AbstractContextManager[None]:
        """Within the block, ``model(x)`` computes task ``task_id``'s outputs."""

    def bytes_per_task(self) -> dict[str, int]:
        """Storage one task costs, by kind (``mask``, ``coeffs``, ``norm_stats``), at 1 bit per
        mask weight and 4 bytes per float."""


class MethodEntry(Protocol):
    config_class: type

    def __call__(self, model: nn.Module, config: Any) -> Method: ...


METHODS: Registry[Any] = Registry("method")
