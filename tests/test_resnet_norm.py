"""Residual backbones, per-task batch norm, and SplitCIFAR100 / image-folder splits on real data."""

import numpy as np
import pytest
import torch
from torch import nn

from impresslearn.backbones import BackboneConfig, build_backbone
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.data import export_image_folder, load_dataset
from impresslearn.errors import ConfigError
from impresslearn.layers import (
    TaskBatchNorm2d,
    freeze_norm_stats,
    masked_layers,
    norm_stats,
    norm_stats_bytes,
    one_hot,
    task_norms,
    use_coeffs,
)
from impresslearn.runners import load_run, run_experiment
from impresslearn.scenarios import ScenarioConfig, build_scenario
from impresslearn.scenarios.base import normalise

CIFAR_SHAPE = (3, 32, 32)


def basic_resnet_weights(width: int, num_outputs: int, in_channels: int = 3) -> int:
    """Weights of a CIFAR ResNet-18 layout (3x3 stem, stages of 2 basic blocks), counted by hand."""
    total = in_channels * width * 9
    in_planes = width
    for stage in range(4):
        planes = width * 2**stage
        for _ in range(2):
            total += in_planes * planes * 9 + planes * planes * 9
            if in_planes != planes:
                total += in_planes * planes  # 1x1 projection
            in_planes = planes
    return total + in_planes * num_outputs


def count(model: nn.Module) -> int:
    return sum(layer.weight.numel() for layer in masked_layers(model))


@pytest.mark.parametrize(
    ("name", "shape", "outputs", "weights", "num_layers", "norm_channels"),
    [
        ("gem_resnet18", CIFAR_SHAPE, 100, basic_resnet_weights(20, 100), 21, 1500),
        # torchvision-style CIFAR ResNet-18: 11,173,962 parameters with 10 classes, of which
        # 9,600 are batch-norm scale/shift and 10 the classifier bias; neither exists here.
        ("resnet18", CIFAR_SHAPE, 10, 11_173_962 - 9_600 - 10, 21, 4800),
        # torchvision's ResNet-50: 25,557,032 parameters, less 2 x 26,560 batch-norm affine
        # parameters and the 1,000 classifier biases.
        ("resnet50", (3, 64, 64), 1000, 25_557_032 - 2 * 26_560 - 1_000, 54, 26_560),
    ],
)
def test_resnet_weight_counts_and_shapes(name, shape, outputs, weights, num_layers, norm_channels):
    model = build_backbone(BackboneConfig(name=name), shape, outputs)
    dense = build_backbone(BackboneConfig(name=name), shape, outputs, dense=True)
    assert count(model) == weights
    assert sum(p.numel() for p in dense.parameters()) == weights  # no affine norm, no biases
    assert len(masked_layers(model)) == num_layers
    assert sum(n.num_features for n in task_norms(model)) == norm_channels
    assert not task_norms(dense)
    assert all(not m.affine for m in dense.modules() if isinstance(m, nn.BatchNorm2d))
    assert list(model.parameters()) == []
    assert basic_resnet_weights(64, 10) == 11_173_962 - 9_600 - 10  # the hand count agrees


def test_gem_resnet18_layout():
    model = build_backbone(BackboneConfig(name="gem_resnet18"), CIFAR_SHAPE, 5)
    convs = [layer for layer in masked_layers(model) if layer.weight.dim() == 4]
    assert tuple(convs[0].weight.shape) == (20, 3, 3, 3) and convs[0].stride == 1
    assert sorted({c.weight.shape[0] for c in convs}) == [20, 40, 80, 160]
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    x = torch.randn(4, *CIFAR_SHAPE)
    for layer in masked_layers(model):
        layer.add_to_bank(torch.rand(layer.weight.shape) < 0.5)
    with torch.no_grad(), use_coeffs(model, one_hot(0, 1)):
        assert model(x).shape == (4, 5)


