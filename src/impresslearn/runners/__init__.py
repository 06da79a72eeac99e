"""Runners: where experiments execute. One registry of recipes, one run context.

* :mod:`~impresslearn.runners.recipes`: the experiment kinds (:data:`RECIPES`,
  :func:`register_recipe`) and the one entry point :func:`run` ``(config, ctx) -> RunResult``;
* :mod:`~impresslearn.runners.context`: :class:`RunContext`, where a run executes (runtime: device,
  precision, process group; data root; run folder; progress; logging), built once;
* :mod:`~impresslearn.runners.stream`: what a run of a stream is made of (:class:`Stream`: the
  scenario, the backbone, the method; the one loss and the one way a task is learned);
* the recipes: :mod:`~impresslearn.runners.tasks` (``stream``), :mod:`~impresslearn.runners.nns`
  (``nns``), :mod:`~impresslearn.runners.sweep` (``sweep``), :mod:`~impresslearn.runners.frontier`
  (``frontier``), :mod:`~impresslearn.runners.adapt` (``adapt``), the last three sharing
  :mod:`~impresslearn.runners.grids`; :mod:`~impresslearn.runners.seeds` wraps any of them in repeats over seeds;
* :mod:`~impresslearn.runners.results`: a stream's metrics and result files;
* :mod:`~impresslearn.runners.saved`: rebuilding and evaluating a saved run;
* :mod:`~impresslearn.runners.folder`: the run folder and its one-writer lock.
"""

from pathlib import Path

import torch

from impresslearn.data import existing_root

# The recipe modules register their kinds on import.
from impresslearn.runners import adapt, frontier, nns, sweep, tasks  # noqa: F401
from impresslearn.runners.context import RunContext
from impresslearn.runners.folder import RunFolderBusy, RunFolderLock
from impresslearn.runners.recipes import (
    RECIPES,
    Recipe,
    RunResult,
    check_experiment,
    register_recipe,
    run,
)
from impresslearn.runners.saved import (
    LoadedRun,
    evaluate_run,
    evaluate_run_inferred,
    load_config_file,
    load_evaluations,
    load_run,
    save_evaluation,
)
from impresslearn.runners.seeds import resume_seeds, run_seeds
from impresslearn.runners.stream import Stream, build_stream


def run_experiment(
    config,
    data_root: Path | None = None,
    out_dir: Path | None = None,
    *,
    overwrite: bool = False,
    resume: bool = False,
    progress: bool = False,
    device: str | torch.device = "auto",
    precision: str = "fp32",
    log: str | None = None,
    threads: str | int | None = None,
    workers: str | int = "auto",
) -> RunResult:
    """Run ``config`` (of any kind) with a context built from these arguments:
    ``run(config, RunContext.create(...))``. With ``out_dir`` the run folder is written as the
    run goes (a task stream checkpoints after every task; ``resume`` continues it at its next
    task, with the same results as a run never interrupted, on any device). A ``data_root``
    given must be an existing folder (a DataError otherwise, as ``--data-root`` on the command
    line); None searches only the system-wide data folders and the embedded data. ``threads``:
    ``auto`` or a count of torch intra-op threads to set (None: torch's setting is kept);
    ``workers``: processes decoding a streamed image folder (``auto`` or a count)."""
    if data_root is not None:
        data_root = existing_root(Path(data_root), "the data_root argument")
    ctx = RunContext.create(
        data_root,
        out_dir,
        device=device,
        precision=precision,
        overwrite=overwrite,
        resume=resume,
        progress=progress,
        log=log,
        threads=threads,
        workers=workers,
    )
    return run(config, ctx)


__all__ = [
    "RECIPES",
    "LoadedRun",
    "Recipe",
    "RunContext",
    "RunFolderBusy",
    "RunFolderLock",
    "RunResult",
    "Stream",
    "build_stream",
    "check_experiment",
    "evaluate_run",
    "evaluate_run_inferred",
    "load_config_file",
    "load_evaluations",
    "load_run",
    "save_evaluation",
    "register_recipe",
    "resume_seeds",
    "run",
    "run_experiment",
    "run_seeds",
]
