"""Masked layers over a frozen random weight: the one layer contract of SupSup and ImpressLearn.

Every masked layer holds

* ``weight``: a frozen buffer (never a parameter), regenerated from ``(backbone_seed, layer_index)``;
* a **bank** of stored bool masks, shape ``(num_masks, *weight.shape)``;
* optional trainable **scores** from which a new mask is being learned.

Its effective weight is ``weight * mask`` where the mask is either ``coeffs @ bank`` (coeffs set
through :func:`use_coeffs`) or, while a new mask is learned, the top-k (or threshold) mask of the
scores. Because mixing is linear, SupSup with a known task (one-hot coeffs), SupSup's task
inference (coeffs = beta), ImpressLearn (coeffs = alpha) and its inference (beta @ alpha) are one
code path. With coeffs that need no gradient the effective weight is computed once
per :func:`use_coeffs` block and reused, so evaluation with a known task runs at dense speed.

The dense twins :class:`DenseLinear` / :class:`DenseConv2d` take the same arguments and train the
same initial weights directly; backbones built with them are the dense baselines.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from impresslearn.errors import ConfigError
from impresslearn.layers.cpu_topk import accelerated_selector
from impresslearn.layers.masks import (
    MASK_KINDS,
    ExactTopK,
    ThresholdRule,
    mix_bank,
    num_kept,
)
from impresslearn.seeding import PURPOSE_WEIGHTS, generator

WeightInit = Literal["signed_constant", "kaiming_normal"]
FLOAT_BANK_BYTES = 128 * 2**20  # per layer
WEIGHT_INITS: tuple[str, ...] = ("signed_constant", "kaiming_normal")


def mask_selector(kind: str, numel: int, k: int, device: torch.device):
    """What selects a learning layer's mask from its scores, step after step (``k`` kept weights
    for the top-k kinds): on the CPU the accelerator (:func:`~impresslearn.layers.cpu_topk.
    accelerated_selector`), elsewhere the reference's torch ops (:class:`ExactTopK`,
    :class:`ThresholdRule`); the same masks bit for bit."""
    if device.type == "cpu":
        return accelerated_selector(numel, k, kind)
    if kind == "threshold":
        return ThresholdRule()
    return ExactTopK(numel, k, signed=kind == "topk_raw")


def init_weight(
    shape: tuple[int, ...], backbone_seed: int, layer_index: int, kind: WeightInit
) -> Tensor:
    """The frozen weight of layer ``layer_index``: a pure function of the seed and the index.

    ``signed_constant`` (SupSup's default): every weight is ``+-sqrt(2 / fan_in)`` with a random
    sign. ``kaiming_normal``: ``N(0, 2 / fan_in)``.
    """
    if kind not in WEIGHT_INITS:
        raise ConfigError(f"unknown weight init {kind!r}; choose one of {WEIGHT_INITS}")
    fan_in = math.prod(shape[1:])
    std = math.sqrt(2.0 / fan_in)
    gen = generator(backbone_seed, PURPOSE_WEIGHTS, layer_index)
    if kind == "signed_constant":
        signs = torch.randint(0, 2, shape, generator=gen, dtype=torch.int8)
        return (signs.float() * 2.0 - 1.0) * std
    return torch.randn(shape, generator=gen) * std


def init_scores(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Kaiming-uniform scores (bound ``1 / sqrt(fan_in)``, as ``nn.init.kaiming_uniform_(a=sqrt(5))``)."""
    bound = 1.0 / math.sqrt(math.prod(shape[1:]))
    return (torch.rand(shape, generator=gen) * 2.0 - 1.0) * bound


class MaskedLayer(nn.Module):
    """Base of :class:`MaskedLinear` and :class:`MaskedConv2d`: weight, bank, scores, coeffs."""

    def __init__(
        self,
        weight_shape: tuple[int, ...],
        *,
        backbone_seed: int,
        layer_index: int,
        weight_init: WeightInit = "signed_constant",
    ) -> None:
        super().__init__()
        self.layer_index = layer_index
        # Frozen, and not persistent: a checkpoint stores the seed, not the weights.
        self.register_buffer(
            "weight",
            init_weight(weight_shape, backbone_seed, layer_index, weight_init),
            persistent=False,
        )
        # The bank grows by doubling its capacity; only the first ``num_masks`` rows are masks.
        self.register_buffer(
            "_bank_storage", torch.zeros((0, *weight_shape), dtype=torch.bool), persistent=False
        )
        self.num_masks = 0
        self.register_parameter("scores", None)  # trainable only while a mask is learned
        self._mask_kind = "topk"
        self._selector = None  # selects the mask of the scores being learned (mask_selector)
        self._coeffs: Tensor | None = None
        self._cached_weight: Tensor | None = None
        self._weighted_bank: Tensor | None = None  # weight * bank as floats, while small
        # (coeffs, coeffs @ bank) of the last mixing with a gradient, for a large bool bank
        self._mixed: tuple[Tensor, Tensor] | None = None
        # The weight as a trainable Parameter sharing its storage (train_weight), else None.
        self._trained_weight: nn.Parameter | None = None

    def _apply(self, fn, recurse: bool = True):
        # Weight, bank and scores are registered and move; the derived caches are dropped (they
        # are rebuilt on the new device when needed), so no tensor stays behind.
        self._weighted_bank = None
        self._mixed = None
        self._cached_weight = None
        return super()._apply(fn, recurse)

    # ------------------------------------------------------------------------------- the bank

    @property
    def bank(self) -> Tensor:
        """Stored bool masks, shape ``(num_masks, *weight.shape)`` (a view, do not modify)."""
        return self._bank_storage[: self.num_masks]

    def reserve_bank(self, capacity: int) -> None:
        """Make room for ``capacity`` masks at once (a stream of known length), so the bank never
        grows by copying: without it the storage doubles when full, and while it grows holds the
        old and the new storage together (up to three times the masks' size)."""
        if capacity > self._bank_storage.shape[0]:
            grown = torch.zeros(
                (capacity, *self.weight.shape), dtype=torch.bool, device=self.weight.device
            )
            grown[: self.num_masks] = self.bank
            self._bank_storage = grown

    def add_to_bank(self, mask: Tensor) -> int:
        """Store a bool mask; returns its index in the bank."""
        if mask.shape != self.weight.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} != weight {tuple(self.weight.shape)}")
        if self.num_masks == self._bank_storage.shape[0]:
            self.reserve_bank(max(4, 2 * self.num_masks))
        self._bank_storage[self.num_masks] = mask.to(torch.bool)
        self.num_masks += 1
        self._weighted_bank = None
        self._mixed = None
        return self.num_masks - 1

    def _truncate_bank(self, num_masks: int) -> None:
        # Only extra_masks calls this, to drop the temporary masks it appended.
        self.num_masks = num_masks
        self._weighted_bank = None
        self._mixed = None
        self._cached_weight = None

    # ------------------------------------------------------------------------ learning a mask

    def begin_scores(self, density: float, kind: str, gen: torch.Generator) -> nn.Parameter:
        """Start learning a new mask: fresh trainable scores (returned, to hand to an optimiser)."""
        if kind not in MASK_KINDS:
            raise ConfigError(f"unknown mask kind {kind!r}: use one of {MASK_KINDS}")
        if not 0.0 < density <= 1.0:
            raise ConfigError(
                f"density must be in (0, 1], got {density} for layer {self.layer_index}"
            )
        shape = tuple(self.weight.shape)
        self.scores = nn.Parameter(init_scores(shape, gen).to(self.weight.device))
        self._mask_kind = kind
        self._selector = mask_selector(
            kind, self.weight.numel(), num_kept(density, self.weight.numel()), self.weight.device
        )
        return self.scores

    def current_mask(self) -> Tensor:
        """The bool mask the scores select now."""
        if self.scores is None:
            raise RuntimeError("no mask is being learned: call begin_scores first")
        with torch.no_grad():
            if self._mask_kind == "threshold":
                return self.scores >= 0
            return self._selector(self.scores).to(torch.bool)

    def end_scores(self) -> Tensor:
        """Stop learning: drop the scores and return the learned bool mask."""
        mask = self.current_mask()
        self.scores = None
        self._selector = None
        return mask

    def train_weight(self) -> nn.Parameter:
        """Let a method train this layer's weight while it learns a mask (WSN): returns a
        Parameter sharing the weight's storage (an optimiser's in-place steps change the weight
        itself), and the training path gives it the gradient ``mask * grad`` beside the
        scores' straight-through one. The method must keep every weight a stored mask selects
        unchanged (WSN zeroes their gradient): the stored masks' outputs rely on it.
        :meth:`freeze_weight` ends it."""
        if self.scores is None:
            raise RuntimeError("train_weight is for learning a mask: call begin_scores first")
        weight = nn.Parameter(self._buffers["weight"], requires_grad=True)
        object.__setattr__(self, "_trained_weight", weight)  # not registered: no optimiser finds it
        return weight

    def freeze_weight(self) -> None:
        """The weight is a frozen buffer again (its trained values kept); derived caches drop."""
        object.__setattr__(self, "_trained_weight", None)
        self._weighted_bank = None
        self._mixed = None
        self._cached_weight = None

    # ---------------------------------------------------------------------- effective weight

    def effective_weight(self) -> Tensor:
        """``weight * mask`` for the current coeffs, or for the scores being learned."""
        if self._coeffs is None:
            # The training step's path. Scores and weight are read from nn.Module's dicts:
            # its __getattr__ costs about a microsecond a call, on every layer and step.
            scores = self._parameters["scores"]
            if scores is not None:
                trained = self._trained_weight
                if trained is not None:  # the weight learns too: plain autograd on both
                    return trained * self._straight_through_mask(scores)
                return self._selector.masked_weight(scores, self._buffers["weight"])
        else:
            if self._cached_weight is not None:
                return self._cached_weight
            if not self._coeffs.requires_grad:
                # Fixed coeffs (evaluation): compute once per use_coeffs block.
                self._cached_weight = self.weight * mix_bank(self._coeffs, self.bank)
                return self._cached_weight
            weighted = self._small_weighted_bank()
            if weighted is not None:  # W * (coeffs @ bank) == coeffs @ (W * bank): one GEMV
                return mix_bank(self._coeffs, self.bank, float_bank=weighted)
            return self.weight * self._mix_large_bank()
        raise RuntimeError(
            "this masked layer has no mask selected: evaluate inside impresslearn.layers.use_coeffs"
            "(model, coeffs) or learn a mask with begin_scores"
        )

    def _straight_through_mask(self, scores: Tensor) -> Tensor:
        """The mask the scores select, with the straight-through gradient to the scores (through
        ``|scores|`` for ``topk``, as the fast path computes it)."""
        mask = self.current_mask().to(scores.dtype)
        ranked = scores.abs() if self._mask_kind == "topk" else scores
        return mask + (ranked - ranked.detach())

    def _mix_large_bank(self) -> Tensor:
        """``coeffs @ bank`` with a gradient to the coeffs, from the bool bank. The value is kept
        for the next call with equal coeffs: one-shot inference asks for the same uniform
        superposition for every test batch, and then pays only the backward pass."""
        key = self._coeffs.detach()
        kept = self._mixed
        if kept is not None and kept[0].device == key.device and torch.equal(kept[0], key):
            return mix_bank(self._coeffs, self.bank, value=kept[1])
        mixed = mix_bank(self._coeffs, self.bank)
        self._mixed = (key.clone(), mixed.detach())
        return mixed

    def _small_weighted_bank(self) -> Tensor | None:
        """``weight * bank`` as floats, ``(num_masks, *weight.shape)``, when that costs at most
        ``FLOAT_BANK_BYTES`` (kept until the bank changes); ``None`` for a large bank, which is
        then mixed chunk by chunk from its bool form."""
        if self.num_masks * self.weight.numel() * 4 > FLOAT_BANK_BYTES:
            return None
        cached = self._weighted_bank
        if cached is None or cached.device != self.weight.device:
            self._weighted_bank = self.weight * self.bank.to(self.weight.dtype)
        return self._weighted_bank

    def _set_coeffs(self, coeffs: Tensor | None) -> None:
        # Called only by use_coeffs, the one entry point for selecting masks.
        if coeffs is not None and coeffs.shape[-1] != self.num_masks:
            raise ValueError(
                f"layer {self.layer_index}: coeffs have {coeffs.shape[-1]} entries but the bank "
                f"holds {self.num_masks} masks"
            )
        if isinstance(coeffs, nn.Parameter):
            # A plain view, so that nn.Module does not register the coeffs as this layer's own
            # parameter; gradients still reach the caller's Parameter.
            coeffs = coeffs.view_as(coeffs)
        self._coeffs = coeffs
        self._cached_weight = None


