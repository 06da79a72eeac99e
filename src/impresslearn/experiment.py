"""Running an experiment: the task loop, the accuracy matrix, and the run folder.

For each task of the scenario: the method begins the task, :func:`impresslearn.train.fit` trains
the method's parameters, the method ends the task (its state is frozen from then on), and every
task seen so far is evaluated with its task id given (scenario GG; with ``eval.matrix=diagonal``
only the new task, and all of them after the last). The run folder gets
``config.json`` before any work starts, one ``events.jsonl`` line per finished task, and at the end
``metrics.json``, ``accuracy_matrix.csv`` and ``accuracy_matrix.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import resource
import sys
import time
from dataclasses import dataclass
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
    RunState,
    checkpoint_config,
    checkpoint_shape,
    restore_checkpoint,
    save_checkpoint,
)
from impresslearn.config import ExperimentConfig, config_from_dict
from impresslearn.data import load_dataset
from impresslearn.errors import ConfigError
from impresslearn.inference import evaluate_inferred
from impresslearn.methods import Method, build_method
from impresslearn.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    matrix_to_csv,
    matrix_to_lists,
)
from impresslearn.nns import evaluate_nns, train_nns
from impresslearn.plots import plot_accuracy_matrix, plot_per_task
from impresslearn.scenarios import Scenario, TaskData, build_scenario
from impresslearn.seeding import PURPOSE_BATCHES, generator
from impresslearn.storage import atomic_write_json, atomic_write_text
from impresslearn.train import accuracy, fit

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


def prepare_run_dir(out_dir: Path, config: ExperimentConfig, *, overwrite: bool) -> None:
    """Create ``out_dir`` and write ``config.json``; refuse a folder holding another run."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"output path {out_dir} exists and is not a folder")
    existing = out_dir / "config.json"
    if existing.exists() and not overwrite:
        raise ConfigError(
            f"output folder {out_dir} already holds a run (config.json); choose another --out or "
            "pass --overwrite to replace it"
        )
    if overwrite:
        names = ("events.jsonl", "metrics.json", "accuracy_matrix.csv", "accuracy_matrix.png")
        extra = ("checkpoint.safetensors", "sweep.csv", "sweep.png", "per_task_accuracy.png")
        for name in (*names, *extra):
            (out_dir / name).unlink(missing_ok=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "config.json", config.to_json())


