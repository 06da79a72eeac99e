"""Checkpoints: round trips bit for bit, one appended segment per task, resume after SIGKILL
(also between a segment and its manifest), format version 1 still read, clear errors for bad
files."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from impresslearn.backbones import build_backbone
from impresslearn.checkpoint import CHECKPOINT_NAME, RunState, restore_checkpoint
from impresslearn.checkpoint.files import Manifest, read_segments, read_snapshot, segments_path
from impresslearn.cli import main
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.errors import CheckpointError, ConfigError
from impresslearn.methods import build_method
from impresslearn.metrics import AccuracyMatrix
from impresslearn.runners import load_run, run_experiment
from impresslearn.runners.saved import evaluate_run

V1 = Path(__file__).parent / "data" / "checkpoint-v1"

SUPSUP = ["scenario.dataset=mnist_embedded", "scenario.num_tasks=3", "train.iterations=40"]
IMPRESS = [
    *SUPSUP,
    "scenario.num_tasks=4",
    "method.name=impresslearn",
    "method.num_impressions=2",
    "method.impressions.iterations=40",
    "train.lr=1e-2",
]


@pytest.mark.parametrize("overrides", [SUPSUP, IMPRESS], ids=["supsup", "impresslearn"])
def test_save_load_reproduces_logits_bit_for_bit(overrides, tmp_path):
    config = apply_overrides(ExperimentConfig(), overrides)
    result = run_experiment(config, None, tmp_path / "run")
    loaded = load_run(tmp_path / "run")
    x = result.scenario.test_data(0).prepared()[:300]
    for t in range(result.scenario.num_tasks):
        with torch.no_grad(), result.method.task_context(t):
            expected = result.method.model(x)
        assert torch.equal(loaded.logits(x, t), expected), f"task {t}"
    assert loaded.state.matrix == result.accuracies
    assert loaded.state.events == result_events(tmp_path / "run")


def result_events(run):
    return [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]


def saved_matrix(run) -> np.ndarray:
    metrics = json.loads((Path(run) / "metrics.json").read_text())
    return AccuracyMatrix.from_json(metrics["accuracy_matrix"]).dense()


def test_on_disk_bytes_per_task(tmp_path):
    supsup = run_experiment(apply_overrides(ExperimentConfig(), SUPSUP), None, tmp_path / "s")
    weights = 784 * 300 + 300 * 100 + 100 * 10
    assert supsup.metrics["bytes_per_task"]["mask"] == sum(
        (n + 7) // 8 for n in (784 * 300, 300 * 100, 100 * 10)
    )
    # measured growth: the packed mask plus about a thousand bytes of headers and the event
    assert weights / 8 < supsup.metrics["checkpoint_growth_per_task"] < weights / 8 + 2000
    # each task appends one segment: the checkpoint never rewrites what it holds
    sizes = [p.stat().st_size for p in (tmp_path / "s").glob("checkpoint.*")]
    assert sum(sizes) == supsup.metrics["checkpoint_bytes"]
    impress = run_experiment(
        apply_overrides(ExperimentConfig(), [*IMPRESS, "method.num_impressions=3"]),
        None,
        tmp_path / "i",
    )
    assert impress.metrics["bytes_per_task"]["coeffs"] == 3 * 3 * 4
    assert impress.metrics["checkpoint_growth_per_task"] < 1500


def _cli(args, cwd):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "impresslearn", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_sigkill_at_random_points_then_resume_matches_uninterrupted(tmp_path):
    overrides = [*SUPSUP, "scenario.num_tasks=4"]
    config = apply_overrides(ExperimentConfig(), overrides)
    reference = run_experiment(config, None).accuracy_matrix
    sets = [a for o in overrides for a in ("--set", o)]
    rng = random.Random(1234)
    for attempt in range(4):
        out = tmp_path / f"run{attempt}"
        proc = _cli(["run", "quickstart-supsup", *sets, "--out", str(out), "--quiet"], tmp_path)
        time.sleep(rng.uniform(2.0, 8.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if (out / CHECKPOINT_NAME).exists():
            load_run(out)  # never unreadable
            args = ["run", "--resume", str(out), "--quiet"]
        else:  # killed before the first checkpoint: start again
            args = ["run", "quickstart-supsup", *sets, "--out", str(out), "--overwrite", "--quiet"]
        finish = _cli(args, tmp_path)
        assert finish.wait(timeout=300) == 0, finish.stderr.read().decode()
        np.testing.assert_array_equal(saved_matrix(out), reference)
        assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


@pytest.fixture()
def saved_run(tmp_path):
    config = apply_overrides(ExperimentConfig(), [*SUPSUP, "scenario.num_tasks=2"])
    run_experiment(config, None, tmp_path / "run")
    return config, tmp_path / "run"


def test_truncated_and_corrupt_checkpoints_are_clear_errors(saved_run):
    _, run = saved_run
    path = run / CHECKPOINT_NAME
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_run(run)
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_run(run)
    path.unlink()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_run(run)


def test_unknown_format_version(saved_run):
    _, run = saved_run
    path = run / CHECKPOINT_NAME
    raw = path.read_bytes().replace(b'"format_version":"2"', b'"format_version":"9"')
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match="format version 9"):
        read_snapshot(path)


def _flip(path: Path, offset: int, count: int = 100) -> None:
    raw = bytearray(path.read_bytes())
    for i in range(offset, offset + count):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


def test_a_changed_byte_anywhere_is_an_error_not_a_different_model(saved_run, tmp_path):
    _, run = saved_run
    cases = {
        "snapshot data": (CHECKPOINT_NAME, -200, "corrupt"),
        "segment data": ("checkpoint.tasks", -300, "corrupt"),
        "segment header": ("checkpoint.tasks", 60, "corrupt"),
    }
    for name, (file, offset, message) in cases.items():
        copy = tmp_path / name.replace(" ", "-")
        shutil.copytree(run, copy)
        path = copy / file
        _flip(path, offset % path.stat().st_size, 20)
        with pytest.raises(CheckpointError, match=message):
            load_run(copy)
        assert main(["eval", str(copy), "--quiet"]) == 2
    # a header entry renamed in the snapshot (its JSON stays valid)
    copy = tmp_path / "renamed"
    shutil.copytree(run, copy)
    path = copy / CHECKPOINT_NAME
    path.write_bytes(path.read_bytes().replace(b'"prepare_seconds"', b'"prepare_secondz"'))
    with pytest.raises(CheckpointError, match="corrupt"):
        load_run(copy)
    # the segments cut short, and a snapshot from another run beside a manifest
    copy = tmp_path / "short"
    shutil.copytree(run, copy)
    tasks = segments_path(copy / CHECKPOINT_NAME)
    tasks.write_bytes(tasks.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_run(copy)
    other = tmp_path / "other"
    config = apply_overrides(ExperimentConfig(), [*SUPSUP, "scenario.num_tasks=2", "train.seed=3"])
    run_experiment(config, None, other)
    shutil.copy(other / CHECKPOINT_NAME, copy / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="does not belong to its manifest"):
        load_run(copy)


def test_a_kill_between_a_segment_and_its_manifest_resumes_to_the_same_run(tmp_path, monkeypatch):
    """The segment of task 2 is appended, then the process dies before the manifest counts it
    (simulated: the manifest write raises). The resumed run cuts the stray bytes off, learns task
    2 again and ends exactly as the uninterrupted run."""
    config = apply_overrides(ExperimentConfig(), [*SUPSUP, "scenario.num_tasks=4"])
    reference = run_experiment(config, None, tmp_path / "reference")
    out = tmp_path / "run"
    write = Manifest.write

    class Killed(BaseException):
        pass

    def dying_write(self, path):
        if self.segments == 3:  # tasks 0, 1 counted; task 2's segment is on disk
            raise Killed
        return write(self, path)

    monkeypatch.setattr(Manifest, "write", dying_write)
    with pytest.raises(Killed):
        run_experiment(config, None, out)
    monkeypatch.setattr(Manifest, "write", write)
    manifest = Manifest.read(out / CHECKPOINT_NAME)
    assert manifest.segments == 2
    assert segments_path(out / CHECKPOINT_NAME).stat().st_size > manifest.segment_bytes
    assert load_run(out).state.next_task == 2
    resumed = run_experiment(config, None, out, resume=True)
    assert resumed.accuracies == reference.accuracies
    # the measured growth per task is the uninterrupted run's (segments differ only in the
    # digits of their timings)
    growth = [r.metrics["checkpoint_growth_per_task"] for r in (resumed, reference)]
    assert abs(growth[0] - growth[1]) < 64, growth
    untimed = [{k: v for k, v in e.items() if "seconds" not in k} for e in result_events(out)]
    assert untimed == [
        {k: v for k, v in e.items() if "seconds" not in k} for e in result_events(reference.out_dir)
    ]
    x = reference.scenario.test_data(3).prepared()[:200]
    again, fresh = load_run(out), load_run(reference.out_dir)
    for t in range(4):
        assert torch.equal(again.logits(x, t), fresh.logits(x, t)), f"task {t}"
    # the checkpoint holds each task once, with the same contents as the uninterrupted run's
    # segments (their timings aside)
    ours = read_segments(out / CHECKPOINT_NAME, Manifest.read(out / CHECKPOINT_NAME))
    theirs = read_segments(
        reference.out_dir / CHECKPOINT_NAME, Manifest.read(reference.out_dir / CHECKPOINT_NAME)
    )
    assert [m["task"] for _, m, _ in ours] == ["0", "1", "2", "3"]
    for (a, meta_a, _), (b, meta_b, _) in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert (meta_a["task"], meta_a["added"]) == (meta_b["task"], meta_b["added"])


@pytest.mark.parametrize("name", ["supsup", "impress"])
def test_a_format_version_1_run_loads_and_resumes_converted(name, tmp_path):
    saved = V1 / name
    assert read_snapshot(saved / CHECKPOINT_NAME)[1]["format_version"] == "1"
    run = load_run(saved)
    accs = evaluate_run(run, None)
    metrics = json.loads((saved / "metrics.json").read_text())
    assert accs == metrics["final_accuracies"]
    # Resumed to one more task: converted to a snapshot, then a segment; equal to a fresh run.
    copy = tmp_path / name
    shutil.copytree(saved, copy)
    longer = apply_overrides(run.config, [f"scenario.num_tasks={len(accs) + 1}"])
    extended = run_experiment(longer, None, copy, resume=True)
    assert read_snapshot(copy / CHECKPOINT_NAME)[1]["format_version"] == "2"
    assert Manifest.read(copy / CHECKPOINT_NAME).segments == 1
    fresh = run_experiment(longer, None, tmp_path / "fresh")
    assert extended.accuracies == fresh.accuracies
    assert load_run(copy).state.matrix == fresh.accuracies


def test_other_backbone_seed_is_refused(saved_run, tmp_path):
    config, run = saved_run
    loaded = load_run(run)
    other = build_backbone(apply_overrides(config, ["backbone.seed=7"]).backbone, (1, 28, 28), 10)
    method = build_method(other, config.method)
    with pytest.raises(CheckpointError, match="fingerprint"):
        restore_checkpoint(run / CHECKPOINT_NAME, config, other, method)
    assert isinstance(loaded.state, RunState)


def test_resume_with_conflicting_config_is_refused(saved_run, capsys):
    _, run = saved_run
    assert main(["run", "--resume", str(run), "--set", "train.lr=0.5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "different config" in err and "train.lr" in err


def test_eval_command_matches_saved_accuracy(saved_run, capsys):
    _, run = saved_run
    assert main(["eval", str(run), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()[1:3]
    for line in lines:
        _, acc, saved = line.split()
        assert acc == saved


def test_eval_command_infers_tasks_of_a_saved_run(saved_run, capsys):
    _, run = saved_run
    argv = ["eval", str(run), "--quiet", "--set", "eval.scenario=GNu"]
    assert (
        main([*argv, "--set", "inference.procedure=binary", "--set", "inference.images=128"]) == 0
    )
    out = capsys.readouterr().out
    assert "GNu, binary on entropy" in out
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert [int(r[0]) for r in rows] == [0, 1]
    summary, saved = out.splitlines()[-2:]
    assert summary.startswith("average accuracy") and "task inference" in summary
    assert saved.startswith("saved: ") and saved.endswith(".json")
    # On a subset of each task's test images: one inferred batch of 128 per task.
    subset = ["--set", "inference.test_images=128", "--set", "inference.images=128"]
    assert main([*argv, "--set", "inference.procedure=binary", *subset]) == 0
    rows = [
        line.split() for line in capsys.readouterr().out.splitlines() if line[:5].strip().isdigit()
    ]
    assert all(float(r[2]) in (0.0, 100.0) for r in rows)  # one batch: all right or all wrong
    # Only evaluation settings may change.
    assert main(["eval", str(run), "--set", "train.lr=1"]) == 2
    assert "evaluation settings only" in capsys.readouterr().err


def test_resume_extends_a_finished_stream_like_a_longer_run(saved_run, tmp_path, capsys):
    config, run = saved_run  # 2 tasks, finished
    longer = apply_overrides(config, ["scenario.num_tasks=4"])
    reference = run_experiment(longer, None, tmp_path / "reference")
    assert main(["run", "--resume", str(run), "--set", "scenario.num_tasks=4", "--quiet"]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(saved_matrix(run), reference.accuracy_matrix)
    assert json.loads((run / "config.json").read_text())["scenario"]["num_tasks"] == 4
    extended, fresh = load_run(run), load_run(tmp_path / "reference")
    x = reference.scenario.test_data(3).prepared()[:200]
    for t in range(4):
        assert torch.equal(extended.logits(x, t), fresh.logits(x, t)), f"task {t}"
    # Shrinking is refused with a hint; so is changing anything else along with it.
    assert main(["run", "--resume", str(run), "--set", "scenario.num_tasks=3", "--quiet"]) == 2
    assert "can grow on resume, never shrink" in capsys.readouterr().err
    args = ["--set", "scenario.num_tasks=5", "--set", "train.lr=0.5"]
    assert main(["run", "--resume", str(run), *args, "--quiet"]) == 2
    assert "train.lr" in capsys.readouterr().err


def test_extending_a_diagonal_stream_matches_the_longer_run(tmp_path):
    config = apply_overrides(
        ExperimentConfig(), [*SUPSUP, "scenario.num_tasks=2", "eval.matrix=diagonal"]
    )
    run_experiment(config, None, tmp_path / "run")
    longer = apply_overrides(config, ["scenario.num_tasks=3"])
    extended = run_experiment(longer, None, tmp_path / "run", resume=True).accuracy_matrix
    np.testing.assert_array_equal(extended, run_experiment(longer, None).accuracy_matrix)
    assert np.isnan(extended[1, 0]) and not np.isnan(extended[2]).any()


def test_a_sampled_matrix_watches_forgetting_during_the_stream_and_finds_none(tmp_path):
    config = apply_overrides(
        ExperimentConfig(), [*SUPSUP, "scenario.num_tasks=6", "eval.matrix=sampled:2"]
    )
    result = run_experiment(config, None, tmp_path / "run")
    r = result.accuracies
    for t in range(5):
        cols, _ = r.entries_of(t)
        assert cols.tolist() == config.eval.evaluated_tasks(t, 6, config.scenario.seed)
        assert len(cols) == min(2, t) + 1 and cols[-1] == t
    assert r.entries_of(5)[0].tolist() == list(range(6))
    rows, cols, vals = r.entries()
    later = rows > cols
    assert later.sum() == 2 + 2 + 2 + 1 + 5  # rows 1..4 sampled, row 5 complete
    for i, j, v in zip(rows[later], cols[later], vals[later], strict=True):
        assert v == r[j, j], f"R[{i}, {j}] != R[{j}, {j}]"  # bit for bit: nothing forgotten
    assert result.metrics["forgetting"] == 0.0
    # the sample is fixed by the seed and the task alone, not by the stream's length
    assert config.eval.evaluated_tasks(4, 6, 0) == config.eval.evaluated_tasks(4, 2500, 0)
    assert config.eval.evaluated_tasks(4, 6, 0) != config.eval.evaluated_tasks(4, 6, 1) or (
        config.eval.evaluated_tasks(7, 9, 0) != config.eval.evaluated_tasks(7, 9, 1)
    )
    csv = (tmp_path / "run" / "accuracy_matrix.csv").read_text().splitlines()
    assert csv[0] == "after_task,task,task_name,accuracy" and len(csv) == 1 + r.num_entries
    with pytest.raises(ConfigError, match="sampled:K"):
        apply_overrides(config, ["eval.matrix=sampled:0"])


def _tensor_ranges(raw: bytes, base: int = 0) -> dict[str, tuple[int, int]]:
    """Byte ranges of each tensor's data in a safetensors blob at ``base`` of a file."""
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    start = base + 8 + size
    return {
        k: (start + v["data_offsets"][0], start + v["data_offsets"][1])
        for k, v in header.items()
        if k != "__metadata__" and v["data_offsets"][1] > v["data_offsets"][0]
    }


