"""The ``nns`` recipe (SupSup's scenario NNs): no task ids in training or at test time; the learner
detects new tasks itself.

SupSup (Wortsman et al. 2020, section 3, "NNs"): batches arrive task after task, with no signal
when the task changes. Every ``check_every`` batches (100) the learner superposes its candidate
masks with uniform mixing weights beta and takes one gradient of an objective with respect to beta
(the one-shot procedure). With ``nu = softmax(-grad)`` over ``N`` candidates, no candidate explains
the batch when ``N * max(nu) < 1 + 2^-3`` (``nns.threshold``; SupSup's code notes that values
from 1.1 to 1.2 work): a new task has started and a new mask is allocated. The candidates are the
stored masks, the mask being learned, and, while there are fewer than five, random masks at the
same density (SupSup's reference code superposes at least five masks, the unlearned ones random):
with one candidate the rule would always fire.

The objective (``nns.objective``) is SupSup's output entropy H (``entropy``) or the training
batch's cross-entropy over the real classes (``cross_entropy``): NNs has the labels, only the task
ids are missing. Over the superfluous outputs too, the cross-entropy would favour any trained mask
over an untrained one whatever the data, so it is taken over the real classes only.
The ``inference`` section applies to the final task inference, which has no labels: with
``eval.scenario=GNu`` (the presets) a test batch counts only when its inferred slot belongs to its
task, with ``GNs`` it is classified with the inferred slot either way, with ``GG`` each task is
evaluated with its own slot only. How the two
objectives separate real boundaries from the task being learned, and the thresholds the presets
use, are measured in the project's docs (docs/results.md, "NNs").

Differences from SupSup's reference code, chosen to keep every stored mask frozen (so nothing is
ever forgotten): when a new task is detected the mask being learned is stored for good; when a
batch is recognised as an earlier task, that task's mask is not trained further and the batches
are skipped until a new task is detected. A new mask is not tested until it has trained for 200
batches: at 100 it is still close to random and the H test reads a new task where there is none
(measured 1.12-1.16 at lr 1e-4 on PermutedMNIST, against 1.02 at a real boundary). The task length
is unknown to the learner, so the learning rate is constant. Every training step is the one step of
all recipes (:func:`impresslearn.train.train_step` on :meth:`Stream.loss
<impresslearn.runners.stream.Stream.loss>`: cross-entropy plus the method's regulariser, e.g.
ImpressLearn's ``reg_lambda`` term).

ImpressLearn (Bhardwaj et al. 2022) runs the same test in coefficient space: its candidates are
the stored tasks' alphas, the alphas being learned, and, up to five, the untrained alphas (all
``1/n``); a new task gets new alphas. Its impressions are learned before the stream, as in GG
(they need task data); in the stream every task, the impressions' own included, learns alphas
(``method.train_impression_tasks=true``), since the learner cannot tell which task it sees.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from impresslearn.checkpoint import RunState
from impresslearn.config import ExperimentConfig, NNsConfig
from impresslearn.errors import ConfigError
from impresslearn.inference import beta_gradient, infer_task
from impresslearn.metrics import AccuracyMatrix
from impresslearn.report import summary_table
from impresslearn.runners.context import RunContext
from impresslearn.runners.folder import start_run_folder
from impresslearn.runners.recipes import RunResult, register_recipe
from impresslearn.runners.results import finish
from impresslearn.runners.stream import Stream, build_stream
from impresslearn.runners.tasks import Checkpointer, open_run
from impresslearn.scenarios import TaskData
from impresslearn.seeding import PURPOSE_BATCHES, generator
from impresslearn.train import iterate_batches, make_optimizer, train_step

log = logging.getLogger(__name__)

CHECK_EVERY = 100
MIN_TRAINED = 2 * CHECK_EVERY  # batches a new mask trains before its task can be declared over
MIN_CANDIDATES = 5


@dataclass
class Detection:
    """What one check decided: ``new`` task, or the candidate index that explains the batch."""

    new: bool
    index: int
    confidence: float  # N * max(nu): 1 = no preference, N = certain


def decide(grad: torch.Tensor, num_known: int, threshold: float) -> Detection:
    """SupSup's rule on the beta-gradient over the candidates, of which the first ``num_known``
    are learned (stored or being learned) and the rest untrained."""
    nu = torch.softmax(-grad, dim=0)
    index = int(nu.argmax())
    confidence = float(len(grad) * nu.max())
    # An untrained candidate winning means no learned mask explains the batch either.
    return Detection(confidence < threshold or index >= num_known, index, confidence)


@dataclass
class NNsLog:
    """The learner's view of the stream."""

    detections: list[int] = field(default_factory=list)  # global batch of each new mask
    slot_batches: list[Counter] = field(default_factory=list)  # slot -> true task -> batches
    skipped_batches: int = 0  # recognised as an earlier task, not trained on
    checks: list[tuple[int, float, bool]] = field(default_factory=list)  # (batch, conf, new)


