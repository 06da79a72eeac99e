"""Config sections, dotted overrides, JSON round trip, presets."""

import json

import pytest

from impresslearn.config import ExperimentConfig, apply_overrides, config_from_dict, parse_value
from impresslearn.errors import ConfigError
from impresslearn.presets import PRESETS, get_preset


def test_overrides_set_typed_values():
    config = apply_overrides(
        ExperimentConfig(),
        [
            "train.lr=1e-3",
            "scenario.num_tasks=3",
            "method.density=0.25",
            "backbone.num_outputs=100",
        ],
    )
    assert config.train.lr == 1e-3
    assert config.scenario.num_tasks == 3
    assert config.method.density == 0.25
    assert config.backbone.num_outputs == 100


def test_epochs_override_clears_iterations_and_back():
    config = apply_overrides(ExperimentConfig(), ["train.epochs=2"])
    assert (config.train.epochs, config.train.iterations) == (2, None)
    config = apply_overrides(config, ["train.iterations=7"])
    assert (config.train.epochs, config.train.iterations) == (None, 7)


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.lrr=1", "unknown override key 'train.lrr'"),
        ("nosuch.key=1", "unknown override key 'nosuch.key'"),
        ("train.lr=fast", "train.lr must be a number"),
        ("scenario.num_tasks=2.5", "scenario.num_tasks must be an integer"),
        ("method.density=0", "density must be in (0, 1]"),
        ("method.density=1.5", "density must be in (0, 1]"),
        ("method.mask_kind=random", "mask_kind"),
        ("train.optimizer=adagrad", "train.optimizer"),
        ("scenario.num_tasks=0", "num_tasks must be >= 1"),
        ("train.lr", "section.key=value"),
        ("inference.test_images=-1", "inference.test_images must be >= 0"),
        ("eval.matrix=upper", "eval.matrix='upper'"),
        ("scenario.classes_per_task=-2", "classes_per_task must be >= 1"),
        ("eval.scenario=XY", "use GG, GNs or GNu"),
    ],
)
def test_bad_overrides_are_clear_errors(override, fragment):
    with pytest.raises(ConfigError) as info:
        apply_overrides(ExperimentConfig(), [override])
    assert fragment in str(info.value)


def test_config_json_round_trip_and_strictness():
    config = apply_overrides(get_preset("quickstart"), ["train.lr=3e-4"])
    assert config_from_dict(json.loads(config.to_json())) == config
    data = config.to_dict()
    data["train"]["learning_rate"] = 1.0
    with pytest.raises(ConfigError, match="train.learning_rate"):
        config_from_dict(data)


def test_parse_value():
    assert parse_value("1e-3") == 1e-3
    assert parse_value("3") == 3
    assert parse_value("none") is None
    assert parse_value("True") is True
    assert parse_value("lenet_300_100") == "lenet_300_100"


@pytest.mark.parametrize("name", PRESETS.names())
def test_every_preset_resolves_with_docstring(name):
    config = get_preset(name)
    assert config.name == name
    assert PRESETS.get(name).__doc__.strip()
    assert config_from_dict(config.to_dict()) == config


def test_unknown_preset_lists_known():
    with pytest.raises(ConfigError, match=r"unknown preset .nope.; known: .*quickstart"):
        get_preset("nope")


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e999"])
def test_a_number_that_is_not_finite_is_refused_as_such(value):
    with pytest.raises(ConfigError, match="train.lr must be a finite number"):
        apply_overrides(ExperimentConfig(), [f"train.lr={value}"])


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["scenario.name=split_mnist", "scenario.classes_per_task=7"], "classes_per_task=7"),
        (["scenario.name=permuted_mnist", "scenario.rotation_step=5"], "rotation_step=5.0"),
        (["scenario.name=rotated_mnist", "scenario.augment=false"], "it reads only rotation_step"),
    ],
)
def test_a_scenario_setting_the_scenario_does_not_read_is_refused(overrides, fragment):
    with pytest.raises(ConfigError, match="has no effect on scenario") as error:
        apply_overrides(ExperimentConfig(), overrides)
    assert fragment in str(error.value)


def test_every_preset_sets_only_what_its_scenario_reads():
    for name in PRESETS.names():
        get_preset(name)  # built and checked
    apply_overrides(
        ExperimentConfig(),
        [
            "scenario.name=split_cifar100",
            "scenario.dataset=cifar100",
            "scenario.classes_per_task=10",
        ],
    )


def test_a_sweep_without_heterogeneous_impressions_may_exceed_the_stream():
    from impresslearn.config import SweepConfig

    homogeneous = SweepConfig(num_impressions=(10, 80), kinds=("homogeneous", "random"))
    assert homogeneous.resolved_eval_tasks(36) == tuple(range(1, 36, 3))  # task 0 is the source
    with pytest.raises(ConfigError, match=r"must lie in \[80, 36\)"):
        SweepConfig(num_impressions=(10, 80)).resolved_eval_tasks(36)
