"""The run folder has one writer at a time: an OS lock that a killed process never leaves behind."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from impresslearn.cli import main
from impresslearn.runners import RunFolderBusy, RunFolderLock
from impresslearn.runners.folder import LOCK_NAME

TINY = ["--set", "scenario.dataset=mnist_embedded", "--set", "train.iterations=20"]
SLOW = ["--set", "scenario.dataset=mnist_embedded", "--set", "train.iterations=1500"]


def test_a_second_lock_on_a_folder_is_refused_until_released(tmp_path):
    first = RunFolderLock(tmp_path / "run").acquire()
    with pytest.raises(RunFolderBusy, match=f"{tmp_path / 'run'}.*process {os.getpid()}"):
        RunFolderLock(tmp_path / "run").acquire()
    first.release()
    with RunFolderLock(tmp_path / "run") as again:
        assert again.held
    assert not again.held


def _wait_for_lock(folder, pid, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if (folder / LOCK_NAME).read_text().strip() == str(pid):
                return
        except FileNotFoundError:
            pass
        time.sleep(0.1)
    raise AssertionError("the writer never took the lock")


def test_second_resume_is_refused_and_a_killed_writer_leaves_no_lock(tmp_path, capsys):
    run = tmp_path / "run"
    assert (
        main(
            [
                "run",
                "quickstart-supsup",
                *SLOW,
                "--set",
                "scenario.num_tasks=1",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    # A long resume (a stream extended to many slow tasks) holds the folder.
    writer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "impresslearn",
            "run",
            "--resume",
            str(run),
            "--quiet",
            "--set",
            "scenario.num_tasks=4",
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_for_lock(run, writer.pid)
        capsys.readouterr()
        code = main(["run", "--resume", str(run), "--quiet", "--set", "scenario.num_tasks=4"])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1
        assert str(run) in err and f"process {writer.pid}" in err
        assert writer.poll() is None, "the first writer must be unaffected"
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    # SIGKILL released the lock: the folder resumes without any clean-up.
    assert main(["run", "--resume", str(run), "--quiet", "--set", "scenario.num_tasks=4"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_tasks"] == 4 and metrics["forgetting"] == 0


def test_overwrite_keeps_the_lock_file_and_refuses_a_busy_folder(tmp_path, capsys):
    run = tmp_path / "run"
    with RunFolderLock(run):
        code = main(
            ["run", "quickstart-supsup", *TINY, "--out", str(run), "--overwrite", "--quiet"]
        )
        assert code == 2 and "being written by another" in capsys.readouterr().err
        assert not (run / "config.json").exists()


def test_the_next_writer_removes_temp_files_a_killed_writer_left(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".events.jsonl.abc123.tmp").write_text("half")
    (run / "keep.txt").write_text("not ours to remove")
    with RunFolderLock(run):
        assert not list(run.glob(".*.tmp"))
    assert (run / "keep.txt").exists()
