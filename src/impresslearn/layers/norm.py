"""Per-task, non-affine batch norm: separate running statistics for every task.

A supermask network with batch norm must keep the running mean and variance **per task**: with
one shared set, learning task t overwrites the statistics every earlier task was evaluated with,
and all tasks but the last silently lose accuracy (SupSup, github.com/RAIVNLab/supsup issue #11).
There is no learned scale or shift (``affine=False``): the weights stay random and frozen, and a
task is only its masks (or coeffs) plus these statistics.

Statistics live under a *key*: a task id, or a name such as ``"impression.3"`` for masks learned
outside the stream. Which key a layer uses is set for a block by :func:`norm_stats`, the one entry
point, like :func:`~impresslearn.layers.use_coeffs` for masks:

* ``norm_stats(model, key, learn=True)``: normalise with batch statistics and accumulate running
  statistics for ``key`` (training); :func:`freeze_norm_stats` then stores them;
* ``norm_stats(model, key)``: normalise with the frozen statistics of ``key`` (evaluation);
* outside any block: batch statistics, nothing stored (e.g. task inference, where the task and so
  its statistics are unknown).

Frozen statistics are stored as float16 (4 bytes per channel for mean and variance) and used
exactly as stored, so a task's outputs do not change when its statistics are saved and reloaded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

STATS_DTYPE = torch.float16


class TaskBatchNorm2d(nn.Module):
    """Batch norm over channels of ``(N, C, H, W)`` inputs, no affine, statistics per key."""

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        # Working running statistics of the key being learned (float32, not persistent).
        self.register_buffer("running_mean", torch.zeros(num_features), persistent=False)
        self.register_buffer("running_var", torch.ones(num_features), persistent=False)
        self.stats: dict[str, Tensor] = {}  # key -> (2, C) float16: mean, variance
        self._key: str | None = None
        self._learn = False

    def forward(self, x: Tensor) -> Tensor:
        if self._key is None:
            return F.batch_norm(x, None, None, training=True, eps=self.eps)
        if self._learn:
            return F.batch_norm(
                x,
                self.running_mean,
                self.running_var,
                training=True,
                momentum=self.momentum,
                eps=self.eps,
            )
        stats = self.stats.get(self._key)
        if stats is None:
            raise KeyError(
                f"no batch-norm statistics for {self._key!r}: this task was never learned (known: "
                f"{', '.join(sorted(self.stats)) or 'none'})"
            )
        mean, var = stats.to(x.dtype)
        return F.batch_norm(x, mean, var, training=False, eps=self.eps)

    def _apply(self, fn, recurse: bool = True):
        # The per-key statistics are a plain dict, which nn.Module does not know: move them too,
        # so that ``model.to(device)`` takes every task's statistics along, at their own dtype.
        super()._apply(fn, recurse)
        self.stats = {key: fn(value).to(value.dtype) for key, value in self.stats.items()}
        return self

    def freeze(self, key: str) -> None:
        """Store the working running statistics under ``key`` (rounded to float16)."""
        self.stats[key] = torch.stack([self.running_mean, self.running_var]).to(STATS_DTYPE)

    def stat_bytes(self) -> int:
        """Bytes one key's statistics take."""
        return 2 * self.num_features * torch.finfo(STATS_DTYPE).bits // 8

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, keys={len(self.stats)}"
        )


def task_norms(model: nn.Module) -> list[TaskBatchNorm2d]:
    """The per-task norm layers of ``model`` in module order."""
    return [m for m in model.modules() if isinstance(m, TaskBatchNorm2d)]


@contextmanager
def norm_stats(model: nn.Module, key: str | int, *, learn: bool = False) -> Iterator[None]:
    """Within the block every :class:`TaskBatchNorm2d` uses the statistics of ``key``, or (with
    ``learn``) learns them from batch statistics, starting from mean 0 and variance 1. The
    previous selection is restored on exit, so blocks nest. A model without such layers is left
    alone."""
    norms = task_norms(model)
    previous = [(n._key, n._learn) for n in norms]
    try:
        for n in norms:
            n._key, n._learn = str(key), learn
            if learn:
                n.running_mean.zero_()
                n.running_var.fill_(1.0)
        yield
    finally:
        for n, (k, learning) in zip(norms, previous, strict=True):
            n._key, n._learn = k, learning


def freeze_norm_stats(model: nn.Module, key: str | int) -> None:
    """Store the statistics learned in the last ``norm_stats(..., learn=True)`` block as ``key``'s."""
    for n in task_norms(model):
        n.freeze(str(key))


def copy_norm_stats(model: nn.Module, source: str | int, target: str | int) -> None:
    """Give ``target`` the frozen statistics of ``source`` (e.g. a task that reuses an impression
    unchanged)."""
    for n in task_norms(model):
        n.stats[str(target)] = n.stats[str(source)].clone()


def drop_norm_stats(model: nn.Module, key: str | int) -> None:
    """Forget ``key``'s statistics (e.g. a temporary comparison mask's)."""
    for n in task_norms(model):
        n.stats.pop(str(key), None)


def norm_stats_bytes(model: nn.Module) -> int:
    """Bytes of one task's statistics over the whole model."""
    return sum(n.stat_bytes() for n in task_norms(model))
