"""ImpressLearn: impressions, per-layer alphas, zero forgetting, storage, the sweep."""

import json
import math

import numpy as np
import pytest
import torch

from impresslearn.backbones import BackboneConfig, build_backbone
from impresslearn.cli import main
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.data import load_dataset
from impresslearn.errors import ConfigError
from impresslearn.layers import masked_layers, use_coeffs
from impresslearn.methods import ImpressLearn, ImpressLearnConfig
from impresslearn.methods.impress import random_masks
from impresslearn.runners import run_experiment
from impresslearn.scenarios import build_scenario

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


def _run(extra=()):
    return run_experiment(apply_overrides(ExperimentConfig(), [*TINY, *extra]), None)


@pytest.mark.parametrize("granularity", ["layer", "output_unit"])
def test_zero_forgetting_and_only_alphas_train(granularity):
    config = apply_overrides(ExperimentConfig(), [*TINY, f"method.granularity={granularity}"])
    result = run_experiment(config, None)
    method, scenario = result.method, result.scenario
    probe = scenario.test_data(0).prepared()[:200]
    # Re-evaluating each task now equals the accuracy right after it was learned (zero forgetting),
    # and two tasks' alphas give different outputs (so the check is not vacuous).
    for j in range(scenario.num_tasks):
        assert result.accuracy_matrix[j, j] == result.accuracy_matrix[-1, j]
    with torch.no_grad():
        outs = []
        for j in (2, 3):
            with method.task_context(j):
                outs.append(method.model(probe))
    assert not torch.equal(outs[0], outs[1])
    assert result.metrics["forgetting"] == 0.0
    assert list(method.model.parameters()) == []  # alphas never become model parameters


def test_logits_bit_identical_after_later_tasks():
    config = apply_overrides(ExperimentConfig(), TINY)
    model = build_backbone(config.backbone, (1, 28, 28), 10)
    method = ImpressLearn(model, config.method)
    scenario = build_scenario(config.scenario, load_dataset("mnist_embedded", None))
    probe = scenario.test_data(1).prepared()[:128]

    def trainer(params, task_id, train, description):
        opt = torch.optim.RMSprop(params, lr=1e-3)
        data = scenario.train_data(task_id)
        for i in range(10):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(
                model(data.prepared()[i * 64 : (i + 1) * 64]), data.y[i * 64 : (i + 1) * 64]
            ).backward()
            opt.step()

    method.prepare(trainer, scenario.num_tasks)
    logits = {}
    for t in range(scenario.num_tasks):
        method.begin_task(t)
        params = method.trainable_parameters()
        if params:
            opt = torch.optim.RMSprop(params, lr=1e-2)
            data = scenario.train_data(t)
            with method.training_context():
                for i in range(10):
                    opt.zero_grad()
                    loss = torch.nn.functional.cross_entropy(
                        model(data.prepared()[i * 64 : (i + 1) * 64]), data.y[i * 64 : (i + 1) * 64]
                    )
                    (loss + method.loss_regulariser()).backward()
                    opt.step()
        method.end_task(t)
        with torch.no_grad():
            for j in range(t + 1):
                with method.task_context(j):
                    logits[t, j] = model(probe)
    for j in range(scenario.num_tasks):
        for t in range(j, scenario.num_tasks):
            assert torch.equal(logits[t, j], logits[scenario.num_tasks - 1, j])


def test_impression_task_uses_its_own_mask_bit_for_bit():
    result = _run()
    method = result.method
    assert method.impression_of(0) == 0 and method.impression_of(1) == 1
    assert method.impression_of(2) is None
    probe = result.scenario.test_data(1).prepared()[:64]
    with torch.no_grad(), method.task_context(1):
        via_alphas = method.model(probe)
    x = probe.flatten(1)
    layers = masked_layers(method.model)
    for i, layer in enumerate(layers):
        x = torch.nn.functional.linear(x, layer.weight * layer.bank[1].float())
        x = x.relu() if i < len(layers) - 1 else x
    assert torch.equal(via_alphas, x)