def test_task_batch_norm_keeps_statistics_per_task():
    gen = torch.Generator().manual_seed(0)
    norm = TaskBatchNorm2d(3, momentum=1.0)  # momentum 1: running stats = the last batch's
    a = torch.randn(64, 3, 4, 4, generator=gen) * 2.0 + 5.0
    b = torch.randn(64, 3, 4, 4, generator=gen) * 0.5 - 3.0
    for key, data in ((0, a), (1, b)):
        with norm_stats(norm, key, learn=True):
            norm(data)
        freeze_norm_stats(norm, key)
    assert norm.stats["0"].dtype == torch.float16 and norm.stats["0"].shape == (2, 3)
    saved = norm.stats["0"].clone()
    with norm_stats(norm, 2, learn=True):
        norm(torch.randn(64, 3, 4, 4, generator=gen))  # learning another task ...
    assert torch.equal(norm.stats["0"], saved)  # ... leaves the others alone
    with torch.no_grad(), norm_stats(norm, 0):
        out_a = norm(a)
    with torch.no_grad(), norm_stats(norm, 1):
        out_b_with_a = norm(a)
    assert abs(out_a.mean().item()) < 0.05  # a normalised with its own statistics
    assert out_b_with_a.mean().item() > 10  # with task 1's statistics it is far off
    mean, var = saved.float()
    expected = (a - mean.view(1, 3, 1, 1)) / torch.sqrt(var.view(1, 3, 1, 1) + norm.eps)
    torch.testing.assert_close(out_a, expected, rtol=1e-5, atol=1e-5)
    # Outside any block: batch statistics, nothing stored or changed.
    out = norm(b)
    assert abs(out.mean().item()) < 1e-5
    assert set(norm.stats) == {"0", "1"}
    with norm_stats(norm, 7), pytest.raises(KeyError, match="no batch-norm statistics for '7'"):
        norm(a)
    assert norm.stat_bytes() == 2 * 3 * 2


# --------------------------------------------------------------------------- on CIFAR-100


@pytest.fixture(scope="module")
def cifar(shared_data_root):
    return load_dataset("cifar100", shared_data_root)


def test_split_cifar100_tasks(cifar):
    scenario = build_scenario(
        ScenarioConfig(name="split_cifar100", dataset="cifar100", num_tasks=20), cifar
    )
    classes = [scenario.classes(t) for t in range(20)]
    assert sorted(c for task in classes for c in task) == list(range(100))
    again = build_scenario(
        ScenarioConfig(name="split_cifar100", dataset="cifar100", num_tasks=20), cifar
    )
    assert [again.classes(t) for t in range(20)] == classes  # deterministic per seed
    other = build_scenario(
        ScenarioConfig(name="split_cifar100", dataset="cifar100", num_tasks=20, seed=1), cifar
    )
    assert [other.classes(t) for t in range(20)] != classes
    assert classes[0] != [0, 1, 2, 3, 4]  # the order is permuted, not the identity
    train, test = scenario.train_data(3), scenario.test_data(3)
    assert train.prepared().shape == (2500, *CIFAR_SHAPE) and test.prepared().shape == (
        500,
        *CIFAR_SHAPE,
    )
    assert sorted(train.y.unique().tolist()) == [0, 1, 2, 3, 4]
    # Label i of task 3 is data-set class classes[3][i]: the images are the same ones.
    for i, c in enumerate(classes[3]):
        assert (test.y == i).sum() == 100
        raw = cifar.test.images[cifar.test.labels == c]
        assert torch.equal(test.prepared()[test.y == i], normalise(raw, cifar.mean, cifar.std))
    assert test.augment is None and train.augment is not None
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(
        train.augment(train.prepared()[:64], g1), train.augment(train.prepared()[:64], g2)
    )


def test_split_scenario_bad_input(cifar):
    with pytest.raises(ConfigError, match="21 tasks of 5 classes need 105 classes"):
        build_scenario(
            ScenarioConfig(name="split_cifar100", dataset="cifar100", num_tasks=21), cifar
        )
    mnist = load_dataset("mnist_embedded", None)
    with pytest.raises(ConfigError, match="split_cifar100 is built from CIFAR-100"):
        build_scenario(ScenarioConfig(name="split_cifar100", dataset="mnist_embedded"), mnist)


CIFAR_RUN = [
    "scenario.name=split_cifar100",
    "scenario.dataset=cifar100",
    "scenario.num_tasks=2",
    "backbone.name=gem_resnet18",
    "method.density_rule=erdos_renyi",
    "method.density=128",
    "train.optimizer=adam",
    "train.lr=1e-2",
    "train.iterations=4",
    "train.batch_size=32",
    "eval.batch_size=500",
]


