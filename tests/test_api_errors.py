"""The Python API refuses misuse with a one-line error that says what to do, as the CLI does."""

import pytest
import torch

from impresslearn import BackboneConfig, ExperimentConfig, apply_overrides, run_experiment
from impresslearn.backbones import build_backbone
from impresslearn.errors import ConfigError, DataError
from impresslearn.methods import ImpressLearn, ImpressLearnConfig
from impresslearn.runners import load_run

TINY = ["scenario.dataset=mnist_embedded", "scenario.num_tasks=1", "train.iterations=5"]


def test_overrides_must_be_a_list_of_strings():
    with pytest.raises(ConfigError, match=r"must be a list of 'section.key=value' strings"):
        apply_overrides(ExperimentConfig(), "train.lr=0.1")
    with pytest.raises(ConfigError, match="must be a list"):
        apply_overrides(ExperimentConfig(), [("train.lr", 0.1)])
    assert apply_overrides(ExperimentConfig(), ["train.lr=0.5"]).train.lr == 0.5


def test_impresslearn_refuses_a_task_before_its_impressions():
    method = ImpressLearn(build_backbone(BackboneConfig(), (1, 28, 28), 10), ImpressLearnConfig())
    with pytest.raises(ConfigError, match=r"holds 0 of its \d+ impressions: call prepare"):
        method.begin_task(0)


def test_a_missing_data_root_is_refused_by_the_api_as_by_the_cli(tmp_path):
    config = apply_overrides(ExperimentConfig(), TINY)
    with pytest.raises(DataError, match="data root /nonexistent .* does not exist"):
        run_experiment(config, "/nonexistent", tmp_path / "run")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    file = tmp_path / "file"
    file.write_text("")
    with pytest.raises(DataError, match="is not a folder"):
        run_experiment(config, file)


def test_predict_refuses_raw_pixels_and_wrong_shapes(tmp_path):
    run_experiment(apply_overrides(ExperimentConfig(), TINY), None, tmp_path / "run")
    run = load_run(tmp_path / "run")
    assert run.input_shape == (1, 28, 28)
    assert run.predict(torch.zeros(3, 1, 28, 28), 0).shape == (3,)
    with pytest.raises(ConfigError, match=r"torch.uint8: the model takes floating-point images"):
        run.predict(torch.zeros(3, 1, 28, 28, dtype=torch.uint8), 0)
    for shape in [(3, 28, 28), (3, 1, 32, 32), (784,)]:
        with pytest.raises(ConfigError, match=r"takes a batch of shape \(N, 1, 28, 28\)"):
            run.predict(torch.zeros(shape), 0)
    with pytest.raises(ConfigError, match="must be a torch.Tensor"):
        run.predict([[0.0]], 0)
