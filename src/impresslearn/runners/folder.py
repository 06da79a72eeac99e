"""The run folder: one writer at a time, config first, results written atomically.

A run folder is locked while a process writes it: an exclusive ``flock`` on ``DIR/.lock``, held
for as long as the process holds the folder open. The operating system releases it when the
process ends, however it ends (even by SIGKILL), so a stopped run never leaves a stale lock and
resumes without any clean-up (the next writer removes the temp file of a write the kill cut short).
A second writer on the same folder is refused with a one-line error.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType

from impresslearn.config import ExperimentConfig
from impresslearn.errors import ConfigError
from impresslearn.runtime import Runtime
from impresslearn.storage import atomic_write_text

LOCK_NAME = ".lock"
# Files a run writes; --overwrite removes them (and nothing else) before the new run starts.
RUN_FILES = (
    "events.jsonl",
    "metrics.json",
    "accuracy_matrix.csv",
    "accuracy_matrix.png",
    "checkpoint.safetensors",
    "checkpoint.tasks",
    "checkpoint.json",
    "sweep.csv",
    "sweep.png",
    "frontier.csv",
    "frontier.png",
    "per_task_accuracy.png",
)


class RunFolderBusy(ConfigError):
    """Another process is writing the run folder."""


class RunFolderLock:
    """An exclusive OS lock on a run folder (created if missing), held until :meth:`release`.

    Locks are per open file: two locks on one folder conflict even inside one process.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._fd: int | None = None

    def acquire(self) -> RunFolderLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise ConfigError(f"output path {self.folder} exists and is not a folder")
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                by = f" (process {holder})" if holder else ""
                raise RunFolderBusy(
                    f"run folder {self.folder} is being written by another impresslearn "
                    f"process{by}; wait for it to finish, or choose another folder"
                ) from None
            raise
        # Who holds it, for the message a second writer gets (the lock itself is the flock).
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        # A writer killed in the middle of an atomic write leaves its temp file behind; the folder
        # is ours alone now, so no other process can be writing one.
        for stale in self.folder.glob(".*.tmp"):
            stale.unlink(missing_ok=True)
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> RunFolderLock:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def start_run_folder(out_dir: Path, config: ExperimentConfig, *, overwrite: bool) -> None:
    """Write ``config.json`` into a (locked) run folder; refuse a folder holding another run
    unless ``overwrite``, which first removes that run's files."""
    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists() and not overwrite:
        raise ConfigError(
            f"output folder {out_dir} already holds a run (config.json); choose another --out or "
            "pass --overwrite to replace it"
        )
    if overwrite:
        for name in RUN_FILES:
            (out_dir / name).unlink(missing_ok=True)
        shutil.rmtree(out_dir / "tensorboard", ignore_errors=True)
        shutil.rmtree(out_dir / "evaluations", ignore_errors=True)  # of the run it replaces
    atomic_write_text(out_dir / "config.json", config.to_json())


@contextmanager
def started_folder(
    group: Runtime, out_dir: Path, config: ExperimentConfig, *, overwrite: bool
) -> Iterator[Path]:
    """For the block, ``out_dir`` locked and started for ``config`` (``config.json`` written) by
    the writing process of ``group``; every process raises its error if that failed. The lock is
    released on exit."""
    out = Path(out_dir)
    lock = RunFolderLock(out)

    def start() -> None:
        lock.acquire()
        start_run_folder(out, config, overwrite=overwrite)

    try:
        group.on_writer(start)
        yield out
    finally:
        lock.release()
