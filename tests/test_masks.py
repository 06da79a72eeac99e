"""Tests for impresslearn.layers.masks and its CPU accelerator (impresslearn.layers.cpu_topk): top-k
selection, density rules, straight-through gradients, bank mixing and bit packing.

Every test runs twice: with the compiled top-k kernel and with the accelerator's NumPy selection
(the kernel hidden), so that CI checks both paths (the kernel is built there).
"""

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from impresslearn.errors import ConfigError
from impresslearn.layers import (
    DensityRule,
    TopKSelector,
    mix_bank,
    num_kept,
    pack_bits,
    threshold_masked_weight,
    topk_masked_weight,
    unpack_bits,
)
from impresslearn.layers.masked import one_hot
from impresslearn.layers.masks import exact_topk_mask
from impresslearn.layers.native import load_kernel


@pytest.fixture(autouse=True, params=["compiled", "numpy"])
def cpu_path(request, monkeypatch):
    """Run the test with the compiled kernel, or with the NumPy selection only."""
    if request.param == "compiled" and load_kernel() is None:
        pytest.skip("the compiled kernel is not built here")
    if request.param == "numpy":
        import impresslearn.layers.cpu_topk as cpu_topk

        monkeypatch.setattr(cpu_topk, "load_kernel", lambda: None)
    return request.param


def reference_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """A float 0/1 mask of the k largest ``|scores|`` by a full ``torch.topk``."""
    flat = scores.detach().abs().reshape(-1)
    mask = torch.zeros_like(flat)
    mask[torch.topk(flat, k).indices] = 1.0
    return mask.view_as(scores)


def rule_topk_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k of ``|scores|`` by the documented tie rule, from a plain stable sort: the k
    first in the order (largest ``|score|`` first, then smallest flat position)."""
    a = scores.detach().abs().reshape(-1).double().numpy()
    mask = torch.zeros(a.size)
    mask[np.argsort(-a, kind="stable")[:k]] = 1.0
    return mask.view(scores.shape)


def tied_scores(shape, levels: int, gen: torch.Generator) -> torch.Tensor:
    """Scores drawn from a handful of values (both signs), so that many ties straddle any cut."""
    values = torch.randint(-levels, levels + 1, shape, generator=gen).float() / 8.0
    return values


# ----------------------------------------------------------------------------------- top-k


@pytest.mark.parametrize(
    ("shape", "density"),
    [
        ((10,), 0.1),  # k = 1
        ((10,), 0.9),  # k = n - 1
        ((10,), 1.0),  # k = n
        ((7, 13), 0.5),
        ((3, 4, 3, 3), 0.3),
        ((300, 100), 0.05),
        ((300, 100), 0.5),
        ((300, 100), 0.97),
    ],
)
def test_topk_selector_matches_torch_topk_over_updates(shape, density):
    gen = torch.Generator().manual_seed(1234)
    numel = math.prod(shape)
    k = num_kept(density, numel)
    selector = TopKSelector(numel, k)
    scores = torch.randn(shape, generator=gen)
    # Small steps (the band around the last threshold holds the cut) and now and then a large
    # jump (the band misses and the selector must fall back to a full selection).
    steps = [1e-4, 1e-3, 1e-2, 1.0, 1e-3, 1e-4, 3.0, 1e-2, 1e-5, 0.1]
    for step in steps:
        scores = scores + step * torch.randn(shape, generator=gen)
        mask = selector(scores)
        assert mask.shape == scores.shape
        assert int(mask.sum()) == k == round(density * numel)
        assert torch.equal(mask, reference_topk_mask(scores, k))


def test_topk_selector_band_path_is_exact_on_a_large_layer():
    """A layer large enough that the band is much narrower than the scores: most calls must take
    the band path, and every call must still equal the full top-k."""
    gen = torch.Generator().manual_seed(7)
    numel, k = 200_000, num_kept(0.3, 200_000)
    selector = TopKSelector(numel, k)
    full_calls = 0
    original = selector._full_select

    def counting_full_select(a):
        nonlocal full_calls
        full_calls += 1
        return original(a)

    selector._full_select = counting_full_select
    scores = torch.randn(numel, generator=gen)
    for _ in range(12):
        scores = scores + 1e-4 * torch.randn(numel, generator=gen)
        assert torch.equal(selector(scores), reference_topk_mask(scores, k))
    assert full_calls < 6  # the band held the cut on most steps


def test_topk_selector_keeps_exactly_k_with_ties_straddling_the_cut():
    # |scores| = 5, 3, 3, 3, 1 with k = 2: one of the three equal 3s is kept, the first by position.
    scores = torch.tensor([5.0, -3.0, 3.0, 3.0, 1.0])
    expected = torch.tensor([1.0, 1.0, 0.0, 0.0, 0.0])
    for _ in range(2):
        selector = TopKSelector(5, 2)
        assert torch.equal(selector(scores).clone(), expected)
        assert torch.equal(selector(scores).clone(), expected)  # again, with a threshold kept

    # Ties appearing after distinct scores set the threshold (the band path).
    selector = TopKSelector(6, 3)
    selector(torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0]))
    tied = torch.tensor([1.0, 2.0, 2.0, -2.0, 2.0, 0.5])  # four |2|s for three places
    assert torch.equal(selector(tied), torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0, 0.0]))

    # All scores equal: exactly k of them, the first k.
    selector = TopKSelector(8, 3)
    assert torch.equal(selector(torch.zeros(8)), torch.tensor([1.0, 1.0, 1.0] + [0.0] * 5))


@pytest.mark.parametrize("numel", [10, 999, 5000, 12_000])
@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_numpy_and_torch_paths_break_many_ties_alike(numel, density):
    """Scores from a few distinct values: the NumPy path (float32 on CPU) and the torch path
    (float64 scores, and exact_topk_mask called directly) give the same mask, bit for bit, with
    exactly k ones, and it is the rule's: above the cut, then the first equal ones by position."""
    gen = torch.Generator().manual_seed(numel)
    k = num_kept(density, numel)
    for levels in (1, 2, 5):
        scores = tied_scores((numel,), levels, gen)
        by_numpy = TopKSelector(numel, k)(scores).clone()
        by_torch = TopKSelector(numel, k)(scores.double())
        direct = exact_topk_mask(scores.abs(), k)
        assert by_torch.dtype == torch.float64 and direct.dtype == torch.float32
        assert int(by_numpy.sum()) == k
        assert torch.equal(by_numpy, rule_topk_mask(scores, k))
        assert torch.equal(by_torch.float(), by_numpy)
        assert torch.equal(direct, by_numpy)
        half = TopKSelector(numel, k)(scores.to(torch.bfloat16))  # (values exact in bfloat16)
        assert torch.equal(half.float(), by_numpy)