def test_bytes_per_task_and_metrics():
    result = _run(["method.dedicated_masks=true"])
    m = result.metrics
    assert m["bytes_per_task"] == {"mask": 0, "coeffs": 3 * 2 * 4, "norm_stats": 0, "total": 24}
    assert m["shared_bytes"]["impressions"] == 2 * sum(
        math.ceil(n / 8) for n in (784 * 300, 300 * 100, 100 * 10)
    )
    assert m["impression_tasks"] == [0, 1] and m["unseen_tasks"] == [2, 3]
    assert m["average_accuracy_unseen"] == pytest.approx(np.mean(m["final_accuracies"][2:]))
    assert 0.3 < m["dedicated_accuracy_unseen"] <= 1.0
    assert "single_impression_accuracy_unseen" in m
    unit = _run(["method.granularity=output_unit"]).metrics
    assert unit["bytes_per_task"]["coeffs"] == (300 + 100 + 10) * 2 * 4


def test_same_seed_same_result():
    a, b = _run(), _run()
    np.testing.assert_array_equal(a.accuracy_matrix, b.accuracy_matrix)


@pytest.mark.parametrize("kind", ["homogeneous", "random"])
def test_other_impression_kinds_run(kind):
    result = _run([f"method.impression_kind={kind}"])
    method = result.method
    bank = masked_layers(method.model)[0].bank
    assert bank.shape[0] == 2 and not torch.equal(bank[0], bank[1])
    assert result.metrics["unseen_tasks"] == ([0, 1, 2, 3])
    assert result.metrics["forgetting"] == 0.0


def test_random_masks_exact_density_and_seeded():
    a = random_masks((30, 20), 0.3, 3, seed=1, layer=0)
    assert a.shape == (3, 30, 20) and a.dtype == torch.bool
    assert a.flatten(1).sum(1).tolist() == [180, 180, 180]
    assert torch.equal(a, random_masks((30, 20), 0.3, 3, seed=1, layer=0))
    assert not torch.equal(a, random_masks((30, 20), 0.3, 3, seed=2, layer=0))


def test_regulariser_by_hand():
    model = build_backbone(BackboneConfig(), (1, 28, 28), 10)
    method = ImpressLearn(
        model, ImpressLearnConfig(num_impressions=2, reg_lambda=0.5, impression_kind="random")
    )
    method.prepare_with(method.random_impressions())
    method.begin_task(0)
    for a, v in zip(
        method.trainable_parameters(), ([1.0, 1.0], [0.5, -0.5], [0.25, 0.25]), strict=True
    ):
        a.data = torch.tensor(v)
    # (2 - 1)^2 + (1 - 1)^2 + (0.5 - 1)^2 = 1.25, times 0.5
    assert method.loss_regulariser().item() == pytest.approx(0.625)


def test_alpha_gradient_matches_explicit_mixture():
    model = build_backbone(BackboneConfig(), (1, 28, 28), 10)
    layers = masked_layers(model)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        for layer in layers:
            layer.add_to_bank(torch.rand(layer.weight.shape, generator=gen) < 0.5)
    alphas = [torch.rand(3, generator=gen, requires_grad=True) for _ in layers]
    x = torch.randn(16, 1, 28, 28, generator=gen)
    with use_coeffs(model, alphas):
        model(x).square().sum().backward()
    fast = [a.grad.clone() for a in alphas]
    ref_alphas = [a.detach().clone().requires_grad_() for a in alphas]
    h = x.flatten(1)
    for i, (layer, a) in enumerate(zip(layers, ref_alphas, strict=True)):
        w = layer.weight * torch.einsum("m,moi->oi", a, layer.bank.float())
        h = torch.nn.functional.linear(h, w)
        h = h.relu() if i < len(layers) - 1 else h
    h.square().sum().backward()
    for f, r in zip(fast, ref_alphas, strict=True):
        torch.testing.assert_close(f, r.grad, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        (["method.impression_tasks=[0,1,2]"], "lists 3 tasks but method.num_impressions=2"),
        (["method.impression_kind=mixed"], "impression_kind"),
        (["method.granularity=weight"], "granularity"),
        (["method.impression_tasks=[0,9]"], "only 4 tasks"),
    ],
)
def test_bad_impress_configs(overrides, fragment):
    with pytest.raises(ConfigError, match=fragment):
        _run(overrides)


