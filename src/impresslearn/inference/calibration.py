"""Calibrated and auto verification: each task's reference and self-test, from training images.

A verifying procedure (:mod:`impresslearn.inference.procedures`) compares candidate tasks by how
well each one's own model explains a batch. Models are not equally confident (an ImpressLearn
impression task is sharper than a combination task), so ``calibrated`` verification subtracts each
task's **reference**: its own model's mean value on the first training images of its task,
measured when the task is learned (a few bytes per task; no data is kept). ``auto`` decides per
run without test data: after each task, the next training images of that task are verified among
it and the tasks learned just before it, with raw and with calibrated values (:func:`self_test`);
inference then uses calibrated values only if they found the tasks significantly more often over
the stream (:func:`chosen_verification`).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from impresslearn.errors import ConfigError
from impresslearn.inference.config import InferenceConfig
from impresslearn.inference.procedures import verification_value, verify

log = logging.getLogger(__name__)

SELF_TEST_CANDIDATES = 32  # a new task's self-test: itself and up to 31 tasks learned before it


@dataclass
class Calibration:
    """What calibrated and auto verification keep per task (no data): ``references``, objective ->
    task -> its reference value, and ``self_tests``, objective -> task -> (raw hits, calibrated
    hits, batches, batches where the two disagreed) of the self-test after the task was
    learned."""

    references: dict[str, dict[int, float]] = field(default_factory=dict)
    self_tests: dict[str, dict[int, tuple[int, int, int, int]]] = field(default_factory=dict)

    def copy(self) -> Calibration:
        return Calibration(
            {k: dict(v) for k, v in self.references.items()},
            {k: dict(v) for k, v in self.self_tests.items()},
        )

    def to_json(self) -> str:
        return json.dumps({"references": self.references, "self_tests": self.self_tests})

    @classmethod
    def from_json(cls, text: str) -> Calibration:
        raw = json.loads(text)
        return cls(
            {
                objective: {int(t): float(v) for t, v in values.items()}
                for objective, values in raw.get("references", {}).items()
            },
            {  # counts of another shape (an older layout) are measured again when needed
                objective: {
                    int(t): tuple(int(c) for c in v) for t, v in values.items() if len(v) == 4
                }
                for objective, values in raw.get("self_tests", {}).items()
            },
        )


@torch.no_grad()
def reference_value(method, task: int, data, objective: str, num_classes: int, batch: int) -> float:
    """Task ``task``'s reference for calibrated verification: its own model's
    :func:`verification_value` averaged over the images of ``data`` (the first training images
    of the task), in batches of ``batch``. A learned task's model is frozen, so the value is the
    same whenever it is measured."""
    total, count = 0.0, 0
    with method.task_context(task):
        for x, _ in data.batches(batch):
            value = verification_value(method.model(x).float(), objective, num_classes)
            total += float(value) * len(x)
            count += len(x)
    if count == 0:
        raise ConfigError(f"task {task} has no training images to measure its reference on")
    return total / count


@torch.no_grad()
def self_test(
    method,
    task: int,
    earlier: list[int],
    data,
    objective: str,
    num_classes: int,
    *,
    batch: int,
    images: int,
    references: Mapping[int, float],
) -> tuple[int, int, int, int]:
    """How often verification finds ``task`` for batches of its own images ``data`` (training
    images it was not calibrated on) among ``task`` and the ``earlier`` tasks: the hits with raw
    values, with calibrated values (``references`` of every candidate), the number of batches,
    and the batches where exactly one of the two rules was right. Each batch of ``batch`` images
    is judged from its first ``images``, as at test time. Every candidate's model is frozen, so
    the counts are the same whenever they are measured."""
    candidates = [task, *earlier]
    raw_hits = calibrated_hits = batches = disagreements = 0
    for x, _ in data.batches(batch):
        x = x[:images]
        values = verify(method, x, candidates, objective, num_classes)
        offsets = torch.tensor([references[t] for t in candidates], device=values.device)
        raw = int(torch.argmin(values)) == 0
        calibrated = int(torch.argmin(values - offsets)) == 0
        raw_hits += raw
        calibrated_hits += calibrated
        disagreements += raw != calibrated
        batches += 1
    return raw_hits, calibrated_hits, batches, disagreements


def chosen_verification(counts: Mapping[int, tuple[int, int, int, int]]) -> str:
    """``auto``'s choice from the self-test counts of every task: ``calibrated`` only if it was
    right on significantly more batches than raw values (McNemar's test on the batches where
    exactly one rule was right: z = (calibrated-only - raw-only) / sqrt(their sum) >= 2), else
    ``raw``, the objective as SupSup and ImpressLearn use it."""
    gain = sum(c[1] - c[0] for c in counts.values())  # calibrated-only minus raw-only
    disagreements = sum(c[3] for c in counts.values())
    return "calibrated" if gain > 0 and gain >= 2.0 * math.sqrt(disagreements) else "raw"


def task_reference(config: InferenceConfig, method, scenario, task: int) -> float:
    """Task ``task``'s reference (:func:`reference_value` on its first
    ``config.reference_images`` training images). Every process computes it whole."""
    data = scenario.train_data(task).head(config.reference_images)
    return reference_value(method, task, data, config.objective, scenario.num_classes, config.batch)


def calibrate_task(
    config: InferenceConfig, method, scenario, task: int, calibration: Calibration
) -> None:
    """Store task ``task``'s reference (and, for ``verification=auto``, its self-test among the
    tasks learned before it) in ``calibration``: what calibrated and auto verification need,
    from the task's training images alone. Earlier tasks without a reference get one first."""
    references = calibration.references.setdefault(config.objective, {})
    earlier = [j for j in method.learned_tasks() if j < task][-(SELF_TEST_CANDIDATES - 1) :]
    for j in [*earlier, task]:
        if j not in references:
            references[j] = task_reference(config, method, scenario, j)
    if config.verification != "auto":
        return
    tests = calibration.self_tests.setdefault(config.objective, {})
    if not earlier:  # nothing to tell it from
        tests[task] = (0, 0, 0, 0)
        return
    data = scenario.train_data(task).part(config.reference_images, 2 * config.reference_images)
    tests[task] = self_test(
        method,
        task,
        earlier,
        data,
        config.objective,
        scenario.num_classes,
        batch=config.batch,
        images=config.images,
        references=references,
    )