def test_exact_topk_mask_on_a_worked_example_and_edge_ks():
    values = torch.tensor([1.0, 3.0, 2.0, 3.0, 3.0, 0.0])
    assert exact_topk_mask(values, 2).tolist() == [0, 1, 0, 1, 0, 0]  # two of the three 3s
    assert exact_topk_mask(values, 4).tolist() == [0, 1, 1, 1, 1, 0]
    assert exact_topk_mask(values, 5).tolist() == [1, 1, 1, 1, 1, 0]
    assert exact_topk_mask(values, 6).tolist() == [1] * 6
    assert exact_topk_mask(torch.zeros(5), 2).tolist() == [1, 1, 0, 0, 0]


@pytest.mark.parametrize(("numel", "density"), [(3000, 0.5), (30_000, 0.5), (30_000, 0.03)])
def test_fast_selector_equals_a_full_selection_over_many_small_updates(numel, density):
    """Many optimiser-like steps (small updates, now and then quantised scores full of ties, a
    large jump): the fast selector equals the plain full selection on every step."""
    gen = torch.Generator().manual_seed(numel + int(100 * density))
    k = num_kept(density, numel)
    selector = TopKSelector(numel, k)
    scores = torch.randn(numel, generator=gen)
    for step in range(60):
        if step % 20 == 10:  # quantise: ties at the cut, in the band
            scores = torch.round(scores * 64.0) / 64.0
        elif step % 20 == 15:
            scores = scores + 0.5 * torch.randn(numel, generator=gen)  # the band misses
        else:
            scores = scores + 10.0 ** -(2 + step % 4) * torch.randn(numel, generator=gen)
        assert torch.equal(selector(scores), rule_topk_mask(scores, k)), step


