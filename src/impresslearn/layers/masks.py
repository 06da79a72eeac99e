"""Binary masks: learning them from scores, mixing a bank of them, storing them at 1 bit per weight.

A supermask (Zhou et al. 2019; Ramanujan et al. 2020, "edge-popup"; Wortsman et al. 2020, SupSup)
is learned from a real-valued ``scores`` tensor the size of the weight:

* **top-k** (``topk``): keep exactly ``round(density * n)`` weights with the largest ``|scores|``
  (SupSup's code);
* **raw top-k** (``topk_raw``): keep exactly ``round(density * n)`` weights with the largest
  ``scores``, signed (the ImpressLearn authors' code);
* **threshold**: keep the weights whose ``scores >= 0`` (SupSup's MNIST experiments).

Both use a straight-through gradient: the backward pass treats the binarisation as the identity.

This module is the **reference path**, torch ops on any device and the only path on GPUs:
:func:`exact_topk_mask` (the exact top-k with the one tie rule), :class:`ExactTopK` and
:class:`ThresholdRule` (a layer's mask selection while it learns) and :class:`StraightThrough`
(``weight * mask`` with the straight-through gradient). On the CPU, where selecting the top k of
``n`` scores on every step is the costly part, masked layers use an optional accelerator with
the same interface and the same masks bit for bit, :mod:`impresslearn.layers.cpu_topk` (a band
selection in NumPy, and in C where the package's kernel was built).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from impresslearn.errors import ConfigError

MaskKind = Literal["topk", "topk_raw", "threshold"]
MASK_KINDS: tuple[str, ...] = ("topk", "topk_raw", "threshold")
TOPK_KINDS: tuple[str, ...] = ("topk", "topk_raw")  # exact density: k weights per layer


# --------------------------------------------------------------------------------------- density


def num_kept(density: float, numel: int) -> int:
    """Number of weights a top-k mask of ``density`` keeps in a layer of ``numel`` weights."""
    return int(round(density * numel))


@dataclass(frozen=True)
class DensityRule:
    """How the density of each layer follows from a target density.

    ``uniform``: every layer keeps ``density`` of its weights.
    ``erdos_renyi``: a layer of shape ``(c_out, c_in, k_h, k_w)`` keeps
    ``min(0.5, density * (c_out + c_in) / (c_out * c_in * k_h * k_w))``, so small layers keep more
    (the Erdos-Renyi scaling used for SupSup's convolutional networks); ``density`` is the scale.
    """

    kind: Literal["uniform", "erdos_renyi"] = "uniform"
    density: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in ("uniform", "erdos_renyi"):
            raise ConfigError(f"unknown density rule {self.kind!r}: use 'uniform' or 'erdos_renyi'")
        if self.kind == "uniform" and not (0.0 < self.density <= 1.0):
            raise ConfigError(
                f"density must be in (0, 1] (the fraction of weights a mask keeps), "
                f"got {self.density}"
            )
        if self.kind == "erdos_renyi" and not self.density > 0.0:
            raise ConfigError(f"the Erdos-Renyi scale must be > 0, got {self.density}")

    def for_shape(self, shape: tuple[int, ...]) -> float:
        """Density of a layer whose weight has ``shape`` (out, in[, k_h, k_w])."""
        if self.kind == "uniform":
            return self.density
        c_out, c_in = shape[0], shape[1]
        return min(0.5, self.density * (c_out + c_in) / math.prod(shape))


# ----------------------------------------------------------------------------- learning a mask


class StraightThrough(torch.autograd.Function):
    """``weight * mask`` with the straight-through gradient to the scores the mask was selected
    from: the backward pass treats the binarisation as the identity, so the gradient of the
    effective weight times ``weight`` reaches the scores unchanged (threshold masks) or through
    ``|scores|`` (top-k masks of ``|scores|``, ``through_abs``)."""

    @staticmethod
    def forward(ctx, scores: Tensor, weight: Tensor, mask: Tensor, through_abs: bool) -> Tensor:
        ctx.save_for_backward(scores, weight)
        ctx.through_abs = through_abs
        return weight * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        scores, weight = ctx.saved_tensors
        if not ctx.through_abs:
            return grad * weight, None, None, None
        # grad * weight * sign(scores), in the order the CPU accelerator computes it: the same
        # bits (multiplying by -1, 0 or 1 is exact; the sign of a zero product is the same).
        return torch.sign(scores) * weight * grad, None, None, None


class ExactTopK:
    """The top-k of ``|scores|`` (or of the signed ``scores`` with ``signed=True``) of a layer of
    ``numel`` weights, with torch ops on any device (:func:`exact_topk_mask`)."""

    def __init__(self, numel: int, k: int, *, signed: bool = False) -> None:
        if not 0 < k <= numel:
            raise ConfigError(
                f"a mask must keep between 1 and {numel} weights, got {k}: raise the density"
            )
        self.numel, self.k, self.signed = numel, k, signed

    def __call__(self, scores: Tensor) -> Tensor:
        """The float 0/1 mask of ``scores``' shape."""
        flat = scores.detach().reshape(-1)
        return exact_topk_mask(flat if self.signed else flat.abs(), self.k).view_as(scores)

    def masked_weight(self, scores: Tensor, weight: Tensor) -> Tensor:
        """``weight * mask(scores)`` with the straight-through gradient to ``scores``."""
        return StraightThrough.apply(scores, weight, self(scores), not self.signed)


class ThresholdRule:
    """SupSup's MNIST masks, ``scores >= 0``, with torch ops on any device."""

    def __call__(self, scores: Tensor) -> Tensor:
        return (scores.detach() >= 0).to(scores.dtype)

    def masked_weight(self, scores: Tensor, weight: Tensor) -> Tensor:
        """``weight * (scores >= 0)`` with the straight-through gradient."""
        mask = (scores.detach() >= 0).to(weight.dtype)
        return StraightThrough.apply(scores, weight, mask, False)


def exact_topk_mask(values: Tensor, k: int) -> Tensor:
    """The top-k of the 1-D ``values`` as a 0/1 mask of their dtype, with torch ops on any device.

    Exactly ``k`` ones with the tie rule of :class:`TopKSelector`: every value above the k-th
    largest, then the values equal to it that come first by position (a cumulative count picks
    them, without a sort and without reading a number back from the device).
    """
    n = values.numel()
    if k >= n:
        return torch.ones_like(values)
    if k <= n - k:
        kth = torch.topk(values, k, sorted=False).values.min()
    else:  # the (n - k + 1)-th smallest: the shorter selection
        kth = torch.topk(values, n - k + 1, largest=False, sorted=False).values.max()
    above = values > kth
    tied = values == kth
    missing = k - above.sum()
    keep = above | (tied & (torch.cumsum(tied, 0) <= missing))
    return keep.to(values.dtype)


def topk_masked_weight(scores: Tensor, weight: Tensor, selector) -> Tensor:
    """``weight * topk(|scores|)`` (or ``topk(scores)`` for a signed selector) with a
    straight-through gradient to ``scores``; ``selector``: an :class:`ExactTopK` or the CPU
    accelerator's :class:`~impresslearn.layers.cpu_topk.TopKSelector`."""
    return selector.masked_weight(scores, weight)


def threshold_masked_weight(scores: Tensor, weight: Tensor, mask=None) -> Tensor:
    """``weight * (scores >= 0)`` with a straight-through gradient (SupSup's MNIST masks). A
    selector kept from step to step (the CPU accelerator's
    :class:`~impresslearn.layers.cpu_topk.ThresholdMask`, which reuses its buffers) may be
    given."""
    return (mask or ThresholdRule()).masked_weight(scores, weight)


# ------------------------------------------------------------------------------ mixing a bank


def _chunk_buffer(flat: Tensor, chunk: int, dtype: torch.dtype) -> Tensor:
    return torch.empty(
        (min(chunk, flat.shape[0]), *flat.shape[1:]), dtype=dtype, device=flat.device
    )


def _as_float(part: Tensor, buffer: Tensor) -> Tensor:
    """``part`` (bool) converted into the front of the reused ``buffer``."""
    return buffer[: part.shape[0]].copy_(part)


class _MixBank(torch.autograd.Function):
    """``coeffs @ bank`` over a bool bank, without materialising the bank as floats.

    The bank is converted chunk by chunk both forward and backward, so memory stays
    O(chunk * weight) however many masks the bank holds (SupSup's superposition over thousands of
    tasks must not keep a float copy of every mask). The chunks are copied into one reused buffer:
    a fresh float tensor per chunk made the conversion about 5x slower (allocation and page
    faults), and it was 80% of a one-shot inference over 250 LeNet tasks.
    """

    @staticmethod
    def forward(ctx, coeffs: Tensor, bank: Tensor, chunk: int, value: Tensor | None) -> Tensor:
        ctx.save_for_backward(coeffs, bank)
        ctx.chunk = chunk
        if value is not None:  # the caller already knows coeffs @ bank: only the backward is new
            return value.clone()
        num_masks, out = bank.shape[0], bank.shape[1]
        flat = bank.view(num_masks, out, -1)  # (M, out, rest)
        acc = torch.zeros(flat.shape[1:], dtype=coeffs.dtype, device=coeffs.device)
        buffer = _chunk_buffer(flat, chunk, coeffs.dtype)
        for start in range(0, num_masks, chunk):
            part = _as_float(flat[start : start + chunk], buffer)
            c = coeffs[..., start : start + chunk]
            if c.dim() == 1:  # one coefficient per mask
                acc += torch.tensordot(c, part, dims=1)
            else:  # (out, M): one coefficient vector per output unit
                acc += torch.einsum("om,mor->or", c, part)
        return acc.view(bank.shape[1:])

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        coeffs, bank = ctx.saved_tensors
        if not ctx.needs_input_grad[0]:
            return None, None, None, None
        num_masks, out = bank.shape[0], bank.shape[1]
        flat = bank.view(num_masks, out, -1)
        g = grad.reshape(out, -1)
        grads = []
        buffer = _chunk_buffer(flat, ctx.chunk, grad.dtype)
        for start in range(0, num_masks, ctx.chunk):
            part = _as_float(flat[start : start + ctx.chunk], buffer)
            if coeffs.dim() == 1:
                grads.append(torch.einsum("mor,or->m", part, g))
            else:
                grads.append(torch.einsum("mor,or->om", part, g))
        return torch.cat(grads, dim=-1), None, None, None


def mix_bank(
    coeffs: Tensor,
    bank: Tensor,
    chunk: int = 64,
    float_bank: Tensor | None = None,
    value: Tensor | None = None,
) -> Tensor:
    """The effective mask ``coeffs @ bank``.

    ``bank`` is bool, shape ``(M, *weight_shape)``. ``coeffs`` is ``(M,)`` (one number per mask) or
    ``(out, M)`` (one vector per output unit). A one-hot ``coeffs`` that needs no gradient returns
    the stored mask itself, converted to float, bit for bit. ``float_bank``, the bank already
    converted to floats, makes each call one matrix-vector product (worth it for a small bank
    mixed on every training step, as ImpressLearn's alphas are). ``value``, the result
    ``coeffs @ bank`` already computed for equal coeffs, skips the forward mixing of a bool bank;
    the gradient to ``coeffs`` is computed as usual.
    """
    if coeffs.shape[-1] != bank.shape[0]:
        raise ValueError(
            f"coeffs have {coeffs.shape[-1]} entries but the bank holds {bank.shape[0]} masks"
        )
    if coeffs.dim() == 2 and coeffs.shape[0] != bank.shape[1]:
        raise ValueError(
            f"per-unit coeffs have {coeffs.shape[0]} rows but the layer has {bank.shape[1]} units"
        )
    if coeffs.dim() == 1 and not coeffs.requires_grad:
        nonzero = torch.nonzero(coeffs).flatten()
        if nonzero.numel() == 1 and coeffs[nonzero[0]] == 1:
            return bank[int(nonzero[0])].to(coeffs.dtype)
    if float_bank is not None:
        if coeffs.dim() == 1:
            return torch.tensordot(coeffs, float_bank, dims=1)
        flat = float_bank.view(float_bank.shape[0], float_bank.shape[1], -1)
        return torch.einsum("om,mor->or", coeffs, flat).view(bank.shape[1:])
    return _MixBank.apply(coeffs, bank, chunk, value)


# ------------------------------------------------------------------------------------ storage


def pack_bits(mask: Tensor) -> Tensor:
    """A bool tensor packed 8 weights per byte (flattened, row-major) as uint8."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().reshape(-1).astype(bool)))


def unpack_bits(packed: Tensor, shape: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`pack_bits`: a bool tensor of ``shape``."""
    count = math.prod(shape)
    if packed.numel() != (count + 7) // 8:
        raise ValueError(
            f"packed mask has {packed.numel()} bytes, expected {(count + 7) // 8} for shape {shape}"
        )
    bits = np.unpackbits(packed.cpu().numpy(), count=count)
    return torch.from_numpy(bits.astype(bool)).view(shape)
