"""Continual-learning methods over masked backbones.

Every method subclasses :class:`Method` (``methods/base.py``: the role and its hooks, with
defaults) and registers itself with ``@METHODS.register("name")``; its ``config_class`` is a
frozen dataclass whose ``name`` field selects it (``method.name=...``). Every module of this
package is imported here, so a new method is one file in this folder. See docs/extending.md.
"""

import importlib
import pkgutil

from torch import nn

from impresslearn.methods import impress, supsup  # noqa: F401  (registers the methods)
from impresslearn.methods.base import METHODS, Candidates, MaskTrainer, Method
from impresslearn.methods.impress import ImpressLearn, ImpressLearnConfig
from impresslearn.methods.supsup import SupSup, SupSupConfig

# Every other module of this package registers itself on import: a new method is one file here.
for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")


def build_method(model: nn.Module, config) -> Method:
    """The method ``config.name`` over ``model``."""
    return METHODS.get(config.name)(model, config)


def method_class(name: str) -> type[Method]:
    """The method registered as ``name`` (a ConfigError listing the known ones otherwise)."""
    return METHODS.get(name)


def method_config_class(name: str) -> type:
    """The frozen config dataclass of the method ``name``."""
    return method_class(name).config_class


__all__ = [
    "METHODS",
    "Candidates",
    "ImpressLearn",
    "ImpressLearnConfig",
    "MaskTrainer",
    "Method",
    "SupSup",
    "SupSupConfig",
    "build_method",
    "method_class",
    "method_config_class",
]
