"""SupSup on real MNIST: zero forgetting bit for bit, determinism, frozen backbone."""

import numpy as np
import pytest
import torch

from impresslearn.backbones import BackboneConfig, build_backbone
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.data import load_dataset
from impresslearn.layers import masked_layers
from impresslearn.methods import SupSup, SupSupConfig
from impresslearn.runners import run_experiment
from impresslearn.scenarios import ScenarioConfig, build_scenario
from impresslearn.seeding import generator
from impresslearn.train import TrainConfig, accuracy, fit

QUICK = ["scenario.dataset=mnist_embedded", "scenario.num_tasks=3", "train.iterations=60"]


@pytest.fixture(scope="module")
def embedded():
    return load_dataset("mnist_embedded", None)


def _train_tasks(embedded, mask_kind: str, num_tasks: int = 3):
    scenario = build_scenario(
        ScenarioConfig(name="permuted_mnist", dataset="mnist_embedded", num_tasks=num_tasks),
        embedded,
    )
    model = build_backbone(BackboneConfig(), scenario.input_shape, 10)
    method = SupSup(model, SupSupConfig(mask_kind=mask_kind))
    train = TrainConfig(lr=1e-3, iterations=60)
    probe = scenario.test_data(0).prepared()[:256]
    logits = {}  # (after_task, task) -> logits
    for t in range(num_tasks):
        method.begin_task(t)
        weights = [layer.weight.clone() for layer in method.layers]
        fit(
            method.trainable_parameters(),
            lambda x, y: torch.nn.functional.cross_entropy(model(x), y),
            scenario.train_data(t),
            train,
            generator(0, t),
        )
        for layer, w in zip(method.layers, weights, strict=True):
            assert torch.equal(layer.weight, w), "training changed a frozen weight"
        method.end_task(t)
        with torch.no_grad():
            for j in range(t + 1):
                with method.task_context(j):
                    logits[t, j] = model(probe)
    return scenario, model, method, logits


@pytest.mark.parametrize("mask_kind", ["topk", "threshold"])
def test_zero_forgetting_bit_for_bit(embedded, mask_kind):
    scenario, model, method, logits = _train_tasks(embedded, mask_kind)
    last = scenario.num_tasks - 1
    for j in range(scenario.num_tasks):
        for t in range(j, scenario.num_tasks):
            assert torch.equal(logits[t, j], logits[last, j]), f"task {j} changed after task {t}"
    # different tasks select different masks (the check above would be vacuous otherwise)
    assert not torch.equal(logits[last, 0], logits[last, 1])


def test_learned_masks_beat_chance_and_have_exact_density(embedded):
    scenario, model, method, _ = _train_tasks(embedded, "topk", num_tasks=2)
    for layer in method.layers:
        kept = layer.bank.flatten(1).sum(1)
        assert kept.tolist() == [round(0.5 * layer.weight.numel())] * 2
    for j in range(2):
        with method.task_context(j):
            assert accuracy(model, scenario.test_data(j), 1000, 10) > 0.6


def test_only_scores_are_trainable(embedded):
    model = build_backbone(BackboneConfig(), (1, 28, 28), 10)
    assert list(model.parameters()) == []
    method = SupSup(model, SupSupConfig())
    method.begin_task(0)
    params = method.trainable_parameters()
    assert {id(p) for p in params} == {id(layer.scores) for layer in masked_layers(model)}
    assert {id(p) for p in model.parameters()} == {id(p) for p in params}
    frozen = {id(layer.weight) for layer in masked_layers(model)}
    assert not frozen & {id(p) for p in params}


def test_same_seed_same_accuracy_matrix():
    config = apply_overrides(ExperimentConfig(), QUICK)
    first = run_experiment(config, None)
    second = run_experiment(config, None)
    np.testing.assert_array_equal(first.accuracy_matrix, second.accuracy_matrix)
    other = run_experiment(apply_overrides(config, ["method.seed=1"]), None)
    assert not np.array_equal(first.accuracy_matrix, other.accuracy_matrix)


def test_real_mnist_permuted_run(shared_data_root):
    config = apply_overrides(
        ExperimentConfig(),
        ["scenario.num_tasks=2", "train.iterations=150", "train.lr=1e-3"],
    )
    result = run_experiment(config, shared_data_root)
    m = result.metrics
    assert m["forgetting"] == 0.0 and m["backward_transfer"] == 0.0
    assert m["average_accuracy"] > 0.85
    assert m["bytes_per_task"]["mask"] == sum(
        (n + 7) // 8 for n in (784 * 300, 300 * 100, 100 * 10)
    )


