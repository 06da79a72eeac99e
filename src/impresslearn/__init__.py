"""impresslearn: continual learning without forgetting on frozen random networks.

Implements SupSup (Wortsman et al., "Supermasks in Superposition", NeurIPS 2020) and ImpressLearn
(Bhardwaj et al., "ImpressLearn: Continual Learning via Combined Task Impressions", arXiv 2210.01987).

The names below are importable from the top level (``from impresslearn import SupSup``); each is
imported on first use, so ``import impresslearn`` alone stays cheap (no torch):

* runs: ``run_experiment``, ``load_run``, ``ExperimentConfig``, ``apply_overrides``,
  ``get_preset``;
* methods: ``Method`` (the base class), ``SupSup``, ``SupSupConfig``, ``ImpressLearn``,
  ``ImpressLearnConfig``, ``build_method``;
* layers: ``MaskedLinear``, ``MaskedConv2d``, ``masked_layers``, ``use_coeffs``, ``one_hot``;
* task inference: ``infer_task``;
* extension points (docs/extending.md): the registries ``METHODS``, ``BACKBONES``, ``SCENARIOS``,
  ``DATASETS``, ``PRESETS`` (``Registry``), ``register_dataset``, ``register_preset``, and
  ``BackboneConfig``, ``ScenarioConfig``, ``TaskData``, ``ImageData``, ``ImageSplit``;
* data: ``load_dataset``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it (imported lazily, on first access)
_EXPORTS = {
    "run_experiment": "impresslearn.runners",
    "load_run": "impresslearn.runners",
    "ExperimentConfig": "impresslearn.config",
    "apply_overrides": "impresslearn.config",
    "get_preset": "impresslearn.presets",
    "register_preset": "impresslearn.presets",
    "PRESETS": "impresslearn.presets",
    "Method": "impresslearn.methods",
    "METHODS": "impresslearn.methods",
    "SupSup": "impresslearn.methods",
    "SupSupConfig": "impresslearn.methods",
    "ImpressLearn": "impresslearn.methods",
    "ImpressLearnConfig": "impresslearn.methods",
    "build_method": "impresslearn.methods",
    "MaskedLinear": "impresslearn.layers",
    "MaskedConv2d": "impresslearn.layers",
    "masked_layers": "impresslearn.layers",
    "use_coeffs": "impresslearn.layers",
    "one_hot": "impresslearn.layers",
    "infer_task": "impresslearn.inference",
    "BACKBONES": "impresslearn.backbones",
    "BackboneConfig": "impresslearn.backbones",
    "SCENARIOS": "impresslearn.scenarios",
    "ScenarioConfig": "impresslearn.scenarios",
    "TaskData": "impresslearn.scenarios",
    "DATASETS": "impresslearn.data",
    "register_dataset": "impresslearn.data",
    "load_dataset": "impresslearn.data",
    "ImageData": "impresslearn.data",
    "ImageSplit": "impresslearn.data",
    "Registry": "impresslearn.registry",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'impresslearn' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
