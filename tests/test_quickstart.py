"""The main job, ``impresslearn run quickstart``: ImpressLearn end to end on the embedded data,
printed per task beside a dedicated SupSup mask and one impression unchanged."""

import json
import re

from impresslearn.cli import main
from impresslearn.methods import ImpressLearnConfig, SupSupConfig
from impresslearn.presets import get_preset
from impresslearn.report import impressions_table

# The quickstart with far fewer steps (the real one: docs in README.md, about a minute).
SHORT = [
    "--set",
    "method.impressions.iterations=40",
    "--set",
    "train.iterations=40",
    "--quiet",
]


def test_quickstart_is_impresslearn_with_impressions_unseen_tasks_and_dedicated_masks():
    config = get_preset("quickstart")
    assert config.name == "quickstart"
    assert config.scenario.dataset == "mnist_embedded"  # offline, shipped with the package
    method = config.method
    assert isinstance(method, ImpressLearnConfig) and method.name == "impresslearn"
    assert method.impression_kind == "heterogeneous" and method.dedicated_masks
    impressions = set(method.source_tasks())
    unseen = set(range(config.scenario.num_tasks)) - impressions
    assert impressions == set(range(method.num_impressions))  # the first tasks' SupSup masks
    assert len(unseen) >= 2
    supsup = get_preset("quickstart-supsup")  # the old quickstart, for SupSup alone
    assert isinstance(supsup.method, SupSupConfig)
    assert supsup.scenario.dataset == "mnist_embedded"


def test_short_quickstart_prints_the_per_task_table(tmp_path, capsys):
    out = tmp_path / "q"
    assert main(["run", "quickstart", *SHORT, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["forgetting"] == 0.0
    assert 0.0 < metrics["average_accuracy_unseen"] <= 1.0
    assert metrics["unseen_tasks"] == [4, 5]
    for column in ("task", "learned as", "accuracy", "dedicated mask", "one impression"):
        assert column in printed
    assert "bytes per task" in printed and "forgetting: 0.00 points" in printed
    # one row per task: impressions use their own mask, the others are combinations
    assert len(re.findall(r"^rotation \d+ deg +impression \d/4", printed, re.M)) == 4
    rows = re.findall(
        r"^rotation (\d+) deg +combination +([\d.]+)% +([\d.]+)% +([\d.]+)% +6,560 B$",
        printed,
        re.M,
    )
    assert [int(r[0]) for r in rows] == [40, 50]
    for (_, combined, dedicated, single), t in zip(rows, (4, 5), strict=True):
        assert float(combined) == round(100 * metrics["final_accuracies"][t], 2)
        assert float(dedicated) == round(100 * metrics["dedicated_accuracy"][str(t)], 2)
        assert float(single) == round(100 * metrics["single_impression_accuracy"][str(t)], 2)
    # alphas per output unit: (300 + 100 + 10) units x 4 impressions x 4 bytes
    assert metrics["bytes_per_task"]["coeffs"] == 6_560
    assert "a SupSup mask 33,275 B (5.1x more)" in printed
    assert impressions_table(metrics) in printed


def test_table_only_for_runs_with_impressions():
    supsup = {"method": "supsup", "final_accuracies": [0.9], "bytes_per_task": {"total": 1}}
    assert impressions_table(supsup) is None
    metrics = {
        "final_accuracies": [0.97, 0.9],
        "task_names": ["a", "b"],
        "impression_tasks": [0],
        "unseen_tasks": [1],
        "average_accuracy_unseen": 0.9,
        "dedicated_accuracy": {"1": 0.95},
        "single_impression_accuracy": {"1": 0.5},
        "bytes_per_task": {"mask": 0, "coeffs": 24, "norm_stats": 0, "total": 24},
        "bytes_per_mask": 2400,
        "shared_bytes": {"impressions": 2400},
        "forgetting": 0.0,
    }
    table = impressions_table(metrics)
    assert re.search(r"^b +combination +90.00% +95.00% +50.00% +24 B$", table, re.M)
    assert "a SupSup mask 2,400 B (100x more)" in table
    assert impressions_table({**metrics, "eval_scenario": "NNs"}) is None
