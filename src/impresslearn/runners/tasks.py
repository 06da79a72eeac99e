"""The ``stream`` recipe: learn a stream of tasks one after another, with task ids given.

For each task of the scenario: the method begins the task, :func:`impresslearn.train.fit` trains
the method's parameters, the method ends the task (its state is frozen from then on), and every
task seen so far is evaluated with its task id given (with ``eval.matrix=diagonal`` only the new
task, and all of them after the last). With ``eval.scenario`` GNs or GNu the tasks are then also
inferred from unlabelled test batches (:mod:`impresslearn.inference`, called once, with its
config whole).

The run folder is locked (one writer at a time) and gets ``config.json`` before any work starts,
a checkpoint snapshot after the preparation, then after every task the task's segment appended to
the checkpoint (:mod:`impresslearn.checkpoint`) and one ``events.jsonl`` line, and at the end the
result files (:mod:`~impresslearn.runners.results`). Nothing done per task besides training and
evaluation grows with the number of tasks. A stopped run resumes at its next task with the same
results; a finished one can be extended to more tasks.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from impresslearn.checkpoint import (
    CHECKPOINT_NAME,
    Additions,
    CheckpointWriter,
    RunState,
    checkpoint_tasks,
    restore_checkpoint,
)
from impresslearn.config import ExperimentConfig
from impresslearn.errors import ConfigError
from impresslearn.inference import calibrate_task, evaluate_without_task_ids
from impresslearn.metrics import AccuracyMatrix
from impresslearn.report import impressions_table, summary_table
from impresslearn.runners.context import RunContext
from impresslearn.runners.folder import RunFolderLock, start_run_folder
from impresslearn.runners.recipes import RunResult, register_recipe
from impresslearn.runners.results import finish
from impresslearn.runners.stream import Stream, build_stream
from impresslearn.runners.tensorboard import TensorBoardLog
from impresslearn.storage import append_line, atomic_write_text

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


class Checkpointer:
    """The checkpoint and ``events.jsonl`` of a stream's run folder, written by the writing
    process (nothing without a folder): :meth:`start` after the preparation (or :meth:`resume`),
    then :meth:`task` after every task, which appends what the task added."""

    def __init__(self, stream: Stream, out: Path | None) -> None:
        self.out = out if stream.runtime.is_writer else None
        self.writer = None
        if self.out is not None:
            shape = (stream.scenario.input_shape, stream.scenario.num_classes)
            self.writer = CheckpointWriter(
                self.out / CHECKPOINT_NAME, stream.config, stream.model, stream.method, shape
            )

    def _events(self, state: RunState) -> None:
        events = "".join(json.dumps(e) + "\n" for e in state.events)
        atomic_write_text(self.out / "events.jsonl", events)

    def start(self, state: RunState) -> None:
        if self.writer is not None:
            self.writer.start(state)
            self._events(state)

    def resume(self, state: RunState) -> None:
        if self.writer is not None:
            self.writer.resume(state)
            self._events(state)  # the log of exactly the tasks the checkpoint holds

    def task(self, state: RunState, task: int, added) -> int:
        """Append task ``task``; the bytes written (0 without a folder)."""
        if self.writer is None:
            return 0
        written = self.writer.task(state, task, added)
        append_line(self.out / "events.jsonl", json.dumps(state.events[task]))
        return written


@register_recipe("stream", report=stream_report, resumable=True, logs=True)
def run_stream(config: ExperimentConfig, ctx: RunContext) -> RunResult:
    """A stream of tasks learned one after another, task ids given (GG; GNs/GNu at test time)."""
    stream = build_stream(config, ctx.data_root, ctx.runtime, progress=ctx.progress)
    if ctx.out_dir is not None and ctx.runtime.is_writer:
        check_disk(ctx.out_dir, stream, resume=ctx.resume)
    return open_run(stream, ctx, partial(_run, resume=ctx.resume, overwrite=ctx.overwrite))


SEGMENT_OVERHEAD = 4096  # a task's segment header, matrix entries and event, with room to spare


def check_disk(out: Path, stream: Stream, *, resume: bool) -> None:
    """Refuse a run whose checkpoint cannot fit on the disk of ``out`` (its tasks' bytes as
    stored plus a segment's overhead each), before anything is written."""
    tasks = stream.num_tasks
    if resume:
        tasks -= checkpoint_tasks(out / CHECKPOINT_NAME)
    per_task = sum(stream.method.bytes_per_task().values()) + SEGMENT_OVERHEAD
    need = per_task * tasks
    existing = next(p for p in (out, *out.parents) if p.exists())
    usage = shutil.disk_usage(existing)
    if usage.total and need > usage.free:  # (a pseudo file system such as /proc has no size)
        free = usage.free
        raise ConfigError(
            f"{tasks:,} tasks would write about {need / 1e9:.2f} GB of checkpoint "
            f"({per_task:,} B per task) to {out}, more than the {free / 1e9:.2f} GB free on its "
            "disk: free some space, use fewer tasks (scenario.num_tasks), or choose another --out"
        )


def _run(stream: Stream, out: Path | None, *, resume: bool, overwrite: bool) -> RunResult:
    config, method, runtime = stream.config, stream.method, stream.runtime
    method.reserve(stream.num_tasks)  # checked to fit by build_stream; the disk by check_disk
    if resume:
        state = restore_checkpoint(out / CHECKPOINT_NAME, config, stream.model, method)
        log.info("resuming %s at task %d/%d", config.name, state.next_task + 1, stream.num_tasks)
        # a stream may have grown
        runtime.on_writer(lambda: atomic_write_text(out / "config.json", config.to_json()))
    elif out is not None:
        runtime.on_writer(lambda: start_run_folder(out, config, overwrite=overwrite))
    checkpoints = Checkpointer(stream, out)
    log.info(
        "%s: %d tasks of %s on %s (%s)",
        config.name,
        stream.num_tasks,
        config.scenario.name,
        config.scenario.dataset,
        runtime.device,
    )
    if resume:
        checkpoints.resume(state)
    else:
        start = time.perf_counter()
        method.prepare(stream.mask_trainer, stream.num_tasks)
        state = RunState(0, AccuracyMatrix(stream.num_tasks), [], [], time.perf_counter() - start)
        checkpoints.start(state)
    learn_tasks(stream, state, checkpoints)
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


def learn_tasks(
    stream: Stream,
    state: RunState,
    checkpoints: Checkpointer,
    on_task: Callable[[int, int], None] | None = None,
) -> None:
    """The task loop: learn every task from ``state.next_task`` on, evaluate, checkpoint each;
    then ``on_task(task, checkpoint bytes written)`` (``impresslearn bench stream`` times the
    loop with it)."""
    config, method, num_tasks = stream.config, stream.method, stream.num_tasks
    matrix = state.matrix
    additions = Additions(stream.model, method, state.calibration)
    for t in range(state.next_task, num_tasks):
        start = time.perf_counter()
        stats = stream.learn_task(t, config.train, f"task {t + 1}/{num_tasks}")
        train_seconds = time.perf_counter() - start
        evaluated = config.eval.evaluated_tasks(t, num_tasks, config.scenario.seed)
        eval_start = time.perf_counter()
        matrix.set_row(t, evaluated, stream.evaluate(evaluated))
        eval_seconds = time.perf_counter() - eval_start
        test = stream.scenario.test_data(t)
        reference_start = time.perf_counter()
        method.after_task(t, stream.mask_trainer, lambda test=test: stream.accuracy(test))
        reference_seconds = time.perf_counter() - reference_start
        if config.needs_calibration:  # the task's model is final now: calibrate it
            calibrate_task(config.inference, method, stream.scenario, t, state.calibration)
        added = additions.take(t, state.calibration)
        if stream.runtime.distributed:  # every process must have added the same
            stream.runtime.check_same(added.digest(), f"task {t}")
        cols, values = matrix.entries_of(t)
        event = {
            "task_id": t,
            "task_name": stream.scenario.task_name(t),
            "accuracy": matrix[t, t],
            "average_accuracy_seen": float(np.mean(values)),
            "accuracies": {str(j): float(v) for j, v in zip(cols, values, strict=True)},
            "final_loss": stats.final_loss if stats else None,
            "steps": stats.steps if stats else 0,
            "train_seconds": train_seconds,
            "eval_seconds": eval_seconds,
            # the method's own time for the task; comparisons (dedicated masks) apart
            "seconds": time.perf_counter() - start - reference_seconds,
            "reference_seconds": reference_seconds,
            "threads": torch.get_num_threads(),
        }
        state.task_seconds.append(event["seconds"])
        state.events.append(event)
        state.next_task = t + 1
        written = checkpoints.task(state, t, added)
        if on_task is not None:
            on_task(t, written)
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
