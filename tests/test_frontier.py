"""The accuracy-per-byte frontier: one set of impressions, many coefficient representations."""

import csv
import json

import numpy as np
import pytest

from impresslearn.cli import main
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.errors import ConfigError
from impresslearn.runners import RunContext, check_experiment, run_experiment
from impresslearn.runners import run as run_kind

TINY = [
    "scenario.dataset=mnist_embedded",
    "scenario.name=rotated_mnist",
    "scenario.num_tasks=4",
    "method.name=impresslearn",
    "method.num_impressions=2",
    "method.impressions.iterations=40",
    "train.iterations=40",
    "train.lr=1e-2",
]
SPECS = ["layer", "groups:2@int8", "classifier_unit@float16"]


def test_frontier_equals_one_run_per_representation(tmp_path):
    """Each point of the frontier is exactly what a run with that representation gives on the
    same unseen tasks (same impressions, batches and starting alphas), and its bytes are the
    run's."""
    specs = json.dumps(SPECS)
    config = apply_overrides(
        ExperimentConfig(), [*TINY, "kind=frontier", f"frontier.representations={specs}"]
    )
    metrics = run_kind(config, RunContext.create(None, tmp_path / "frontier")).metrics
    assert metrics["eval_tasks"] == [2, 3]
    runs = {
        "layer": [],
        "groups:2@int8": [
            "method.granularity=groups",
            "method.groups=2",
            "method.coeff_dtype=int8",
        ],
        "classifier_unit@float16": [
            "method.granularity=classifier_unit",
            "method.coeff_dtype=float16",
        ],
    }
    for spec, overrides in runs.items():
        run = run_experiment(apply_overrides(ExperimentConfig(), [*TINY, *overrides]), None)
        point = metrics["representations"][spec]
        assert point["mean_accuracy_unseen"] == pytest.approx(
            np.mean(run.accuracy_matrix[-1, 2:]), abs=1e-12
        )
        assert point["bytes_per_task"]["coeffs"] == run.metrics["bytes_per_task"]["coeffs"]
    sizes = {s: metrics["representations"][s]["bytes_per_task"]["coeffs"] for s in SPECS}
    assert sizes == {
        "layer": 3 * 2 * 4,
        "groups:2@int8": 3 * (2 * 2 + 4),
        "classifier_unit@float16": 2 * (2 * 2 + 10 * 2),
    }
    assert metrics["dedicated_bytes_per_task"]["mask"] == sum(
        (n + 7) // 8 for n in (784 * 300, 300 * 100, 100 * 10)
    )
    assert 0.5 < metrics["dedicated_accuracy_unseen"] <= 1.0
    assert metrics["single_impression_accuracy_unseen"] is not None

    rows = list(csv.DictReader((tmp_path / "frontier" / "frontier.csv").open()))
    assert {r["representation"] for r in rows} == {
        *SPECS,
        "dedicated_supsup_mask",
        "one_impression_unchanged",
    }
    assert len(rows) == 2 * (len(SPECS) + 2)
    assert (tmp_path / "frontier" / "frontier.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "frontier" / "metrics.json").read_text())
    assert saved["representations"] == metrics["representations"]


def test_frontier_from_the_command_line_prints_the_table(tmp_path, capsys):
    out = tmp_path / "run"
    sets = [a for o in TINY for a in ("--set", o)]
    code = main(
        [
            "run",
            "quickstart",
            *sets,
            "--set",
            "kind=frontier",
            "--set",
            'frontier.representations=["layer","layer@int8"]',
            "--out",
            str(out),
            "--quiet",
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0
    assert "layer@int8" in printed and "dedicated SupSup mask" in printed
    assert (out / "frontier.csv").exists() and (out / "config.json").exists()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (["kind=frontier", 'frontier.representations=["layer:3"]'], "only groups:G and low_rank:R"),
        (["kind=frontier", 'frontier.representations=["layer@int4"]'], "int4"),
        (["kind=frontier", 'frontier.representations=["diagonal"]'], "diagonal"),
        (["kind=frontier", 'frontier.representations=["layer","layer"]'], "repeats"),
        (
            ["kind=frontier", 'frontier.representations=["layer"]', "method.name=supsup"],
            "impresslearn",
        ),
    ],
)
def test_bad_frontiers_are_refused_at_config_time(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        check_experiment(apply_overrides(ExperimentConfig(), [*TINY, *overrides]))


def test_an_impression_task_cannot_be_a_frontier_task():
    config = apply_overrides(
        ExperimentConfig(),
        [*TINY, "kind=frontier", 'frontier.representations=["layer"]', "frontier.eval_tasks=[1,2]"],
    )
    with pytest.raises(ConfigError, match="not impressions"):
        run_kind(config, RunContext.create())


def test_train_scales_train_each_representation_longer(tmp_path):
    config = apply_overrides(
        ExperimentConfig(),
        [
            *TINY,
            "kind=frontier",
            'frontier.representations=["layer"]',
            "frontier.train_scales=[1,2]",
        ],
    )
    metrics = run_kind(config, RunContext.create(None, tmp_path / "f")).metrics
    longer = metrics["representations"]["layer (2x training)"]
    assert longer["train_scale"] == 2 and longer["representation"] == "layer"
    run = run_experiment(apply_overrides(ExperimentConfig(), [*TINY, "train.iterations=80"]), None)
    assert longer["mean_accuracy_unseen"] == pytest.approx(
        np.mean(run.accuracy_matrix[-1, 2:]), abs=1e-12
    )
    rows = list(csv.DictReader((tmp_path / "f" / "frontier.csv").open()))
    assert {(r["representation"], r["train_scale"]) for r in rows} >= {
        ("layer", "1"),
        ("layer", "2"),
    }
    with pytest.raises(ConfigError, match="train_scales"):
        apply_overrides(config, ["frontier.train_scales=[0]"])
