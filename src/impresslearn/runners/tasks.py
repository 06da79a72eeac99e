"""The ``stream`` recipe: learn a stream of tasks one after another, with task ids given.

For each task of the scenario: the method begins the task, :func:`impresslearn.train.fit` trains
the method's parameters, the method ends the task (its state is frozen from then on), and every
task seen so far is evaluated with its task id given (with ``eval.matrix=diagonal`` only the new
task, and all of them after the last). With ``eval.scenario`` GNs or GNu the tasks are then also
inferred from unlabelled test batches (:mod:`impresslearn.inference`, called once, with its
config whole).

The run folder is locked (one writer at a time) and gets ``config.json`` before any work starts,
a checkpoint after the preparation and after every task with one ``events.jsonl`` line per
finished task, and at the end the result files (:mod:`~impresslearn.runners.results`). A stopped
run resumes at its next task with the same results; a finished one can be extended to more
tasks.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np

from impresslearn.checkpoint import CHECKPOINT_NAME, RunState, restore_checkpoint, save_checkpoint
from impresslearn.config import ExperimentConfig
from impresslearn.inference import calibrate_task, evaluate_without_task_ids
from impresslearn.metrics import matrix_to_lists
from impresslearn.report import impressions_table, summary_table
from impresslearn.runners.context import RunContext
from impresslearn.runners.folder import RunFolderLock, start_run_folder
from impresslearn.runners.recipes import RunResult, register_recipe
from impresslearn.runners.results import finish
from impresslearn.runners.stream import Stream, build_stream
from impresslearn.runners.tensorboard import TensorBoardLog
from impresslearn.storage import atomic_write_text

log = logging.getLogger(__name__)


def stream_report(metrics: dict) -> str:
    """The summary table, and ImpressLearn's per-task comparison where it has one."""
    per_task = impressions_table(metrics)
    return summary_table(metrics) + ("\n" + per_task if per_task else "")


def open_run(
    stream: Stream,
    ctx: RunContext,
    body: Callable[[Stream, Path | None], RunResult],
) -> RunResult:
    """Run ``body(stream, folder)`` with the context's run folder locked by the writing process
    (and TensorBoard event files opened there with ``--log tensorboard``); without a folder,
    ``body(stream, None)``."""
    stream.runtime.reset_peak_memory()
    if ctx.out_dir is None:
        return body(stream, None)
    lock = RunFolderLock(ctx.out_dir)
    try:
        stream.runtime.on_writer(lock.acquire)  # one writer per folder: rank 0's lock
        if ctx.log is not None and stream.runtime.is_writer:
            stream.log = TensorBoardLog(ctx.out_dir)
        return body(stream, ctx.out_dir)
    finally:
        lock.release()


def checkpointer(stream: Stream, out: Path | None) -> Callable[[RunState], None]:
    """``save(state)``: the checkpoint and the event log after the preparation and every task
    (by the writing process; nothing without a folder)."""
    config, scenario, runtime = stream.config, stream.scenario, stream.runtime

    def save(state: RunState) -> None:
        if out is not None and runtime.is_writer:
            shape = (scenario.input_shape, scenario.num_classes)
            size = save_checkpoint(
                out / CHECKPOINT_NAME, config, stream.model, stream.method, state, shape
            )
            state.checkpoint_sizes.append(size)
            events = "".join(json.dumps(e) + "\n" for e in state.events)
            atomic_write_text(out / "events.jsonl", events)

    return save


@register_recipe("stream", report=stream_report, resumable=True, logs=True)
def run_stream(config: ExperimentConfig, ctx: RunContext) -> RunResult:
    """A stream of tasks learned one after another, task ids given (GG; GNs/GNu at test time)."""
    stream = build_stream(config, ctx.data_root, ctx.runtime, progress=ctx.progress)
    return open_run(stream, ctx, partial(_run, resume=ctx.resume, overwrite=ctx.overwrite))


def _run(stream: Stream, out: Path | None, *, resume: bool, overwrite: bool) -> RunResult:
    config, method, runtime = stream.config, stream.method, stream.runtime
    if resume:
        state = restore_checkpoint(out / CHECKPOINT_NAME, config, stream.model, method)
        log.info("resuming %s at task %d/%d", config.name, state.next_task + 1, stream.num_tasks)
        # a stream may have grown
        runtime.on_writer(lambda: atomic_write_text(out / "config.json", config.to_json()))
    elif out is not None:
        runtime.on_writer(lambda: start_run_folder(out, config, overwrite=overwrite))
    save = checkpointer(stream, out)
    log.info(
        "%s: %d tasks of %s on %s (%s)",
        config.name,
        stream.num_tasks,
        config.scenario.name,
        config.scenario.dataset,
        runtime.device,
    )
    if not resume:
        start = time.perf_counter()
        method.prepare(stream.mask_trainer, stream.num_tasks)
        matrix = np.full((stream.num_tasks, stream.num_tasks), np.nan)
        state = RunState(0, matrix, [], [], time.perf_counter() - start)
        save(state)
    learn_tasks(stream, state, save)
    extra = {}
    if config.eval.infers_tasks:
        extra = evaluate_without_task_ids(
            config.inference,
            config.eval.scenario,
            method,
            stream.scenario,
            predicted=stream.predicted_outputs,
            progress=stream.progress,
            runtime=runtime,
            calibration=state.calibration,
        )
    return finish(stream, state, extra, out)


def learn_tasks(stream: Stream, state: RunState, save: Callable[[RunState], None]) -> None:
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
        if config.needs_calibration:  # the task's model is final now: calibrate it
            calibrate_task(config.inference, method, stream.scenario, t, state.calibration)
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
