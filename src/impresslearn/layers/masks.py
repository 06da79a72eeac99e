"""Binary masks: learning them from scores, mixing a bank of them, storing them at 1 bit per weight.

A supermask (Zhou et al. 2019; Ramanujan et al. 2020, "edge-popup"; Wortsman et al. 2020, SupSup)
is learned from a real-valued ``scores`` tensor the size of the weight:

* **top-k**: keep exactly ``round(density * n)`` weights with the largest ``|scores|``;
* **threshold**: keep the weights whose ``scores >= 0`` (SupSup's MNIST experiments).

Both use a straight-through gradient: the backward pass treats the binarisation as the identity.

Selecting the top k of ``n`` scores on every step is the costly part. A full sort (what the
ImpressLearn authors' code does) is O(n log n) and even a quickselect (``torch.kthvalue``) costs
about two dense LeNet training steps. :class:`TopKSelector` exploits that scores move little from
one step to the next: it keeps the previous threshold and only partially sorts the scores in a
narrow band around it, falling back to a full selection when the band misses. The result is the
exact top-k, identical to a full selection, at a fraction of the cost.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from impresslearn.errors import ConfigError

MaskKind = Literal["topk", "threshold"]
MASK_KINDS: tuple[str, ...] = ("topk", "threshold")


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


class _MaskedWeight(torch.autograd.Function):
    """``weight * mask`` where ``mask`` was selected from ``scores``; straight-through gradient.

    The backward pass treats the binarisation as the identity: the gradient of the effective
    weight times ``weight`` reaches the scores unchanged (threshold masks) or through ``|scores|``
    (top-k masks, which rank ``|scores|``). One fused function instead of a chain of autograd ops
    saves two passes over the weight per step.
    """

    @staticmethod
    def forward(ctx, scores: Tensor, weight: Tensor, mask: Tensor, through_abs: bool) -> Tensor:
        ctx.save_for_backward(scores, weight)
        ctx.through_abs = through_abs
        return weight * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        scores, weight = ctx.saved_tensors
        grad_scores = grad * weight
        if ctx.through_abs:
            grad_scores.mul_(scores.sign())
        return grad_scores, None, None, None


class TopKSelector:
    """Exact top-k of ``|scores|`` as a float 0/1 mask, fast when called step after step.

    The returned mask may share memory with the selector: use it before the next call.

    Keeps the last threshold and a band half-width ``delta``. Each call counts the values above the
    band and partially sorts only the values inside it (NumPy, on CPU). If the k-th largest value
    has left the band, it falls back to a full ``np.partition`` and widens the band. Either way the
    mask holds exactly ``k`` ones; ties at the threshold (measure zero for continuous scores) are
    broken by a full ``torch.topk``.
    """

    def __init__(self, numel: int, k: int) -> None:
        if not 0 < k <= numel:
            raise ConfigError(
                f"a mask must keep between 1 and {numel} weights, got {k}: raise the density"
            )
        self.numel = numel
        self.k = k
        self._threshold: float | None = None
        self._delta = 0.0
        self._band_target = max(256, numel // 128)
        self._buffer: np.ndarray | None = None  # the returned mask; valid until the next call

    def __call__(self, scores: Tensor) -> Tensor:
        if self.k == self.numel:
            return torch.ones_like(scores)
        flat = scores.detach().reshape(-1)
        if flat.device.type != "cpu" or flat.dtype != torch.float32:
            return self._exact_torch(flat.abs()).view_as(scores)
        if self._buffer is None:  # reused every call: no allocation of weight-sized arrays
            self._buffer = np.empty(self.numel, dtype=np.float32)  # the mask
            self._abs = np.empty(self.numel, dtype=np.float32)
            self._diff = np.empty(self.numel, dtype=np.float32)
            self._flags = np.empty(self.numel, dtype=bool)
        a = np.abs(flat.numpy(), out=self._abs)
        cut = self._band_select(a) if self._threshold is not None else None
        if cut is None:
            cut = self._full_select(a)
        kth, below = cut  # k-th largest and (k+1)-th largest
        self._threshold = 0.5 * (kth + below)
        if kth != below:
            np.greater(a, np.float32(below), out=self._buffer, casting="unsafe")
        else:
            # Equal values straddle the cut (float32 scores collide now and then): keep all
            # values above it and the first of the equal ones by position, deterministically.
            np.greater(a, np.float32(kth), out=self._buffer, casting="unsafe")
            missing = self.k - int(np.count_nonzero(self._buffer))
            self._buffer[np.flatnonzero(a == np.float32(kth))[:missing]] = 1.0
        return torch.from_numpy(self._buffer).view_as(scores)

    def _full_select(self, a: np.ndarray) -> tuple[float, float]:
        n, k = self.numel, self.k
        part = np.partition(a, (n - k - 1, n - k))
        kth, below = float(part[n - k]), float(part[n - k - 1])
        # Start with a band that would hold about ``_band_target`` values for uniform scores.
        spread = float(part[-1] - part[0]) if n > 1 else 1.0
        self._delta = max(self._delta * 4.0, spread * self._band_target / n, 1e-12)
        return kth, below

    def _band_select(self, a: np.ndarray) -> tuple[float, float] | None:
        # Both sets come from the same rounded differences z, which are monotone in a, so they
        # are disjoint and everything in ``band`` ranks below everything counted in ``above``.
        d = np.float32(self._delta)
        z = np.subtract(a, np.float32(self._threshold), out=self._diff)
        above = np.count_nonzero(np.greater(z, d, out=self._flags))
        band = a[np.less_equal(np.abs(z, out=z), d, out=self._flags)]
        need = self.k - above  # how many band values are kept
        b = band.size
        if b < self._band_target // 4:
            self._delta *= 1.5
        elif b > 4 * self._band_target:
            self._delta *= 0.7
        if not 1 <= need <= b - 1:
            return None
        part = np.partition(band, (b - need - 1, b - need))
        return float(part[b - need]), float(part[b - need - 1])

    def _exact_torch(self, values: Tensor) -> Tensor:
        mask = torch.zeros_like(values)
        mask[torch.topk(values, self.k, sorted=False).indices] = 1.0
        self._threshold = None
        return mask


def topk_masked_weight(scores: Tensor, weight: Tensor, selector: TopKSelector) -> Tensor:
    """``weight * topk(|scores|)`` with a straight-through gradient to ``scores``."""
    return _MaskedWeight.apply(scores, weight, selector(scores), True)


def threshold_masked_weight(scores: Tensor, weight: Tensor) -> Tensor:
    """``weight * (scores >= 0)`` with a straight-through gradient (SupSup's MNIST masks)."""
    mask = (scores.detach() >= 0).to(weight.dtype)
    return _MaskedWeight.apply(scores, weight, mask, False)


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
