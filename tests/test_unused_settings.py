"""A setting that has no effect where it is given is refused before anything is written, with
why; one inherited from a preset when something else changed (or given through the Python API,
or an inference setting that `eval` may switch) is warned about instead."""

import re

import pytest

from impresslearn import ExperimentConfig, apply_overrides
from impresslearn.cli import main
from impresslearn.presets import PRESETS, get_preset
from impresslearn.runners.recipes import unused_settings, warn_unused

IMPRESS = ["method.name=impresslearn", "scenario.dataset=mnist_embedded"]
REFUSED = {
    "train.momentum with adam": (
        ["train.optimizer=adam", "train.momentum=0.9"],
        r"train.momentum=0.9 has no effect here: the adam optimiser has no momentum",
    ),
    "impressions' momentum with adam": (
        [*IMPRESS, "method.impressions.optimizer=adam", "method.impressions.momentum=0.5"],
        r"method.impressions.momentum=0.5 has no effect here",
    ),
    "groups without the groups granularity": (
        [*IMPRESS, "method.granularity=layer", "method.groups=8"],
        r"method.groups=8 has no effect here: only method.granularity=groups reads it, not layer",
    ),
    "rank without low rank": (
        [*IMPRESS, "method.granularity=output_unit", "method.rank=3"],
        r"method.rank=3 has no effect here: only method.granularity=low_rank reads it",
    ),
    "impression tasks of random impressions": (
        [*IMPRESS, "method.impression_kind=random", "method.impression_tasks=[0,1]"],
        r"method.impression_tasks=\[0, 1\] has no effect here: random impressions are drawn",
    ),
    "training random impressions": (
        [*IMPRESS, "method.impression_kind=random", "method.impressions.lr=0.1"],
        r"method.impressions.lr=0.1 has no effect here: random impressions are drawn, not trained",
    ),
    "shared scores of homogeneous impressions": (
        [*IMPRESS, "method.impression_kind=homogeneous", "method.shared_scores=true"],
        r"method.shared_scores=true has no effect here: only heterogeneous impressions",
    ),
    "impression tasks trained with random impressions": (
        [*IMPRESS, "method.impression_kind=random", "method.train_impression_tasks=true"],
        r"method.train_impression_tasks=true has no effect here",
    ),
    "predicting over outputs that are the classes": (
        ["eval.predict=outputs"],
        r"eval.predict=outputs has no effect here: without backbone.num_outputs",
    ),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_setting_without_effect_is_refused_before_any_write(name, tmp_path, capsys, caplog):
    overrides, message = REFUSED[name]
    argv = ["run", "quickstart-supsup", "--out", str(tmp_path / "cli"), "--quiet"]
    assert main([*argv, *(a for o in overrides for a in ("--set", o))]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1
    assert err.rstrip().endswith("remove the setting")
    assert not (tmp_path / "cli").exists()
    # through the Python API nothing says which settings the user meant: a warning
    with caplog.at_level("WARNING"):
        warn_unused(apply_overrides(ExperimentConfig(), overrides))
    assert re.search(message, caplog.text) and "it is ignored" in caplog.text


def test_a_setting_inherited_from_a_preset_is_warned_about(tmp_path, capsys, caplog):
    """impress-rotated-mnist reads groups:8; switching to per-layer alphas leaves it unread."""
    argv = ["run", "impress-rotated-mnist", "--set", "method.granularity=layer"]
    assert main(["show", *argv[1:]]) == 0  # not refused: the user did not set groups
    config = apply_overrides(get_preset("impress-rotated-mnist"), ["method.granularity=layer"])
    with caplog.at_level("WARNING"):
        warn_unused(config)
    assert "method.groups=8 has no effect here: only method.granularity=groups" in caplog.text


def test_the_same_settings_pass_where_they_are_read():
    for overrides in (
        ["train.optimizer=sgd", "train.momentum=0.9"],
        [*IMPRESS, "method.granularity=groups", "method.groups=8"],
        [*IMPRESS, "method.granularity=low_rank", "method.rank=3"],
        [
            *IMPRESS,
            "method.impression_kind=random",
            "method.dedicated_masks=true",
            "method.impressions.lr=0.1",
        ],
        ["eval.predict=outputs", "backbone.num_outputs=100"],
    ):
        assert unused_settings(apply_overrides(ExperimentConfig(), overrides)) == {}
    # a sweep varies the impression kind, a frontier the representation: not refused there
    sweep = get_preset("impress-sweep-rotated-mnist")
    overrides = ["method.impression_kind=random", "method.impression_tasks=[0,1]"]
    assert unused_settings(apply_overrides(sweep, overrides)) == {}


def test_every_preset_sets_only_what_it_reads():
    for name in PRESETS.names():
        assert unused_settings(get_preset(name)) == {}, name
