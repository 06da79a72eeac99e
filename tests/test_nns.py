"""Scenario NNs on real MNIST: SupSup detects task boundaries without being told."""

import pytest
import torch

from impresslearn.backbones import BackboneConfig, build_backbone
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.errors import ConfigError
from impresslearn.inference import objective_value
from impresslearn.layers import extra_masks, masked_layers, one_hot, use_coeffs
from impresslearn.methods import ImpressLearn
from impresslearn.runners import check_experiment, load_run, run_experiment

NNS = [
    "scenario.dataset=mnist_embedded",
    "scenario.num_tasks=3",
    "kind=nns",
    "eval.scenario=GNu",
    "inference.images=128",
    "train.schedule=constant",
    "train.lr=1e-3",
    "train.iterations=300",
]


@pytest.mark.parametrize(
    "objective",
    [
        ["nns.objective=entropy"],  # SupSup's test, H
        ["nns.objective=cross_entropy", "nns.threshold=2", "backbone.num_outputs=500"],
    ],
)
def test_nns_detects_every_boundary_of_a_real_stream(tmp_path, objective):
    config = apply_overrides(ExperimentConfig(), [*NNS, *objective])
    result = run_experiment(config, None, tmp_path / "run")
    m = result.metrics
    assert m["tasks_detected"] == 3
    assert m["detections"] == [0, 300, 600]  # the first check after each boundary
    assert m["boundaries_detected"] == 1.0 and m["false_detections"] == 0
    assert m["slot_task"] == [0, 1, 2]
    assert m["task_inference_accuracy"] > 0.95
    assert m["average_accuracy"] > 0.85
    assert m["forgetting"] == 0.0
    # Checks inside a task keep the mask being learned; the ones at a boundary fire.
    fired = {step for step, _, new in m["detection_checks"] if new}
    assert fired == {300, 600}
    # The run reloads: slot 1's outputs bit for bit.
    x = result.scenario.test_data(1).prepared()[:50]
    with torch.no_grad(), result.method.task_context(1):
        expected = result.method.model(x)
    assert torch.equal(load_run(tmp_path / "run").logits(x, 1), expected)


def test_impresslearn_nns_detects_a_task_outside_its_impressions(tmp_path):
    # Impressions from tasks 0 and 1; task 2 is new to them. The test runs in coefficient space.
    overrides = [
        *NNS,
        "method.name=impresslearn",
        "method.num_impressions=2",
        "method.impressions.iterations=150",
        "method.train_impression_tasks=true",
        "method.granularity=output_unit",
        "train.lr=1e-2",
        "nns.objective=cross_entropy",
        "nns.threshold=2",
    ]
    result = run_experiment(apply_overrides(ExperimentConfig(), overrides), None, tmp_path / "r")
    m = result.metrics
    assert m["tasks_detected"] == 3 and m["detections"] == [0, 300, 600]
    assert m["false_detections"] == 0 and m["slot_task"] == [0, 1, 2]
    assert sorted(result.method.alphas) == [0, 1, 2]
    assert m["task_inference_accuracy"] > 0.95
    assert m["forgetting"] == 0.0
    x = result.scenario.test_data(2).prepared()[:50]
    with torch.no_grad(), result.method.task_context(2):
        expected = result.method.model(x)
    assert torch.equal(load_run(tmp_path / "r").logits(x, 2), expected)


def _regulariser_values(method) -> list[float]:
    """Per stored task, ImpressLearn's term sum_l (||alpha[t, l]||_1 - 1)^2 (without lambda)."""
    values = []
    for t in method.learned_tasks():
        rows = [
            layout.rows([a]) for layout, a in zip(method.layouts, method.alphas[t], strict=True)
        ]
        values.append(float(sum(((r.abs().sum(-1) - 1.0) ** 2).sum() for r in rows)))
    return values


