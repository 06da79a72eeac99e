"""Running a stream of tasks: set-up, the task loop, and the finish.

For each task of the scenario: the method begins the task, :func:`impresslearn.train.fit` trains
the method's parameters, the method ends the task (its state is frozen from then on), and every
task seen so far is evaluated with its task id given (scenario GG; with ``eval.matrix=diagonal``
only the new task, and all of them after the last). With ``eval.scenario`` GNs or GNu the tasks
are then also inferred from unlabelled test batches; with NNs the learner gets no task ids at all
(:mod:`impresslearn.runners.nns`).

:class:`Stream` holds what a run is made of (scenario, model, method) and where it executes
(:class:`~impresslearn.runtime.Runtime`: device and precision); it is built completely, with
every check that can fail, before anything is written. The run folder is then locked (one writer
at a time) and gets ``config.json`` before any work starts, a checkpoint after the preparation
and after every task with one ``events.jsonl`` line per finished task, and at the end
``metrics.json``, ``accuracy_matrix.csv`` and ``accuracy_matrix.png``.
"""

from __future__ import annotations

import json
import logging
import resource
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from impresslearn import __version__
from impresslearn.backbones import build_backbone
from impresslearn.checkpoint import (
    CHECKPOINT_NAME,
    Calibration,
    RunState,
    restore_checkpoint,
    save_checkpoint,
)
from impresslearn.config import ExperimentConfig
from impresslearn.data import load_dataset
from impresslearn.errors import ConfigError
from impresslearn.inference import (
    SELF_TEST_CANDIDATES,
    VERIFIED,
    check_inference,
    chosen_verification,
    evaluate_inferred,
    reference_value,
    self_test,
)
from impresslearn.layers import masked_layers, task_norms
from impresslearn.layers.native import kernel_info
from impresslearn.methods import Method, build_method
from impresslearn.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    matrix_to_csv,
    matrix_to_lists,
)
from impresslearn.plots import plot_accuracy_matrix, plot_per_task
from impresslearn.runners.folder import RunFolderLock, start_run_folder
from impresslearn.runners.tensorboard import TensorBoardLog, check_log
from impresslearn.runtime import Runtime, digest_tensors
from impresslearn.scenarios import Scenario, TaskData, build_scenario
from impresslearn.seeding import PURPOSE_BATCHES, generator
from impresslearn.storage import atomic_write_json, atomic_write_text
from impresslearn.train import TrainConfig, TrainStats, accuracy, fit

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What a finished run produced (also written to its folder, if it had one)."""

    config: ExperimentConfig
    accuracy_matrix: np.ndarray
    metrics: dict[str, Any]
    method: Method
    scenario: Scenario
    out_dir: Path | None


def peak_memory_mb() -> float:
    """Peak resident memory of this process so far, in MiB."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib / 1024 if sys.platform != "darwin" else kib / 2**20


