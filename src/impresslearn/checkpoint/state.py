"""A run's progress (:class:`RunState`) and what one task adds to it (:class:`Additions`).

A learned task's state never changes again (SupSup's and ImpressLearn's invariant, zero
forgetting): its mask or coefficients, its batch-norm statistics, its row of the accuracy matrix,
its event. So a checkpoint needs only what each task added, and :class:`Additions` finds exactly
that at a cost that does not grow with the number of tasks: the bank rows past the last mark, the
norm keys added since, the method's :meth:`~impresslearn.methods.Method.task_state` of the task,
and the calibration entries added since.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import torch
from torch import nn

from impresslearn.checkpoint.files import content_digest
from impresslearn.inference.calibration import Calibration
from impresslearn.layers import masked_layers, pack_bits, task_norms
from impresslearn.metrics import AccuracyMatrix


@dataclass
class RunState:
    """Progress of a run: tasks ``0..next_task-1`` are finished."""

    next_task: int
    matrix: AccuracyMatrix
    task_seconds: list[float]
    events: list[dict[str, Any]]
    prepare_seconds: float
    checkpoint_sizes: list[int] = field(default_factory=list)  # bytes after prepare, each task
    calibration: Calibration = field(default_factory=Calibration)


def weight_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every masked layer's frozen weight: identifies the backbone exactly."""
    digest = hashlib.sha256()
    for layer in masked_layers(model):
        digest.update(str(tuple(layer.weight.shape)).encode())
        digest.update(layer.weight.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class TaskAdditions:
    """What one task added: ``tensors`` (``bank.L`` packed new masks of layer L, ``norm.N.KEY``
    new statistics, ``method.NAME`` the method's task state) and ``meta`` (JSON-able: how many
    masks per layer, the new norm keys, the method's metadata, the new calibration entries)."""

    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any]

    def digest(self) -> str:
        """SHA-256 of everything added, to compare processes of one run task by task."""
        return content_digest(self.tensors, {"meta": json.dumps(self.meta, sort_keys=True)})


class Additions:
    """Finds what a run gained since the last :meth:`mark` (or since it was built)."""

    def __init__(self, model: nn.Module, method: Any, calibration: Calibration) -> None:
        self.model, self.method = model, method
        self.layers = masked_layers(model)
        self.norms = task_norms(model)
        self.mark(calibration)

    def mark(self, calibration: Calibration) -> None:
        """Everything held now counts as written."""
        self._banks = [layer.num_masks for layer in self.layers]
        self._norm_keys = set(self.norms[0].stats) if self.norms else set()
        self._references = {k: len(v) for k, v in calibration.references.items()}
        self._self_tests = {k: len(v) for k, v in calibration.self_tests.items()}

    def _new_norm_keys(self) -> list[str]:
        # Keys are only ever added (a task's statistics are frozen), so the new ones are the
        # last inserted: walk back from the end to the first key already written.
        if not self.norms:
            return []
        new = []
        for key in reversed(self.norms[0].stats):
            if key in self._norm_keys:
                break
            new.append(key)
        return new[::-1]

    def take(self, task: int, calibration: Calibration) -> TaskAdditions:
        """What task ``task`` added (then :meth:`mark`)."""
        tensors: dict[str, torch.Tensor] = {}
        added = []
        for i, (layer, before) in enumerate(zip(self.layers, self._banks, strict=True)):
            added.append(layer.num_masks - before)
            if added[-1]:
                tensors[f"bank.{i}"] = pack_bits(layer.bank[before:])
        keys = self._new_norm_keys()
        for i, norm in enumerate(self.norms):
            tensors.update({f"norm.{i}.{key}": norm.stats[key].cpu() for key in keys})
        method_tensors, method_meta = self.method.task_state(task)
        tensors.update(
            {f"method.{k}": v.detach().contiguous().cpu() for k, v in method_tensors.items()}
        )
        meta = {
            "bank_added": added,
            "norm_added": keys,
            "method_state": method_meta,
            "calibration": _calibration_since(calibration, self._references, self._self_tests),
        }
        self.mark(calibration)
        return TaskAdditions(tensors, meta)


def _calibration_since(
    calibration: Calibration, references: dict[str, int], self_tests: dict[str, int]
) -> dict[str, Any]:
    """The calibration entries added after the counted ones (entries are only ever added)."""
    return {
        "references": {
            o: dict(islice(d.items(), references.get(o, 0), None))
            for o, d in calibration.references.items()
            if len(d) > references.get(o, 0)
        },
        "self_tests": {
            o: dict(islice(d.items(), self_tests.get(o, 0), None))
            for o, d in calibration.self_tests.items()
            if len(d) > self_tests.get(o, 0)
        },
    }


def merge_calibration(calibration: Calibration, added: dict[str, Any]) -> None:
    """Add the entries of :func:`_calibration_since` (JSON round-tripped) to ``calibration``."""
    delta = Calibration.from_json(json.dumps(added))
    for objective, values in delta.references.items():
        calibration.references.setdefault(objective, {}).update(values)
    for objective, values in delta.self_tests.items():
        calibration.self_tests.setdefault(objective, {}).update(values)