def test_prediction_over_all_outputs_as_supsups_code(tmp_path):
    """``eval.predict=outputs``: the argmax runs over the superfluous outputs too (an image whose
    largest output is one of them is wrong); ``classes`` over the task's classes only."""
    from impresslearn.presets import get_preset
    from impresslearn.runners import load_run

    base = [
        "scenario.dataset=mnist_embedded",
        "scenario.num_tasks=1",
        "backbone.num_outputs=100",
        "train.iterations=2",  # barely trained: superfluous outputs still win for some images
    ]
    config = apply_overrides(ExperimentConfig(), [*base, "eval.predict=outputs"])
    result = run_experiment(config, None, tmp_path / "run")
    test = result.scenario.test_data(0)
    logits = load_run(tmp_path / "run").logits(test.prepared(), 0)
    over_outputs = int((logits.argmax(1) == test.y).sum()) / len(test)
    over_classes = int((logits[:, :10].argmax(1) == test.y).sum()) / len(test)
    assert result.accuracy_matrix[0, 0] == pytest.approx(over_outputs, abs=1e-12)
    assert over_outputs < over_classes  # some images' largest output is a superfluous one
    classes = run_experiment(apply_overrides(ExperimentConfig(), base), None)
    assert classes.accuracy_matrix[0, 0] == pytest.approx(over_classes, abs=1e-12)
    paper = get_preset("supsup-permuted-mnist-paper")
    assert paper.backbone.num_outputs == 100 and paper.eval.predict == "outputs"


def test_selecting_a_task_that_was_not_learned_is_a_clear_error():
    from impresslearn.errors import ConfigError
    from impresslearn.methods import ImpressLearn, ImpressLearnConfig

    for method in (
        SupSup(build_backbone(BackboneConfig(), (1, 28, 28), 10), SupSupConfig()),
        ImpressLearn(build_backbone(BackboneConfig(), (1, 28, 28), 10), ImpressLearnConfig()),
    ):
        with pytest.raises(ConfigError, match="task 0 has not been learned: no task"):
            method.task_context(0)
    supsup = SupSup(build_backbone(BackboneConfig(), (1, 28, 28), 10), SupSupConfig())
    supsup.restore_state({}, {"task_ids": []})
    for layer in masked_layers(supsup.model):
        layer.add_to_bank(torch.ones_like(layer.weight, dtype=torch.bool))
    supsup.restore_task(3, {}, {})
    with pytest.raises(ConfigError, match="learned tasks are 3$"):
        supsup.task_context(1)


def test_a_stream_reserves_the_bank_once_and_never_grows_it_by_copying():
    from impresslearn.runners.stream import build_stream
    from impresslearn.runtime import Runtime

    config = apply_overrides(
        ExperimentConfig(),
        ["scenario.dataset=mnist_embedded", "scenario.num_tasks=5", "train.iterations=5"],
    )
    stream = build_stream(config, None, Runtime.create("cpu"))
    stream.method.reserve(5)  # as the stream recipe does before its first task
    layers = masked_layers(stream.model)
    before = [layer._bank_storage.data_ptr() for layer in layers]
    assert [layer._bank_storage.shape[0] for layer in layers] == [5, 5, 5]
    stream.method.prepare(stream.mask_trainer, 5)
    for t in range(5):
        stream.learn_task(t, config.train, f"task {t}")
    assert [layer._bank_storage.data_ptr() for layer in layers] == before
    assert all(layer.num_masks == 5 for layer in layers)
    # beyond the reservation the bank still grows (e.g. a stream extended on resume)
    layers[0].add_to_bank(layers[0].bank[0])
    assert layers[0].num_masks == 6 and torch.equal(layers[0].bank[5], layers[0].bank[0])


def test_the_stream_recipe_reserves_the_bank_for_the_stream():
    config = apply_overrides(
        ExperimentConfig(),
        ["scenario.dataset=mnist_embedded", "scenario.num_tasks=3", "train.iterations=5"],
    )
    result = run_experiment(config, None)
    assert [layer._bank_storage.shape[0] for layer in masked_layers(result.method.model)] == [3] * 3