@dataclass
class Stream:
    """A run's parts on its runtime: the task stream, the backbone and the method."""

    config: ExperimentConfig
    runtime: Runtime
    scenario: Scenario
    model: torch.nn.Module
    method: Method
    progress: bool = False
    log: Any = None  # a TensorBoardLog (rank 0 of a run with a folder and --log tensorboard)

    @property
    def num_tasks(self) -> int:
        return self.scenario.num_tasks

    @property
    def num_classes(self) -> int:
        return self.scenario.num_classes

    @property
    def predicted_outputs(self) -> int:
        """The outputs a prediction's argmax runs over (``eval.predict``)."""
        return self.config.predicted_outputs(self.num_classes)

    def loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The current task's training loss: cross-entropy plus the method's regulariser."""
        with self.runtime.autocast():
            loss = F.cross_entropy(self.model(x).float(), y)
        extra = self.method.loss_regulariser()
        return loss if extra is None else loss + extra

    def mask_trainer(
        self, params: list[torch.nn.Parameter], task_id: int, train: TrainConfig, description: str
    ) -> None:
        """Train a mask's scores on ``task_id``'s data with plain cross-entropy (no coeffs are
        set, so layers use the scores): the trainer methods get for masks outside the stream."""

        def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            with self.runtime.autocast():
                return F.cross_entropy(self.model(x).float(), y)

        fit(
            params,
            loss,
            self.scenario.train_data(task_id),
            train,
            generator(train.seed, PURPOSE_BATCHES, task_id, 1),
            progress=self.progress,
            description=description,
            runtime=self.runtime,
        )
        self.synchronise_norm_stats()

    def synchronise_norm_stats(self) -> None:
        """Average the batch-norm statistics just learned over the processes, so that every
        process freezes the same ones (each saw only its share of every batch). The running
        statistics are exponential averages, linear in the batches' statistics: averaging them
        once at the end equals averaging them after every step."""
        norms = task_norms(self.model)
        self.runtime.average_([t for n in norms for t in (n.running_mean, n.running_var)])

    def accuracy(self, data: TaskData) -> float:
        """Accuracy of the model as it stands (the caller selects the task) on ``data``
        (evaluated in whole batches shared among the processes)."""
        batch = self.config.eval.batch_size
        with self.runtime.autocast():
            return accuracy(self.model, data, batch, self.predicted_outputs, self.runtime)

    def evaluate_seen(self, upto: int, *, only: int | None = None) -> list[float]:
        """Accuracy on tasks ``0..upto`` (or on task ``only``) with each task id given."""
        accs = []
        tasks = range(upto + 1) if only is None else [only]
        for j in tqdm(tasks, desc="eval", disable=not self.progress, leave=False):
            with self.method.task_context(j):
                accs.append(self.accuracy(self.scenario.test_data(j)))
        return accs

    def learn_task(self, task_id: int, train: TrainConfig, description: str) -> TrainStats | None:
        """Learn task ``task_id`` with the method and freeze it; the training statistics, or
        None when the method had nothing to train (an ImpressLearn impression task)."""
        method = self.method
        method.begin_task(task_id)
        params = method.trainable_parameters()
        stats = None
        if params:
            with method.training_context():
                stats = fit(
                    params,
                    self.loss,
                    self.scenario.train_data(task_id),
                    train,
                    generator(train.seed, PURPOSE_BATCHES, task_id),
                    progress=self.progress,
                    description=description,
                    runtime=self.runtime,
                    on_loss=None if self.log is None else partial(self.log.loss, task_id),
                )
            self.synchronise_norm_stats()
        method.end_task(task_id)
        return stats

    def state_digest(self) -> str:
        """A hash of everything the run has stored (banks, statistics, the method's state)."""
        tensors = [layer.bank for layer in masked_layers(self.model)]
        tensors += [n.stats[k] for n in task_norms(self.model) for k in sorted(n.stats)]
        method_tensors, _ = self.method.checkpoint_state()
        tensors += [method_tensors[k] for k in sorted(method_tensors)]
        return digest_tensors(tensors)


def build_stream(
    config: ExperimentConfig, data_root: Path | None, runtime: Runtime, *, progress: bool = False
) -> Stream:
    """Set-up: the data on the runtime's device (moved once, uint8), the scenario, the backbone
    and the method, with every check that can fail before a run writes anything."""
    data = load_dataset(config.scenario.dataset, data_root).to(runtime.device)
    scenario = build_scenario(config.scenario, data)
    model = build_backbone(config.backbone, scenario.input_shape, scenario.num_classes)
    method = build_method(model.to(runtime.device), config.method)
    method.check_stream(scenario.num_tasks)
    if runtime.distributed and config.eval.scenario == "NNs":
        raise ConfigError(
            "an NNs run (new tasks detected while training) runs on one process: launch it "
            "without torchrun / srun (or run several repeats at once with --seeds)"
        )
    if config.eval.scenario != "GG":
        check_inference(config.eval, method, model, scenario.input_shape, scenario.num_classes)
    return Stream(config, runtime, scenario, model, method, progress and runtime.is_writer)


def run_experiment(
    config: ExperimentConfig,
    data_root: Path | None,
    out_dir: Path | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    runtime: Runtime | None = None,
    log: str | None = None,
) -> RunResult:
    """Run ``config`` end to end on ``device``; with ``out_dir``, write the run folder as it goes.

    A checkpoint is written to ``out_dir`` after the preparation and after every task; with
    ``resume`` the run continues from it at the next task, with the same results as a run that
    was never interrupted, on any device. A resumed ``config`` may have more
    ``scenario.num_tasks`` than the saved one: the stream is extended, with the same results as a
    run started with the longer stream. The run folder is locked while this runs.

    Inside a ``torch.distributed`` process group the run is data parallel over its processes
    (``runtime``, default ``Runtime.create(device, precision)``, says which); rank 0 alone writes,
    and the processes check after every task that they hold identical state. ``log="tensorboard"``
    also writes TensorBoard event files into the run folder (:mod:`impresslearn.runners.tensorboard`).

    Raises:
        ConfigError: bad input (an unknown device included), before anything is written; or
            another process is writing ``out_dir``.
    """
    runtime = runtime or Runtime.create(device, precision)
    check_log(log)
    if log is not None and out_dir is None:
        raise ConfigError("--log tensorboard writes into the run folder: give one (--out)")
    if resume and out_dir is None:
        raise ConfigError("resuming needs the run folder")
    if resume and config.eval.scenario == "NNs":
        raise ConfigError("an NNs run (no task ids in training) cannot be resumed")
    stream = build_stream(config, data_root, runtime, progress=progress)
    runtime.reset_peak_memory()
    if out_dir is None:
        return _run(stream, None, resume=False, overwrite=False)
    lock = RunFolderLock(Path(out_dir))
    try:
        runtime.on_writer(lock.acquire)  # one writer per folder: rank 0's lock
        if log is not None and runtime.is_writer:
            stream.log = TensorBoardLog(Path(out_dir))
        return _run(stream, Path(out_dir), resume=resume, overwrite=overwrite)
    finally:
        lock.release()


def _run(stream: Stream, out: Path | None, *, resume: bool, overwrite: bool) -> RunResult:
    config, method, scenario, runtime = (
        stream.config,
        stream.method,
        stream.scenario,
        stream.runtime,
    )
    if resume:
        state = restore_checkpoint(out / CHECKPOINT_NAME, config, stream.model, method)
        log.info("resuming %s at task %d/%d", config.name, state.next_task + 1, stream.num_tasks)
        # a stream may have grown
        runtime.on_writer(lambda: atomic_write_text(out / "config.json", config.to_json()))
    elif out is not None:
        runtime.on_writer(lambda: start_run_folder(out, config, overwrite=overwrite))

    def save(state: RunState) -> None:
        if out is not None and runtime.is_writer:
            shape = (scenario.input_shape, scenario.num_classes)
            size = save_checkpoint(
                out / CHECKPOINT_NAME, config, stream.model, method, state, shape
            )
            state.checkpoint_sizes.append(size)
            events = "".join(json.dumps(e) + "\n" for e in state.events)
            atomic_write_text(out / "events.jsonl", events)

    log.info(
        "%s: %d tasks of %s on %s (%s)",
        config.name,
        stream.num_tasks,
        config.scenario.name,
        config.scenario.dataset,
        stream.runtime.device,
    )
    if config.eval.scenario == "NNs":
        from impresslearn.runners.nns import run_nns_stream

        state, extra = run_nns_stream(stream)
        save(state)
    else:
        if not resume:
            start = time.perf_counter()
            method.prepare(stream.mask_trainer, stream.num_tasks)
            matrix = np.full((stream.num_tasks, stream.num_tasks), np.nan)
            state = RunState(0, matrix, [], [], time.perf_counter() - start)
            save(state)
        learn_tasks(stream, state, save)
        extra = {}
        if config.eval.scenario != "GG":
            extra = evaluate_without_task_ids(
                config,
                method,
                scenario,
                progress=stream.progress,
                runtime=runtime,
                calibration=state.calibration,
            )
    return finish(stream, state, extra, out)


def learn_tasks(stream: Stream, state: RunState, save) -> None:
    """The task loop: learn every task from ``state.next_task`` on, evaluate, save after each."""
    config, method, num_tasks = stream.config, stream.method, stream.num_tasks
    matrix = state.matrix
    for t in range(state.next_task, num_tasks):
        start = time.perf_counter()
        stats = stream.learn_task(t, config.train, f"task {t + 1}/{num_tasks}")
        train_seconds = time.perf_counter() - start
        if config.eval.matrix == "full" or t == num_tasks - 1:
            matrix[t, : t + 1] = stream.evaluate_seen(t)
        else:
            matrix[t, t] = stream.evaluate_seen(t, only=t)[0]
        test = stream.scenario.test_data(t)
        method.after_task(t, stream.mask_trainer, lambda test=test: stream.accuracy(test))
        if config.eval.needs_calibration:  # the task's model is final now: calibrate it
            calibrate_task(config, method, stream.scenario, t, state.calibration)
        state.task_seconds.append(time.perf_counter() - start)
        event = {
            "task_id": t,
            "task_name": stream.scenario.task_name(t),
            "accuracy": matrix[t, t],
            "average_accuracy_seen": float(np.nanmean(matrix[t, : t + 1])),
            "accuracies": matrix_to_lists(matrix[t : t + 1, : t + 1])[0],
            "final_loss": stats.final_loss if stats else None,
            "steps": stats.steps if stats else 0,
            "train_seconds": train_seconds,
            "seconds": state.task_seconds[-1],
        }
        state.events.append(event)
        state.next_task = t + 1
        if stream.runtime.distributed:  # hashing every bank is only worth it with peers to compare
            stream.runtime.check_same(stream.state_digest(), f"task {t}")
        save(state)
        if stream.log is not None:
            stream.log.task(event)
        log.info(
            "task %d/%d (%s): accuracy %.2f%%, mean over seen %.2f%%, %.1fs",
            t + 1,
            num_tasks,
            event["task_name"],
            100 * event["accuracy"],
            100 * event["average_accuracy_seen"],
            event["seconds"],
        )


def finish(stream: Stream, state: RunState, extra: dict[str, Any], out: Path | None) -> RunResult:
    """The one ending of every run: metrics (with where it ran), and the result files."""
    config, scenario = stream.config, stream.scenario
    names = [scenario.task_name(j) for j in range(stream.num_tasks)]
    metrics = build_metrics(config, state.matrix, stream.method, state.task_seconds, names)
    metrics.update(extra)
    metrics["prepare_seconds"] = state.prepare_seconds
    metrics.update(stream.runtime.describe())
    if out is not None and stream.runtime.is_writer:
        # Measured: how much the checkpoint file grew per task of the stream (payload plus
        # safetensors headers and the event log), next to the payload in bytes_per_task.
        metrics["checkpoint_bytes"] = (out / CHECKPOINT_NAME).stat().st_size
        sizes = state.checkpoint_sizes
        if len(sizes) > 1:
            metrics["checkpoint_growth_per_task"] = (sizes[-1] - sizes[0]) / (len(sizes) - 1)
        write_results(out, config, state.matrix, metrics, names)
    if stream.log is not None:
        stream.log.finish(metrics, state.matrix)
    return RunResult(config, state.matrix, metrics, stream.method, scenario, out)


def task_reference(
    config: ExperimentConfig, method: Method, scenario: Scenario, task: int
) -> float:
    """Task ``task``'s reference for calibrated verification (:func:`inference.reference_value`
    on its first ``eval.reference_images`` training images). Every process computes it whole."""
    e = config.eval
    data = scenario.train_data(task).head(e.reference_images)
    return reference_value(method, task, data, e.objective, scenario.num_classes, e.inference_batch)


def calibrate_task(
    config: ExperimentConfig,
    method: Method,
    scenario: Scenario,
    task: int,
    calibration: Calibration,
) -> None:
    """Store task ``task``'s reference (and, for ``eval.verification=auto``, its self-test among
    the tasks learned before it) in ``calibration``: what calibrated and auto verification need,
    from the task's training images alone. Earlier tasks without a reference get one first."""
    e = config.eval
    references = calibration.references.setdefault(e.objective, {})
    earlier = [j for j in method.learned_tasks() if j < task][-(SELF_TEST_CANDIDATES - 1) :]
    for j in [*earlier, task]:
        if j not in references:
            references[j] = task_reference(config, method, scenario, j)
    if e.verification != "auto":
        return
    tests = calibration.self_tests.setdefault(e.objective, {})
    if not earlier:  # nothing to tell it from
        tests[task] = (0, 0, 0, 0)
        return
    data = scenario.train_data(task).part(e.reference_images, 2 * e.reference_images)
    tests[task] = self_test(
        method,
        task,
        earlier,
        data,
        e.objective,
        scenario.num_classes,
        batch=e.inference_batch,
        images=e.inference_images,
        references=references,
    )


def verification_references(
    config: ExperimentConfig,
    method: Method,
    scenario: Scenario,
    calibration: Calibration | None,
) -> tuple[dict[int, float] | None, dict[str, Any]]:
    """The references verification subtracts (None: raw values), and the metrics entries of
    ``auto``'s choice. What ``calibration`` lacks (a run learned without calibration, evaluated
    later) is measured now from the same training images: a task's model and those of the tasks
    before it are frozen, so the numbers are those its task's end would have given."""
    e = config.eval
    if not e.needs_calibration:
        return None, {}
    calibration = (calibration or Calibration()).copy()
    if e.verification == "auto":
        done = calibration.self_tests.get(e.objective, {})
    else:
        done = calibration.references.get(e.objective, {})
    missing = [t for t in range(scenario.num_tasks) if t not in done]
    if missing:
        log.info("calibrating %d tasks from their training images", len(missing))
    for t in missing:
        calibrate_task(config, method, scenario, t, calibration)
    references = calibration.references[e.objective]
    if e.verification != "auto":
        return references, {}
    counts = calibration.self_tests[e.objective]
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


def evaluate_without_task_ids(
    config: ExperimentConfig,
    method: Method,
    scenario: Scenario,
    *,
    progress: bool = False,
    runtime: Runtime | None = None,
    calibration: Calibration | None = None,
) -> dict[str, Any]:
    """Final accuracy with the task inferred (GNs / GNu), and the task-inference accuracy. With
    several processes the tasks are dealt among them (each computed exactly as by one process)
    and the results gathered. Calibrated and auto verification use the ``calibration`` the stream
    stored (see :func:`verification_references`)."""
    e = config.eval
    runtime = runtime or Runtime()
    start = time.perf_counter()
    task_refs, extra = verification_references(config, method, scenario, calibration)
    results = {}
    mine = [t for t in range(scenario.num_tasks) if runtime.mine(t)]
    for t in tqdm(mine, desc="infer", disable=not progress, leave=False):
        test = scenario.test_data(t).head(e.inference_test_images)
        results[t] = evaluate_inferred(
            method,
            test,
            t,
            scenario=e.scenario,
            procedure=e.inference,
            objective=e.objective,
            batch=e.inference_batch,
            images=e.inference_images,
            num_classes=scenario.num_classes,
            shortlist_size=e.shortlist_size,
            predicted=config.predicted_outputs(scenario.num_classes),
            references=task_refs,
        )
    for part in runtime.gather(results):
        results.update(part)
    ordered = [results[t] for t in range(scenario.num_tasks)]
    accs = [r.accuracy for r in ordered]
    inferred = [r.task_accuracy for r in ordered]
    fitted = [r.fitted_accuracy for r in ordered]
    margins = [m for r in ordered for m in r.margins]
    listed = [r.shortlisted for r in ordered]
    log.info(
        "%s: accuracy %.2f%% with the task inferred (task inference %.2f%%)",
        e.scenario,
        100 * np.mean(accs),
        100 * np.mean(inferred),
    )
    if e.inference == "entropy_fit":
        extra["average_accuracy_fitted_alphas"] = float(np.mean(fitted))
    if all(v is not None for v in listed):
        # How often the shortlist held the true task: the rest of the errors are the objective's.
        extra["shortlist_recall"] = float(np.mean(listed))
    if e.inference in VERIFIED:
        used = "raw" if task_refs is None else "calibrated"
        extra["verification"] = used if e.verification != "auto" else f"auto: {used}"
    margins = [m for m in margins if m == m]  # NaN: too few other tasks to measure a margin
    if margins:
        # How decisive one-shot inference was (inference.oneshot_margin): the median, and the
        # 5th percentile, i.e. the margin that 95% of the inferences exceeded.
        extra["task_inference_margin_median"] = float(np.nanmedian(margins))
        extra["task_inference_margin_p5"] = float(np.nanpercentile(margins, 5))
    return {
        **extra,
        "eval_scenario": e.scenario,
        "average_accuracy_inferred": float(np.mean(accs)),
        "task_inference_accuracy": float(np.mean(inferred)),
        "accuracies_inferred": accs,
        "task_inference_per_task": inferred,
        "inference_seconds": time.perf_counter() - start,
    }


def build_metrics(
    config: ExperimentConfig,
    matrix: np.ndarray,
    method: Method,
    task_seconds: list[float],
    task_names: list[str],
) -> dict[str, Any]:
    """The contents of ``metrics.json``."""
    per_task = method.bytes_per_task()
    return {
        "preset": config.name,
        "method": config.method.name,
        "scenario": config.scenario.name,
        "dataset": config.scenario.dataset,
        "backbone": config.backbone.name,
        "num_tasks": int(matrix.shape[0]),
        "average_accuracy": average_accuracy(matrix),
        "backward_transfer": backward_transfer(matrix),
        "forgetting": forgetting(matrix),
        "final_accuracies": matrix[-1].tolist(),
        "accuracy_matrix": matrix_to_lists(matrix),
        "task_names": task_names,
        "bytes_per_task": {**per_task, "total": sum(per_task.values())},
        "seconds_per_task": float(np.mean(task_seconds)),
        "task_seconds": task_seconds,
        "peak_memory_mb": peak_memory_mb(),
        "impresslearn_version": __version__,
        "torch_version": torch.__version__,
        **kernel_info(),  # the top-k selection that ran: the compiled kernel (and scan) or NumPy
        **method.extra_metrics(matrix),
    }


def write_results(
    out_dir: Path,
    config: ExperimentConfig,
    matrix: np.ndarray,
    metrics: dict[str, Any],
    task_names: list[str],
) -> None:
    atomic_write_text(out_dir / "accuracy_matrix.csv", matrix_to_csv(matrix, task_names))
    plot_accuracy_matrix(
        matrix,
        out_dir / "accuracy_matrix.png",
        f"{config.name}: {config.method.name} on {config.scenario.name} "
        f"(avg {100 * metrics['average_accuracy']:.2f}%)",
    )
    if "dedicated_accuracy" in metrics or "single_impression_accuracy" in metrics:
        num_tasks = len(task_names)

        def per_task(key: str) -> list[float | None]:
            values = metrics.get(key, {})
            return [values.get(str(t)) for t in range(num_tasks)]

        series = {"learned combination (final)": metrics["final_accuracies"]}
        if "dedicated_accuracy" in metrics:
            series["dedicated SupSup mask"] = per_task("dedicated_accuracy")
        if "single_impression_accuracy" in metrics:
            series["one impression, unchanged"] = per_task("single_impression_accuracy")
        plot_per_task(
            task_names,
            series,
            out_dir / "per_task_accuracy.png",
            f"{config.name}: per-task accuracy",
        )
    atomic_write_json(out_dir / "metrics.json", metrics)
