"""Tests for the compiled top-k kernel (impresslearn.layers.native, _topk.c): it gives the same
masks, products and gradients bit for bit as the NumPy code and the documented tie rule, on every
scan this machine runs (portable C, AVX2, AVX-512)."""

import ctypes
import os

import numpy as np
import pytest
import torch

import impresslearn.layers.cpu_topk as masks_module
from impresslearn.errors import ConfigError
from impresslearn.layers import (
    ThresholdMask,
    TopKSelector,
    num_kept,
    threshold_masked_weight,
    topk_masked_weight,
)
from impresslearn.layers.native import SIMD, kernel_info, load_kernel

KERNEL = load_kernel()
needs_kernel = pytest.mark.skipif(KERNEL is None, reason="the compiled kernel is not built here")
SCANS = SIMD[: KERNEL.il_topk_simd() + 1] if KERNEL is not None else ()


def rule_mask(scores: torch.Tensor, k: int, signed: bool = False) -> torch.Tensor:
    """The documented rule from a stable sort: the k largest ranked values, ties by position."""
    flat = scores.detach().reshape(-1).double().numpy()
    ranked = flat if signed else np.abs(flat)
    mask = torch.zeros(flat.size)
    mask[np.argsort(-ranked, kind="stable")[:k]] = 1.0
    return mask.view(scores.shape)


def score_steps(numel: int, seed: int, steps: int = 50):
    """Scores as an optimiser moves them: small steps, now and then ties at the cut (quantised
    scores), exact zeros, or a jump the band cannot follow."""
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(numel, generator=gen)
    for step in range(steps):
        if step % 17 == 8:
            scores = torch.round(scores * 32.0) / 32.0
        elif step % 17 == 12:
            scores = scores + 0.7 * torch.randn(numel, generator=gen)
        elif step % 17 == 14:
            scores = torch.where(torch.rand(numel, generator=gen) < 0.01, 0.0, scores)
        else:
            scores = scores + 10.0 ** -(2 + step % 3) * torch.randn(numel, generator=gen)
        yield step, scores.clone()


def test_kernel_is_built_where_ci_runs():
    """CI installs the package with a C compiler present: the fast path must be what it tests."""
    if not os.environ.get("CI"):
        pytest.skip("only CI promises a compiler")
    info = kernel_info()
    assert info["native_topk"], "the compiled top-k kernel was not built (pip install -e .)"
    assert info["native_scan"] in SIMD


@needs_kernel
@pytest.mark.parametrize("scan", SCANS)
@pytest.mark.parametrize("signed", [False, True])
@pytest.mark.parametrize(("numel", "density"), [(1000, 0.5), (4099, 0.3), (30_011, 0.5)])
def test_kernel_masks_and_products_equal_the_rule_step_after_step(scan, signed, numel, density):
    """Through ``masked`` (mask and product kept together) and ``__call__`` (the mask alone),
    every step's mask is the rule's and the product is ``weight * mask`` bit for bit, as from the
    NumPy code."""
    k = num_kept(density, numel)
    gen = torch.Generator().manual_seed(numel)
    weight = torch.randn(numel, generator=gen)
    weight[::13] = -weight[::13]
    selectors = {
        "masked": TopKSelector(numel, k, signed=signed, native=True),
        "call": TopKSelector(numel, k, signed=signed, native=True),
        "numpy": TopKSelector(numel, k, signed=signed, native=False),
    }
    for step, scores in score_steps(numel, seed=numel + signed):
        expected = rule_mask(scores, k, signed)
        product = selectors["masked"].masked(scores, weight)
        assert torch.equal(product, weight * expected), (scan, step)
        del product  # the buffer is reused, and updated where the mask changed, next step
        assert torch.equal(selectors["call"](scores), expected), (scan, step)
        assert torch.equal(selectors["numpy"](scores), expected), (scan, step)
        if step == 0:  # the first call selects in NumPy and makes the kernel's state
            for name in ("masked", "call"):
                selectors[name]._native.set_scan(scan)
                assert selectors[name]._native.scan == scan


@needs_kernel
def test_kernel_follows_a_layer_in_training_with_exact_gradients():
    """A training loop (RMSprop on the scores) through topk_masked_weight: the kernel's product
    and the straight-through gradient equal the reference on every step."""
    gen = torch.Generator().manual_seed(3)
    shape, k = (120, 100), 6000
    weight = torch.randn(shape, generator=gen)
    scores = torch.nn.Parameter(torch.randn(shape, generator=gen) * 0.05)
    selector = TopKSelector(weight.numel(), k)
    optimiser = torch.optim.RMSprop([scores], lr=1e-3)
    upstream = torch.randn(shape, generator=gen)
    for step in range(40):
        optimiser.zero_grad(set_to_none=True)
        effective = topk_masked_weight(scores, weight, selector)
        assert torch.equal(effective, weight * rule_mask(scores, k)), step
        (effective * upstream).sum().backward()
        reference = torch.sign(scores.detach()) * weight * upstream
        assert torch.equal(scores.grad.view(torch.int32), reference.view(torch.int32)), step
        optimiser.step()
    assert selector._hot is not None  # the lean path ran


