"""Repeats over seeds (seeds.py, ``impresslearn run --seeds N``): what is shifted, the summary,
resuming, and bad input."""

import json
import shutil

import numpy as np
import pytest

from impresslearn.cli import main
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.errors import ConfigError
from impresslearn.metrics import AccuracyMatrix
from impresslearn.presets import get_preset
from impresslearn.runners import RunContext, run_experiment
from impresslearn.runners.seeds import run_seeds, seeded, summarize

QUICK = ["scenario.dataset=mnist_embedded", "scenario.num_tasks=2", "train.iterations=30"]


def test_seeded_shifts_every_seed_and_nothing_else():
    config = apply_overrides(ExperimentConfig(), ["scenario.seed=3", "train.seed=5"])
    shifted = seeded(config, 2)
    assert (shifted.scenario.seed, shifted.backbone.seed) == (5, 2)
    assert (shifted.method.seed, shifted.train.seed) == (2, 7)
    back = seeded(shifted, -2)
    assert back == config
    assert seeded(config, 0) == config


def test_summary_statistics():
    runs = [
        {"average_accuracy": 0.9, "forgetting": 0.0, "bytes_per_task": {"total": 10}},
        {"average_accuracy": 0.8, "forgetting": 0.0, "bytes_per_task": {"total": 10}},
    ]
    s = summarize(runs)
    assert s["average_accuracy"]["mean"] == pytest.approx(0.85)
    assert s["average_accuracy"]["std"] == pytest.approx(np.std([0.9, 0.8], ddof=1))
    assert s["bytes_per_task"] == {"mean": 10, "std": 0, "min": 10, "max": 10, "values": [10, 10]}
    assert "task_inference_accuracy" not in s  # only metrics every run reports


def test_repeats_are_independent_runs_and_repeat_zero_is_the_plain_run(tmp_path, capsys):
    config = apply_overrides(get_preset("quickstart-supsup"), QUICK)
    out = tmp_path / "seeds"
    argv = ["run", "quickstart-supsup", *[a for o in QUICK for a in ("--set", o)]]
    assert main([*argv, "--seeds", "3", "--out", str(out), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "quickstart-supsup: 3 repeats" in table and "average accuracy" in table
    record = json.loads((out / "seeds.json").read_text())
    assert record["finished"] and record["runs"] == ["seed-0", "seed-1", "seed-2"]
    matrices = [
        AccuracyMatrix.from_json(
            json.loads((out / r / "metrics.json").read_text())["accuracy_matrix"]
        ).dense()
        for r in record["runs"]
    ]
    plain = run_experiment(config, None).accuracy_matrix
    np.testing.assert_array_equal(matrices[0], plain)
    assert not np.array_equal(matrices[0], matrices[1])  # other permutations, weights, batches
    accs = [float(np.nanmean(m[-1])) for m in matrices]
    assert record["summary"]["average_accuracy"]["values"] == pytest.approx(accs)
    assert json.loads((out / "seed-2" / "config.json").read_text())["backbone"]["seed"] == 2
    assert (out / "seeds.png").stat().st_size > 1000
    csv = (out / "seeds.csv").read_text().splitlines()
    assert csv[0] == "metric,mean,std,min,max,seed_0,seed_1,seed_2"
    row = next(line for line in csv if line.startswith("average_accuracy,")).split(",")
    assert [float(v) for v in row[5:]] == pytest.approx(accs)

    # Interrupted after the first repeat (the others' results gone): resume finishes them alike.
    shutil.rmtree(out / "seed-2")
    (out / "seed-1" / "metrics.json").unlink()
    assert main(["run", "--resume", str(out), "--quiet"]) == 0
    capsys.readouterr()
    resumed = json.loads((out / "seeds.json").read_text())["summary"]
    for key in ("average_accuracy", "forgetting", "bytes_per_task"):  # not the timings
        assert resumed[key] == record["summary"][key]
    assert main(["run", "--resume", str(out), "--set", "train.lr=1", "--quiet"]) == 2
    assert "drop the preset, --set and --seeds" in capsys.readouterr().err

    # eval of a folder of repeats re-evaluates each one: the same numbers as the runs saved.
    assert main(["eval", str(out), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:3]] == ["seed-0", "seed-1", "seed-2"]
    row = next(line for line in lines if line.startswith("average accuracy "))
    assert row.split()[-3:] == [f"{100 * a:.2f}" for a in accs]
    assert main(["eval", str(out), "--set", "train.lr=1", "--quiet"]) == 2
    assert "evaluation settings only" in capsys.readouterr().err

    # compare expands a folder of repeats into its runs, each with the evaluation just saved.
    assert main(["compare", str(out)]) == 0
    table = capsys.readouterr().out
    assert table.count("| seeds/seed-") == 6 and table.count("[eval as-trained] |") == 3


def test_bad_repeats_are_refused(tmp_path):
    config = apply_overrides(get_preset("quickstart-supsup"), QUICK)
    with pytest.raises(ConfigError, match="at least 2"):
        run_seeds(config, RunContext.create(None, tmp_path / "a"), 1)
    with pytest.raises(ConfigError, match="not sweep experiments"):  # repeats check their kind
        run_seeds(
            get_preset("impress-sweep-rotated-mnist"),
            RunContext.create(None, tmp_path / "b", log="tensorboard"),
            2,
        )
    run_seeds(config, RunContext.create(None, tmp_path / "c"), 2)
    with pytest.raises(ConfigError, match="already holds a run"):
        run_seeds(config, RunContext.create(None, tmp_path / "c"), 2)
    single = tmp_path / "c" / "seed-0"
    assert main(["run", "--resume", str(single), "--seeds", "2", "--quiet"]) == 2