def test_supsup_with_batch_norm_forgets_nothing_and_reloads_bit_for_bit(
    cifar, shared_data_root, tmp_path
):
    config = apply_overrides(ExperimentConfig(), CIFAR_RUN)
    result = run_experiment(config, shared_data_root, tmp_path / "run")
    model, method = result.method.model, result.method
    x = result.scenario.test_data(0).prepared()[:200]
    assert result.metrics["forgetting"] == 0.0
    np.testing.assert_array_equal(np.diag(result.accuracy_matrix), result.accuracy_matrix[-1])
    norms = task_norms(model)
    assert set(norms[0].stats) == {"0", "1"}
    assert not torch.equal(norms[0].stats["0"], norms[0].stats["1"])  # per-task statistics
    assert result.metrics["bytes_per_task"]["norm_stats"] == norm_stats_bytes(model) == 6000
    assert result.metrics["bytes_per_task"]["mask"] == (
        sum((layer.weight.numel() + 7) // 8 for layer in masked_layers(model))
    )
    loaded = load_run(tmp_path / "run")
    for t in range(2):
        with torch.no_grad(), method.task_context(t):
            expected = model(x)
        assert torch.equal(loaded.logits(x, t), expected), f"task {t}"
    # Outputs of task 0 do not depend on the statistics of task 1: re-running task 0 alone
    # (a one-task run with the same seed) gives the same logits bit for bit.
    first = run_experiment(apply_overrides(config, ["scenario.num_tasks=1"]), shared_data_root)
    with torch.no_grad(), first.method.task_context(0):
        alone = first.method.model(x)
    with torch.no_grad(), method.task_context(0):
        assert torch.equal(model(x), alone)


def test_impresslearn_with_batch_norm_reloads_bit_for_bit(shared_data_root, tmp_path):
    config = apply_overrides(
        ExperimentConfig(),
        [
            *CIFAR_RUN,
            "scenario.num_tasks=3",
            "method.name=impresslearn",
            "method.num_impressions=2",
            "method.impressions.iterations=3",
            "method.impressions.batch_size=32",
        ],
    )
    result = run_experiment(config, shared_data_root, tmp_path / "run")
    assert result.metrics["forgetting"] == 0.0
    norms = task_norms(result.method.model)
    # Impression tasks reuse their impression's statistics; the combination task learns its own.
    assert torch.equal(norms[0].stats["0"], norms[0].stats["impression.0"])
    assert not torch.equal(norms[0].stats["2"], norms[0].stats["impression.0"])
    assert result.metrics["bytes_per_task"]["norm_stats"] == 6000
    assert result.metrics["bytes_per_task"]["coeffs"] == 4 * 2 * 21
    loaded = load_run(tmp_path / "run")
    x = result.scenario.test_data(2).prepared()[:100]
    for t in range(3):
        with torch.no_grad(), result.method.task_context(t):
            expected = result.method.model(x)
        assert torch.equal(loaded.logits(x, t), expected), f"task {t}"


def test_split_images_on_a_real_tree_exported_from_cifar(cifar, shared_data_root, tmp_path):
    tree = tmp_path / "tree"
    names = ["apple", "bear", "cloud", "dolphin"]
    for split, part, per_class in (("train", cifar.train, 30), ("test", cifar.test, 10)):
        rows = torch.cat([torch.nonzero(part.labels == c)[:per_class, 0] for c in range(4)])
        export_image_folder(part.images[rows], part.labels[rows], names, tree / split)
    config = apply_overrides(
        ExperimentConfig(),
        [
            *CIFAR_RUN,
            "scenario.name=split_images",
            f"scenario.dataset=folder:{tree}",
            "scenario.classes_per_task=2",
            "train.iterations=2",
        ],
    )
    result = run_experiment(config, shared_data_root)
    assert result.scenario.input_shape == CIFAR_SHAPE
    assert result.scenario.num_classes == 2
    assert len(result.scenario.train_data(0)) == 60 and len(result.scenario.test_data(1)) == 20
    assert result.metrics["forgetting"] == 0.0


def test_a_sweep_on_a_backbone_with_batch_norm_equals_runs(shared_data_root):
    """The sweep on GEMResNet18: every grid point learns its evaluation task's own statistics,
    and its accuracy is exactly what a run with those impressions gives the task; the dedicated
    masks are evaluated with their own statistics."""
    base = [
        *CIFAR_RUN,
        "scenario.num_tasks=3",
        "method.name=impresslearn",
        "method.impressions.iterations=3",
        "method.impressions.batch_size=32",
    ]
    sweep = apply_overrides(
        ExperimentConfig(),
        [
            *base,
            "method.num_impressions=2",
            "kind=sweep",
            "sweep.num_impressions=[2]",
            'sweep.kinds=["heterogeneous"]',
        ],
    )
    metrics = run_experiment(sweep, shared_data_root).metrics
    assert metrics["eval_tasks"] == [2]
    assert metrics["single_impression_accuracy_unseen"] is None  # not kept under batch norm
    assert 0.2 < metrics["dedicated_accuracy_unseen"] <= 1.0  # 5 classes: chance is 0.2
    run = run_experiment(
        apply_overrides(ExperimentConfig(), [*base, "method.num_impressions=2"]), shared_data_root
    )
    assert metrics["mean_accuracy_unseen"]["heterogeneous"]["2"] == run.accuracy_matrix[-1, 2]