def test_sweep_writes_figure_and_csv(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["run", "quickstart-supsup", "--quiet", "--out", str(out)]
    for item in [
        *TINY,
        "scenario.num_tasks=4",
        "kind=sweep",
        "sweep.num_impressions=[1,2]",
        "sweep.eval_tasks=[2,3]",
    ]:
        argv += ["--set", item]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["mean_accuracy_unseen"]) == {"heterogeneous", "homogeneous", "random"}
    assert len(metrics["rows"]) == 3 * 2 * 2
    # n=1 heterogeneous: one impression scaled by a positive alpha keeps its argmax (a ReLU net
    # without biases is positively homogeneous), so it equals the unchanged impression.
    het1 = metrics["mean_accuracy_unseen"]["heterogeneous"]["1"]
    assert het1 == pytest.approx(metrics["single_impression_accuracy_unseen"])
    assert (out / "sweep.png").stat().st_size > 1000
    csv_text = (out / "sweep.csv").read_text()
    assert csv_text.startswith("kind,representation,num_impressions,task_id,accuracy")
    capsys.readouterr()

    # The same grid in two representations: one line per kind and representation, the per-layer
    # one equal to the grid learned in the method's own (per-layer) representation above.
    both = tmp_path / "sweep-both"
    argv = [
        *argv[:4],
        str(both),
        *argv[5:],
        "--set",
        'sweep.representations=["layer","output_unit@int8"]',
    ]
    assert main(argv) == 0
    again = json.loads((both / "metrics.json").read_text())["mean_accuracy_unseen"]
    assert set(again) == {
        f"{kind} {spec}"
        for kind in ("heterogeneous", "homogeneous", "random")
        for spec in ("layer", "output_unit@int8")
    }
    for kind in ("heterogeneous", "homogeneous", "random"):
        assert again[f"{kind} layer"] == metrics["mean_accuracy_unseen"][kind]
    assert again["homogeneous output_unit@int8"] != again["homogeneous layer"]
    capsys.readouterr()


def test_raw_score_impressions_keep_the_largest_signed_scores():
    """``mask_kind=topk_raw`` (the authors' rule, used by the -paper presets): every impression
    keeps exactly its share of weights, and differs from the |scores| rule's impression."""
    from impresslearn.presets import get_preset

    assert get_preset("impress-rotated-mnist-paper").method.mask_kind == "topk_raw"
    assert get_preset("impress-split-cifar100-paper").method.mask_kind == "topk_raw"
    raw = _run(["method.mask_kind=topk_raw"]).method
    plain = _run().method
    for a, b in zip(masked_layers(raw.model), masked_layers(plain.model), strict=True):
        assert int(a.bank[0].sum()) == round(0.5 * a.weight.numel())
        assert not torch.equal(a.bank[0], b.bank[0])


def test_shared_scores_start_every_impression_from_the_first_tasks_scores():
    config = apply_overrides(
        ExperimentConfig(), [*TINY, "method.impression_tasks=[1,3]", "method.shared_scores=true"]
    )
    model = build_backbone(config.backbone, (1, 28, 28), 10)
    assert ImpressLearn(model, config.method).impression_jobs() == [(1, 1), (3, 1)]
    plain = apply_overrides(config, ["method.shared_scores=false"])
    assert ImpressLearn(model, plain.method).impression_jobs() == [(1, 1), (3, 3)]


def test_the_sweep_marks_where_homogeneous_impressions_catch_up():
    from impresslearn.runners.sweep import homogeneous_gap

    summary = {
        "heterogeneous layer": {"10": 0.50, "20": 0.60, "40": 0.70},
        "homogeneous layer": {"10": 0.40, "20": 0.595, "40": 0.695},
        "heterogeneous output_unit": {"10": 0.9, "20": 0.9, "40": 0.9},
        "homogeneous output_unit": {"10": 0.895, "20": 0.85, "40": 0.86},
        "random layer": {"10": 0.1, "20": 0.2, "40": 0.3},
    }
    gaps = homogeneous_gap(summary)
    assert set(gaps) == {"layer", "output_unit"}
    assert gaps["layer"]["points"]["10"] == pytest.approx(10.0)
    assert gaps["layer"]["within_1_point_from"] == 20
    # within 1 point at n=10 but not after: it has not caught up
    assert gaps["output_unit"]["within_1_point_from"] is None
    assert homogeneous_gap({"heterogeneous": {"1": 0.3}, "homogeneous": {"1": 0.3}})[""] == {
        "points": {"1": 0.0},
        "within_1_point_from": 1,
    }
