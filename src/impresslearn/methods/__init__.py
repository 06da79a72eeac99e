"""Continual-learning methods over masked backbones."""

from torch import nn

from impresslearn.methods import impress, supsup  # noqa: F401  (registers the methods)
from impresslearn.methods.base import METHODS, MaskTrainer, Method
from impresslearn.methods.impress import ImpressLearn, ImpressLearnConfig
from impresslearn.methods.supsup import SupSup, SupSupConfig


def build_method(model: nn.Module, config) -> Method:
    """The method ``config.name`` over ``model``."""
    return METHODS.get(config.name)(model, config)


def method_config_class(name: str) -> type:
    """The frozen config dataclass of the method ``name``."""
    return METHODS.get(name).config_class


__all__ = [
    "METHODS",
    "ImpressLearn",
    "ImpressLearnConfig",
    "MaskTrainer",
    "Method",
    "SupSup",
    "SupSupConfig",
    "build_method",
    "method_config_class",
]