def verification_references(
    config: InferenceConfig, method, scenario, calibration: Calibration | None
) -> tuple[dict[int, float] | None, dict[str, Any]]:
    """The references verification subtracts (None: raw values), and the metrics entries of
    ``auto``'s choice. What ``calibration`` lacks (a run learned without calibration, evaluated
    later) is measured now from the same training images: a task's model and those of the tasks
    before it are frozen, so the numbers are those its task's end would have given."""
    if not config.calibrated:
        return None, {}
    calibration = (calibration or Calibration()).copy()
    if config.verification == "auto":
        done = calibration.self_tests.get(config.objective, {})
    else:
        done = calibration.references.get(config.objective, {})
    missing = [t for t in range(scenario.num_tasks) if t not in done]
    if missing:
        log.info("calibrating %d tasks from their training images", len(missing))
    for t in missing:
        calibrate_task(config, method, scenario, t, calibration)
    references = calibration.references[config.objective]
    if config.verification != "auto":
        return references, {}
    counts = calibration.self_tests[config.objective]
    batches = sum(c[2] for c in counts.values()) or 1
    extra = {
        "self_test_raw": sum(c[0] for c in counts.values()) / batches,
        "self_test_calibrated": sum(c[1] for c in counts.values()) / batches,
    }
    choice = chosen_verification(counts)
    log.info(
        "auto verification: %s (self-test: raw %.1f%%, calibrated %.1f%%)",
        choice,
        100 * extra["self_test_raw"],
        100 * extra["self_test_calibrated"],
    )
    return (references if choice == "calibrated" else None), extra
