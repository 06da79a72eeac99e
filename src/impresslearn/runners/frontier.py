"""The ``frontier`` recipe, ImpressLearn's accuracy-per-byte frontier: unseen-task accuracy vs the bytes a task stores.

The impressions are learned once (as :class:`~impresslearn.methods.ImpressLearn` learns them
for a run), then every evaluation task (never an impression) learns its coefficients in each
representation of ``config.frontier`` (per layer, per classifier unit, groups of units, low
rank, per unit; stored as float32, float16 or int8), on the same model, the same impressions and
the same batches. Reference points: each evaluation task's dedicated SupSup mask (1 bit per
weight) and one impression applied unchanged. Writes ``frontier.csv``, ``frontier.png`` (bytes
per task on a log axis vs mean accuracy) and ``metrics.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from impresslearn.config import ExperimentConfig
from impresslearn.errors import ConfigError
from impresslearn.layers import drop_norm_stats
from impresslearn.methods import ImpressLearn
from impresslearn.methods.coeffs import parse_representation
from impresslearn.metrics import (
    DEDICATED,
    DEDICATED_UNSEEN,
    SINGLE_IMPRESSION_UNSEEN,
)
from impresslearn.plots import plot_frontier
from impresslearn.report import frontier_table
from impresslearn.runners.context import RunContext
from impresslearn.runners.folder import started_folder
from impresslearn.runners.grids import check_grid, grid_header, unseen_tasks
from impresslearn.runners.recipes import RunResult, register_recipe
from impresslearn.runners.stream import Stream, build_stream
from impresslearn.runtime import Runtime
from impresslearn.storage import (
    atomic_write_text,
    write_checked_json,
)
from impresslearn.train import TrainConfig

log = logging.getLogger(__name__)


def check_frontier(config: ExperimentConfig) -> None:
    """What a frontier needs of a config."""
    check_grid(config, "representation")
    if not config.frontier.representations:
        raise ConfigError(
            "kind=frontier needs the representations to compare: set "
            "frontier.representations, e.g. [layer,output_unit@int8]"
        )


@register_recipe("frontier", check=check_frontier, report=frontier_table)
def run_frontier(config: ExperimentConfig, ctx: RunContext) -> RunResult:
    """ImpressLearn's accuracy-per-byte frontier: unseen-task accuracy against bytes per task.

    With a run folder, ``config.json`` first, then ``frontier.csv``, ``frontier.png`` and
    ``metrics.json`` (the folder locked meanwhile). Under several processes the references and
    representations are dealt among them; every process learns the impressions."""
    group = ctx.runtime
    stream = build_stream(config, ctx.data_root, group.alone(), progress=ctx.shows_progress)
    tasks = unseen_tasks(config.frontier.eval_tasks, "frontier", stream.method, stream.num_tasks)
    if ctx.out_dir is None:
        return RunResult(config, _frontier(stream, group, tasks, None))
    with started_folder(group, ctx.out_dir, config, overwrite=ctx.overwrite) as out:
        return RunResult(config, _frontier(stream, group, tasks, out), out)


def _references(stream: Stream, group: Runtime, tasks: list[int]) -> dict[int, tuple]:
    """Per task: the accuracy of its dedicated SupSup mask and of one impression unchanged
    (``None`` where the impressions were not learned on tasks)."""
    method = stream.method
    reference = ImpressLearn(stream.model, replace(method.config, dedicated_masks=True))

    def measure(t: int) -> tuple[float, float | None]:
        test = stream.scenario.test_data(t)
        reference.after_task(t, stream.mask_trainer, lambda: stream.accuracy(test))
        return reference.dedicated_accuracy[t], reference.single_impression_accuracy.get(t)

    return group.deal(tasks, measure)


def point_name(spec: str, scale: int) -> str:
    """A frontier point's name: the representation, and its training multiple unless 1."""
    return spec if scale == 1 else f"{spec} ({scale}x training)"


def _scaled(train: TrainConfig, scale: int) -> TrainConfig:
    if train.iterations is not None:
        return replace(train, iterations=train.iterations * scale)
    return replace(train, epochs=train.epochs * scale)


