"""Task inference: one-shot and binary search over SupSup masks and in ImpressLearn's basis."""

import math

import pytest
import torch

from impresslearn.backbones import BackboneConfig, build_backbone
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.errors import ConfigError
from impresslearn.inference import beta_gradient, infer_task, objective_value, oneshot_margin
from impresslearn.layers import masked_layers
from impresslearn.methods import ImpressLearn, ImpressLearnConfig, SupSup, SupSupConfig
from impresslearn.runners import run_experiment

THREE_TASKS = [
    "scenario.dataset=mnist_embedded",
    "scenario.num_tasks=3",
    "train.iterations=150",
    "train.lr=1e-3",
]


def _random_supsup(num_tasks: int, seed: int = 0) -> SupSup:
    model = build_backbone(BackboneConfig(), (1, 28, 28), 10)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(num_tasks):
        for layer in masked_layers(model):
            layer.add_to_bank(torch.rand(layer.weight.shape, generator=gen) < 0.5)
    method = SupSup(model, SupSupConfig())
    method.restore_state({}, {"task_ids": list(range(num_tasks))})
    return method


def test_oneshot_and_binary_recover_real_tasks():
    config = apply_overrides(
        ExperimentConfig(),
        [
            *THREE_TASKS,
        ],
    )
    result = run_experiment(config, None)
    for procedure in ("oneshot", "binary"):
        for t in range(3):
            x = result.scenario.test_data(t).prepared()[:128]
            task, _ = infer_task(result.method, x, procedure=procedure, num_classes=10)
            assert task == t, (procedure, t)


