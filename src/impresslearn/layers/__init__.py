"""Masked layers, mask learning and mask banks (the layer contract of DESIGN.md)."""

from impresslearn.layers.masked import (
    WEIGHT_INITS,
    DenseConv2d,
    DenseLinear,
    MaskedConv2d,
    MaskedLayer,
    MaskedLinear,
    init_weight,
    masked_layers,
    one_hot,
    use_coeffs,
)
from impresslearn.layers.masks import (
    MASK_KINDS,
    DensityRule,
    TopKSelector,
    mix_bank,
    num_kept,
    pack_bits,
    threshold_masked_weight,
    topk_masked_weight,
    unpack_bits,
)

__all__ = [
    "MASK_KINDS",
    "WEIGHT_INITS",
    "DenseConv2d",
    "DenseLinear",
    "DensityRule",
    "MaskedConv2d",
    "MaskedLayer",
    "MaskedLinear",
    "TopKSelector",
    "init_weight",
    "masked_layers",
    "mix_bank",
    "num_kept",
    "one_hot",
    "pack_bits",
    "threshold_masked_weight",
    "topk_masked_weight",
    "unpack_bits",
    "use_coeffs",
]