@needs_kernel
@pytest.mark.parametrize("kind", ["topk", "threshold"])
def test_fused_gradient_is_bitwise_torchs(kind):
    """The fused C gradient of a small layer: bitwise torch's ``sign(s) * w * g`` (or
    ``w * g``), with signed zeros in scores, weights and gradients."""
    gen = torch.Generator().manual_seed(11)
    shape = (30, 70)
    assert masks_module._MaskedWeight._FUSED_MAX >= 30 * 70
    scores = torch.randn(shape, generator=gen)
    scores[::5, ::3] = 0.0
    scores[1::5, ::4] = -0.0
    scores.requires_grad_()
    weight = torch.randn(shape, generator=gen)
    weight[::7] = -0.0
    upstream = torch.randn(shape, generator=gen)
    upstream[:, ::9] = 0.0
    if kind == "topk":
        effective = topk_masked_weight(scores, weight, TopKSelector(scores.numel(), 700))
        reference = torch.sign(scores.detach()) * weight * upstream
    else:
        effective = threshold_masked_weight(scores, weight)
        reference = upstream * weight
    (effective * upstream).sum().backward()
    assert torch.equal(scores.grad.view(torch.int32), reference.view(torch.int32))


def test_native_true_without_the_kernel_says_how_to_build_it(monkeypatch):
    monkeypatch.setattr(masks_module, "load_kernel", lambda: None)
    with pytest.raises(ConfigError, match="C compiler"):
        TopKSelector(100, 10, native=True)
    selector = TopKSelector(100, 10)  # the NumPy code, with the same masks
    scores = torch.randn(100, generator=torch.Generator().manual_seed(0))
    assert selector._kernel is None
    assert torch.equal(selector(scores), rule_mask(scores, 10))


@needs_kernel
def test_an_unavailable_scan_is_refused():
    selector = TopKSelector(5000, 100)
    selector(torch.randn(5000))
    with pytest.raises(ConfigError, match="does not run here"):
        selector._native.set_scan("sse9")


@pytest.mark.parametrize("kernel", [True, False])
def test_threshold_mask_reuses_buffers_with_exact_bits(kernel, monkeypatch):
    """A ThresholdMask kept from step to step (the kernel's product, or torch's into the same
    buffers): ``weight * (scores >= 0)`` and the gradient ``grad * weight`` bit for bit on every
    step, signed zeros included, and a result still held is never overwritten."""
    if kernel and KERNEL is None:
        pytest.skip("the compiled kernel is not built here")
    if not kernel:
        monkeypatch.setattr(masks_module, "load_kernel", lambda: None)
    gen = torch.Generator().manual_seed(4)
    shape = (300, 260)  # above _FUSED_MAX: the gradient in torch's ops, into a reused buffer
    weight = torch.randn(shape, generator=gen)
    weight[::9] = -weight[::9]
    scores = torch.nn.Parameter(torch.randn(shape, generator=gen))
    mask = ThresholdMask()
    upstream = torch.randn(shape, generator=gen)
    held = []
    for step in range(6):
        with torch.no_grad():
            scores.add_(0.3 * torch.randn(shape, generator=gen))
            scores[::17, ::5] = 0.0 if step % 2 else -0.0
        expected = weight * (scores.detach() >= 0).to(weight.dtype)
        scores.grad = None
        effective = threshold_masked_weight(scores, weight, mask)
        assert torch.equal(effective.view(torch.int32), expected.view(torch.int32)), step
        (effective * upstream).sum().backward()
        assert torch.equal(scores.grad.view(torch.int32), (upstream * weight).view(torch.int32))
        if step % 2:
            held.append((effective, expected))  # kept alive: its buffer must not be reused
        del effective
    for effective, expected in held:
        assert torch.equal(effective, expected)


def test_a_kernel_built_from_another_version_is_not_used(monkeypatch, caplog):
    """An editable install not rebuilt after _topk.c changed: its own description of its
    interface differs from what the bindings call, so the NumPy code runs, and a warning says how
    to rebuild, instead of calling functions whose arguments changed."""
    import impresslearn.layers.native as native

    if KERNEL is None:
        pytest.skip("the compiled kernel is not built here")
    changed = {**native.EXPECTED, "il_topk_run": (("p", "p", "p"), "i32")}
    for attribute, value in (("EXPECTED", changed), ("STRUCT_FIELDS", ("n", "k"))):
        monkeypatch.setattr(native, attribute, value)
        native.load_kernel.cache_clear()
        try:
            with caplog.at_level("WARNING"):
                assert native.load_kernel() is None
            assert "pip install -e ." in caplog.text
        finally:
            monkeypatch.undo()
            native.load_kernel.cache_clear()
    assert native.load_kernel() is not None


def test_the_kernel_describes_its_interface_and_the_struct_matches_the_compiler():
    """The C file declares its struct and functions once, as text; the bindings are built from it
    and the struct's size and offsets are the compiler's (il_topk_layout)."""
    import impresslearn.layers.native as native

    if KERNEL is None:
        pytest.skip("the compiled kernel is not built here")
    fields, functions = native.parse_interface(KERNEL.il_interface().decode())
    assert tuple(name for name, _ in fields) == native.STRUCT_FIELDS
    assert {k: functions[k] for k in native.EXPECTED} == native.EXPECTED
    struct = native.bind(KERNEL)
    assert ctypes.sizeof(struct) == 72  # 3 int64, 2 int32, 5 pointers on a 64-bit machine
    with pytest.raises(native.InterfaceMismatch, match="unknown C type"):
        native.parse_interface("struct n:float\n")