def test_impresslearn_nns_trains_with_its_regulariser(tmp_path, monkeypatch):
    """The NNs stream takes the one training step of every recipe, whose loss adds the method's
    regulariser: ImpressLearn's reg_lambda * sum_l (||alpha||_1 - 1)^2 enters every step it
    trains, and changes what it learns. (The NNs stream once trained with plain cross-entropy and
    silently ignored reg_lambda.)"""
    overrides = [
        *NNS,
        "scenario.num_tasks=2",
        "train.iterations=200",
        "method.name=impresslearn",
        "method.num_impressions=2",
        "method.impressions.iterations=60",
        "method.train_impression_tasks=true",
        "train.lr=1e-2",
        "nns.objective=cross_entropy",
        "nns.threshold=2",
    ]
    calls = []
    original = ImpressLearn.loss_regulariser

    def spy(self):
        value = original(self)
        calls.append(value is not None and value.requires_grad)
        return value

    monkeypatch.setattr(ImpressLearn, "loss_regulariser", spy)
    strong = run_experiment(
        apply_overrides(ExperimentConfig(), [*overrides, "method.reg_lambda=1.0"]), None
    )
    m = strong.metrics
    assert m["tasks_detected"] == 2
    trained = 2 * 200 - m["skipped_batches"]
    assert len(calls) == trained and all(calls)  # in every training step, with its gradient
    monkeypatch.setattr(ImpressLearn, "loss_regulariser", original)
    none = run_experiment(
        apply_overrides(ExperimentConfig(), [*overrides, "method.reg_lambda=0"]), None
    )
    # The term pulls every unit's ||alpha||_1 towards 1: far closer with lambda 1 than with 0.
    with_term, without = _regulariser_values(strong.method), _regulariser_values(none.method)
    assert all(a < 0.5 * b for a, b in zip(with_term, without, strict=True)), (with_term, without)


def test_extra_masks_are_removed_and_leave_the_bank_alone():
    model = build_backbone(BackboneConfig(), (1, 28, 28), 10)
    layers = masked_layers(model)
    gen = torch.Generator().manual_seed(0)
    for layer in layers:
        layer.add_to_bank(torch.rand(layer.weight.shape, generator=gen) < 0.5)
    stored = [layer.bank.clone() for layer in layers]
    extra = [[torch.rand(layer.weight.shape, generator=gen) < 0.5 for layer in layers]]
    x = torch.randn(4, 1, 28, 28, generator=gen)
    with torch.no_grad(), use_coeffs(model, one_hot(0, 1)):
        before = model(x)
    with extra_masks(model, extra):
        assert all(layer.num_masks == 2 for layer in layers)
        assert all(torch.equal(layer.bank[1], m) for layer, m in zip(layers, extra[0], strict=True))
    assert all(torch.equal(layer.bank, s) for layer, s in zip(layers, stored, strict=True))
    with torch.no_grad(), use_coeffs(model, one_hot(0, 1)):
        assert torch.equal(model(x), before)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["method.name=impresslearn"], "set method.train_impression_tasks=true"),
        (["train.schedule=cosine"], "set train.schedule=constant"),
        (["nns.threshold=0.9"], "nns.threshold must be > 1"),
        (["nns.objective=superfluous"], "use entropy or cross_entropy"),
    ],
)
def test_nns_bad_config(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_experiment(apply_overrides(ExperimentConfig(), [*NNS, *overrides]))


def test_cross_entropy_objective_ignores_superfluous_outputs_and_needs_labels():
    logits = torch.randn(4, 7, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, 1, 2])
    value = objective_value(logits, "cross_entropy", 3, labels)
    assert torch.equal(value, torch.nn.functional.cross_entropy(logits[:, :3], labels))
    logits[:, 3:] += 100.0  # superfluous outputs do not count
    assert torch.equal(objective_value(logits, "cross_entropy", 3, labels), value)
    with pytest.raises(ConfigError, match="needs labels"):
        objective_value(logits, "cross_entropy", 3)
