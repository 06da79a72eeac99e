"""Evaluation with the task inferred (GNs, GNu): per task, and over a whole finished stream.

SupSup's taxonomy (Wortsman et al. 2020): in GNu a test batch whose task is inferred wrong counts
as all wrong; in GNs it is classified with the inferred task (labels are shared between tasks).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from impresslearn.inference.calibration import Calibration, verification_references
from impresslearn.inference.config import VERIFIED, VERIFYING, InferenceConfig
from impresslearn.inference.procedures import oneshot_margin, run_procedure
from impresslearn.layers import use_coeffs
from impresslearn.runtime import Runtime
from impresslearn.seeding import PURPOSE_INFERENCE_SAMPLE, derive_seed

log = logging.getLogger(__name__)

INFERRED_SCENARIOS = ("GNs", "GNu")


@dataclass(frozen=True)
class InferredEvaluation:
    """Task inference on one task's test data.

    ``accuracy``: fraction of the images classified right with the task inferred (in GNu a batch
    whose task is wrong counts as all wrong); ``task_accuracy``: fraction of the images whose batch
    got the right task; ``fitted_accuracy``: accuracy of the fitted alphas themselves
    (``entropy_fit`` only, else None); ``margins``: :func:`oneshot_margin` of every inference
    (``oneshot`` only, else empty); ``shortlisted``: fraction of the images whose batch's
    shortlist held the true task (``shortlist`` only, else None)."""

    accuracy: float
    task_accuracy: float
    fitted_accuracy: float | None = None
    margins: tuple[float, ...] = ()
    shortlisted: float | None = None


def evaluate_inferred(
    method,
    data,
    true_task: int,
    *,
    scenario: str,
    procedure: str,
    objective: str,
    batch: int,
    images: int,
    num_classes: int,
    shortlist_size: int = 5,
    predicted: int | None = None,
    references: Mapping[int, float] | None = None,
) -> InferredEvaluation:
    """Evaluate ``data`` of task ``true_task`` with the task inferred once per batch of ``batch``
    images from its first ``images`` images. In GNu a batch whose task is wrong counts as all
    wrong; in GNs it is classified with the inferred task. The prediction is the argmax over the
    first ``predicted`` outputs (default ``num_classes``). ``references``: calibrated
    verification (verifying procedures only)."""
    predicted = predicted or num_classes
    correct = right_task = fitted_correct = listed = 0
    margins: list[float] = []
    tasks = method.learned_tasks()
    for x, y in data.batches(batch):
        found = run_procedure(
            method, x[:images], procedure, objective, num_classes, shortlist_size, references
        )
        task = found.task
        if found.fitted is not None:
            with torch.no_grad(), use_coeffs(method.model, found.fitted):
                pred = method.model(x)[:, :predicted].argmax(1)
            fitted_correct += int((pred == y).sum())
        if found.grad is not None and true_task in tasks:
            margins.append(oneshot_margin(found.grad, tasks.index(true_task)))
        if procedure in VERIFYING and found.candidates is not None:
            listed += len(y) if true_task in found.candidates else 0
        if task == true_task:
            right_task += len(y)
        if task == true_task or scenario == "GNs":
            with torch.no_grad(), method.task_context(task):
                pred = method.model(x)[:, :predicted].argmax(1)
            correct += int((pred == y).sum())
    n = len(data)
    fitted_accuracy = fitted_correct / n if procedure == "entropy_fit" else None
    shortlisted = listed / n if procedure in VERIFYING and len(tasks) > 1 else None
    return InferredEvaluation(
        correct / n, right_task / n, fitted_accuracy, tuple(margins), shortlisted
    )


def inferred_tasks(config: InferenceConfig, num_tasks: int, seed: int) -> list[int]:
    """The tasks whose test batches are inferred: all, or ``config.tasks`` of them drawn without
    replacement from a generator seeded by the scenario's ``seed`` alone, in task order."""
    if not config.tasks or config.tasks >= num_tasks:
        return list(range(num_tasks))
    rng = np.random.default_rng(derive_seed(seed, PURPOSE_INFERENCE_SAMPLE))
    return sorted(int(t) for t in rng.choice(num_tasks, size=config.tasks, replace=False))


