"""Repeats of one experiment over seeds, with the mean and spread of its headline numbers.

``impresslearn run PRESET --seeds N`` runs the config ``N`` times, whatever its kind: the
repeats wrap the kind's recipe (:mod:`~impresslearn.runners.recipes`). Repeat ``i`` shifts every seed
of the config (the scenario's, which draws the permutations or the class order; the backbone's,
which draws the frozen weights; the method's, which draws the initial scores; and the training
batches') by ``i``, so repeat 0 is exactly the plain run and the repeats are independent draws of
the whole protocol. Each repeat is a complete run folder ``OUT/seed-i`` (loadable, evaluable and
resumable on its own); ``OUT/seeds.json`` (and ``OUT/seeds.csv``) hold, per headline metric, the
values per repeat, their mean, sample standard deviation, minimum and maximum; ``OUT/seeds.png``
plots every task's final accuracy per repeat and its mean ± std.

Under ``torchrun`` / ``srun`` the repeats are dealt among the processes, each running its share as
runs of their own on its own device (a node of 4 GPUs runs 4 repeats at once); the summary is
written once, by rank 0, when all are done, and ``--resume`` finishes whatever a stopped job left.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from impresslearn.config import ExperimentConfig
from impresslearn.errors import CheckpointError, ConfigError
from impresslearn.metrics import DEDICATED_UNSEEN
from impresslearn.plots import plot_seeds
from impresslearn.report import seeds_table
from impresslearn.runners.context import RunContext
from impresslearn.runners.folder import RunFolderLock, start_run_folder
from impresslearn.runners.recipes import RunResult, check_context, check_experiment, run
from impresslearn.runners.saved import load_config_file
from impresslearn.storage import (
    atomic_write_text,
    read_checked_json,
    write_checked_json,
)

logger = logging.getLogger(__name__)

SEEDS_NAME = "seeds.json"
SEEDED_SECTIONS = ("scenario", "backbone", "method", "train")
# The metrics summarised over repeats (those a run reports; bytes per task is the total).
HEADLINE = (
    "average_accuracy",
    "backward_transfer",
    "forgetting",
    "average_accuracy_unseen",
    DEDICATED_UNSEEN,
    "average_accuracy_inferred",
    "task_inference_accuracy",
    "bytes_per_task",
    "seconds_per_task",
)


def seeded(config: ExperimentConfig, offset: int) -> ExperimentConfig:
    """``config`` with the seed of every section in :data:`SEEDED_SECTIONS` shifted by ``offset``."""
    shifted = {
        name: replace(getattr(config, name), seed=getattr(config, name).seed + offset)
        for name in SEEDED_SECTIONS
    }
    return replace(config, **shifted)


def headline_values(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers a repeat is summarised by: the :data:`HEADLINE` metrics it reports (bytes per
    task as the total), and a sweep's or frontier's unseen-task accuracy per grid point (an
    adaptation's per contender and examples per class, at the last step)."""
    values: dict[str, float] = {}
    for key in HEADLINE:
        value = metrics.get(key)
        if key == "bytes_per_task" and isinstance(value, dict):
            value = value.get("total")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            values[key] = float(value)
    for kind, by_n in (metrics.get("mean_accuracy_unseen") or {}).items():  # a sweep
        for n, accuracy in by_n.items():
            values[f"mean_accuracy_unseen.{kind}.{n}"] = float(accuracy)
    for name, point in (metrics.get("representations") or {}).items():  # a frontier
        values[f"mean_accuracy_unseen.{name}"] = float(point["mean_accuracy_unseen"])
    for name, contender in (metrics.get("contenders") or {}).items():  # an adaptation
        for k, (accuracy, _) in contender["by_examples"].items():
            values[f"accuracy.{name}.k={k}"] = float(accuracy)
    return values


