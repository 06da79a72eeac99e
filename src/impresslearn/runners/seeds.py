"""Repeats of one experiment over seeds, with the mean and spread of its headline numbers.

``impresslearn run PRESET --seeds N`` runs the config ``N`` times. Repeat ``i`` shifts every seed
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

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from impresslearn.config import ExperimentConfig
from impresslearn.errors import CheckpointError, ConfigError
from impresslearn.plots import plot_seeds
from impresslearn.runners.folder import RunFolderLock, start_run_folder
from impresslearn.runners.saved import load_config_file
from impresslearn.runners.stream import run_experiment
from impresslearn.runtime import Runtime
from impresslearn.storage import atomic_write_json, atomic_write_text

logger = logging.getLogger(__name__)

SEEDS_NAME = "seeds.json"
SEEDED_SECTIONS = ("scenario", "backbone", "method", "train")
# The metrics summarised over repeats (those a run reports; bytes per task is the total).
HEADLINE = (
    "average_accuracy",
    "backward_transfer",
    "forgetting",
    "average_accuracy_unseen",
    "dedicated_accuracy_unseen",
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


def summarize(metrics: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per headline metric present in every run: values, mean, std (ddof 1), min and max."""
    summary = {}
    for key in HEADLINE:
        values = [m.get(key) for m in metrics]
        if key == "bytes_per_task":
            values = [v["total"] if v else None for v in values]
        if any(v is None for v in values):
            continue
        array = np.asarray(values, dtype=float)
        summary[key] = {
            "mean": float(array.mean()),
            "std": float(array.std(ddof=1)) if len(array) > 1 else 0.0,
            "min": float(array.min()),
            "max": float(array.max()),
            "values": array.tolist(),
        }
    return summary


def run_seeds(
    config: ExperimentConfig,
    data_root: Path | None,
    out_dir: Path,
    num_seeds: int,
    *,
    overwrite: bool = False,
    progress: bool = False,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    log: str | None = None,
) -> dict[str, Any]:
    """Run ``config`` over ``num_seeds`` seeds into ``out_dir`` on ``device``; return what
    ``seeds.json`` holds. The folder of repeats is locked meanwhile, and each repeat's own.

    Raises:
        ConfigError: fewer than 2 seeds, a sweep config, or ``out_dir`` already holds a run
            (unless ``overwrite``).
    """
    if num_seeds < 2:
        raise ConfigError(f"--seeds needs at least 2 repeats, got {num_seeds}")
    if config.sweep.num_impressions or config.frontier.representations:
        raise ConfigError(
            "--seeds repeats a run, not a sweep or frontier: drop --seeds for those presets"
        )
    runtime = Runtime.create(device, precision)
    out = Path(out_dir)
    lock = RunFolderLock(out)

    def start() -> None:
        lock.acquire()
        start_run_folder(out, config, overwrite=overwrite)
        atomic_write_json(out / SEEDS_NAME, {"num_seeds": num_seeds, "finished": False})

    try:
        runtime.on_writer(start)
        return _run(
            config, data_root, out, num_seeds, runtime, resume=False, progress=progress, log=log
        )
    finally:
        lock.release()


def load_seeds_record(out_dir: Path) -> dict[str, Any]:
    """The ``seeds.json`` of a folder of repeats (``runs`` lists the repeat folders).

    Raises:
        CheckpointError: it is missing or unreadable.
    """
    path = Path(out_dir) / SEEDS_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        num_seeds = int(record["num_seeds"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path} is missing or unreadable ({e})") from None
    record.setdefault("preset", load_config_file(Path(out_dir) / "config.json").name)
    record.setdefault("runs", [f"seed-{i}" for i in range(num_seeds)])
    return record


def resume_seeds(
    out_dir: Path,
    data_root: Path | None,
    *,
    progress: bool = False,
    device: str | torch.device = "auto",
    precision: str = "fp32",
) -> dict:
    """Finish the repeats in ``out_dir``: finished ones are kept, stopped ones resumed.

    Raises:
        CheckpointError: ``out_dir`` is not a folder of repeats, or its files are unreadable.
    """
    runtime = Runtime.create(device, precision)
    out = Path(out_dir)
    num_seeds = load_seeds_record(out)["num_seeds"]
    config = load_config_file(out / "config.json")
    lock = RunFolderLock(out)
    try:
        runtime.on_writer(lock.acquire)
        return _run(config, data_root, out, num_seeds, runtime, resume=True, progress=progress)
    finally:
        lock.release()


def is_seeds_folder(path: Path) -> bool:
    return (Path(path) / SEEDS_NAME).is_file()


def _run(
    config: ExperimentConfig,
    data_root: Path | None,
    out: Path,
    num_seeds: int,
    runtime: Runtime,
    *,
    resume: bool,
    progress: bool,
    log: str | None = None,
) -> dict[str, Any]:
    done: dict[int, dict[str, Any]] = {}
    for i in range(num_seeds):
        if not runtime.mine(i):  # another process runs this repeat
            continue
        run_dir = out / f"seed-{i}"
        if resume and (run_dir / "metrics.json").is_file():  # written last: the repeat finished
            done[i] = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
            continue
        logger.info(
            "%s: repeat %d of %d (seeds + %d) -> %s", config.name, i + 1, num_seeds, i, run_dir
        )
        restart = resume and (run_dir / "checkpoint.safetensors").is_file()
        result = run_experiment(
            seeded(config, i),
            data_root,
            run_dir,
            overwrite=not restart,
            resume=restart,
            progress=progress,
            runtime=runtime.alone(),
            log=log,
        )
        done[i] = result.metrics
    for part in runtime.gather(done):  # waits until every process has finished its share
        done.update(part)
    metrics = [done[i] for i in range(num_seeds)]
    record = {
        "preset": config.name,
        "num_seeds": num_seeds,
        "finished": True,
        "seed_offsets": list(range(num_seeds)),
        "seeded_sections": list(SEEDED_SECTIONS),
        "runs": [f"seed-{i}" for i in range(num_seeds)],
        "summary": summarize(metrics),
    }
    if runtime.is_writer:
        atomic_write_json(out / SEEDS_NAME, record)
        atomic_write_text(out / "seeds.csv", _csv(record["summary"], num_seeds))
        series = {"task ids given": [m["final_accuracies"] for m in metrics]}
        if all("accuracies_inferred" in m for m in metrics):
            series["task inferred"] = [m["accuracies_inferred"] for m in metrics]
        title = f"{config.name}: final accuracy per task over {num_seeds} seeds"
        plot_seeds(series, out / "seeds.png", title)
    return record


def _csv(summary: dict[str, dict[str, Any]], num_seeds: int) -> str:
    head = ["metric", "mean", "std", "min", "max", *(f"seed_{i}" for i in range(num_seeds))]
    rows = [
        [key, *(repr(s[k]) for k in ("mean", "std", "min", "max")), *map(repr, s["values"])]
        for key, s in summary.items()
    ]
    return "".join(",".join(row) + "\n" for row in [head, *rows])