def evaluate_without_task_ids(
    config: InferenceConfig,
    eval_scenario: str,
    method,
    scenario,
    *,
    predicted: int,
    progress: bool = False,
    runtime: Runtime | None = None,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """Final accuracy with the task inferred (``eval_scenario`` GNs or GNu) over every task of a
    finished stream, and the task-inference accuracy, as ``metrics.json`` entries. With several
    processes the tasks are dealt among them (each computed exactly as by one process) and the
    results gathered. Calibrated and auto verification use the ``calibration`` the stream stored
    (see :func:`~impresslearn.inference.calibration.verification_references`)."""
    runtime = runtime or Runtime()
    start = time.perf_counter()
    task_refs, extra = verification_references(config, method, scenario, calibration)
    results = {}
    batches, infer_start = 0, time.perf_counter()
    evaluated = inferred_tasks(config, scenario.num_tasks, scenario.config.seed)
    mine = [t for t in evaluated if runtime.mine(t)]
    for t in tqdm(mine, desc="infer", disable=not progress, leave=False):
        test = scenario.test_data(t).head(config.test_images)
        batches += -(-len(test) // config.batch)
        results[t] = evaluate_inferred(
            method,
            test,
            t,
            scenario=eval_scenario,
            procedure=config.procedure,
            objective=config.objective,
            batch=config.batch,
            images=config.images,
            num_classes=scenario.num_classes,
            shortlist_size=config.shortlist_size,
            predicted=predicted,
            references=task_refs,
        )
    seconds = time.perf_counter() - infer_start
    for part in runtime.gather(results):
        results.update(part)
    ordered = [results[t] for t in evaluated]
    accs = [r.accuracy for r in ordered]
    inferred = [r.task_accuracy for r in ordered]
    fitted = [r.fitted_accuracy for r in ordered]
    margins = [m for r in ordered for m in r.margins]
    listed = [r.shortlisted for r in ordered]
    log.info(
        "%s: accuracy %.2f%% with the task inferred (task inference %.2f%%)",
        eval_scenario,
        100 * np.mean(accs),
        100 * np.mean(inferred),
    )
    if config.procedure == "entropy_fit":
        extra["average_accuracy_fitted_alphas"] = float(np.mean(fitted))
    if all(v is not None for v in listed):
        # How often the shortlist held the true task: the rest of the errors are the objective's.
        extra["shortlist_recall"] = float(np.mean(listed))
    if config.procedure in VERIFIED:
        used = "raw" if task_refs is None else "calibrated"
        extra["verification"] = used if config.verification != "auto" else f"auto: {used}"
    margins = [m for m in margins if m == m]  # NaN: too few other tasks to measure a margin
    if margins:
        # How decisive one-shot inference was (oneshot_margin): the median, and the 5th
        # percentile, i.e. the margin that 95% of the inferences exceeded.
        extra["task_inference_margin_median"] = float(np.nanmedian(margins))
        extra["task_inference_margin_p5"] = float(np.nanpercentile(margins, 5))
    return {
        **extra,
        "eval_scenario": eval_scenario,
        "average_accuracy_inferred": float(np.mean(accs)),
        "task_inference_accuracy": float(np.mean(inferred)),
        "accuracies_inferred": accs,
        **({"inferred_tasks": evaluated} if config.tasks else {}),
        "task_inference_per_task": inferred,
        "inference_seconds": time.perf_counter() - start,
        # One process's inferences: the batches it inferred and its seconds per batch
        # (including the classification of the batch with the inferred task).
        "inference_seconds_per_batch": seconds / batches if batches else float("nan"),
    }
