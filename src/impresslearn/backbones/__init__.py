"""Registered backbones, buildable masked or dense."""

from impresslearn.backbones import mlp, resnet  # noqa: F401  (registers the backbones)
from impresslearn.backbones.base import BACKBONES, BackboneConfig, build_backbone

__all__ = ["BACKBONES", "BackboneConfig", "build_backbone"]
