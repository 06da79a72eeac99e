"""Running an experiment: the task loop, the accuracy matrix, and the run folder.

For each task of the scenario: the method begins the task, :func:`impresslearn.train.fit` trains
the method's parameters, the method ends the task (its state is frozen from then on), and every
task seen so far is evaluated with its task id given (scenario GG). The run folder gets
``config.json`` before any work starts, one ``events.jsonl`` line per finished task, and at the end
``metrics.json``, ``accuracy_matrix.csv`` and ``accuracy_matrix.png``.
"""

from __future__ import annotations

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
from impresslearn.config import ExperimentConfig, config_from_dict
from impresslearn.data import load_dataset
from impresslearn.errors import ConfigError
from impresslearn.methods import Method, build_method
from impresslearn.metrics import (
    average_accuracy,
    backward_transfer,
    forgetting,
    matrix_to_csv,
    matrix_to_lists,
)
from impresslearn.plots import plot_accuracy_matrix
from impresslearn.scenarios import Scenario, build_scenario
from impresslearn.seeding import PURPOSE_BATCHES, generator
from impresslearn.storage import append_line, atomic_write_json, atomic_write_text
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
        for name in ("events.jsonl", "metrics.json", "accuracy_matrix.csv", "accuracy_matrix.png"):
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
    method: Method, scenario: Scenario, upto: int, batch_size: int, *, progress: bool = False
) -> list[float]:
    """Accuracy on tasks ``0..upto`` with each task id given."""
    accs = []
    for j in tqdm(range(upto + 1), desc="eval", disable=not progress, leave=False):
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
    progress: bool = False,
) -> RunResult:
    """Run ``config`` end to end; with ``out_dir``, write the run folder as it goes."""
    # Build everything first, so that bad input fails before anything is written.
    data = load_dataset(config.scenario.dataset, data_root)
    scenario = build_scenario(config.scenario, data)
    model = build_backbone(config.backbone, scenario.input_shape, scenario.num_classes)
    method = build_method(model, config.method)
    if out_dir is not None:
        prepare_run_dir(out_dir, config, overwrite=overwrite)
    num_tasks, num_classes = scenario.num_tasks, scenario.num_classes

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

    log.info("%s: %d tasks of %s on %s", config.name, num_tasks, config.scenario.name, data.name)
    start = time.perf_counter()
    method.prepare(mask_trainer, num_tasks)
    prepare_seconds = time.perf_counter() - start
    matrix = np.full((num_tasks, num_tasks), np.nan)
    task_seconds: list[float] = []
    for t in range(num_tasks):
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
        matrix[t, : t + 1] = evaluate_seen(
            method, scenario, t, config.eval.batch_size, progress=progress
        )
        task_seconds.append(time.perf_counter() - start)
        test = scenario.test_data(t)
        method.after_task(
            t,
            mask_trainer,
            lambda test=test: accuracy(model, test, config.eval.batch_size, num_classes),
        )
        event = {
            "task_id": t,
            "task_name": scenario.task_name(t),
            "accuracy": matrix[t, t],
            "average_accuracy_seen": float(np.mean(matrix[t, : t + 1])),
            "accuracies": matrix[t, : t + 1].tolist(),
            "final_loss": stats.final_loss if stats else None,
            "steps": stats.steps if stats else 0,
            "train_seconds": train_seconds,
            "seconds": task_seconds[-1],
        }
        log.info(
            "task %d/%d (%s): accuracy %.2f%%, mean over seen %.2f%%, %.1fs",
            t + 1,
            num_tasks,
            event["task_name"],
            100 * event["accuracy"],
            100 * event["average_accuracy_seen"],
            event["seconds"],
        )
        if out_dir is not None:
            append_line(Path(out_dir) / "events.jsonl", json.dumps(event))

    names = [scenario.task_name(j) for j in range(num_tasks)]
    metrics = build_metrics(config, matrix, method, task_seconds, names)
    metrics["prepare_seconds"] = prepare_seconds
    if out_dir is not None:
        write_results(Path(out_dir), config, matrix, metrics, names)
    return RunResult(config, matrix, metrics, method, scenario, out_dir)


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
    atomic_write_json(out_dir / "metrics.json", metrics)
