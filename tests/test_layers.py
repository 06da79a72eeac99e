"""Tests for impresslearn.layers.masked: the frozen weight, scores, the bank and use_coeffs.

Every test runs for both masked layers (linear and 2-D convolution) through the ``kind`` fixture.
"""

import math
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from impresslearn.errors import ConfigError
from impresslearn.layers import (
    DenseConv2d,
    DenseLinear,
    MaskedConv2d,
    MaskedLinear,
    init_weight,
    masked_layers,
    num_kept,
    one_hot,
    use_coeffs,
)


@dataclass(frozen=True)
class LayerKind:
    """How to build one kind of masked layer, its dense twin, an input, and the reference op."""

    name: str
    masked: type
    dense: type
    args: tuple[int, ...]
    kwargs: dict[str, Any]
    input_shape: tuple[int, ...]

    def build(self, seed: int = 0, index: int = 0, **kw: Any) -> nn.Module:
        return self.masked(*self.args, **self.kwargs, backbone_seed=seed, layer_index=index, **kw)

    def build_dense(self, seed: int = 0, index: int = 0, **kw: Any) -> nn.Module:
        return self.dense(*self.args, **self.kwargs, backbone_seed=seed, layer_index=index, **kw)

    def input(self, seed: int = 0) -> torch.Tensor:
        return torch.randn(self.input_shape, generator=torch.Generator().manual_seed(seed))

    def reference(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The plain functional op with an explicit weight."""
        if self.masked is MaskedLinear:
            return F.linear(x, weight)
        return F.conv2d(x, weight, **self.kwargs)


LINEAR = LayerKind("linear", MaskedLinear, DenseLinear, (20, 12), {}, (5, 20))
CONV = LayerKind(
    "conv", MaskedConv2d, DenseConv2d, (3, 6, 3), {"stride": 2, "padding": 1}, (2, 3, 9, 9)
)


@pytest.fixture(params=[LINEAR, CONV], ids=lambda k: k.name)
def kind(request) -> LayerKind:
    return request.param


def random_masks(shape: tuple[int, ...], count: int, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(shape, generator=gen) < 0.5 for _ in range(count)]


def layer_with_bank(kind: LayerKind, count: int) -> tuple[nn.Module, list[torch.Tensor]]:
    layer = kind.build()
    masks = random_masks(tuple(layer.weight.shape), count)
    for mask in masks:
        layer.add_to_bank(mask)
    return layer, masks


def scores_generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- frozen weight


def test_weight_is_a_frozen_buffer_not_a_parameter(kind):
    layer = kind.build()
    assert "weight" in dict(layer.named_buffers())
    assert list(layer.parameters()) == []
    assert not layer.weight.requires_grad
    assert "weight" not in layer.state_dict()  # a checkpoint stores the seed, not the weight


def test_weight_is_a_pure_function_of_seed_and_layer_index(kind):
    weight = kind.build(seed=3, index=1).weight
    assert torch.equal(weight, kind.build(seed=3, index=1).weight)
    assert not torch.equal(weight, kind.build(seed=4, index=1).weight)
    assert not torch.equal(weight, kind.build(seed=3, index=2).weight)


def test_signed_constant_weights_are_plus_minus_sqrt_two_over_fan_in(kind):
    layer = kind.build(weight_init="signed_constant")
    fan_in = math.prod(layer.weight.shape[1:])
    magnitude = torch.tensor(math.sqrt(2.0 / fan_in), dtype=torch.float32)
    assert torch.equal(layer.weight.abs(), magnitude.expand_as(layer.weight))
    positive = (layer.weight > 0).float().mean().item()
    assert 0.3 < positive < 0.7  # random signs, both present


def test_kaiming_normal_weights_have_std_sqrt_two_over_fan_in():
    weight = init_weight((400, 250), backbone_seed=0, layer_index=0, kind="kaiming_normal")
    expected = math.sqrt(2.0 / 250)
    assert weight.std().item() == pytest.approx(expected, rel=0.02)
    assert abs(weight.mean().item()) < 0.05 * expected
    assert len(torch.unique(weight)) > 1000  # normal, not signed constant


def test_init_weight_rejects_an_unknown_init():
    with pytest.raises(ConfigError):
        init_weight((3, 4), 0, 0, "xavier")


# --------------------------------------------------------------------------- learning a mask


def test_only_scores_train_and_the_weight_never_changes(kind):
    layer = kind.build()
    weight_before = layer.weight.clone()
    scores = layer.begin_scores(0.5, "topk", scores_generator())
    assert isinstance(scores, nn.Parameter)
    assert [name for name, _ in layer.named_parameters()] == ["scores"]
    assert list(layer.parameters())[0] is scores
    assert scores.shape == layer.weight.shape

    optimiser = torch.optim.SGD([scores], lr=0.5)
    scores_before = scores.detach().clone()
    for step in range(3):
        optimiser.zero_grad()
        layer(kind.input(step)).square().mean().backward()
        assert layer.weight.grad is None
        assert scores.grad is not None and scores.grad.abs().sum() > 0
        optimiser.step()
    assert not torch.equal(scores.detach(), scores_before)
    assert torch.equal(layer.weight, weight_before)


def test_forward_while_learning_uses_the_topk_mask_of_the_scores(kind):
    layer = kind.build()
    scores = layer.begin_scores(0.3, "topk", scores_generator())
    flat = scores.detach().abs().flatten()
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat, num_kept(0.3, flat.numel())).indices] = 1.0
    x = kind.input()
    torch.testing.assert_close(layer(x), kind.reference(x, layer.weight * mask.view_as(scores)))


def test_begin_scores_is_deterministic_given_the_generator(kind):
    a = kind.build().begin_scores(0.5, "topk", scores_generator(9)).detach()
    b = kind.build().begin_scores(0.5, "topk", scores_generator(9)).detach()
    c = kind.build().begin_scores(0.5, "topk", scores_generator(10)).detach()
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("density", [0.1, 0.5, 0.77, 1.0])
def test_end_scores_returns_a_topk_mask_of_exactly_round_density_n(kind, density):
    layer = kind.build()
    scores = layer.begin_scores(density, "topk", scores_generator())
    expected_scores = scores.detach().clone()
    mask = layer.end_scores()
    n = layer.weight.numel()
    assert mask.dtype == torch.bool
    assert mask.shape == layer.weight.shape
    assert int(mask.sum()) == round(density * n)
    kept = expected_scores.abs()[mask]
    dropped = expected_scores.abs()[~mask]
    if dropped.numel():
        assert kept.min() > dropped.max()
    assert layer.scores is None
    assert list(layer.parameters()) == []


def test_end_scores_threshold_mask_keeps_the_non_negative_scores(kind):
    layer = kind.build()
    scores = layer.begin_scores(0.5, "threshold", scores_generator())
    expected = scores.detach() >= 0
    assert torch.equal(layer.end_scores(), expected)


def test_end_scores_without_begin_raises(kind):
    with pytest.raises(RuntimeError, match="begin_scores"):
        kind.build().end_scores()


@pytest.mark.parametrize(("density", "mask_kind"), [(0.0, "topk"), (1.5, "topk"), (0.5, "bits")])
def test_begin_scores_rejects_bad_settings(kind, density, mask_kind):
    with pytest.raises(ConfigError):
        kind.build().begin_scores(density, mask_kind, scores_generator())


# -------------------------------------------------------------------------------- the bank


def test_add_to_bank_grows_and_keeps_earlier_masks_bit_identical(kind):
    layer = kind.build()
    shape = tuple(layer.weight.shape)
    masks = random_masks(shape, 9)  # crosses the capacity doublings at 4 and 8
    assert layer.bank.shape == (0, *shape)
    for i, mask in enumerate(masks):
        assert layer.add_to_bank(mask) == i
        assert layer.bank.shape == (i + 1, *shape)
        assert layer.bank.dtype == torch.bool
        for j in range(i + 1):
            assert torch.equal(layer.bank[j], masks[j])


def test_add_to_bank_rejects_a_mask_of_another_shape(kind):
    layer = kind.build()
    with pytest.raises(ValueError, match="shape"):
        layer.add_to_bank(torch.ones(7, dtype=torch.bool))


def test_learning_a_new_mask_leaves_stored_masks_outputs_bit_identical(kind):
    """The SupSup invariant at layer level: learning task t+1 leaves task t's output unchanged."""
    layer = kind.build()
    layer.begin_scores(0.5, "topk", scores_generator(0))
    layer.add_to_bank(layer.end_scores())
    x = kind.input()
    with use_coeffs(layer, one_hot(0, 1)):
        before = layer(x)

    scores = layer.begin_scores(0.5, "topk", scores_generator(1))
    optimiser = torch.optim.SGD([scores], lr=1.0)
    for step in range(3):
        optimiser.zero_grad()
        layer(kind.input(step + 1)).square().mean().backward()
        optimiser.step()
    layer.add_to_bank(layer.end_scores())

    with use_coeffs(layer, one_hot(0, 2)):
        assert torch.equal(layer(x), before)
    with use_coeffs(layer, one_hot(1, 2)):
        assert not torch.equal(layer(x), before)


# --------------------------------------------------------------------------- use_coeffs


def test_one_hot_coeffs_reproduce_the_functional_op_bit_for_bit(kind):
    layer, masks = layer_with_bank(kind, 5)
    x = kind.input()
    for i, mask in enumerate(masks):
        with use_coeffs(layer, one_hot(i, 5)):
            assert torch.equal(layer(x), kind.reference(x, layer.weight * mask.float()))


def test_nested_use_coeffs_restores_the_previous_selection(kind):
    layer, masks = layer_with_bank(kind, 3)
    x = kind.input()
    expected = [kind.reference(x, layer.weight * m.float()) for m in masks]
    with use_coeffs(layer, one_hot(0, 3)):
        assert torch.equal(layer(x), expected[0])
        with use_coeffs(layer, one_hot(2, 3)):
            assert torch.equal(layer(x), expected[2])
        assert torch.equal(layer(x), expected[0])
        with pytest.raises(KeyError), use_coeffs(layer, one_hot(1, 3)):
            assert torch.equal(layer(x), expected[1])
            raise KeyError("boom")
        assert torch.equal(layer(x), expected[0])
    with pytest.raises(RuntimeError, match="no mask selected"):
        layer(x)


def test_forward_with_no_mask_selected_raises_a_clear_error(kind):
    layer, _ = layer_with_bank(kind, 2)
    with pytest.raises(RuntimeError, match="use_coeffs"):
        layer(kind.input())


def test_mixed_coeffs_without_grad_are_cached_and_match_an_uncached_computation(kind):
    layer, masks = layer_with_bank(kind, 4)
    x = kind.input()
    coeffs = torch.tensor([0.1, -0.4, 0.7, 0.25])
    mixed = sum(c * m.float() for c, m in zip(coeffs, masks, strict=True))
    expected = kind.reference(x, layer.weight * mixed)
    with use_coeffs(layer, coeffs):
        first = layer(x)
        second = layer(x)  # the cached effective weight
        third = layer(kind.input(1))
    torch.testing.assert_close(first, expected)
    assert torch.equal(first, second)
    torch.testing.assert_close(third, kind.reference(kind.input(1), layer.weight * mixed))
    # A new block with other coeffs does not see the previous block's cache.
    other = torch.tensor([0.0, 0.5, 0.0, 0.5])
    with use_coeffs(layer, other):
        torch.testing.assert_close(
            layer(x), kind.reference(x, layer.weight * 0.5 * (masks[1].float() + masks[3].float()))
        )


def test_per_unit_coeffs_mix_each_output_unit_separately(kind):
    layer, masks = layer_with_bank(kind, 3)
    out = layer.weight.shape[0]
    coeffs = torch.randn(out, 3, generator=torch.Generator().manual_seed(5))  # (out, M)
    bank = torch.stack(masks).float()  # (M, out, ...)
    mixed = torch.einsum("om,mo...->o...", coeffs, bank)
    x = kind.input()
    with use_coeffs(layer, coeffs):
        torch.testing.assert_close(layer(x), kind.reference(x, layer.weight * mixed))


def test_coeffs_requiring_grad_get_the_gradient_of_the_explicit_computation(kind):
    layer, masks = layer_with_bank(kind, 4)
    x = kind.input()
    coeffs = torch.tensor([0.3, 0.2, 0.4, 0.1], requires_grad=True)
    with use_coeffs(layer, coeffs):
        layer(x).square().sum().backward()
    reference_coeffs = coeffs.detach().clone().requires_grad_()
    mixed = sum(c * m.float() for c, m in zip(reference_coeffs, masks, strict=True))
    kind.reference(x, layer.weight * mixed).square().sum().backward()
    assert coeffs.grad is not None
    torch.testing.assert_close(coeffs.grad, reference_coeffs.grad)
    assert layer.weight.grad is None
    assert list(layer.parameters()) == []


def test_coeffs_requiring_grad_are_recomputed_on_every_forward(kind):
    """Two forwards in one block with coeffs that need a gradient: both reach the coeffs."""
    layer, _ = layer_with_bank(kind, 3)
    coeffs = torch.full((3,), 1 / 3, requires_grad=True)
    with use_coeffs(layer, coeffs):
        layer(kind.input(0)).sum().backward()
        first = coeffs.grad.clone()
        coeffs.grad = None
        layer(kind.input(1)).sum().backward()
    assert coeffs.grad is not None
    assert not torch.equal(first, coeffs.grad)


def test_coeffs_requiring_grad_get_a_gradient_after_a_no_grad_forward(kind):
    layer, _ = layer_with_bank(kind, 3)
    coeffs = torch.full((3,), 1 / 3, requires_grad=True)
    x = kind.input()
    with use_coeffs(layer, coeffs):
        with torch.no_grad():
            layer(x)  # e.g. an evaluation pass before the task-inference gradient step
        output = layer(x)
        assert output.requires_grad
        output.sum().backward()
    assert coeffs.grad is not None


def two_layer_model() -> nn.Sequential:
    model = nn.Sequential(
        MaskedLinear(8, 6, backbone_seed=0, layer_index=0),
        nn.ReLU(),
        MaskedLinear(6, 4, backbone_seed=0, layer_index=1),
    )
    for layer in masked_layers(model):
        for mask in random_masks(tuple(layer.weight.shape), 2, seed=layer.layer_index):
            layer.add_to_bank(mask)
    return model


def test_per_layer_coeffs_select_each_layer_separately():
    model = two_layer_model()
    first, second = masked_layers(model)
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    with use_coeffs(model, [one_hot(0, 2), one_hot(1, 2)]):
        output = model(x)
    hidden = F.linear(x, first.weight * first.bank[0].float()).relu()
    assert torch.equal(output, F.linear(hidden, second.weight * second.bank[1].float()))


@pytest.mark.parametrize("count", [1, 3])
def test_per_layer_coeffs_of_the_wrong_length_raise(count):
    model = two_layer_model()
    with pytest.raises(ValueError, match="layers"), use_coeffs(model, [one_hot(0, 2)] * count):
        pass


def test_coeffs_not_matching_the_bank_raise_and_leave_the_selection_unchanged():
    model = two_layer_model()
    x = torch.randn(3, 8, generator=torch.Generator().manual_seed(0))
    with use_coeffs(model, one_hot(1, 2)):
        expected = model(x)
        with pytest.raises(ValueError, match="2 masks"), use_coeffs(model, torch.ones(3)):
            pass
        assert torch.equal(model(x), expected)


def test_one_hot_rejects_an_index_outside_the_bank():
    with pytest.raises(IndexError):
        one_hot(3, 3)
    assert torch.equal(one_hot(1, 3), torch.tensor([0.0, 1.0, 0.0]))


# ----------------------------------------------------------------------------- dense twins


@pytest.mark.parametrize("weight_init", ["signed_constant", "kaiming_normal"])
def test_dense_twin_trains_the_same_initial_weight(kind, weight_init):
    dense = kind.build_dense(seed=2, index=1, weight_init=weight_init)
    masked = kind.build(seed=2, index=1, weight_init=weight_init)
    params = dict(dense.named_parameters())
    assert list(params) == ["weight"]  # no bias
    assert params["weight"].requires_grad
    assert torch.equal(dense.weight.detach(), masked.weight)
    assert torch.equal(
        dense.weight.detach(), init_weight(tuple(masked.weight.shape), 2, 1, weight_init)
    )
    x = kind.input()
    assert torch.equal(dense(x), kind.reference(x, masked.weight))
    dense(x).square().sum().backward()
    assert dense.weight.grad is not None and dense.weight.grad.abs().sum() > 0


def test_dense_twin_defaults_to_kaiming_normal(kind):
    dense = kind.build_dense(seed=0, index=0)
    assert torch.equal(
        dense.weight.detach(),
        init_weight(tuple(dense.weight.shape), 0, 0, "kaiming_normal"),
    )
