"""Continual-learning metrics from the accuracy matrix.

``R[i, j]`` is the accuracy on task ``j`` after training task ``i`` (NaN where ``j > i`` or where
it was not evaluated). A stream keeps only the evaluated entries (:class:`AccuracyMatrix`): a long
stream evaluated on its diagonal, or on a sample of earlier tasks, holds O(T) numbers, not T². With
T tasks:

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


class AccuracyMatrix:
    """The evaluated entries of ``R`` for a stream of ``num_tasks`` tasks, row by row.

    Row ``i`` (the evaluation after task ``i``) is set once, as task ids and accuracies; entries
    never evaluated are absent (NaN in :meth:`row` and :meth:`dense`). Memory and every metric
    are linear in the number of evaluated entries.
    """

    def __init__(self, num_tasks: int) -> None:
        if num_tasks < 1:
            raise ValueError(f"an accuracy matrix has at least one task, got {num_tasks}")
        self.num_tasks = num_tasks
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def set_row(self, i: int, tasks, values) -> None:
        """Store the accuracies ``values`` on ``tasks`` (each ``<= i``) measured after task ``i``."""
        cols = np.asarray(tasks, dtype=np.int64).reshape(-1)
        vals = np.asarray(values, dtype=np.float64).reshape(-1)
        if not 0 <= i < self.num_tasks or len(cols) != len(vals):
            raise ValueError(
                f"row {i} of {self.num_tasks} tasks: {len(cols)} tasks, {len(vals)} values"
            )
        if len(cols) and (cols.min() < 0 or cols.max() > i):
            raise ValueError(f"row {i} evaluates tasks 0..{i} only, got {cols.tolist()}")
        order = np.argsort(cols, kind="stable")
        self._rows[i] = (cols[order], vals[order])

    def entries_of(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Row ``i``'s evaluated task ids and accuracies (empty if never evaluated)."""
        empty = (np.zeros(0, np.int64), np.zeros(0))
        return self._rows.get(i, empty)

    def keep(self, i: int, tasks) -> None:
        """Keep only row ``i``'s entries on ``tasks`` (a stream that grew: its old last row was
        evaluated in full, and is now an ordinary row)."""
        cols, vals = self.entries_of(i)
        kept = np.isin(cols, np.asarray(list(tasks), dtype=np.int64))
        if i in self._rows:
            self._rows[i] = (cols[kept], vals[kept])

    def row(self, i: int) -> np.ndarray:
        """Row ``i`` as ``num_tasks`` floats, NaN where not evaluated."""
        out = np.full(self.num_tasks, np.nan)
        cols, vals = self.entries_of(i)
        out[cols] = vals
        return out

    def __getitem__(self, index: tuple[int, int]) -> float:
        i, j = index
        cols, vals = self.entries_of(i)
        hit = np.searchsorted(cols, j)
        return float(vals[hit]) if hit < len(cols) and cols[hit] == j else float("nan")

    @property
    def rows(self) -> list[int]:
        """The evaluated rows, in order."""
        return sorted(self._rows)

    @property
    def num_entries(self) -> int:
        return sum(len(c) for c, _ in self._rows.values())

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every evaluated entry as parallel arrays (row, task, accuracy), by row then task."""
        rows = self.rows
        if not rows:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        r = np.concatenate([np.full(len(self._rows[i][0]), i, np.int64) for i in rows])
        c = np.concatenate([self._rows[i][0] for i in rows])
        v = np.concatenate([self._rows[i][1] for i in rows])
        return r, c, v

    def dense(self) -> np.ndarray:
        """The ``num_tasks x num_tasks`` matrix, NaN where not evaluated (O(T²) memory)."""
        out = np.full((self.num_tasks, self.num_tasks), np.nan)
        r, c, v = self.entries()
        out[r, c] = v
        return out

    @classmethod
    def from_dense(cls, matrix: np.ndarray) -> AccuracyMatrix:
        r = np.asarray(matrix, dtype=float)
        if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
            raise ValueError(f"an accuracy matrix is square and non-empty, got shape {r.shape}")
        out = cls(r.shape[0])
        for i, row in enumerate(r):
            cols = np.flatnonzero(~np.isnan(row))
            if len(cols):
                out.set_row(i, cols, row[cols])
        return out

    def grown(self, num_tasks: int) -> AccuracyMatrix:
        """The same entries in a stream of ``num_tasks >= self.num_tasks`` tasks."""
        if num_tasks < self.num_tasks:
            raise ValueError(f"a stream of {self.num_tasks} tasks cannot shrink to {num_tasks}")
        out = AccuracyMatrix(num_tasks)
        out._rows = dict(self._rows)
        return out

    def to_json(self) -> dict[str, object]:
        """``{"num_tasks", "after_task", "task", "accuracy"}``: the evaluated entries."""
        r, c, v = self.entries()
        return {
            "num_tasks": self.num_tasks,
            "after_task": r.tolist(),
            "task": c.tolist(),
            "accuracy": v.tolist(),
        }

    @classmethod
    def from_json(cls, obj) -> AccuracyMatrix:
        """Inverse of :meth:`to_json`; also reads dense lists (``None`` where not
        evaluated), the form of ``metrics.json`` files written before the sparse one."""
        if isinstance(obj, list):
            return cls.from_dense(np.array(obj, dtype=float))
        out = cls(int(obj["num_tasks"]))
        rows = np.asarray(obj["after_task"], dtype=np.int64)
        cols = np.asarray(obj["task"], dtype=np.int64)
        vals = np.asarray(obj["accuracy"], dtype=np.float64)
        for i in np.unique(rows):
            out.set_row(int(i), cols[rows == i], vals[rows == i])
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AccuracyMatrix):
            return NotImplemented
        if self.num_tasks != other.num_tasks or self.rows != other.rows:
            return False
        return all(
            np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
            for a, b in ((self._rows[i], other._rows[i]) for i in self.rows)
        )

    def __repr__(self) -> str:
        return f"AccuracyMatrix({self.num_tasks} tasks, {self.num_entries} entries)"


def as_matrix(matrix: AccuracyMatrix | np.ndarray) -> AccuracyMatrix:
    """An :class:`AccuracyMatrix` from one or from a dense square array."""
    return matrix if isinstance(matrix, AccuracyMatrix) else AccuracyMatrix.from_dense(matrix)


def average_accuracy(matrix: AccuracyMatrix | np.ndarray) -> float:
    """Mean accuracy over all tasks after the last one was learned."""
    r = as_matrix(matrix)
    return float(np.mean(r.row(r.num_tasks - 1)))


def backward_transfer(matrix: AccuracyMatrix | np.ndarray) -> float:
    """How learning later tasks changed earlier tasks' accuracy (negative = forgetting)."""
    r = as_matrix(matrix)
    t = r.num_tasks
    if t == 1:
        return 0.0
    diagonal = np.array([r[j, j] for j in range(t - 1)])
    return float(np.mean(r.row(t - 1)[: t - 1] - diagonal))


def forgetting(matrix: AccuracyMatrix | np.ndarray) -> float:
    """Mean drop from each earlier task's best accuracy (over the evaluations before the last
    row) to its final accuracy."""
    r = as_matrix(matrix)
    t = r.num_tasks
    if t == 1:
        return 0.0
    best = np.full(t, -np.inf)
    for i in r.rows:
        if i < t - 1:
            cols, vals = r.entries_of(i)
            np.maximum.at(best, cols, vals)
    best[np.isinf(best)] = np.nan
    return float(np.mean(best[: t - 1] - r.row(t - 1)[: t - 1]))


def matrix_to_csv(matrix: AccuracyMatrix | np.ndarray, task_names: list[str] | None = None) -> str:
    """CSV text, one line per evaluated entry: ``after_task,task,task_name,accuracy``."""
    r = as_matrix(matrix)
    names = task_names or [f"task_{j}" for j in range(r.num_tasks)]
    lines = ["after_task,task,task_name,accuracy"]
    rows, cols, vals = r.entries()
    lines += [f"{i},{j},{names[j]},{v:.6f}" for i, j, v in zip(rows, cols, vals, strict=True)]
    return "\n".join(lines) + "\n"