def load_config_file(path: Path) -> ExperimentConfig:
    """Read a ``config.json`` written by a run (or by hand)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    return config_from_dict(data)


def evaluate_seen(
    method: Method,
    scenario: Scenario,
    upto: int,
    batch_size: int,
    *,
    only: int | None = None,
    progress: bool = False,
) -> list[float]:
    """Accuracy on tasks ``0..upto`` (or on task ``only``) with each task id given."""
    accs = []
    tasks = range(upto + 1) if only is None else [only]
    for j in tqdm(tasks, desc="eval", disable=not progress, leave=False):
        with method.task_context(j):
            accs.append(
                accuracy(method.model, scenario.test_data(j), batch_size, scenario.num_classes)
            )
    return accs


def run_experiment(
    config: ExperimentConfig,
    data_root: Path | None,
    out_dir: Path | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
) -> RunResult:
    """Run ``config`` end to end; with ``out_dir``, write the run folder as it goes.

    A checkpoint is written to ``out_dir`` after the preparation and after every task; with
    ``resume`` the run continues from it at the next task, with the same results as a run that
    was never interrupted. A resumed ``config`` may have more ``scenario.num_tasks`` than the saved
    one: the stream is extended, with the same results as a run started with the longer stream.
    """
    # Build everything first, so that bad input fails before anything is written.
    data = load_dataset(config.scenario.dataset, data_root)
    scenario = build_scenario(config.scenario, data)
    model = build_backbone(config.backbone, scenario.input_shape, scenario.num_classes)
    method = build_method(model, config.method)
    num_tasks, num_classes = scenario.num_tasks, scenario.num_classes
    out = Path(out_dir) if out_dir is not None else None
    checkpoint = out / CHECKPOINT_NAME if out is not None else None
    if resume:
        if checkpoint is None:
            raise ConfigError("resuming needs the run folder")
        state = restore_checkpoint(checkpoint, config, model, method)
        log.info("resuming %s at task %d/%d", config.name, state.next_task + 1, num_tasks)
        atomic_write_text(out / "config.json", config.to_json())  # a stream may have grown
    elif out is not None:
        prepare_run_dir(out, config, overwrite=overwrite)

    def mask_trainer(params, task_id: int, train, description: str) -> None:
        # Plain cross-entropy on the task's data; no coeffs are set, so layers use the scores.
        fit(
            params,
            lambda x, y: F.cross_entropy(model(x), y),
            scenario.train_data(task_id),
            train,
            generator(train.seed, PURPOSE_BATCHES, task_id, 1),
            progress=progress,
            description=description,
        )

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(model(x), y)
        extra = method.loss_regulariser()
        return loss if extra is None else loss + extra

    def save(state: RunState) -> None:
        if checkpoint is not None:
            shape = (scenario.input_shape, num_classes)
            size = save_checkpoint(checkpoint, config, model, method, state, shape)
            state.checkpoint_sizes.append(size)
            atomic_write_text(
                out / "events.jsonl", "".join(json.dumps(e) + "\n" for e in state.events)
            )

    log.info("%s: %d tasks of %s on %s", config.name, num_tasks, config.scenario.name, data.name)
    if config.eval.scenario == "NNs":
        if resume:
            raise ConfigError("an NNs run (no task ids in training) cannot be resumed")
        start = time.perf_counter()
        method.prepare(mask_trainer, num_tasks)  # ImpressLearn's impressions, before the stream
        record = train_nns(config, method, scenario, progress=progress)
        seconds = time.perf_counter() - start
        matrix, nns_metrics = evaluate_nns(config, method, scenario, record)
        slots = len(record.detections)
        state = RunState(slots, matrix, [seconds / num_tasks] * num_tasks, [], 0.0)
        save(state)
        names = [scenario.task_name(j) for j in range(num_tasks)]
        metrics = build_metrics(config, matrix, method, state.task_seconds, names)
        metrics.update(nns_metrics)
        if out is not None:
            metrics["checkpoint_bytes"] = checkpoint.stat().st_size
            write_results(out, config, matrix, metrics, names)
        return RunResult(config, matrix, metrics, method, scenario, out)
    if not resume:
        start = time.perf_counter()
        method.prepare(mask_trainer, num_tasks)
        state = RunState(0, np.full((num_tasks, num_tasks), np.nan), [], [], 0.0)
        state.prepare_seconds = time.perf_counter() - start
        save(state)
    matrix = state.matrix
    for t in range(state.next_task, num_tasks):
        start = time.perf_counter()
        method.begin_task(t)
        params = method.trainable_parameters()
        stats = None
        if params:  # an ImpressLearn impression task may have nothing to train
            with method.training_context():
                stats = fit(
                    params,
                    loss_fn,
                    scenario.train_data(t),
                    config.train,
                    generator(config.train.seed, PURPOSE_BATCHES, t),
                    progress=progress,
                    description=f"task {t + 1}/{num_tasks}",
                )
        method.end_task(t)
        train_seconds = time.perf_counter() - start
        if config.eval.matrix == "full" or t == num_tasks - 1:
            matrix[t, : t + 1] = evaluate_seen(
                method, scenario, t, config.eval.batch_size, progress=progress
            )
        else:
            matrix[t, t] = evaluate_seen(
                method, scenario, t, config.eval.batch_size, only=t, progress=progress
            )[0]
        test = scenario.test_data(t)
        method.after_task(
            t,
            mask_trainer,
            lambda test=test: accuracy(model, test, config.eval.batch_size, num_classes),
        )
        state.task_seconds.append(time.perf_counter() - start)
        event = {
            "task_id": t,
            "task_name": scenario.task_name(t),
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
        save(state)
        log.info(
            "task %d/%d (%s): accuracy %.2f%%, mean over seen %.2f%%, %.1fs",
            t + 1,
            num_tasks,
            event["task_name"],
            100 * event["accuracy"],
            100 * event["average_accuracy_seen"],
            event["seconds"],
        )

    names = [scenario.task_name(j) for j in range(num_tasks)]
    metrics = build_metrics(config, matrix, method, state.task_seconds, names)
    if config.eval.scenario != "GG":
        metrics.update(evaluate_without_task_ids(config, method, scenario, progress=progress))
    metrics["prepare_seconds"] = state.prepare_seconds
    if out is not None:
        # Measured: how much the checkpoint file grew per task of the stream (payload plus
        # safetensors headers and the event log), next to the payload in bytes_per_task.
        metrics["checkpoint_bytes"] = checkpoint.stat().st_size
        if state.checkpoint_sizes:
            grown = state.checkpoint_sizes[-1] - state.checkpoint_sizes[0]
            metrics["checkpoint_growth_per_task"] = grown / max(1, len(state.checkpoint_sizes) - 1)
        write_results(out, config, matrix, metrics, names)
    return RunResult(config, matrix, metrics, method, scenario, out)


def evaluate_without_task_ids(
    config: ExperimentConfig, method: Method, scenario: Scenario, *, progress: bool = False
) -> dict[str, Any]:
    """Final accuracy with the task inferred (GNs / GNu), and the task-inference accuracy."""
    e = config.eval
    accs, inferred, fitted, margins = [], [], [], []
    start = time.perf_counter()
    for t in tqdm(range(scenario.num_tasks), desc="infer", disable=not progress, leave=False):
        test = scenario.test_data(t)
        if e.inference_test_images:
            test = TaskData(test.x[: e.inference_test_images], test.y[: e.inference_test_images])
        result = evaluate_inferred(
            method,
            test,
            t,
            scenario=e.scenario,
            procedure=e.inference,
            objective=e.objective,
            batch=e.inference_batch,
            images=e.inference_images,
            num_classes=scenario.num_classes,
        )
        accs.append(result.accuracy)
        inferred.append(result.task_accuracy)
        fitted.append(result.fitted_accuracy)
        margins.extend(result.margins)
    log.info(
        "%s: accuracy %.2f%% with the task inferred (task inference %.2f%%)",
        e.scenario,
        100 * np.mean(accs),
        100 * np.mean(inferred),
    )
    extra = {}
    if e.inference == "entropy_fit":
        extra["average_accuracy_fitted_alphas"] = float(np.mean(fitted))
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


@dataclass
class LoadedRun:
    """A saved run, rebuilt from its checkpoint: predictions for a batch with a given task."""

    config: ExperimentConfig
    model: torch.nn.Module
    method: Method
    state: RunState
    num_classes: int

    @property
    def tasks(self) -> list[int]:
        """Tasks the saved run has finished."""
        return list(range(self.state.next_task))

    @torch.no_grad()
    def logits(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """Outputs for inputs ``x`` (normalised like the scenario's) with task ``task_id``."""
        if task_id not in self.tasks:
            raise ConfigError(
                f"task {task_id} is not in this run (finished tasks: 0..{self.state.next_task - 1})"
            )
        with self.method.task_context(task_id):
            return self.model(x)

    def predict(self, x: torch.Tensor, task_id: int) -> torch.Tensor:
        """Predicted classes for ``x`` with task ``task_id`` given."""
        return self.logits(x, task_id)[:, : self.num_classes].argmax(1)


def load_run(run_dir: Path) -> LoadedRun:
    """Rebuild a saved run from ``run_dir/checkpoint.safetensors`` (no data needed)."""
    path = Path(run_dir) / CHECKPOINT_NAME
    config = checkpoint_config(path)
    input_shape, num_classes = checkpoint_shape(path)
    model = build_backbone(config.backbone, input_shape, num_classes)
    method = build_method(model, config.method)
    state = restore_checkpoint(path, config, model, method)
    return LoadedRun(config, model, method, state, num_classes)


def evaluate_run(run: LoadedRun, data_root: Path | None, *, progress: bool = False) -> list[float]:
    """Accuracy of every finished task of a saved run, task ids given."""
    data = load_dataset(run.config.scenario.dataset, data_root)
    scenario = build_scenario(run.config.scenario, data)
    return [
        accuracy_with(run, scenario.test_data(t), t)
        for t in tqdm(run.tasks, desc="eval", disable=not progress, leave=False)
    ]


def evaluate_run_inferred(
    run: LoadedRun, data_root: Path | None, eval_config, *, progress: bool = False
) -> dict[str, Any]:
    """Evaluate a finished saved run with task ids hidden (GNs / GNu) under ``eval_config``, e.g.
    to compare inference procedures on one trained model. Returns the metrics entries."""
    if eval_config.scenario not in ("GNs", "GNu"):
        raise ConfigError(
            f"inference evaluation needs eval.scenario GNs or GNu, got {eval_config.scenario!r}"
        )
    data = load_dataset(run.config.scenario.dataset, data_root)
    scenario = build_scenario(run.config.scenario, data)
    if run.state.next_task != scenario.num_tasks:
        raise ConfigError(
            f"the run finished {run.state.next_task} of {scenario.num_tasks} tasks; task inference "
            "is evaluated on a finished stream (resume it first)"
        )
    config = dataclasses.replace(run.config, eval=eval_config)
    return evaluate_without_task_ids(config, run.method, scenario, progress=progress)


def accuracy_with(run: LoadedRun, data, task_id: int) -> float:
    batch = run.config.eval.batch_size
    correct = sum(
        (run.predict(data.x[i : i + batch], task_id) == data.y[i : i + batch]).sum().item()
        for i in range(0, len(data), batch)
    )
    return correct / len(data)
