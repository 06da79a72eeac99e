"""The end of a run of a stream: its metrics, and the result files of its folder.

``metrics.json`` (every headline number, per-task accuracies, bytes and seconds per task, where
it ran), ``accuracy_matrix.csv`` and ``accuracy_matrix.png``, and, for a method that measures
reference models beside its own (:meth:`~impresslearn.methods.Method.references`, e.g.
ImpressLearn's dedicated masks), ``per_task_accuracy.png``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from impresslearn import __version__
from impresslearn.checkpoint import RunState, checkpoint_bytes
from impresslearn.config import ExperimentConfig
from impresslearn.layers.native import kernel_info
from impresslearn.methods import Method
from impresslearn.metrics import (
    AccuracyMatrix,
    average_accuracy,
    backward_transfer,
    forgetting,
    matrix_to_csv,
)
from impresslearn.plots import plot_accuracy_matrix, plot_per_task
from impresslearn.runners.recipes import RunResult
from impresslearn.runners.stream import Stream, peak_memory_mb
from impresslearn.storage import (
    atomic_write_text,
    write_checked_json,
)


def finish(stream: Stream, state: RunState, extra: dict[str, Any], out: Path | None) -> RunResult:
    """The one ending of every run of a stream: metrics (with where it ran), and the result
    files."""
    config, scenario = stream.config, stream.scenario
    names = [scenario.task_name(j) for j in range(stream.num_tasks)]
    metrics = build_metrics(config, state.matrix, stream.method, state.task_seconds, names)
    metrics.update(extra)
    metrics.update(seconds_metrics(state))
    metrics.update(stream.runtime.describe())
    if out is not None and stream.runtime.is_writer:
        # Measured: how much the checkpoint grew per task of the stream (the payload plus each
        # segment's headers), next to the payload in bytes_per_task.
        metrics["checkpoint_bytes"] = checkpoint_bytes(out)
        sizes = state.checkpoint_sizes
        if len(sizes) > 1:
            metrics["checkpoint_growth_per_task"] = (sizes[-1] - sizes[0]) / (len(sizes) - 1)
        write_results(out, config, state.matrix, metrics, names, stream.method)
    if stream.log is not None:
        stream.log.finish(metrics, state.matrix)
    return RunResult(
        config,
        metrics,
        out,
        accuracies=state.matrix,
        method=stream.method,
        scenario=scenario,
    )


def seconds_metrics(state: RunState) -> dict[str, float]:
    """Where the time went: ``seconds_per_task`` counts the preparation (ImpressLearn's
    impressions) as part of the tasks' cost, ``seconds_per_task_after_prepare`` is what one more
    task costs, and ``reference_seconds`` the comparisons measured beside the method (dedicated
    masks), counted in neither."""
    tasks = sum(state.task_seconds)
    count = max(1, len(state.task_seconds))
    return {
        "seconds_per_task": (state.prepare_seconds + tasks) / count,
        "seconds_per_task_after_prepare": tasks / count,
        "prepare_seconds": state.prepare_seconds,
        "reference_seconds": sum(e.get("reference_seconds", 0.0) for e in state.events),
    }


def build_metrics(
    config: ExperimentConfig,
    matrix: AccuracyMatrix,
    method: Method,
    task_seconds: list[float],
    task_names: list[str],
) -> dict[str, Any]:
    """The contents of ``metrics.json``."""
    per_task = method.bytes_per_task()
    return {
        "preset": config.name,
        "kind": config.kind,
        "method": config.method.name,
        "scenario": config.scenario.name,
        "dataset": config.scenario.dataset,
        "backbone": config.backbone.name,
        "num_tasks": matrix.num_tasks,
        "average_accuracy": average_accuracy(matrix),
        "backward_transfer": backward_transfer(matrix),
        "forgetting": forgetting(matrix),
        "final_accuracies": matrix.row(matrix.num_tasks - 1).tolist(),
        "eval_matrix": config.eval.matrix,
        "accuracy_matrix": matrix.to_json(),  # the evaluated entries
        "task_names": task_names,
        "bytes_per_task": {**per_task, "total": sum(per_task.values())},
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
    matrix: AccuracyMatrix,
    metrics: dict[str, Any],
    task_names: list[str],
    method: Method,
) -> None:
    """The result files of a finished stream; ``metrics.json`` last (its presence says the run
    finished)."""
    atomic_write_text(out_dir / "accuracy_matrix.csv", matrix_to_csv(matrix, task_names))
    plot_accuracy_matrix(
        matrix,
        out_dir / "accuracy_matrix.png",
        f"{config.name}: {config.method.name} on {config.scenario.name} "
        f"(avg {100 * metrics['average_accuracy']:.2f}%)",
    )
    references = method.references()
    if references:
        series = {"learned combination (final)": metrics["final_accuracies"]}
        series.update({r.label: r.series(len(task_names)) for r in references})
        plot_per_task(
            task_names,
            series,
            out_dir / "per_task_accuracy.png",
            f"{config.name}: per-task accuracy",
        )
    write_checked_json(out_dir / "metrics.json", metrics)