def test_masked_weight_reuses_buffers_without_clobbering_live_results():
    """The CPU path reuses its buffers only once nothing else holds them: an effective weight
    kept by the caller, two forwards before one backward, a gradient kept by the optimiser, or an
    output modified in place do not change any result."""
    gen = torch.Generator().manual_seed(9)
    shape, k = (80, 100), 4000  # large enough for the reused buffers
    weight = torch.randn(shape, generator=gen)
    scores = torch.randn(shape, generator=gen).requires_grad_()
    selector = TopKSelector(8000, k)

    def expected(s):
        return weight * rule_topk_mask(s, k)

    kept_results = []
    for _ in range(4):
        with torch.no_grad():
            scores.add_(1e-3 * torch.randn(shape, generator=gen))
        kept_results.append((topk_masked_weight(scores, weight, selector), expected(scores)))
    for result, value in kept_results:
        assert torch.equal(result, value)

    # Memory is reused once released, never while held.
    with torch.no_grad():
        address = topk_masked_weight(scores, weight, selector).data_ptr()
        held = topk_masked_weight(scores, weight, selector)
        assert held.data_ptr() == address
        assert topk_masked_weight(scores, weight, selector).data_ptr() != address
        del held

    with torch.no_grad():  # an output modified in place, then dropped
        topk_masked_weight(scores, weight, selector).mul_(2.0)
    assert torch.equal(topk_masked_weight(scores, weight, selector), expected(scores))

    # Two forwards and one backward: both products and the summed gradient are exact.
    upstream = torch.randn(shape, generator=gen)
    first = topk_masked_weight(scores, weight, selector)
    second = topk_masked_weight(scores, weight, selector)
    assert torch.equal(first, expected(scores)) and torch.equal(second, expected(scores))
    ((first + 2.0 * second) * upstream).sum().backward()
    straight = upstream * weight * scores.detach().sign()
    assert torch.equal(scores.grad, straight + 2.0 * straight)

    # Gradients kept across steps (zero_grad without set_to_none) accumulate correctly.
    held = scores.grad
    for _ in range(3):
        scores.grad.zero_()
        (topk_masked_weight(scores, weight, selector) * upstream).sum().backward()
        assert scores.grad is held
        assert torch.equal(scores.grad, straight)
    scores.grad = None
    for _ in range(3):
        (topk_masked_weight(scores, weight, selector) * upstream).sum().backward()
        grad, scores.grad = scores.grad, None
        assert torch.equal(grad, straight)
    assert torch.equal(grad, straight)  # not overwritten by the later steps