def _representation_rows(stream: Stream, spec: str, scale: int, tasks: list[int]) -> dict[str, Any]:
    """Learn every evaluation task's coefficients in representation ``spec`` (on the stream's
    model and impressions), trained ``scale`` times as long as configured, and evaluate them as
    stored."""
    config = stream.config
    method = ImpressLearn(
        stream.model, replace(config.method, dedicated_masks=False, **parse_representation(spec))
    )
    grid = Stream(config, stream.runtime, stream.scenario, stream.model, method, stream.progress)
    train = _scaled(config.train, scale)
    accuracies = {}
    for t in tasks:
        grid.learn_task(t, train, f"{point_name(spec, scale)}: task {t}")
        with method.task_context(t):
            accuracies[t] = grid.accuracy(stream.scenario.test_data(t))
        drop_norm_stats(stream.model, t)  # the next representation learns its own
    mean = 100 * np.mean(list(accuracies.values()))
    log.info("%s: mean accuracy %.2f%%", point_name(spec, scale), mean)
    return {
        "representation": spec,
        "train_scale": scale,
        "bytes": method.bytes_per_task(),
        "accuracy": accuracies,
    }


def _frontier(
    stream: Stream, group: Runtime, tasks: list[int], out_dir: Path | None
) -> dict[str, Any]:
    config, method = stream.config, stream.method
    start = time.perf_counter()
    method.prepare(stream.mask_trainer, stream.num_tasks)  # the impressions, once
    references = _references(stream, group, tasks)
    points = [(s, k) for s in config.frontier.representations for k in config.frontier.train_scales]
    dealt = group.deal(points, lambda point: _representation_rows(stream, *point, tasks))
    results = {point_name(*point): r for point, r in dealt.items()}

    norm_bytes = method.bytes_per_task()["norm_stats"]
    summary = {
        name: {
            "representation": r["representation"],
            "train_scale": r["train_scale"],
            "mean_accuracy_unseen": float(np.mean([r["accuracy"][t] for t in tasks])),
            "bytes_per_task": {**r["bytes"], "total": r["bytes"]["coeffs"] + norm_bytes},
        }
        for name, r in results.items()
    }
    dedicated = [references[t][0] for t in tasks]
    single = [references[t][1] for t in tasks if references[t][1] is not None]
    mask_bytes = method.mask_bytes()
    metrics = {
        **grid_header(config, method),
        "mask_kind": method.config.mask_kind,
        "eval_tasks": tasks,
        "representations": summary,
        DEDICATED_UNSEEN: float(np.mean(dedicated)),
        "dedicated_bytes_per_task": {
            "mask": mask_bytes,
            "norm_stats": norm_bytes,
            "total": mask_bytes + norm_bytes,
        },
        SINGLE_IMPRESSION_UNSEEN: float(np.mean(single)) if single else None,
        "accuracy": {
            spec: {str(t): a for t, a in r["accuracy"].items()} for spec, r in results.items()
        },
        DEDICATED: {str(t): references[t][0] for t in tasks},
        "seconds": time.perf_counter() - start,
        **group.describe(),
    }
    if out_dir is not None and group.is_writer:
        _write(out_dir, metrics, results, references, tasks)
    return metrics


def _write(out_dir: Path, metrics: dict, results: dict, references: dict, tasks: list) -> None:
    lines = ["representation,train_scale,coeff_bytes,norm_bytes,total_bytes,task_id,accuracy"]
    for name, r in results.items():
        b = metrics["representations"][name]["bytes_per_task"]
        lines += [
            f"{r['representation']},{r['train_scale']},{b['coeffs']},{b['norm_stats']},"
            f"{b['total']},{t},{r['accuracy'][t]:.6f}"
            for t in tasks
        ]
    d = metrics["dedicated_bytes_per_task"]
    lines += [
        f"dedicated_supsup_mask,1,{d['mask']},{d['norm_stats']},{d['total']},{t},"
        f"{references[t][0]:.6f}"
        for t in tasks
    ]
    lines += [
        f"one_impression_unchanged,,0,0,0,{t},{references[t][1]:.6f}"
        for t in tasks
        if references[t][1] is not None
    ]
    atomic_write_text(out_dir / "frontier.csv", "\n".join(lines) + "\n")
    plot_frontier(
        {
            spec: (s["bytes_per_task"]["total"], s["mean_accuracy_unseen"])
            for spec, s in metrics["representations"].items()
        },
        (d["total"], metrics[DEDICATED_UNSEEN]),
        metrics[SINGLE_IMPRESSION_UNSEEN],
        out_dir / "frontier.png",
        f"{metrics['preset']}: {metrics['num_impressions']} impressions, {len(tasks)} unseen tasks",
    )
    write_checked_json(out_dir / "metrics.json", metrics)