def detect(
    method, x: torch.Tensor, y: torch.Tensor, config: NNsConfig, num_classes: int
) -> Detection:
    """SupSup's new-task test on batch ``x`` over the method's candidates
    (:meth:`~impresslearn.methods.Method.new_task_candidates`: the stored tasks, the one being
    learned, if any, and enough untrained candidates to make at least ``MIN_CANDIDATES``)."""
    with method.new_task_candidates(MIN_CANDIDATES) as candidates:
        beta = torch.full((candidates.count,), 1.0 / candidates.count, device=method.device)
        grad = beta_gradient(candidates, x, beta, config.objective, num_classes, y)
    return decide(grad, candidates.num_known, config.threshold)


def check_nns(config: ExperimentConfig) -> None:
    """What new-task detection needs of a config."""
    if config.train.schedule != "constant":
        raise ConfigError(
            "kind=nns: the learner does not know when a task ends, so a per-task learning-rate "
            "schedule cannot be used; set train.schedule=constant"
        )
    if config.inference.calibrated:
        raise ConfigError(
            f"inference.verification={config.inference.verification} is not available with "
            "kind=nns (no task is known to calibrate while the stream runs): use raw"
        )


@register_recipe("nns", check=check_nns, report=summary_table, logs=True)
def run_nns(config: ExperimentConfig, ctx: RunContext) -> RunResult:
    """New tasks detected while training (SupSup's NNs): no task ids in training or at test."""
    if ctx.runtime.distributed:
        raise ConfigError(
            "an NNs run (new tasks detected while training) runs on one process: launch it "
            "without torchrun / srun (or run several repeats at once with --seeds)"
        )
    stream = build_stream(config, ctx.data_root, ctx.runtime, progress=ctx.progress)
    return open_run(stream, ctx, partial(_run, overwrite=ctx.overwrite))


def _run(stream: Stream, out: Path | None, *, overwrite: bool) -> RunResult:
    if out is not None:
        stream.runtime.on_writer(lambda: start_run_folder(out, stream.config, overwrite=overwrite))
    state, extra = run_nns_stream(stream)
    Checkpointer(stream, out).start(state)  # the whole run as one snapshot
    return finish(stream, state, extra, out)


def run_nns_stream(stream: Stream) -> tuple[RunState, dict[str, Any]]:
    """The NNs run: prepare the method, train it on the whole stream without task ids, then
    evaluate it. Returns the run state (one slot per detected task) and the NNs metrics."""
    method, scenario = stream.method, stream.scenario
    start = time.perf_counter()
    method.prepare(stream.mask_trainer, scenario.num_tasks)
    record = train_nns(stream)
    seconds = time.perf_counter() - start
    matrix, metrics = evaluate_nns(stream, record)
    per_task = [seconds / scenario.num_tasks] * scenario.num_tasks
    state = RunState(len(record.detections), AccuracyMatrix.from_dense(matrix), per_task, [], 0.0)
    return state, metrics


def train_nns(stream: Stream) -> NNsLog:
    """Train the stream's method (SupSup or ImpressLearn, prepared) on the whole stream without
    task boundaries; returns the log."""
    config, method, scenario = stream.config, stream.method, stream.scenario
    progress = stream.progress
    train = config.train
    record = NNsLog()
    optimizer = params = None
    learning = False  # a mask is being learned (else the current batches belong to a stored task)
    step = 0
    total = scenario.num_tasks * train.num_steps(len(scenario.train_data(0)))
    bar = tqdm(total=total, desc="NNs stream", disable=not progress, leave=False, mininterval=0.5)

    def new_slot() -> None:
        nonlocal optimizer, params, learning
        if learning:
            method.end_task(len(record.detections) - 1)
        slot = len(record.detections)
        method.begin_task(slot)
        params = method.trainable_parameters()
        optimizer = make_optimizer(params, train)
        learning = True
        record.detections.append(step)
        record.slot_batches.append(Counter())

    for true_task in range(scenario.num_tasks):  # the learner never sees true_task
        data = scenario.train_data(true_task)
        gen = generator(train.seed, PURPOSE_BATCHES, true_task)
        for x, y in iterate_batches(data, train.batch_size, train.num_steps(len(data)), gen):
            if not record.detections:
                new_slot()
            elif step % CHECK_EVERY == 0 and (
                not learning or step - record.detections[-1] >= MIN_TRAINED
            ):
                found = detect(method, x, y, config.nns, scenario.num_classes)
                record.checks.append((step, found.confidence, found.new))
                if found.new:
                    new_slot()
                elif learning and found.index < len(method.learned_tasks()):  # an earlier task
                    method.end_task(len(record.detections) - 1)
                    learning = False
            if learning:
                with method.training_context():  # the one step, the one loss of every recipe
                    train_step(optimizer, params, stream.loss, x, y)
                record.slot_batches[-1][true_task] += 1
            else:
                record.skipped_batches += 1
            step += 1
            bar.update(1)
    bar.close()
    if learning:
        method.end_task(len(record.detections) - 1)
    log.info("NNs: %d tasks detected in a stream of %d", len(record.detections), scenario.num_tasks)
    return record


