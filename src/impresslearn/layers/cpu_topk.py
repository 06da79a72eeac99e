"""The CPU accelerator of mask learning: an exact top-k selection that follows the scores from step
to step, and training-step buffers reused between steps.

Selecting the top k of ``n`` scores on every step is the costly part of a masked training step on
the CPU. A full sort (what the ImpressLearn authors' code does) is O(n log n) and even a
quickselect (``torch.kthvalue``) costs about two dense LeNet training steps. :class:`TopKSelector`
exploits that scores move little from one step to the next: it keeps the previous threshold and
only partially sorts the scores in a narrow band around it, falling back to a full selection when
the band misses. The result is the exact top-k, identical bit for bit to the reference
(:func:`~impresslearn.layers.masks.exact_topk_mask`, with the same tie rule), at a fraction of the
cost. Where the package's compiled kernel was built (:mod:`impresslearn.layers.native`) the band
selection runs in C, one pass over the scores; elsewhere in NumPy, with the same masks (a
one-line warning says so, once).

The accelerator is optional and behind one function, :func:`accelerated_selector`, which masked
layers call for CPU layers; it returns selectors with the reference's interface (``__call__``
for the mask, ``masked_weight`` for ``weight * mask`` with the straight-through gradient). It
uses three private torch functions, each guarded: where one is missing, its fallback runs
(:data:`PRIVATE_TORCH` says which are in use).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import weakref

import numpy as np
import torch
from torch import Tensor

from impresslearn.errors import ConfigError
from impresslearn.layers.masks import exact_topk_mask
from impresslearn.layers.native import NativeBand, load_kernel

log = logging.getLogger(__name__)

_TINY = 1e-6  # the band's least half-width, relative to the threshold
_EIGHT = np.arange(8)


def _private(obj, *path: str):
    """A private torch attribute, or ``None`` where this torch has none (then its fallback runs)."""
    for name in path:
        obj = getattr(obj, name, None)
        if obj is None:
            return None
    return obj


# The private torch functions the accelerator uses, each with a fallback where it is missing:
# counting a storage's holders (else buffers are allocated afresh every step), and applying an
# autograd function without its Python wrapper (else the public ``Function.apply``).
_STORAGE_USE_COUNT = _private(torch, "_C", "_storage_Use_Count")
_FUNCTORCH_ACTIVE = _private(torch, "_C", "_are_functorch_transforms_active")
PRIVATE_TORCH = {
    "storage_use_count": _STORAGE_USE_COUNT is not None,
    "functorch_active": _FUNCTORCH_ACTIVE is not None,
}


def accelerated_selector(numel: int, k: int, kind: str):
    """The CPU accelerator's selector for a layer of ``numel`` weights learning a ``kind`` mask
    (``topk``, ``topk_raw``: ``k`` weights kept; ``threshold``): a :class:`TopKSelector` or a
    :class:`ThresholdMask`, with the interface of the reference's
    :class:`~impresslearn.layers.masks.ExactTopK` and the same masks. Warns once when the
    compiled kernel is absent (the NumPy selection runs then)."""
    if load_kernel() is None:
        _warn_no_kernel()
    if kind == "threshold":
        return ThresholdMask()
    return TopKSelector(numel, k, signed=kind == "topk_raw")


@functools.cache
def _warn_no_kernel() -> None:
    log.warning(
        "impresslearn: the compiled top-k kernel is not built in this installation, so masks "
        "are selected in NumPy: the same masks, a CPU training step about 25% slower. Reinstall "
        "with a C compiler present (pip install -e .) to build it."
    )


def _storage_users(t: Tensor) -> int | None:
    """How many holders ``t``'s memory has (tensors sharing it, storage objects); ``None`` where
    torch does not say, and then nothing is reused."""
    return _use_count(t.untyped_storage())


def _use_count(storage) -> int | None:
    if _STORAGE_USE_COUNT is None:
        return None
    try:
        return _STORAGE_USE_COUNT(storage._cdata)
    except Exception:  # a private torch function changed: allocate afresh
        return None


class _Reusable:
    """A CPU buffer handed out again once nothing else holds its memory.

    A masked training step makes two weight-sized tensors, the effective weight and the scores'
    gradient. Allocated afresh each step, their memory often went back to the system and was
    faulted in again: some 600 page faults per LeNet-300-100 step, which cost about as much as
    all the rest of the masked step's overhead. The buffer is reused only when its storage has no
    other holder (the last step's graph has released the effective weight, the optimiser's
    ``zero_grad`` has dropped the gradient); otherwise a fresh one replaces it, so a result never
    shares memory with anything still alive. Callers hand out aliases of it (``detach()``: a new
    tensor on the same memory, which counts as a holder).
    """

    def __init__(self) -> None:
        self._buffer: Tensor | None = None
        self._storage = None  # the buffer's storage, held to count its holders cheaply
        self._alone: int | None = None  # the holder count of the buffer held by this alone

    def get(self, like: Tensor) -> tuple[Tensor, bool]:
        """A contiguous CPU tensor of ``like``'s shape and dtype, and whether it is the buffer
        handed out last time (then it holds what was written there, unless a view of it was
        modified in place: that shows in its ``_version``); otherwise it is uninitialised."""
        buffer = self._buffer
        if (
            buffer is not None
            and buffer.shape == like.shape
            and buffer.dtype == like.dtype
            and self.alone()
        ):
            return buffer, True
        buffer = torch.empty(like.shape, dtype=like.dtype, device="cpu")
        self._storage = buffer.untyped_storage()
        self._alone = _storage_users(buffer)
        self._buffer = buffer if self._alone is not None else None
        return buffer, False

    def alone(self) -> bool:
        """Whether nothing but this holds the buffer handed out last."""
        return self._alone is not None and _use_count(self._storage) == self._alone


class _MaskedWeight(torch.autograd.Function):
    """``weight * mask`` where ``mask`` was selected from ``scores``; straight-through gradient.

    The backward pass treats the binarisation as the identity: the gradient of the effective
    weight times ``weight`` reaches the scores unchanged (threshold masks) or through ``|scores|``
    (top-k masks, which rank ``|scores|``). One fused function instead of a chain of autograd ops
    saves passes over the weight per step. ``mask`` is a tensor, or the :class:`TopKSelector`
    that selects it here, with ``weight * mask`` and the scores' gradient in buffers reused from
    step to step. Where the compiled kernel is built, the gradient of a layer of at most
    ``_FUSED_MAX`` weights is one fused pass in C (torch's three passes, each on all threads,
    are faster for larger layers).
    """

    _FUSED_MAX = 65536

    @staticmethod
    def forward(
        ctx,
        scores: Tensor,
        weight: Tensor,
        mask: Tensor | TopKSelector,
        through_abs: bool,
    ) -> Tensor:
        ctx.save_for_backward(scores, weight)
        ctx.through_abs = through_abs
        ctx.reusable = None
        ctx.kernel = _fusing_kernel(scores, weight)
        if isinstance(mask, TopKSelector):
            if scores.is_cpu and mask.numel > mask._SMALL:
                ctx.reusable = mask._grad_buffer
            return mask.masked(scores, weight)
        if isinstance(mask, ThresholdMask):
            if scores.is_cpu:
                ctx.reusable = mask._grad_buffer
            return mask.masked(scores, weight)
        return weight * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None, None]:
        scores, weight = ctx.saved_tensors
        out = None  # a reused buffer, except when the backward pass builds a graph (create_graph)
        if ctx.reusable is not None and not torch.is_grad_enabled():
            out = ctx.reusable.get(scores)[0]
        kernel = ctx.kernel
        if kernel is not None and not torch.is_grad_enabled() and _plain(grad):
            out = torch.empty_like(scores) if out is None else out
            kernel.il_straight_through(
                grad.data_ptr(),
                weight.data_ptr(),
                scores.data_ptr(),
                out.data_ptr(),
                scores.numel(),
                int(ctx.through_abs),
            )
            return out.detach(), None, None, None
        if not ctx.through_abs:
            if out is None:
                return grad * weight, None, None, None
            return torch.mul(grad, weight, out=out).detach(), None, None, None
        # grad * weight * sign(scores), computed as sign(scores) * weight * grad in the tensor
        # that is returned: the same bits (multiplying by -1, 0 or 1 is exact, and the sign of a
        # zero product does not depend on the order), in one buffer instead of three.
        grad_scores = torch.sign(scores) if out is None else torch.sign(scores, out=out).detach()
        grad_scores.mul_(weight)
        grad_scores.mul_(grad)
        return grad_scores, None, None, None


# torch.autograd.Function.apply without its Python wrapper (default-argument binding and functorch
# bookkeeping, neither needed outside functorch transforms): the C++ apply it ends in. That saves
# about 3 us a call, a tenth of a small layer's masked training step. Private: where torch lacks
# it, or cannot tell whether functorch transforms are active, the public apply runs.
_BASE_APPLY = _private(super(torch.autograd.Function, _MaskedWeight), "apply")
PRIVATE_TORCH["base_apply"] = _BASE_APPLY is not None


def _apply_masked_weight(*args) -> Tensor:
    if _BASE_APPLY is None or _FUNCTORCH_ACTIVE is None or _FUNCTORCH_ACTIVE():
        return _MaskedWeight.apply(*args)
    return _BASE_APPLY(*args)


def _plain(t: Tensor) -> bool:
    """Contiguous float32 on the CPU: what the compiled kernel reads."""
    return t.dtype == torch.float32 and t.is_cpu and t.is_contiguous()


def _fusing_kernel(scores: Tensor, weight: Tensor) -> ctypes.CDLL | None:
    """The compiled kernel where the straight-through gradient of these scores is one fused
    pass in C (a layer of at most ``_FUSED_MAX`` weights), else ``None``."""
    if scores.numel() > _MaskedWeight._FUSED_MAX or not (_plain(scores) and _plain(weight)):
        return None
    return load_kernel()


class TopKSelector:
    """Exact top-k of ``|scores|`` (or of the signed ``scores`` with ``signed=True``) as a float
    0/1 mask, fast when called step after step.

    The returned mask may share memory with the selector: use it before the next call.
    :meth:`masked` gives ``weight * mask`` directly (what a training step needs).

    Ties are broken deterministically, the same way on every path and device: the mask keeps every
    value above the k-th largest, then the values equal to the k-th largest that come first by
    flat position, so that it holds exactly ``k`` ones.

    On CPU with float32 scores it works in NumPy on reused buffers (no weight-sized allocation)
    and keeps the threshold ``t`` that separated the last mask. Scores move little from one step
    to the next, so ``|scores| > t`` is almost the new mask: one pass counts it, and when it holds
    ``c != k`` values, only the values in a narrow band on the side of ``t`` that must change
    (``(t, t + d]`` to drop ``c - k`` of them, ``[t - d, t]`` to add ``k - c``) are gathered and
    partially sorted, and the ``|c - k|`` crossing positions are set. The half-width ``d`` follows
    how far the cut moves; a band too narrow is widened and gathered again, and a full
    ``np.partition`` is the last resort (and the rule for small layers, where it is cheapest).
    Where the package's compiled kernel was built (see :mod:`impresslearn.layers.native`), the
    same band selection runs in C as one pass over the scores, for layers of every size; the masks
    are the same bit for bit (``native=False`` keeps the NumPy code, ``native=True`` requires the
    kernel). Other devices and dtypes use :func:`exact_topk_mask` (torch ops).
    """

    _MAX_WIDENINGS = 6
    _SMALL = 4096  # layers up to this size take a full partition on every call
    _WORDS = 65536  # layers from this size find set flags 8 at a time

    def __init__(
        self, numel: int, k: int, *, signed: bool = False, native: bool | None = None
    ) -> None:
        if not 0 < k <= numel:
            raise ConfigError(
                f"a mask must keep between 1 and {numel} weights, got {k}: raise the density"
            )
        self.numel = numel
        self.k = k
        self.signed = signed
        kernel = load_kernel() if native is not False else None
        if native and kernel is None:
            raise ConfigError(
                "the compiled top-k kernel is not built in this installation: reinstall the "
                "package with a C compiler present (pip install -e .), or leave native unset"
            )
        self._kernel = kernel if k < numel else None
        self._native: NativeBand | None = None  # made with the buffers
        # The last kernel step's scores, weight and product buffer (see _masked_hot).
        self._hot: tuple | None = None
        self._threshold: np.float32 | None = None  # |scores| > threshold held the last mask
        self._delta = 0.0
        self._band_target = max(256, numel // 128)
        self._abs: np.ndarray | None = None  # buffers, made on the first CPU float32 call
        # For a training step on the CPU: the effective weight and the scores' gradient.
        self._weight_buffer = _Reusable()
        self._grad_buffer = _Reusable()
        # What the weight buffer holds: weight * _product_mask for (weight, its version, the
        # buffer's version) when it was written.
        self._product_of: tuple[weakref.ref, int, int] | None = None

    def __call__(self, scores: Tensor) -> Tensor:
        if self.k == self.numel:
            return torch.ones_like(scores)
        kept = self._select(scores)
        if kept is None:
            return exact_topk_mask(self._ranked(scores.detach().reshape(-1)), self.k).view_as(
                scores
            )
        np.copyto(self._mask, kept, casting="unsafe")
        return self._mask_torch.view_as(scores)

    def masked_weight(self, scores: Tensor, weight: Tensor) -> Tensor:
        """``weight * self(scores)`` with the straight-through gradient to ``scores`` (through
        ``|scores|`` unless signed), the training step's product in reused buffers."""
        return _apply_masked_weight(scores, weight, self, not self.signed)

    def masked(self, scores: Tensor, weight: Tensor) -> Tensor:
        """``weight * self(scores)`` (no autograd graph), the same bits. On the CPU path the
        product is kept in a buffer reused from step to step (see :class:`_Reusable`) and only
        the weights whose mask changed since it was computed are rewritten."""
        hot = self._hot
        if hot is not None and hot[0] is scores and hot[1] is weight:
            out = self._masked_hot(hot)
            if out is not None:
                return out
        if (
            self.k < self.numel
            and weight.dtype == torch.float32
            and weight.device.type == "cpu"
            and weight.shape == scores.shape
        ):
            if self._native is not None and self._threshold is not None:
                out = self._masked_native(scores, weight)
                if out is not None:
                    return out
            kept = self._select(scores, native=False)
            if kept is not None:
                if self.numel <= self._SMALL:  # a few KB: plain products are cheapest
                    out = torch.empty(weight.shape, dtype=weight.dtype)
                    np.multiply(
                        weight.detach().numpy(), kept.reshape(weight.shape), out=out.numpy()
                    )
                    return out
                return self._masked_cpu(weight, kept)
        return weight * self(scores)

    def _holds_product(self, weight: Tensor, out: Tensor) -> bool:
        """Whether the reused weight buffer ``out`` still holds the product written last for
        ``weight`` (neither was modified since)."""
        last = self._product_of
        return (
            last is not None
            and last[0]() is weight
            and last[1] == weight._version
            and last[2] == out._version
        )

    def _masked_hot(self, hot: tuple) -> Tensor | None:
        """The kernel's step for the same scores and weight as the last call, with the least
        Python: their memory, the weight's version and the product buffer are checked unchanged
        (and the buffer not held elsewhere); ``None`` where something changed."""
        scores, weight, scores_at, weight_at, weight_version, out, out_at, out_version = hot
        if (
            scores.data_ptr() == scores_at
            and scores.is_contiguous()
            and weight.data_ptr() == weight_at
            and weight._version == weight_version
            and out._version == out_version
            and self._weight_buffer.alone()
        ):
            if self._native.step_at(scores_at, weight_at, out_at):
                return out.detach()
            self._threshold, self._delta = self._native.state()
        self._forget_product()
        return None

    def _forget_product(self) -> None:
        """The weight buffer no longer holds the product of the current mask."""
        self._product_of = None
        self._hot = None

    def _masked_native(self, scores: Tensor, weight: Tensor) -> Tensor | None:
        """One step of the compiled kernel, which updates the mask and the product together
        (there the product is ``weight * _kept``); ``None`` where it does not apply or the band
        missed (then the product is marked stale)."""
        if not (
            scores.dtype == torch.float32 and scores.is_contiguous() and weight.is_contiguous()
        ):
            return None
        out, reused = self._weight_buffer.get(weight)
        if not (reused and self._holds_product(weight, out)):
            w = weight.detach().numpy().reshape(-1)
            np.multiply(w, self._kept, out=out.numpy().reshape(-1))
            self._product_of = (weakref.ref(weight), weight._version, out._version)
        if not self._native.step(scores, weight, out):
            self._threshold, self._delta = self._native.state()
            self._forget_product()
            return None
        self._hot = (
            scores,
            weight,
            scores.data_ptr(),
            weight.data_ptr(),
            weight._version,
            out,
            out.data_ptr(),
            out._version,
        )
        return out.detach()

    def _masked_cpu(self, weight: Tensor, kept: np.ndarray) -> Tensor:
        out, reused = self._weight_buffer.get(weight)
        product = out.numpy().reshape(-1)
        w = weight.detach().numpy().reshape(-1)
        # With the kernel, the product follows _kept instead of _product_mask: rewrite it whole.
        if self._native is None and reused and self._holds_product(weight, out):
            np.not_equal(kept, self._product_mask, out=self._flags)
            changed = self._flag_positions()
            if changed.size <= self.numel // 16:
                product[changed] = w[changed] * kept[changed]  # w * 1 or w * 0, as weight * mask
                self._product_mask[changed] = kept[changed]
                return out.detach()
        np.copyto(self._mask, kept, casting="unsafe")
        np.multiply(w, self._mask, out=product)
        np.copyto(self._product_mask, kept)
        self._product_of = (weakref.ref(weight), weight._version, out._version)
        return out.detach()

    def _select(self, scores: Tensor, native: bool = True) -> np.ndarray | None:
        """The boolean top-k of the flattened scores (a reused buffer), or ``None`` where the
        NumPy path does not apply (another device or dtype). ``native``: try the kernel first."""
        flat = scores.detach().reshape(-1)
        if flat.device.type != "cpu" or flat.dtype != torch.float32:
            self._threshold = None
            return None
        if self._abs is None:
            self._make_buffers()
        if self._native is not None:
            self._forget_product()  # _kept changes here, without the product
            if native and self._threshold is not None and flat.is_contiguous():
                if self._native.step(flat):
                    return self._kept
                self._threshold, self._delta = self._native.state()
        a = self._abs
        if self.signed:
            self._abs_torch.copy_(flat)
        else:
            torch.abs(flat, out=self._abs_torch)  # (torch's threads; NumPy has one)
        if self.numel <= self._SMALL or self._threshold is None or not self._band_select(a):
            self._full_select(a)
        if self._native is not None:
            self._native.load(self._threshold, self._delta)
        return self._kept

    def _ranked(self, flat: Tensor) -> Tensor:
        """The values the mask ranks: ``|scores|``, or the scores themselves when signed."""
        return flat if self.signed else flat.abs()

    def _make_buffers(self) -> None:
        n = self.numel
        padded = -(-n // 8) * 8  # flags are also read 8 at a time, as uint64 words
        self._abs = np.empty(n, dtype=np.float32)  # the ranked values: |scores| (or scores)
        self._abs_torch = torch.from_numpy(self._abs)
        self._kept = np.zeros(n, dtype=bool)  # the mask
        self._flags_padded = np.zeros(padded, dtype=bool)  # the padding stays False
        self._flags = self._flags_padded[:n]
        self._flag_words = self._flags_padded.view(np.uint64)
        self._word_flags = np.empty(padded // 8, dtype=bool)
        self._mask = np.empty(n, dtype=np.float32)  # the float mask __call__ returns
        self._product_mask = np.zeros(n, dtype=bool)
        self._mask_torch = torch.from_numpy(self._mask)
        if self._kernel is not None:
            self._native = NativeBand(self._kernel, self._kept, self.k, self.signed)

    def _full_select(self, a: np.ndarray) -> None:
        """Sets ``_kept`` to the top-k of ``a`` by a full partition, and a fresh band."""
        n, k = self.numel, self.k
        part = np.partition(a, (n - k - 1, n - k))
        kth, below = part[n - k], part[n - k - 1]
        kept = np.greater(a, below if kth != below else kth, out=self._kept)
        if kth == below:  # ties at the cut: the first of the equal values by position
            missing = k - int(np.count_nonzero(kept))
            kept[np.flatnonzero(a == kth)[:missing]] = True
        if n > self._SMALL or self._native is not None:  # the next call starts from here
            self._set_threshold(kth, below)
            # A band that would hold about ``_band_target`` values for uniform scores.
            spread = float(part[-1] - part[0])
            self._delta = max(self._delta * 4.0, spread * self._band_target / n, 1e-12)

    def _band_select(self, a: np.ndarray) -> bool:
        """Sets ``_kept`` to the top-k of ``a`` from the last threshold; ``False`` if the band
        could not hold the cut (then ``_kept`` is to be recomputed)."""
        k, t = self.k, self._threshold
        kept, flags = self._kept, self._flags
        np.greater(a, t, out=kept)
        count = int(np.count_nonzero(kept))
        if count == k:  # exactly k values above t: the top-k, and no tie at the cut
            return True
        dropping = count > k
        change = count - k if dropping else k - count  # values that cross the cut
        for _ in range(self._MAX_WIDENINGS):
            # The candidates: kept values at most t + d (the smallest may be dropped), or values
            # not kept and at least t - d (the largest may be added). Comparing the same float32
            # numbers with the same t as ``kept`` keeps the two sets exactly complementary.
            if dropping:
                np.less_equal(a, np.float32(t + self._delta), out=flags)
                np.logical_and(flags, kept, out=flags)
            else:
                np.greater_equal(a, np.float32(t - self._delta), out=flags)
                np.greater(flags, kept, out=flags)  # flags and not kept
            where = self._flag_positions()
            if where.size > change:
                break
            self._delta *= 4.0
        else:
            return False
        values = a[where]
        # Ascending ranks: dropping removes the ``change`` smallest candidates, adding takes the
        # ``change`` largest; ``kth`` is the k-th largest of all, ``below`` the (k+1)-th.
        lo = change - 1 if dropping else where.size - change - 1
        part = np.partition(values, (lo, lo + 1))
        below, kth = part[lo], part[lo + 1]
        if kth != below:
            if dropping:
                kept[where[values <= below]] = False
            else:
                kept[where[values >= kth]] = True
        else:
            # Equal values straddle the cut (float32 scores collide now and then); all of them are
            # candidates. Keep every value above it and the first of the equal ones by position.
            if dropping:
                kept[where[values <= kth]] = False
            else:
                kept[where[values > kth]] = True
            missing = k - int(np.count_nonzero(kept))
            kept[where[values == kth][:missing]] = True
        # Follow how far the cut moves: a band a few times that wide holds it next time.
        self._delta = max(0.8 * self._delta, 4.0 * float(abs(kth - t)), _TINY * abs(float(t)))
        self._set_threshold(kth, below)
        return True

    def _flag_positions(self) -> np.ndarray:
        """Ascending positions of the set ``_flags``. In a large layer they are few and found 8
        at a time (uint64 words that are not zero), twice as fast as ``np.flatnonzero``."""
        if self.numel < self._WORDS:
            return np.flatnonzero(self._flags)
        words = np.flatnonzero(np.not_equal(self._flag_words, 0, out=self._word_flags))
        if 8 * words.size > self.numel // 8:  # not few: the plain way is faster
            return np.flatnonzero(self._flags)
        where = (words[:, None] * 8 + _EIGHT).reshape(-1)
        return where[self._flags_padded[where]]

    def _set_threshold(self, kth: np.float32, below: np.float32) -> None:
        # Any t with below <= t < kth separates the mask; the midpoint stays valid longest.
        mid = np.float32(0.5 * (float(kth) + float(below)))
        self._threshold = mid if below <= mid < kth else below


class ThresholdMask:
    """``weight * (scores >= 0)`` for a training step, step after step, in buffers reused as
    :class:`TopKSelector`'s are (see :class:`_Reusable`): allocated afresh, the effective weight,
    the mask and the gradient cost hundreds of page faults per LeNet-300-100 step. With the
    compiled kernel the product is one pass in C; otherwise torch's ops, into the buffers."""

    def __init__(self) -> None:
        self._weight_buffer = _Reusable()
        self._grad_buffer = _Reusable()

    def __call__(self, scores: Tensor) -> Tensor:
        return (scores.detach() >= 0).to(scores.dtype)

    def masked_weight(self, scores: Tensor, weight: Tensor) -> Tensor:
        """``weight * (scores >= 0)`` with the straight-through gradient, in reused buffers."""
        return _apply_masked_weight(scores, weight, self, False)

    def masked(self, scores: Tensor, weight: Tensor) -> Tensor:
        """``weight * (scores >= 0)``, the same bits, without an autograd graph."""
        if not (_plain(scores) and _plain(weight) and scores.shape == weight.shape):
            return weight * (scores.detach() >= 0).to(weight.dtype)
        out = self._weight_buffer.get(weight)[0]
        kernel = load_kernel()
        if kernel is not None:
            kernel.il_threshold_product(
                scores.data_ptr(), weight.data_ptr(), out.data_ptr(), out.numel()
            )
        else:
            torch.mul(weight, scores.detach() >= 0, out=out)
        return out.detach()
