"""ImpressLearn's coefficient layouts (per layer ... per unit, groups, low rank) and their storage
(float32, float16, int8): shapes, bytes as stored, zero forgetting and reload bit for bit."""

import pytest
import torch

from impresslearn.checkpoint import CHECKPOINT_NAME
from impresslearn.config import ExperimentConfig, apply_overrides
from impresslearn.errors import ConfigError
from impresslearn.methods.coeffs import CoeffLayout, dequantise, layouts, quantise, tensor_bytes
from impresslearn.runners import load_run, run_experiment

LENET = [(300, 784), (100, 300), (10, 100)]

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


@pytest.mark.parametrize(
    ("granularity", "stored_numbers"),
    [
        ("layer", 3 * 5),
        ("output_unit", (300 + 100 + 10) * 5),
        ("classifier_unit", 2 * 5 + 10 * 5),
        ("groups", 3 * 4 * 5),
        ("low_rank", (300 + 5) + (100 + 5) + (10 + 5)),
    ],
)
def test_layouts_start_at_one_over_n_and_count_their_numbers(granularity, stored_numbers):
    per_layer = layouts(granularity, LENET, 5, groups=4, rank=1)
    gen = torch.Generator().manual_seed(0)
    for layout, (out, _) in zip(per_layer, LENET, strict=True):
        mixed = layout.expand(layout.initial(gen))
        assert mixed.shape == layout.mixed_shape
        assert mixed.shape[0] in (5, out)
        torch.testing.assert_close(mixed, torch.full(mixed.shape, 0.2))
    assert sum(layout.stored_bytes("float32") for layout in per_layer) == 4 * stored_numbers
    assert sum(layout.stored_bytes("float16") for layout in per_layer) == 2 * stored_numbers
    tensors = sum(layout.num_tensors for layout in per_layer)
    assert sum(layout.stored_bytes("int8") for layout in per_layer) == stored_numbers + 4 * tensors


def test_groups_are_contiguous_nearly_equal_and_share_a_row():
    layout = CoeffLayout("groups", out=10, n=3, groups=4)
    groups = layout.group_of_unit().tolist()
    assert groups == sorted(groups) and set(groups) == {0, 1, 2, 3}
    assert max(groups.count(g) for g in range(4)) - min(groups.count(g) for g in range(4)) <= 1
    rows = torch.arange(12.0).reshape(4, 3)
    mixed = layout.expand([rows])
    for unit, g in enumerate(groups):
        assert torch.equal(mixed[unit], rows[g])


def test_low_rank_expands_to_the_outer_product():
    layout = CoeffLayout("low_rank", out=6, n=4, rank=2)
    u, v = torch.randn(6, 2), torch.randn(4, 2)
    torch.testing.assert_close(layout.expand([u, v]), torch.einsum("or,nr->on", u, v))


def test_quantisation_round_trips_within_half_a_step():
    x = torch.randn(300, 9, generator=torch.Generator().manual_seed(1))
    stored = quantise(x, "int8")
    assert stored["values"].dtype == torch.int8 and stored["scale"].dtype == torch.float32
    scale = float(stored["scale"])
    assert (dequantise(stored) - x).abs().max() <= scale / 2 + 1e-7
    assert dequantise(quantise(x, "float16")).dtype == torch.float32
    assert torch.equal(dequantise(quantise(x, "float32")), x)
    assert torch.equal(dequantise(quantise(torch.zeros(3), "int8")), torch.zeros(3))
    assert tensor_bytes(10, "int8") == 14


@pytest.mark.parametrize(
    "overrides",
    [
        ["method.granularity=classifier_unit", "method.coeff_dtype=float16"],
        ["method.granularity=groups", "method.groups=3", "method.coeff_dtype=int8"],
        ["method.granularity=low_rank", "method.rank=2"],
    ],
)
def test_a_stream_with_each_layout_forgets_nothing_and_reloads_bit_for_bit(overrides, tmp_path):
    config = apply_overrides(ExperimentConfig(), [*TINY, *overrides])
    result = run_experiment(config, None, tmp_path / "run")
    method = result.method
    matrix = result.accuracy_matrix
    for j in range(4):
        assert matrix[j, j] == matrix[-1, j]  # zero forgetting
    assert result.metrics["forgetting"] == 0.0
    # The stored numbers are what the task uses, and what the bytes count.
    dtype = config.method.coeff_dtype
    expected = {"float32": torch.float32, "float16": torch.float16, "int8": torch.int8}[dtype]
    for t in (2, 3):
        for params, layout in zip(method.stored[t], method.layouts, strict=True):
            assert len(params) == layout.num_tensors
            assert all(s["values"].dtype == expected for s in params)
    stored_bytes = sum(
        tensor_bytes(s["values"].numel(), dtype) for params in method.stored[2] for s in params
    )
    assert result.metrics["bytes_per_task"]["coeffs"] == stored_bytes
    assert list(method.model.parameters()) == []
    loaded = load_run(tmp_path / "run")
    probe = result.scenario.test_data(3).prepared()[:100]
    for t in range(4):
        with torch.no_grad(), method.task_context(t):
            before = method.model(probe)
        assert torch.equal(loaded.logits(probe, t), before)
    assert (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_low_rank_trains_both_factors_and_only_them():
    config = apply_overrides(ExperimentConfig(), [*TINY, "method.granularity=low_rank"])
    result = run_experiment(config, None)
    u, v = (dequantise(s) for s in result.method.stored[2][0])
    assert not torch.equal(v[:, 0], torch.full_like(v[:, 0], 0.5))  # v moved from 1/n
    assert not torch.equal(u[:, 0], torch.ones_like(u[:, 0]))  # and so did u


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("method.granularity=diagonal", "granularity"),
        ("method.groups=0", "method.groups"),
        ("method.coeff_dtype=int4", "coeff_dtype"),
    ],
)
def test_bad_layout_settings_are_clear_errors(override, fragment):
    with pytest.raises(ConfigError, match=fragment):
        apply_overrides(ExperimentConfig(), [*TINY, override])
