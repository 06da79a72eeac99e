"""The CPU accelerator of mask learning behind one interface (impresslearn.layers.cpu_topk): the
same masks, effective weights and gradients bit for bit as the pure-torch reference
(impresslearn.layers.masks), with the compiled kernel, without it, and with each private torch
function it uses taken away."""

from __future__ import annotations

import logging

import pytest
import torch

import impresslearn.layers.cpu_topk as cpu_topk
import impresslearn.layers.masked as masked
from impresslearn.layers import (
    ExactTopK,
    MaskedLinear,
    ThresholdRule,
    TopKSelector,
    accelerated_selector,
    num_kept,
    use_coeffs,
)


def learn(kind: str, steps: int = 12):
    """A masked layer (300 x 784, LeNet's first) learning a ``kind`` mask for ``steps`` RMSprop
    steps on fixed random data: per step, the mask, the effective weight and the scores'
    gradient."""
    layer = MaskedLinear(784, 300, backbone_seed=3, layer_index=0)
    gen = torch.Generator().manual_seed(0)
    scores = layer.begin_scores(0.5, kind, gen)
    optimizer = torch.optim.RMSprop([scores], lr=1e-2)
    x = torch.randn(64, 784, generator=gen)
    target = torch.randn(64, 300, generator=gen)
    history = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        out = layer(x)
        ((out - target) ** 2).mean().backward()
        history.append(
            (
                layer.current_mask().clone(),
                layer.effective_weight().detach().clone(),
                scores.grad.clone(),
            )
        )
        optimizer.step()
    return history


@pytest.mark.parametrize("kind", ["topk", "topk_raw", "threshold"])
@pytest.mark.parametrize("kernel", ["compiled", "numpy"])
def test_the_accelerator_equals_the_reference_bit_for_bit(kind, kernel, monkeypatch):
    if kernel == "compiled" and cpu_topk.load_kernel() is None:
        pytest.skip("the compiled kernel is not built here")
    if kernel == "numpy":
        monkeypatch.setattr(cpu_topk, "load_kernel", lambda: None)
    fast = learn(kind)
    monkeypatch.setattr(
        masked,
        "mask_selector",
        lambda kind, numel, k, device: (
            ThresholdRule()
            if kind == "threshold"
            else ExactTopK(numel, k, signed=kind == "topk_raw")
        ),
    )
    reference = learn(kind)
    for (mask, weight, grad), (mask_r, weight_r, grad_r) in zip(fast, reference, strict=True):
        assert torch.equal(mask, mask_r)
        assert torch.equal(weight.view(torch.int32), weight_r.view(torch.int32))
        assert torch.equal(grad.view(torch.int32), grad_r.view(torch.int32))
    if kind != "threshold":
        assert all(int(m.sum()) == num_kept(0.5, 784 * 300) for m, _, _ in fast)


@pytest.mark.parametrize(
    "missing",
    [
        ("_STORAGE_USE_COUNT",),
        ("_BASE_APPLY",),
        ("_FUNCTORCH_ACTIVE",),
        ("_STORAGE_USE_COUNT", "_BASE_APPLY", "_FUNCTORCH_ACTIVE"),
    ],
)
def test_each_private_torch_function_has_a_fallback_that_runs(missing, monkeypatch):
    """Were a torch upgrade to remove a private function the accelerator uses, its fallback runs
    (buffers allocated afresh, the public ``Function.apply``) with the same bits."""
    expected = learn("topk", steps=6)
    for name in missing:
        monkeypatch.setattr(cpu_topk, name, None)
    calls = []
    original = cpu_topk._MaskedWeight.apply
    monkeypatch.setattr(cpu_topk._MaskedWeight, "apply", lambda *a: calls.append(1) or original(*a))
    fallback = learn("topk", steps=6)
    if "_BASE_APPLY" in missing or "_FUNCTORCH_ACTIVE" in missing:
        assert calls  # the public apply ran
    if "_STORAGE_USE_COUNT" in missing:
        assert cpu_topk._Reusable().get(torch.empty(3))[1] is False
    for (mask, weight, grad), (mask_f, weight_f, grad_f) in zip(expected, fallback, strict=True):
        assert torch.equal(mask, mask_f) and torch.equal(weight, weight_f)
        assert torch.equal(grad, grad_f)


def test_a_missing_kernel_is_said_once(monkeypatch, caplog):
    monkeypatch.setattr(cpu_topk, "load_kernel", lambda: None)
    cpu_topk._warn_no_kernel.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger="impresslearn.layers.cpu_topk"):
            accelerated_selector(1000, 500, "topk")
            accelerated_selector(1000, 500, "threshold")
        messages = [r.message for r in caplog.records if "top-k kernel is not built" in r.message]
        assert len(messages) == 1 and "pip install -e ." in messages[0]
    finally:
        cpu_topk._warn_no_kernel.cache_clear()


def test_a_layer_off_the_cpu_would_take_the_reference():
    """What a CUDA layer gets (checked here through the selector choice, without a GPU)."""
    assert isinstance(masked.mask_selector("topk", 100, 50, torch.device("meta")), ExactTopK)
    assert isinstance(
        masked.mask_selector("threshold", 100, 50, torch.device("meta")), ThresholdRule
    )
    assert isinstance(masked.mask_selector("topk", 100, 50, torch.device("cpu")), TopKSelector)


def test_evaluation_with_a_stored_mask_does_not_touch_the_selectors():
    layer = MaskedLinear(20, 10, backbone_seed=0, layer_index=0)
    layer.begin_scores(0.5, "topk", torch.Generator().manual_seed(1))
    layer.add_to_bank(layer.end_scores())
    with use_coeffs(layer, torch.ones(1)):
        assert torch.equal(layer.effective_weight(), layer.weight * layer.bank[0])