class MaskedLinear(MaskedLayer):
    """A linear layer (no bias) whose frozen random weight is masked."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        backbone_seed: int,
        layer_index: int,
        weight_init: WeightInit = "signed_constant",
    ) -> None:
        super().__init__(
            (out_features, in_features),
            backbone_seed=backbone_seed,
            layer_index=layer_index,
            weight_init=weight_init,
        )
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.effective_weight())

    def extra_repr(self) -> str:
        return f"{self.in_features}, {self.out_features}, masks={self.num_masks}"


class MaskedConv2d(MaskedLayer):
    """A 2-D convolution (no bias) whose frozen random weight is masked."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        backbone_seed: int,
        layer_index: int,
        weight_init: WeightInit = "signed_constant",
    ) -> None:
        super().__init__(
            (out_channels, in_channels, kernel_size, kernel_size),
            backbone_seed=backbone_seed,
            layer_index=layer_index,
            weight_init=weight_init,
        )
        self.stride, self.padding = stride, padding

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.effective_weight(), stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}"


class DenseLinear(nn.Linear):
    """The dense baseline twin of :class:`MaskedLinear`: same initial weight, trained directly."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        backbone_seed: int,
        layer_index: int,
        weight_init: WeightInit = "kaiming_normal",
    ) -> None:
        super().__init__(in_features, out_features, bias=False)
        with torch.no_grad():
            self.weight.copy_(
                init_weight((out_features, in_features), backbone_seed, layer_index, weight_init)
            )


class DenseConv2d(nn.Conv2d):
    """The dense baseline twin of :class:`MaskedConv2d`."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        *,
        backbone_seed: int,
        layer_index: int,
        weight_init: WeightInit = "kaiming_normal",
    ) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, bias=False)
        with torch.no_grad():
            self.weight.copy_(
                init_weight(tuple(self.weight.shape), backbone_seed, layer_index, weight_init)
            )