def _segment_ranges(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of every segment's payload in checkpoint.tasks."""
    out, offset = [], 0
    while offset < len(raw):
        size = int.from_bytes(raw[offset + 8 : offset + 16], "little")
        out.append((offset + 48, offset + 48 + size))
        offset += 48 + size
    return out


def _one_of_each_kind(ranges: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int]]:
    kinds: dict[str, str] = {}
    for name in sorted(ranges):
        kinds.setdefault(name.split(".")[0], name)
    return {name: ranges[name] for name in kinds.values()}


def _flipped_bit(path: Path, at: int):
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0x01
    return raw


KINDS_RUNS = {
    "supsup": SUPSUP[:1] + ["scenario.num_tasks=2", "train.iterations=5"],
    # a residual backbone: batch-norm statistics per task (norm.*), stored coefficients (method.*)
    "impresslearn-resnet": [
        "scenario.dataset=mnist_embedded",
        "backbone.name=gem_resnet18",
        "scenario.num_tasks=2",
        "train.iterations=2",
        "train.batch_size=16",
        "eval.matrix=diagonal",
        "method.name=impresslearn",
        "method.num_impressions=1",
        "method.impressions.iterations=2",
        "method.impressions.batch_size=16",
        "method.dedicated_masks=false",
    ],
}


