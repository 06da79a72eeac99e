"""Checkpoints: round trips bit for bit, resume after SIGKILL, and clear errors for bad files."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from impresslearn.backbones import build_backbone
from impresslearn.checkpoint import (
    CHECKPOINT_NAME,
    RunState,
    read_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from impresslearn.cli import main
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.errors import CheckpointError
from impresslearn.methods import build_method
from impresslearn.runners import load_run, run_experiment

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
    np.testing.assert_array_equal(loaded.state.matrix, result.accuracy_matrix)


def test_on_disk_bytes_per_task(tmp_path):
    supsup = run_experiment(apply_overrides(ExperimentConfig(), SUPSUP), None, tmp_path / "s")
    weights = 784 * 300 + 300 * 100 + 100 * 10
    assert supsup.metrics["bytes_per_task"]["mask"] == sum(
        (n + 7) // 8 for n in (784 * 300, 300 * 100, 100 * 10)
    )
    # measured file growth: the packed mask plus a few hundred bytes of headers and events
    assert weights / 8 < supsup.metrics["checkpoint_growth_per_task"] < weights / 8 + 2000
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
            read_checkpoint(out / CHECKPOINT_NAME)  # never unreadable
            args = ["run", "--resume", str(out), "--quiet"]
        else:  # killed before the first checkpoint: start again
            args = ["run", "quickstart-supsup", *sets, "--out", str(out), "--overwrite", "--quiet"]
        finish = _cli(args, tmp_path)
        assert finish.wait(timeout=300) == 0, finish.stderr.read().decode()
        metrics = json.loads((out / "metrics.json").read_text())
        np.testing.assert_array_equal(np.array(metrics["accuracy_matrix"], dtype=float), reference)
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


def test_unknown_format_version(saved_run, tmp_path):
    config, run = saved_run
    loaded = load_run(run)
    path = tmp_path / "v.safetensors"
    save_checkpoint(path, config, loaded.model, loaded.method, loaded.state)
    raw = path.read_bytes().replace(b'"format_version":"1"', b'"format_version":"9"')
    path.write_bytes(raw)
    with pytest.raises(CheckpointError, match="format version 9"):
        read_checkpoint(path)


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
    summary = out.splitlines()[-1]
    assert summary.startswith("average accuracy") and "task inference" in summary
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
    metrics = json.loads((run / "metrics.json").read_text())
    np.testing.assert_array_equal(
        np.array(metrics["accuracy_matrix"], dtype=float), reference.accuracy_matrix
    )
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