def evaluate_nns(stream: Stream, record: NNsLog) -> tuple[np.ndarray, dict[str, Any]]:
    """Final accuracies and detection metrics of an NNs run.

    Each detected slot is named after the true task it trained on most; each true task after the
    slot that trained most on it. Returned matrix: final row and diagonal = accuracy of every true
    task with its slot (the learner is evaluated once, after the stream). Metrics add how well the
    task boundaries were detected and, with ``eval.scenario`` GNu or GNs, the accuracy with the
    slot inferred per test batch (GNu: a batch counts only when the inferred slot belongs to the
    batch's task; GNs: it is classified with the inferred slot either way).
    """
    config, method, scenario = stream.config, stream.method, stream.scenario
    num_tasks = scenario.num_tasks
    slot_task = [counts.most_common(1)[0][0] if counts else -1 for counts in record.slot_batches]
    task_slot = {}
    for t in range(num_tasks):
        trained = [(counts[t], s) for s, counts in enumerate(record.slot_batches) if counts[t]]
        task_slot[t] = max(trained)[1] if trained else None
    steps_per_task = config.train.num_steps(len(scenario.train_data(0)))
    boundaries = [t * steps_per_task for t in range(1, num_tasks)]
    detected = set(record.detections[1:])
    found = [b for b in boundaries if any(b <= d < b + CHECK_EVERY for d in detected)]
    false = [d for d in detected if not any(b <= d < b + CHECK_EVERY for b in boundaries)]

    final = np.zeros(num_tasks)
    inferred_acc, inferred_right = [], []
    for t in range(num_tasks):
        test = scenario.test_data(t)
        slot = task_slot[t]
        if slot is not None:
            with method.task_context(slot):
                final[t] = stream.accuracy(test)
        if config.eval.infers_tasks:
            acc, right = _inferred(
                method,
                test,
                t,
                slot_task,
                config,
                scenario.num_classes,
                stream.predicted_outputs,
            )
            inferred_acc.append(acc)
            inferred_right.append(right)
    matrix = np.full((num_tasks, num_tasks), np.nan)
    matrix[-1] = final
    np.fill_diagonal(matrix, final)
    metrics = {
        "eval_scenario": "NNs",
        "tasks_detected": len(record.detections),
        "detections": record.detections,
        "true_boundaries": boundaries,
        "boundaries_detected": len(found) / max(1, len(boundaries)),
        "false_detections": len(false),
        "skipped_batches": record.skipped_batches,
        "slot_task": slot_task,
    }
    if config.eval.infers_tasks:
        metrics.update(
            {
                "inferred_scenario": config.eval.scenario,
                "average_accuracy_inferred": float(np.mean(inferred_acc)),
                "task_inference_accuracy": float(np.mean(inferred_right)),
                "accuracies_inferred": inferred_acc,
            }
        )
    metrics["detection_checks"] = [list(c) for c in record.checks]
    return matrix, metrics


def _inferred(
    method,
    data: TaskData,
    task: int,
    slot_task: list[int],
    config: ExperimentConfig,
    num_classes: int,
    predicted: int,
) -> tuple[float, float]:
    """Accuracy on ``data`` (of true task ``task``) with the slot inferred per test batch, and
    the fraction of its images whose slot belongs to the task. GNu: a batch counts only when its
    slot belongs to the task; GNs: it is classified with the inferred slot either way."""
    e = config.inference
    correct = right = 0
    for x, y in data.batches(e.batch):
        slot, _ = infer_task(
            method,
            x[: e.images],
            procedure=e.procedure,
            objective=e.objective,
            num_classes=num_classes,
            shortlist_size=e.shortlist_size,
        )
        if slot_task[slot] == task:
            right += len(y)
        if slot_task[slot] == task or config.eval.scenario == "GNs":
            with torch.no_grad(), method.task_context(slot):
                correct += int((method.model(x)[:, :predicted].argmax(1) == y).sum())
    return correct / len(data), right / len(data)
