"""A setting that has no effect where it is given is refused before anything is written (or,
for inference settings that `eval` may switch, warned about), with why."""

import pytest

from impresslearn import ExperimentConfig, apply_overrides, run_experiment
from impresslearn.cli import main
from impresslearn.errors import ConfigError
from impresslearn.presets import PRESETS, get_preset
from impresslearn.runners.recipes import check_unused

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
def test_a_setting_without_effect_is_refused_before_any_write(name, tmp_path, capsys):
    overrides, message = REFUSED[name]
    config = apply_overrides(ExperimentConfig(), overrides)
    with pytest.raises(ConfigError, match=message):
        run_experiment(config, None, tmp_path / "api")
    assert not (tmp_path / "api").exists()
    argv = ["run", "quickstart-supsup", "--out", str(tmp_path / "cli"), "--quiet"]
    assert main([*argv, *(a for o in overrides for a in ("--set", o))]) == 2
    assert "has no effect here" in capsys.readouterr().err
    assert not (tmp_path / "cli").exists()


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
        check_unused(apply_overrides(ExperimentConfig(), overrides))
    # a sweep varies the impression kind, a frontier the representation: not refused there
    check_unused(
        apply_overrides(
            get_preset("impress-sweep-rotated-mnist"),
            ["method.impression_kind=random", "method.impression_tasks=[0,1]"],
        )
    )


def test_every_preset_sets_only_what_it_reads():
    for name in PRESETS.names():
        check_unused(get_preset(name))


def test_inference_settings_that_nothing_reads_are_warned_about(capsys, caplog):
    base = ["show", "quickstart-supsup", "--set", "eval.scenario=GNu"]
    with caplog.at_level("WARNING"):
        assert main([*base, "--set", "inference.shortlist_size=9"]) == 0
        assert main([*base, "--set", "inference.reference_images=64"]) == 0
    assert "inference.shortlist_size=9 has no effect: inference.procedure=oneshot keeps no" in (
        caplog.text
    )
    assert "inference.reference_images=64 has no effect: raw verification" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        assert (
            main(
                [
                    *base,
                    "--set",
                    "inference.procedure=shortlist",
                    "--set",
                    "inference.shortlist_size=9",
                ]
            )
            == 0
        )
    assert "no effect" not in caplog.text
