"""Continual-learning metrics from the accuracy matrix.

``R[i, j]`` is the accuracy on task ``j`` after training task ``i`` (NaN where ``j > i``). With T
tasks:

* average accuracy = mean of the final row, ``mean_j R[T-1, j]``;
* backward transfer (Lopez-Paz & Ranzato 2017) = ``mean_{j<T-1} (R[T-1, j] - R[j, j])``;
* forgetting (Chaudhry et al. 2018) = ``mean_{j<T-1} (max_{j<=i<T-1} R[i, j] - R[T-1, j])``.

Both transfer measures are 0 with a single task. This module needs NumPy only.

Reference accuracies (a dedicated SupSup mask per task, one ImpressLearn impression unchanged)
travel as :class:`ReferenceAccuracy` records, from the method that measures them to
``metrics.json``, the tables and the plots; their keys are named here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# metrics.json keys of the reference accuracies: per task (by task id as a string), and
# "<key>_unseen", their mean over the tasks the method learned without a mask of their own.
DEDICATED = "dedicated_accuracy"
SINGLE_IMPRESSION = "single_impression_accuracy"
DEDICATED_UNSEEN = f"{DEDICATED}_unseen"
SINGLE_IMPRESSION_UNSEEN = f"{SINGLE_IMPRESSION}_unseen"
REFERENCE_LABELS = {
    DEDICATED: "dedicated SupSup mask",
    SINGLE_IMPRESSION: "one impression, unchanged",
}


@dataclass(frozen=True)
class ReferenceAccuracy:
    """Accuracies of a reference model, per task, measured beside a method's own: ``key`` (one
    of :data:`REFERENCE_LABELS`), and ``per_task``, task id -> accuracy."""

    key: str
    per_task: Mapping[int, float]

    @property
    def label(self) -> str:
        return REFERENCE_LABELS.get(self.key, self.key)

    def mean(self, tasks: Sequence[int] | None = None) -> float | None:
        """Mean over ``tasks`` (those measured; default all), or None if none was."""
        values = [a for t, a in sorted(self.per_task.items()) if tasks is None or t in tasks]
        return float(np.mean(values)) if values else None

    def series(self, num_tasks: int) -> list[float | None]:
        """Per task of a stream of ``num_tasks``, None where not measured (for plots)."""
        return [self.per_task.get(t) for t in range(num_tasks)]

    def to_metrics(self, unseen: Sequence[int] | None = None) -> dict[str, object]:
        """``metrics.json`` entries: ``key`` per task and ``key_unseen``, the mean over
        ``unseen`` (default every measured task)."""
        return {
            f"{self.key}_unseen": self.mean(unseen),
            self.key: {str(t): a for t, a in self.per_task.items()},
        }


def _check(matrix: np.ndarray) -> np.ndarray:
    r = np.asarray(matrix, dtype=float)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        raise ValueError(f"an accuracy matrix is square and non-empty, got shape {r.shape}")
    return r


def average_accuracy(matrix: np.ndarray) -> float:
    """Mean accuracy over all tasks after the last one was learned."""
    r = _check(matrix)
    return float(np.mean(r[-1]))


def backward_transfer(matrix: np.ndarray) -> float:
    """How learning later tasks changed earlier tasks' accuracy (negative = forgetting)."""
    r = _check(matrix)
    t = r.shape[0]
    if t == 1:
        return 0.0
    return float(np.mean([r[-1, j] - r[j, j] for j in range(t - 1)]))


def forgetting(matrix: np.ndarray) -> float:
    """Mean drop from each earlier task's best accuracy to its final accuracy."""
    r = _check(matrix)
    t = r.shape[0]
    if t == 1:
        return 0.0
    return float(np.mean([np.nanmax(r[j : t - 1, j]) - r[-1, j] for j in range(t - 1)]))


def matrix_to_lists(matrix: np.ndarray) -> list[list[float | None]]:
    """The matrix as JSON-ready lists, ``None`` where not evaluated."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.asarray(matrix, float)]


def matrix_to_csv(matrix: np.ndarray, task_names: list[str] | None = None) -> str:
    """CSV text: a header of task columns, one row per training stage, empty where NaN."""
    r = np.asarray(matrix, dtype=float)
    names = task_names or [f"task_{j}" for j in range(r.shape[1])]
    lines = ["after_task," + ",".join(names)]
    for i, row in enumerate(r):
        cells = ["" if np.isnan(v) else f"{v:.6f}" for v in row]
        lines.append(f"{i}," + ",".join(cells))
    return "\n".join(lines) + "\n"