def summarize(metrics: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per headline number present in every run: values, mean, std (ddof 1), min and max."""
    per_run = [headline_values(m) for m in metrics]
    keys = [k for k in per_run[0] if all(k in values for values in per_run)] if per_run else []
    summary = {}
    for key in keys:
        array = np.asarray([values[key] for values in per_run], dtype=float)
        summary[key] = {
            "mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "min": float(array.min()),
            "max": float(array.max()),
            "values": array.tolist(),
        }
    return summary


def run_seeds(config: ExperimentConfig, ctx: RunContext, num_seeds: int) -> RunResult:
    """Run ``config`` (of any kind) over ``num_seeds`` seeds into ``ctx.out_dir``; the result's
    metrics are what ``seeds.json`` holds. The folder of repeats is locked meanwhile, and each
    repeat's own.

    Raises:
        ConfigError: fewer than 2 seeds, no run folder, or the folder already holds a run
            (unless ``ctx.overwrite``).
    """
    if num_seeds < 2:
        raise ConfigError(f"--seeds needs at least 2 repeats, got {num_seeds}")
    if ctx.out_dir is None:
        raise ConfigError("repeats over seeds are written into a run folder: give one (--out)")
    if ctx.resume:
        raise ConfigError("resume repeats with resume_seeds (impresslearn run --resume DIR)")
    recipe = check_experiment(config)
    check_context(recipe, ctx.in_folder(ctx.out_dir))
    out = ctx.out_dir
    lock = RunFolderLock(out)

    def start() -> None:
        lock.acquire()
        start_run_folder(out, config, overwrite=ctx.overwrite)
        write_checked_json(out / SEEDS_NAME, {"num_seeds": num_seeds, "finished": False})

    try:
        ctx.runtime.on_writer(start)
        return _run(config, ctx, num_seeds, resume=False)
    finally:
        lock.release()


def load_seeds_record(out_dir: Path) -> dict[str, Any]:
    """The ``seeds.json`` of a folder of repeats (``runs`` lists the repeat folders).

    Raises:
        CheckpointError: it is missing or unreadable.
    """
    path = Path(out_dir) / SEEDS_NAME
    record = read_checked_json(path)
    try:
        num_seeds = int(record["num_seeds"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is missing or unreadable ({e})") from None
    record.setdefault("preset", load_config_file(Path(out_dir) / "config.json").name)
    record.setdefault("runs", [f"seed-{i}" for i in range(num_seeds)])
    return record


def resume_seeds(ctx: RunContext) -> RunResult:
    """Finish the repeats in ``ctx.out_dir``: finished ones are kept, stopped ones resumed (or,
    for a kind that cannot resume, run again).

    Raises:
        CheckpointError: the folder is not a folder of repeats, or its files are unreadable.
    """
    out = ctx.out_dir
    num_seeds = load_seeds_record(out)["num_seeds"]
    config = load_config_file(out / "config.json")
    check_experiment(config)
    lock = RunFolderLock(out)
    try:
        ctx.runtime.on_writer(lock.acquire)
        return _run(config, ctx, num_seeds, resume=True)
    finally:
        lock.release()


def is_seeds_folder(path: Path) -> bool:
    return (Path(path) / SEEDS_NAME).is_file()


def _run(config: ExperimentConfig, ctx: RunContext, num_seeds: int, *, resume: bool) -> RunResult:
    out, runtime = ctx.out_dir, ctx.runtime
    resumable = check_experiment(config).resumable
    done: dict[int, dict[str, Any]] = {}
    for i in range(num_seeds):
        if not runtime.mine(i):  # another process runs this repeat
            continue
        run_dir = out / f"seed-{i}"
        if resume and (run_dir / "metrics.json").is_file():  # written last: the repeat finished
            done[i] = read_checked_json(run_dir / "metrics.json")
            continue
        logger.info(
            "%s: repeat %d of %d (seeds + %d) -> %s", config.name, i + 1, num_seeds, i, run_dir
        )
        restart = resume and resumable and (run_dir / "checkpoint.safetensors").is_file()
        result = run(seeded(config, i), ctx.alone().in_folder(run_dir, resume=restart))
        done[i] = result.metrics
    for part in runtime.gather(done):  # waits until every process has finished its share
        done.update(part)
    metrics = [done[i] for i in range(num_seeds)]
    record = {
        "preset": config.name,
        "kind": config.kind,
        "num_seeds": num_seeds,
        "finished": True,
        "seed_offsets": list(range(num_seeds)),
        "seeded_sections": list(SEEDED_SECTIONS),
        "runs": [f"seed-{i}" for i in range(num_seeds)],
        "summary": summarize(metrics),
    }
    if runtime.is_writer:
        write_checked_json(out / SEEDS_NAME, record)
        atomic_write_text(out / "seeds.csv", _csv(record["summary"], num_seeds))
        if all("final_accuracies" in m for m in metrics):
            series = {"task ids given": [m["final_accuracies"] for m in metrics]}
            if all("accuracies_inferred" in m and "inferred_tasks" not in m for m in metrics):
                series["task inferred"] = [m["accuracies_inferred"] for m in metrics]
            title = f"{config.name}: final accuracy per task over {num_seeds} seeds"
            plot_seeds(series, out / "seeds.png", title)
    return RunResult(config, record, out)


def seeds_report(record: dict[str, Any]) -> str:
    """The table the command line prints for repeats."""
    return seeds_table(record)


def _csv(summary: dict[str, dict[str, Any]], num_seeds: int) -> str:
    head = ["metric", "mean", "std", "min", "max", *(f"seed_{i}" for i in range(num_seeds))]
    rows = [
        [key, *(repr(s[k]) for k in ("mean", "std", "min", "max")), *map(repr, s["values"])]
        for key, s in summary.items()
    ]
    return "".join(",".join(row) + "\n" for row in [head, *rows])