def test_straight_through_gradient_is_bitwise_the_product_with_the_sign():
    """``sign(s) * w * g`` in one buffer is bitwise ``g * w * sign(s)``, signed zeros included."""
    gen = torch.Generator().manual_seed(5)
    for shape in ((8, 16), (80, 64)):  # a small layer, and one with reused buffers
        scores = torch.randn(shape, generator=gen)
        scores[::7, ::3] = 0.0
        scores[1::7, ::5] = -0.0
        scores.requires_grad_()
        weight = torch.randn(shape, generator=gen)
        weight[::11] = 0.0
        upstream = torch.randn(shape, generator=gen)
        upstream[:, ::13] = -0.0
        selector = TopKSelector(scores.numel(), scores.numel() // 3)
        for _ in range(2):  # the second time in the reused gradient buffer
            scores.grad = None
            (topk_masked_weight(scores, weight, selector) * upstream).sum().backward()
            reference = upstream * weight * scores.detach().sign()
            assert torch.equal(scores.grad.view(torch.int32), reference.view(torch.int32))


@pytest.mark.parametrize("k", [0, 11, -1])
def test_topk_selector_rejects_impossible_k(k):
    with pytest.raises(ConfigError):
        TopKSelector(10, k)


# -------------------------------------------------------------------------------- density


def test_uniform_density_rule_is_the_same_for_every_shape():
    rule = DensityRule("uniform", 0.3)
    assert rule.for_shape((300, 784)) == 0.3
    assert rule.for_shape((64, 3, 3, 3)) == 0.3


@pytest.mark.parametrize(
    ("scale", "shape", "expected"),
    [
        # min(0.5, s * (c_out + c_in) / (c_out * c_in * k_h * k_w)), worked by hand.
        (1.0, (10, 100), Fraction(110, 1000)),  # 0.11
        (1.0, (300, 784), Fraction(1084, 235200)),
        (2.0, (64, 3, 3, 3), Fraction(2 * 67, 1728)),  # 134 / 1728 = 0.0775...
        (20.0, (64, 3, 3, 3), Fraction(1, 2)),  # 1340 / 1728 > 0.5: capped
        (3.0, (4, 2), Fraction(1, 2)),  # 18 / 8: capped
    ],
)
def test_erdos_renyi_density_rule_worked_by_hand(scale, shape, expected):
    density = DensityRule("erdos_renyi", scale).for_shape(shape)
    assert density == pytest.approx(float(expected), rel=1e-12)


def test_erdos_renyi_gives_small_layers_more_density():
    rule = DensityRule("erdos_renyi", 1.0)
    assert rule.for_shape((10, 100)) > rule.for_shape((300, 784))


@pytest.mark.parametrize("density", [0.0, 1.5, -0.2])
def test_uniform_density_rule_rejects_densities_outside_zero_one(density):
    with pytest.raises(ConfigError):
        DensityRule("uniform", density)


@pytest.mark.parametrize("scale", [0.0, -1.0])
def test_erdos_renyi_rule_rejects_non_positive_scale(scale):
    with pytest.raises(ConfigError):
        DensityRule("erdos_renyi", scale)


def test_density_rule_rejects_unknown_kind():
    with pytest.raises(ConfigError):
        DensityRule("sparsity", 0.5)


def test_num_kept_rounds():
    assert num_kept(0.5, 11) == 6
    assert num_kept(0.1, 10) == 1
    assert num_kept(0.26, 10) == 3
    assert num_kept(1.0, 7) == 7


# ----------------------------------------------------------------- straight-through gradients


def test_topk_masked_weight_forward_and_straight_through_gradient():
    gen = torch.Generator().manual_seed(3)
    scores = torch.randn(6, 5, generator=gen).requires_grad_()
    weight = torch.randn(6, 5, generator=gen)
    upstream = torch.randn(6, 5, generator=gen)
    k = num_kept(0.4, 30)
    effective = topk_masked_weight(scores, weight, TopKSelector(30, k))
    mask = reference_topk_mask(scores, k)
    assert torch.equal(effective, weight * mask)
    (effective * upstream).sum().backward()
    # d(loss)/d(scores) = upstream * weight * sign(scores), for kept and dropped weights alike.
    assert torch.equal(scores.grad, upstream * weight * scores.detach().sign())
    assert (scores.grad[mask == 0] != 0).any()


def test_threshold_masked_weight_forward_and_straight_through_gradient():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(4, 7, generator=gen)
    scores[0, 0] = 0.0  # scores >= 0 keeps a zero score
    scores.requires_grad_()
    weight = torch.randn(4, 7, generator=gen)
    upstream = torch.randn(4, 7, generator=gen)
    effective = threshold_masked_weight(scores, weight)
    mask = (scores.detach() >= 0).float()
    assert mask[0, 0] == 1.0
    assert torch.equal(effective, weight * mask)
    (effective * upstream).sum().backward()
    assert torch.equal(scores.grad, upstream * weight)


def test_threshold_masked_weight_is_exact_step_after_step():
    """Bit for bit, signed zeros included, on every step, and results held by the caller stay
    intact."""
    gen = torch.Generator().manual_seed(8)
    shape = (80, 100)
    weight = torch.randn(shape, generator=gen)
    scores = torch.randn(shape, generator=gen)
    scores[::9, ::4] = 0.0
    scores[1::9, ::4] = -0.0
    scores.requires_grad_()
    upstream = torch.randn(shape, generator=gen)
    held = []
    for step in range(3):
        scores.grad = None
        effective = threshold_masked_weight(scores, weight)
        expected = weight * (scores.detach() >= 0).float()
        assert torch.equal(effective.view(torch.int32), expected.view(torch.int32))
        (effective * upstream * (step + 1)).sum().backward()
        assert torch.equal(scores.grad, upstream * (step + 1) * weight)
        held.append((effective, expected, scores.grad, step))
        with torch.no_grad():
            scores.add_(0.05 * torch.randn(shape, generator=gen))
    for effective, expected, grad, step in held:  # none overwritten by a later step
        assert torch.equal(effective, expected)
        assert torch.equal(grad, upstream * (step + 1) * weight)


def test_masked_weight_gives_the_weight_no_gradient():
    scores = torch.randn(3, 4).requires_grad_()
    weight = torch.randn(3, 4).requires_grad_()
    topk_masked_weight(scores, weight, TopKSelector(12, 6)).sum().backward()
    assert weight.grad is None
    assert scores.grad is not None


# ------------------------------------------------------------------------------ mixing a bank


def random_bank(num_masks: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand((num_masks, *shape), generator=gen) < 0.5


def explicit_mix(coeffs: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """``coeffs @ bank`` with an einsum over the bank converted to floats."""
    floats = bank.to(coeffs.dtype)
    if coeffs.dim() == 1:
        return torch.einsum("m,m...->...", coeffs, floats)
    return torch.einsum("om,mo...->o...", coeffs, floats)


@pytest.mark.parametrize("weight_shape", [(5, 6), (4, 3, 3, 3)])
@pytest.mark.parametrize("per_unit", [False, True])
@pytest.mark.parametrize("chunk", [1, 3, 64])
def test_mix_bank_equals_explicit_einsum_and_its_gradient(weight_shape, per_unit, chunk):
    num_masks = 7
    bank = random_bank(num_masks, weight_shape, seed=11)
    gen = torch.Generator().manual_seed(12)
    coeffs_shape = (weight_shape[0], num_masks) if per_unit else (num_masks,)
    coeffs = torch.randn(coeffs_shape, generator=gen, dtype=torch.float64)
    upstream = torch.randn(weight_shape, generator=gen, dtype=torch.float64)

    mixed_coeffs = coeffs.clone().requires_grad_()
    mixed = mix_bank(mixed_coeffs, bank, chunk=chunk)
    reference_coeffs = coeffs.clone().requires_grad_()
    reference = explicit_mix(reference_coeffs, bank)

    assert mixed.shape == weight_shape
    torch.testing.assert_close(mixed, reference, rtol=0, atol=1e-12)
    (grad,) = torch.autograd.grad((mixed * upstream).sum(), mixed_coeffs)
    (reference_grad,) = torch.autograd.grad((reference * upstream).sum(), reference_coeffs)
    torch.testing.assert_close(grad, reference_grad, rtol=0, atol=1e-12)
    # The same without gradient (the evaluation path).
    torch.testing.assert_close(mix_bank(coeffs, bank, chunk=chunk), reference.detach())


@pytest.mark.parametrize("weight_shape", [(5, 6), (4, 3, 3, 3)])
@pytest.mark.parametrize("per_unit", [False, True])
def test_mix_bank_with_a_float_bank_equals_the_chunked_path(weight_shape, per_unit):
    """The pre-converted ``float_bank`` shortcut gives the same mask and coeffs gradient."""
    num_masks = 5
    bank = random_bank(num_masks, weight_shape, seed=21)
    gen = torch.Generator().manual_seed(22)
    coeffs_shape = (weight_shape[0], num_masks) if per_unit else (num_masks,)
    coeffs = torch.randn(coeffs_shape, generator=gen, dtype=torch.float64)
    upstream = torch.randn(weight_shape, generator=gen, dtype=torch.float64)
    fast_coeffs = coeffs.clone().requires_grad_()
    fast = mix_bank(fast_coeffs, bank, float_bank=bank.to(torch.float64))
    chunked_coeffs = coeffs.clone().requires_grad_()
    chunked = mix_bank(chunked_coeffs, bank, chunk=2)
    assert fast.shape == weight_shape
    torch.testing.assert_close(fast, chunked, rtol=0, atol=1e-12)
    (fast_grad,) = torch.autograd.grad((fast * upstream).sum(), fast_coeffs)
    (chunked_grad,) = torch.autograd.grad((chunked * upstream).sum(), chunked_coeffs)
    torch.testing.assert_close(fast_grad, chunked_grad, rtol=0, atol=1e-12)


@pytest.mark.parametrize("requires_grad", [False, True])
def test_one_hot_coeffs_return_the_stored_mask_exactly(requires_grad):
    bank = random_bank(5, (6, 4), seed=2)
    for i in range(5):
        coeffs = one_hot(i, 5).requires_grad_(requires_grad)
        assert torch.equal(mix_bank(coeffs, bank, chunk=2), bank[i].float())
        per_unit = one_hot(i, 5).expand(6, 5).clone().requires_grad_(requires_grad)
        assert torch.equal(mix_bank(per_unit, bank, chunk=2), bank[i].float())


def test_mix_bank_rejects_coeffs_of_the_wrong_size():
    bank = random_bank(3, (4, 5), seed=0)
    with pytest.raises(ValueError, match="3 masks"):
        mix_bank(torch.ones(4), bank)
    with pytest.raises(ValueError, match="rows"):
        mix_bank(torch.ones(5, 3), bank)


# ----------------------------------------------------------------------------- bit packing


@pytest.mark.parametrize("shape", [(1,), (7,), (9,), (13,), (3, 5, 7), (8, 8)])
def test_pack_bits_round_trip_and_size(shape):
    mask = random_bank(1, shape, seed=sum(shape))[0]
    packed = pack_bits(mask)
    n = math.prod(shape)
    assert packed.dtype == torch.uint8
    assert packed.numel() == math.ceil(n / 8)
    unpacked = unpack_bits(packed, shape)
    assert unpacked.dtype == torch.bool
    assert torch.equal(unpacked, mask)


def test_pack_bits_layout_is_row_major_most_significant_bit_first():
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 0] = True  # bit 0 -> 0b1000_0000 of byte 0
    mask[2, 2] = True  # bit 8 -> 0b1000_0000 of byte 1
    mask[0, 2] = True  # bit 2 -> 0b0010_0000 of byte 0
    assert pack_bits(mask).tolist() == [0b1010_0000, 0b1000_0000]


@pytest.mark.parametrize("num_bytes", [1, 3])
def test_unpack_bits_rejects_a_wrong_byte_count(num_bytes):
    with pytest.raises(ValueError, match="bytes"):
        unpack_bits(torch.zeros(num_bytes, dtype=torch.uint8), (13,))


# ---------------------------------------------------------------- the raw-score rule (topk_raw)


def _raw_rule_mask(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The top-k of the signed scores by the tie rule, from a plain stable sort."""
    a = scores.detach().reshape(-1).double().numpy()
    mask = torch.zeros(a.size)
    mask[np.argsort(-a, kind="stable")[:k]] = 1.0
    return mask.view(scores.shape)


@pytest.mark.parametrize(("numel", "density"), [(3000, 0.25), (30_000, 0.25), (30_000, 0.7)])
def test_signed_selector_keeps_the_largest_raw_scores_over_many_updates(numel, density):
    """The authors' rule: the k largest signed scores (a large negative score is dropped), exact
    on every step of the fast path, with the threshold crossing zero for density > 0.5."""
    gen = torch.Generator().manual_seed(numel + int(100 * density))
    k = num_kept(density, numel)
    selector = TopKSelector(numel, k, signed=True)
    scores = torch.randn(numel, generator=gen)
    for step in range(40):
        if step % 20 == 10:
            scores = torch.round(scores * 64.0) / 64.0
        elif step % 20 == 15:
            scores = scores + 0.5 * torch.randn(numel, generator=gen)
        else:
            scores = scores + 10.0 ** -(2 + step % 4) * torch.randn(numel, generator=gen)
        mask = selector(scores)
        assert torch.equal(mask, _raw_rule_mask(scores, k)), step
        assert not torch.equal(mask, rule_topk_mask(scores, k))
    # The torch path (another dtype) breaks ties by the same rule.
    assert torch.equal(
        TopKSelector(numel, k, signed=True)(scores.double()), _raw_rule_mask(scores, k)
    )


def test_raw_topk_masked_weight_has_the_plain_straight_through_gradient():
    gen = torch.Generator().manual_seed(4)
    scores = torch.randn(6, 5, generator=gen).requires_grad_()
    weight = torch.randn(6, 5, generator=gen)
    upstream = torch.randn(6, 5, generator=gen)
    k = num_kept(0.25, 30)
    effective = topk_masked_weight(scores, weight, TopKSelector(30, k, signed=True))
    assert torch.equal(effective, weight * _raw_rule_mask(scores, k))
    (effective * upstream).sum().backward()
    assert torch.equal(scores.grad, upstream * weight)  # no sign: the scores are ranked as they are


def test_a_layer_learns_a_raw_topk_mask_at_the_exact_density():
    from impresslearn.layers import MaskedLinear

    layer = MaskedLinear(40, 30, backbone_seed=0, layer_index=0)
    scores = layer.begin_scores(0.25, "topk_raw", torch.Generator().manual_seed(0))
    mask = layer.end_scores()
    assert int(mask.sum()) == 300
    assert torch.equal(mask.float(), _raw_rule_mask(scores, 300))