# ------------------------------------------------------------------------- model-level helpers


def masked_layers(model: nn.Module) -> list[MaskedLayer]:
    """The masked layers of ``model`` in module order (the order coeffs are given in)."""
    return [m for m in model.modules() if isinstance(m, MaskedLayer)]


@contextmanager
def use_coeffs(model: nn.Module, coeffs: Tensor | Sequence[Tensor]) -> Iterator[None]:
    """Select every masked layer's mask as ``coeffs @ bank`` for the duration of the block.

    ``coeffs`` is one tensor used by every layer (e.g. SupSup's one-hot task vector or beta), or a
    sequence with one tensor per masked layer in module order (e.g. ImpressLearn's alpha[t]). Each
    tensor is ``(num_masks,)`` or ``(out, num_masks)``. The previous selection is restored on exit,
    so blocks nest. This is the only way coeffs are set.
    """
    layers = masked_layers(model)
    if isinstance(coeffs, Tensor):
        per_layer = [coeffs] * len(layers)
    else:
        per_layer = list(coeffs)
        if len(per_layer) != len(layers):
            raise ValueError(f"got coeffs for {len(per_layer)} layers, the model has {len(layers)}")
    previous = [layer._coeffs for layer in layers]
    try:
        for layer, c in zip(layers, per_layer, strict=True):
            layer._set_coeffs(c)
        yield
    finally:
        for layer, c in zip(layers, previous, strict=True):
            layer._set_coeffs(c)