@pytest.mark.parametrize("name", list(KINDS_RUNS))
def test_one_flipped_bit_in_any_kind_of_tensor_is_named(name, tmp_path):
    """One bit flipped in a tensor of each kind (masks, accuracy matrix, batch-norm statistics,
    the method's coefficients), in the snapshot and in every task's segment: loading names the
    file, the task and the tensor, and nothing runs from it."""
    run = tmp_path / "run"
    run_experiment(apply_overrides(ExperimentConfig(), KINDS_RUNS[name]), None, run)
    snapshot, tasks = run / CHECKPOINT_NAME, segments_path(run / CHECKPOINT_NAME)
    seen = set()
    for tensor, (start, end) in _one_of_each_kind(_tensor_ranges(snapshot.read_bytes())).items():
        original = snapshot.read_bytes()
        snapshot.write_bytes(_flipped_bit(snapshot, (start + end) // 2))
        message = rf"checkpoint {snapshot} is corrupt: tensor {re.escape(tensor)} does not match"
        with pytest.raises(CheckpointError, match=message):
            load_run(run)
        with pytest.raises(CheckpointError, match=message):
            run_experiment(
                apply_overrides(ExperimentConfig(), KINDS_RUNS[name]), None, run, resume=True
            )
        snapshot.write_bytes(original)
        seen.add(tensor.split(".")[0])
    raw = tasks.read_bytes()
    for k, (p0, p1) in enumerate(_segment_ranges(raw)):
        for tensor, (start, end) in _one_of_each_kind(_tensor_ranges(raw[p0:p1], p0)).items():
            tasks.write_bytes(_flipped_bit(tasks, (start + end) // 2))
            message = rf"segment {k} \(byte \d+\), task {k}, is corrupt: tensor {re.escape(tensor)}"
            with pytest.raises(CheckpointError, match=message):
                load_run(run)
            assert main(["eval", str(run), "--quiet"]) == 2
            tasks.write_bytes(raw)
            seen.add(tensor.split(".")[0])
    expected = {"bank", "matrix"} | ({"norm", "method"} if name != "supsup" else set())
    assert seen == expected
    load_run(run)  # restored: intact again


def test_a_changed_metadata_entry_is_named_as_such(saved_run):
    _, run = saved_run
    snapshot, tasks = run / CHECKPOINT_NAME, segments_path(run / CHECKPOINT_NAME)
    original = snapshot.read_bytes()
    snapshot.write_bytes(original.replace(b'"next_task":"0"', b'"next_task":"1"'))
    with pytest.raises(CheckpointError, match=r"corrupt: its metadata \(the header"):
        load_run(run)
    snapshot.write_bytes(original)
    raw = tasks.read_bytes()
    assert raw.count(b'"task_name') >= 1
    tasks.write_bytes(raw.replace(b'\\"task_name', b'\\"task_namf', 1))
    with pytest.raises(CheckpointError, match=r"segment 0 .*task 0, is corrupt: its metadata"):
        load_run(run)


def test_result_files_that_commands_read_are_checked(saved_run, tmp_path, capsys):
    """metrics.json and saved evaluations carry their own SHA-256: compare refuses an edited
    one instead of showing numbers the run never produced."""
    _, run = saved_run
    assert main(["compare", str(run), str(run)]) == 0
    metrics = run / "metrics.json"
    original = metrics.read_text()
    edited = json.loads(original)
    edited["average_accuracy"] = 0.99
    metrics.write_text(json.dumps(edited))
    capsys.readouterr()
    assert main(["compare", str(run), str(run)]) == 2
    assert "metrics.json was changed after impresslearn wrote it" in capsys.readouterr().err
    metrics.write_text(original)
    assert main(["eval", str(run), "--quiet", "--set", "eval.batch_size=500"]) == 0
    (saved,) = (run / "evaluations").glob("*.json")
    saved.write_text(saved.read_text().replace('"finished": true', '"finished": false'))
    assert main(["compare", str(run)]) == 2
    assert f"{saved.name} was changed after" in capsys.readouterr().err