@pytest.mark.parametrize("num_tasks", [2, 3, 5, 8, 13])
def test_binary_search_takes_ceil_log2_rounds(num_tasks):
    method = _random_supsup(num_tasks)
    x = torch.randn(16, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    task, rounds = infer_task(method, x, procedure="binary", num_classes=10)
    assert rounds == math.ceil(math.log2(num_tasks))
    assert task in range(num_tasks)
    assert infer_task(method, x, procedure="oneshot", num_classes=10)[1] == 1


def test_basis_space_gradient_equals_explicit_superposition():
    torch.manual_seed(0)
    model = build_backbone(BackboneConfig(num_outputs=20), (1, 28, 28), 10)
    layers = masked_layers(model)
    gen = torch.Generator().manual_seed(3)
    n, num_tasks = 3, 4
    for _ in range(n):
        for layer in layers:
            layer.add_to_bank(torch.rand(layer.weight.shape, generator=gen) < 0.5)
    method = ImpressLearn(model, ImpressLearnConfig(num_impressions=n, impression_kind="random"))
    alphas = {t: [torch.rand(n, generator=gen) for _ in layers] for t in range(num_tasks)}
    method.restore_state(
        {f"alpha.{t}.{i}": a for t, al in alphas.items() for i, a in enumerate(al)},
        {"tasks": list(alphas), "dedicated_accuracy": {}, "single_impression_accuracy": {}},
    )
    x = torch.randn(8, 1, 28, 28, generator=gen)
    beta = torch.tensor([0.1, 0.4, 0.2, 0.3])
    for objective in ("entropy", "superfluous"):
        fast = beta_gradient(method, x, beta, objective, 10)
        # explicit: every task's combined mask, superposed with beta, layer by layer
        b = beta.clone().requires_grad_()
        h = x.flatten(1)
        for i, layer in enumerate(layers):
            task_masks = torch.stack(
                [
                    torch.einsum("m,moi->oi", alphas[t][i], layer.bank.float())
                    for t in range(num_tasks)
                ]
            )
            w = layer.weight * torch.einsum("t,toi->oi", b, task_masks)
            h = torch.nn.functional.linear(h, w)
            h = h.relu() if i < len(layers) - 1 else h
        (explicit,) = torch.autograd.grad(objective_value(h, objective, 10), b)
        torch.testing.assert_close(fast, explicit, rtol=1e-4, atol=1e-6)


def test_oneshot_margin_counts_standard_deviations_of_the_other_tasks():
    grad = torch.tensor([-5.0, 0.0, 1.0, -1.0, 0.0])
    assert oneshot_margin(grad, 0) == pytest.approx(5 / math.sqrt(2 / 3))
    # a true task whose gradient is not the lowest has a small or negative margin
    assert oneshot_margin(grad, 2) < oneshot_margin(grad, 3) == 0 < oneshot_margin(grad, 0)
    assert oneshot_margin(grad, 2) < 0
    assert math.isnan(oneshot_margin(torch.tensor([1.0, 2.0]), 0))


def test_superfluous_objective_needs_extra_outputs():
    method = _random_supsup(2)
    with pytest.raises(ConfigError, match="num_outputs"):
        infer_task(method, torch.randn(4, 1, 28, 28), objective="superfluous", num_classes=10)


def test_gnu_run_reports_task_inference():
    config = apply_overrides(
        ExperimentConfig(),
        [
            *THREE_TASKS,
            "backbone.num_outputs=100",
            "eval.scenario=GNu",
            "inference.objective=superfluous",
            "inference.batch=500",
        ],
    )
    metrics = run_experiment(config, None).metrics
    assert metrics["task_inference_accuracy"] > 0.9
    assert metrics["average_accuracy_inferred"] <= metrics["average_accuracy"] + 1e-12
    # every inference picked the right task, so the true task's gradient is below the others'
    assert 0 < metrics["task_inference_margin_p5"] <= metrics["task_inference_margin_median"]
    gns = run_experiment(apply_overrides(config, ["eval.scenario=GNs"]), None).metrics
    assert gns["average_accuracy_inferred"] >= metrics["average_accuracy_inferred"]


def test_inference_on_a_seeded_sample_of_tasks_equals_those_tasks_of_the_full_evaluation():
    config = apply_overrides(
        ExperimentConfig(),
        [*THREE_TASKS, "scenario.num_tasks=4", "eval.scenario=GNu", "inference.batch=500"],
    )
    full = run_experiment(config, None).metrics
    sampled = run_experiment(apply_overrides(config, ["inference.tasks=2"]), None).metrics
    tasks = sampled["inferred_tasks"]
    assert len(tasks) == 2 and tasks == sorted(set(tasks)) and set(tasks) <= {0, 1, 2, 3}
    assert sampled["accuracies_inferred"] == [full["accuracies_inferred"][t] for t in tasks]
    assert sampled["task_inference_per_task"] == [full["task_inference_per_task"][t] for t in tasks]
    assert "inferred_tasks" not in full and full["inference_seconds_per_batch"] > 0
    # the sample depends on the scenario's seed alone
    again = run_experiment(apply_overrides(config, ["inference.tasks=2", "train.seed=5"]), None)
    assert again.metrics["inferred_tasks"] == tasks
    with pytest.raises(ConfigError, match="inference.tasks"):
        apply_overrides(config, ["inference.tasks=-1"])


def test_entropy_fit_needs_alphas_and_reports_fitted_accuracy():
    with pytest.raises(ConfigError, match="impresslearn"):
        infer_task(
            _random_supsup(2), torch.randn(4, 1, 28, 28), procedure="entropy_fit", num_classes=10
        )
    config = apply_overrides(
        ExperimentConfig(),
        [
            "scenario.dataset=mnist_embedded",
            "scenario.num_tasks=3",
            "train.iterations=60",
            "train.lr=1e-2",
            "method.name=impresslearn",
            "method.num_impressions=2",
            "method.impressions.iterations=60",
            "eval.scenario=GNu",
            "inference.procedure=entropy_fit",
            "inference.batch=1000",
            "inference.images=1000",
        ],
    )
    metrics = run_experiment(config, None).metrics
    assert 0.0 <= metrics["task_inference_accuracy"] <= 1.0
    assert 0.1 < metrics["average_accuracy_fitted_alphas"] <= 1.0


def test_bench_inference_reports_times_memory_and_ratios():
    from impresslearn.bench import bench_inference

    result = bench_inference(repeats=2, sizes=(2, 6))
    for name in ("supsup", "impresslearn"):
        for t in (2, 6):
            assert result["median_ms"][f"{name}_T{t}"] > 0
            assert result["peak_memory_mb"][f"{name}_T{t}"] > 0
            assert result["median_ms"][f"{name}_shortlist_T{t}"] > 0
    impress = result["median_ms"]
    assert result["ratio"] == pytest.approx(impress["impresslearn_T6"] / impress["impresslearn_T2"])
    assert result["shortlist_ratio"] == pytest.approx(
        impress["impresslearn_shortlist_T6"] / impress["impresslearn_shortlist_T2"]
    )
    assert result["targets"] == {"ratio": 1.5, "shortlist_ratio": 2.0}


def test_repeated_oneshot_reuses_the_mixed_bank_and_gives_the_same_gradient(monkeypatch):
    from impresslearn.layers import masked

    monkeypatch.setattr(masked, "FLOAT_BANK_BYTES", 0)  # every layer mixes its bool bank
    method = _random_supsup(6)
    gen = torch.Generator().manual_seed(3)
    x1, x2 = torch.randn(2, 1, 1, 28, 28, generator=gen)
    beta = torch.full((6,), 1 / 6)
    beta_gradient(method, x1, beta, "entropy", 10)  # leaves the uniform mixture in each layer
    kept = [layer._mixed[1] for layer in masked_layers(method.model)]
    reused = beta_gradient(method, x2, beta, "entropy", 10)
    assert all(
        layer._mixed[1] is k for layer, k in zip(masked_layers(method.model), kept, strict=True)
    )
    for layer in masked_layers(method.model):
        layer._mixed = None
    fresh = beta_gradient(method, x2, beta, "entropy", 10)
    assert torch.equal(reused, fresh)
    # other coeffs, or a grown bank, are mixed anew
    other = beta_gradient(method, x2, torch.linspace(0.1, 0.3, 6), "entropy", 10)
    assert not torch.equal(other, fresh)
    for layer in masked_layers(method.model):
        layer.add_to_bank(torch.ones(layer.weight.shape, dtype=torch.bool))
        assert layer._mixed is None