@contextmanager
def use_coeff_fn(model: nn.Module, make: Callable[[], Sequence[Tensor]]) -> Iterator[None]:
    """As :func:`use_coeffs`, with the per-layer coeffs recomputed by ``make()`` before every
    forward pass of ``model``: coeffs derived from trainable tensors (grouped or low-rank
    ImpressLearn alphas) then get a fresh autograd graph on every training step."""

    def refresh(module: nn.Module, args: tuple) -> None:
        for layer, c in zip(layers, make(), strict=True):
            layer._set_coeffs(c)

    layers = masked_layers(model)
    with use_coeffs(model, make()):
        handle = model.register_forward_pre_hook(refresh)
        try:
            yield
        finally:
            handle.remove()


@contextmanager
def extra_masks(model: nn.Module, masks: Sequence[Sequence[Tensor]]) -> Iterator[None]:
    """Append ``masks`` (each a list of per-layer bool masks) to every layer's bank for the block;
    they are removed on exit and the stored masks are never touched. Used to superpose candidates
    that are not (yet) tasks, e.g. the mask being learned and random masks in NNs detection."""
    layers = masked_layers(model)
    counts = [layer.num_masks for layer in layers]
    try:
        for per_layer in masks:
            for layer, mask in zip(layers, per_layer, strict=True):
                layer.add_to_bank(mask)
        yield
    finally:
        for layer, num in zip(layers, counts, strict=True):
            layer._truncate_bank(num)


def one_hot(index: int, size: int, device: torch.device | None = None) -> Tensor:
    """A float one-hot coeffs vector selecting mask ``index`` of a bank of ``size`` masks."""
    if not 0 <= index < size:
        raise IndexError(f"mask index {index} is outside a bank of {size} masks")
    c = torch.zeros(size, device=device)
    c[index] = 1.0
    return c
