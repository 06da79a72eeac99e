"""Faults of the environment (a full disk, a quota, permissions, a read-only or failing file
system, a data root that disappears) are one line each, saying what to do; a run stopped by one
keeps its last complete checkpoint and, resumed, ends exactly as a run never stopped."""

import errno
import shutil

import pytest

from impresslearn.cli import main
from impresslearn.runners import load_run

TINY = ["--set", "scenario.num_tasks=3", "--set", "train.iterations=20", "--quiet"]
# where a write fails, and the function that does it
WRITES = {
    "segment": "impresslearn.checkpoint.append_segment",
    "manifest": "impresslearn.checkpoint.files.atomic_write_json",
    "events": "impresslearn.runners.tasks.append_line",
}
FAULTS = [
    (errno.ENOSPC, "segment", "no space left on the device"),
    (errno.EDQUOT, "manifest", "no space left on the device"),
    (errno.EACCES, "segment", "Permission denied"),
    (errno.EROFS, "manifest", "Read-only file system"),
    (errno.EIO, "events", "Input/output error"),
]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run = tmp_path_factory.mktemp("reference") / "run"
    assert main(["run", "quickstart-supsup", *TINY, "--out", str(run)]) == 0
    return load_run(run).state.matrix


@pytest.mark.parametrize(("code", "where", "message"), FAULTS)
def test_a_fault_mid_run_is_one_line_and_the_run_resumes_exactly(
    code, where, message, reference, tmp_path, capsys, monkeypatch
):
    import os

    module, name = WRITES[where].rsplit(".", 1)
    real, calls = getattr(__import__(module, fromlist=[name]), name), []

    def failing(*args, **kwargs):
        calls.append(args)
        # the manifest is written at the start too: fail the write of task 1 in each place
        if len(calls) == (3 if where == "manifest" else 2):
            raise OSError(code, os.strerror(code), str(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(WRITES[where], failing)
    run = tmp_path / "run"
    assert main(["run", "quickstart-supsup", *TINY, "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("impresslearn: error: ") and err.count("\n") == 1
    assert message in err and "impresslearn run --resume DIR" in err
    monkeypatch.undo()
    kept = load_run(run).state.next_task
    assert kept in (1, 2)  # task 0 whole; task 1 too when only its event line failed
    assert main(["run", "--resume", str(run), "--quiet"]) == 0
    resumed = load_run(run).state.matrix
    assert resumed.entries()[2].tolist() == reference.entries()[2].tolist()  # bit for bit


def test_an_unreadable_checkpoint_is_one_line(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["run", "quickstart-supsup", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    from pathlib import Path

    real = Path.read_bytes

    def failing(self):
        if self.name == "checkpoint.safetensors":
            raise OSError(errno.EIO, "Input/output error", str(self))
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", failing)
    assert main(["eval", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "cannot read checkpoint" in err and "Input/output error" in err
    assert err.count("\n") == 1


def test_a_data_root_lost_mid_run_or_before_eval(shared_data_root, tmp_path, capsys, monkeypatch):
    """The data of a stream is read once, when it starts: a data root lost after that does not
    stop it. Evaluating the run later without it is a one-line error naming where it looked."""
    import impresslearn.runners.stream as stream

    root = tmp_path / "data"
    shutil.copytree(shared_data_root / "mnist", root / "mnist")
    real = stream.load_dataset

    def load_then_lose(*args, **kwargs):
        data = real(*args, **kwargs)
        shutil.rmtree(root)
        return data

    monkeypatch.setattr(stream, "load_dataset", load_then_lose)
    run = tmp_path / "run"
    argv = ["run", "supsup-permuted-mnist", *TINY, "--data-root", str(tmp_path / "data")]
    assert main([*argv, "--set", "scenario.num_tasks=2", "--out", str(run)]) == 0
    assert not root.exists()
    monkeypatch.undo()
    capsys.readouterr()
    root.mkdir()
    assert main(["eval", str(run), "--data-root", str(root), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "MNIST not found" in err and str(root) in err and err.count("\n") == 1
