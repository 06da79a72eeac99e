"""Runners: where runs execute. One home for the per-task loop and everything around it.

* :mod:`~impresslearn.runners.stream`: one run of a task stream (set-up, task loop, finish);
* :mod:`~impresslearn.runners.nns`: the NNs stream, where the learner detects new tasks itself;
* :mod:`~impresslearn.runners.sweep`: ImpressLearn's sweep over the number and kind of impressions;
* :mod:`~impresslearn.runners.seeds`: repeats of one run over seeds;
* :mod:`~impresslearn.runners.saved`: rebuilding and evaluating a saved run;
* :mod:`~impresslearn.runners.folder`: the run folder and its one-writer lock.

Each runs on a :class:`~impresslearn.runtime.Runtime` (device and precision), which is not part
of the experiment's config.
"""

from impresslearn.runners.folder import RunFolderBusy, RunFolderLock
from impresslearn.runners.saved import (
    LoadedRun,
    evaluate_run,
    evaluate_run_inferred,
    load_config_file,
    load_run,
)
from impresslearn.runners.stream import RunResult, Stream, build_stream, run_experiment

__all__ = [
    "LoadedRun",
    "RunFolderBusy",
    "RunFolderLock",
    "RunResult",
    "Stream",
    "build_stream",
    "evaluate_run",
    "evaluate_run_inferred",
    "load_config_file",
    "load_run",
    "run_experiment",
]
