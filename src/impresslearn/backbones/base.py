"""Backbone configuration and registry.

A backbone is a network assembled from layer classes passed in as arguments (``linear_layer=``,
``conv_layer=``, ``norm_layer=``), the way timm's blocks take ``act_layer``: with the masked layers
and per-task batch norm it is a supermask backbone whose weights are a pure function of ``seed``;
with the dense twins and ordinary non-affine batch norm it is the dense baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Protocol

from torch import nn

from impresslearn.errors import ConfigError
from impresslearn.layers import (
    WEIGHT_INITS,
    DenseConv2d,
    DenseLinear,
    MaskedConv2d,
    MaskedLinear,
    TaskBatchNorm2d,
)
from impresslearn.registry import Registry


@dataclass(frozen=True)
class BackboneConfig:
    """Which network, its seed and weight init.

    ``num_outputs``: size of the output layer; ``None`` means the scenario's number of classes.
    A larger value adds SupSup's "superfluous" outputs that are never targets (used by task
    inference).
    """

    name: str = "lenet_300_100"
    seed: int = 0
    weight_init: str = "signed_constant"
    num_outputs: int | None = None

    def __post_init__(self) -> None:
        if self.weight_init not in WEIGHT_INITS:
            raise ConfigError(
                f"backbone.weight_init={self.weight_init!r} is unknown; choose one of {WEIGHT_INITS}"
            )
        if self.seed < 0:
            raise ConfigError(f"backbone.seed must be >= 0, got {self.seed}")
        if self.num_outputs is not None and self.num_outputs < 1:
            raise ConfigError(f"backbone.num_outputs must be >= 1, got {self.num_outputs}")


class BackboneBuilder(Protocol):
    def __call__(
        self,
        input_shape: tuple[int, ...],
        num_outputs: int,
        *,
        linear_layer: type[nn.Module],
        conv_layer: type[nn.Module],
        norm_layer: type[nn.Module],
    ) -> nn.Module: ...


BACKBONES: Registry[BackboneBuilder] = Registry("backbone")


def build_backbone(
    config: BackboneConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    dense: bool = False,
) -> nn.Module:
    """Build the backbone ``config.name``: masked, or dense for a baseline."""
    builder = BACKBONES.get(config.name)
    num_outputs = config.num_outputs if config.num_outputs is not None else num_classes
    if num_outputs < num_classes:
        raise ConfigError(
            f"backbone.num_outputs={num_outputs} is smaller than the {num_classes} classes of a task"
        )
    linear, conv = (DenseLinear, DenseConv2d) if dense else (MaskedLinear, MaskedConv2d)
    norm = partial(nn.BatchNorm2d, affine=False) if dense else TaskBatchNorm2d
    kwargs = {"backbone_seed": config.seed, "weight_init": config.weight_init}
    return builder(
        input_shape,
        num_outputs,
        linear_layer=partial(linear, **kwargs),
        conv_layer=partial(conv, **kwargs),
        norm_layer=norm,
    )
