"""The role a continual-learning method plays, and the method registry.

A method is a small role: it is told when a task begins and ends, hands the training loop the
parameters to optimise, and selects a task's state for evaluation through a context manager.
:class:`Method` states the role; its optional hooks have defaults there, so a new method writes
only what it changes, in one file of this package plus its registration
(``@METHODS.register("name")`` on the class, whose ``config_class`` is a frozen dataclass with a
``name`` field). Nothing outside this package asks which method it holds: what differs between
methods (config checks, new-task detection in scenario NNs, ``entropy_fit`` inference) is a hook
here. How to add one: docs/extending.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from impresslearn.errors import ConfigError
from impresslearn.layers import (
    DensityRule,
    MaskedLayer,
    masked_layers,
    norm_stats,
    num_kept,
    use_coeffs,
)
from impresslearn.registry import Registry
from impresslearn.seeding import PURPOSE_RANDOM_MASK, PURPOSE_SCORES, generator
from impresslearn.train import TrainConfig

# Trains the given scores on a task's training data with plain cross-entropy and ``TrainConfig``:
# ``trainer(params, task_id, train_config, description)``. The runner provides it, so methods
# that learn masks outside the stream (ImpressLearn's impressions) need no data plumbing.
MaskTrainer = Callable[[list[nn.Parameter], int, TrainConfig, str], None]


@dataclass
class Candidates:
    """Candidate tasks superposed with a mixing vector beta, for new-task detection (scenario NNs).

    ``count`` candidates (beta has that many entries), of which the first ``num_known`` are
    learned (stored, or being learned) and the rest untrained; ``mix(beta)`` gives the coeffs (for
    :func:`~impresslearn.layers.use_coeffs`) of their superposition. Quacks like a method for
    :func:`impresslearn.inference.beta_gradient` (``model`` and ``mixed_coeffs``).
    """

    model: nn.Module
    count: int
    num_known: int
    mix: Callable[[Tensor], Tensor | list[Tensor]]

    def mixed_coeffs(self, beta: Tensor) -> Tensor | list[Tensor]:
        return self.mix(beta)


class Method:
    """What the experiment runner needs from SupSup, ImpressLearn, ...: the base of every method.

    A method writes the role's required members (marked below) and overrides only the optional
    hooks it needs; the defaults here do nothing. Tensors a method holds outside the model (e.g.
    ImpressLearn's alphas) live on the model's device and move with :meth:`to`.
    """

    name: str
    config_class: type
    model: nn.Module

    # ------------------------------------------------------------------ required members

    def begin_task(self, task_id: int) -> None:
        """Prepare the trainable state of a new task."""
        raise NotImplementedError

    def training_context(self) -> AbstractContextManager[None]:
        """Within the block, ``model(x)`` computes the current task's outputs for training."""
        raise NotImplementedError

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters the optimiser may update for the current task (never frozen weights)."""
        raise NotImplementedError

    def end_task(self, task_id: int) -> None:
        """Freeze what the task learned; nothing of it changes afterwards."""
        raise NotImplementedError

    def task_context(self, task_id: int) -> AbstractContextManager[None]:
        """Within the block, ``model(x)`` computes task ``task_id``'s outputs."""
        raise NotImplementedError

    def learned_tasks(self) -> list[int]:
        """Learned task ids, in the order of beta's entries in task inference."""
        raise NotImplementedError

    def mixed_coeffs(self, beta: Tensor) -> Tensor | list[Tensor]:
        """Coeffs (for :func:`~impresslearn.layers.use_coeffs`) superposing the learned tasks
        weighted by ``beta``."""
        raise NotImplementedError

    def bytes_per_task(self) -> dict[str, int]:
        """Storage one task costs, by kind (``mask``, ``coeffs``, ``norm_stats``), at 1 bit per
        mask weight and 4 bytes per float."""
        raise NotImplementedError

    # ------------------------------------------------------------- optional hooks (defaults)

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Refuse an experiment (an :class:`~impresslearn.config.ExperimentConfig`) this method
        cannot run; called whenever a config is built, before anything runs or is written. The
        default refuses evaluation settings whose hooks the method lacks (:meth:`check_eval`); an
        override adds its own checks and calls ``super().check_config(config)``."""
        cls.check_eval(config.eval)

    @classmethod
    def check_eval(cls, eval_config: Any) -> None:
        """Refuse evaluation settings (an :class:`~impresslearn.config.EvalConfig`) that need a
        hook this method does not override: ``entropy_fit`` inference (:meth:`entropy_fit_start`
        and :meth:`nearest_task`) and scenario NNs (:meth:`new_task_candidates`)."""
        if eval_config.scenario not in ("GNs", "GNu", "NNs"):
            return
        if eval_config.inference == "entropy_fit" and not (
            cls._overrides("entropy_fit_start") and cls._overrides("nearest_task")
        ):
            raise ConfigError(_no_entropy_fit(cls.name))
        if eval_config.scenario == "NNs" and not cls._overrides("new_task_candidates"):
            raise ConfigError(_no_nns(cls.name))

    @classmethod
    def _overrides(cls, hook: str) -> bool:
        return getattr(cls, hook) is not getattr(Method, hook)

    def new_task_candidates(self, min_candidates: int) -> AbstractContextManager[Candidates]:
        """Scenario NNs: within the block, the candidates the new-task test superposes: every
        stored task, the one being learned (if any) and enough untrained ones to make at least
        ``min_candidates`` (SupSup: masks; ImpressLearn: coefficient vectors)."""
        raise ConfigError(_no_nns(self.name))

    def entropy_fit_start(self) -> list[Tensor]:
        """``entropy_fit`` inference: per-layer coeffs to start the fit from (then fitted to an
        unlabelled batch by entropy minimisation: :func:`impresslearn.inference.fit_alphas`)."""
        raise ConfigError(_no_entropy_fit(self.name))

    def nearest_task(self, coeffs: list[Tensor]) -> int:
        """``entropy_fit`` inference: the learned task whose coeffs are nearest to ``coeffs``."""
        raise ConfigError(_no_entropy_fit(self.name))

    def check_stream(self, num_tasks: int) -> None:
        """Refuse a stream of ``num_tasks`` tasks this method cannot learn (called before a run
        writes anything)."""

    def prepare(self, trainer: MaskTrainer, num_tasks: int) -> None:
        """Work before the stream starts (e.g. learning ImpressLearn's impressions)."""

    def loss_regulariser(self) -> Tensor | None:
        """An extra loss term for the current task, or ``None``."""
        return None

    def after_task(self, task_id: int, trainer: MaskTrainer, evaluate: Callable[[], float]) -> None:
        """Reference measurements after a task (``evaluate()`` = accuracy on its test set)."""

    def extra_metrics(self, matrix: np.ndarray) -> dict[str, Any]:
        """Method-specific entries of ``metrics.json``."""
        return {}

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Per-task state beyond the layers' banks: tensors and JSON-able metadata."""
        return {}, {}

    def restore_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`checkpoint_state` on a freshly built method (``tensors`` are on the
        model's device)."""

    @property
    def device(self) -> torch.device:
        """The device the model and the method's state live on."""
        return masked_layers(self.model)[0].weight.device

    def to(self, device: torch.device | str) -> Method:
        """Move the model and every tensor the method holds to ``device`` (between tasks)."""
        self.model.to(device)
        return self


def _no_entropy_fit(name: str) -> str:
    return (
        f"entropy_fit inference needs coefficient vectors per task, which method {name!r} does "
        "not have: use method.name=impresslearn, or eval.inference=oneshot or binary"
    )


def _no_nns(name: str) -> str:
    return (
        f"method {name!r} cannot detect new tasks (eval.scenario=NNs needs its "
        "new_task_candidates hook): use method.name=supsup or impresslearn"
    )


def check_densities(layers: list[MaskedLayer], rule: DensityRule, kind: str) -> None:
    """Refuse a density that leaves some layer's top-k mask empty (or over-full), naming the layer,
    before anything is trained or written."""
    if kind == "threshold":
        return
    for layer in layers:
        shape = tuple(layer.weight.shape)
        numel = layer.weight.numel()
        kept = num_kept(rule.for_shape(shape), numel)
        if not 1 <= kept <= numel:
            raise ConfigError(
                f"method.density={rule.density} keeps {kept} of the {numel} weights of masked layer "
                f"{layer.layer_index} {shape}: a mask must keep between 1 and {numel} weights; "
                "raise the density"
            )


METHODS: Registry[Any] = Registry("method")


def begin_masks(
    layers: list[MaskedLayer], rule: DensityRule, kind: str, seed: int, seed_key: int
) -> list[nn.Parameter]:
    """Start learning a new mask in every layer: fresh scores seeded by ``(seed, seed_key, layer)``
    at the density ``rule`` gives each layer's shape. Returns the scores (the trainable tensors)."""
    return [
        layer.begin_scores(
            rule.for_shape(tuple(layer.weight.shape)),
            kind,
            generator(seed, PURPOSE_SCORES, seed_key, layer.layer_index),
        )
        for layer in layers
    ]


def random_masks(
    shape: tuple[int, ...], density: float, count: int, seed: int, layer: int
) -> Tensor:
    """``count`` seeded random bool masks of ``shape``, each keeping exactly round(density * n)."""
    numel = math.prod(shape)
    k = num_kept(density, numel)
    masks = torch.zeros((count, numel), dtype=torch.bool)
    for i in range(count):
        order = torch.randperm(numel, generator=generator(seed, PURPOSE_RANDOM_MASK, layer, i))
        masks[i, order[:k]] = True
    return masks.view(count, *shape)


@contextmanager
def use_task(
    model: nn.Module,
    coeffs: Tensor | Sequence[Tensor],
    norm_key: str | int,
    *,
    learn_norm: bool = False,
) -> Iterator[None]:
    """Select a task's state for the block: its masks as ``coeffs @ bank`` and the batch-norm
    statistics of ``norm_key`` (learned from the batches, with ``learn_norm``). Backbones without
    batch norm ignore the key."""
    with use_coeffs(model, coeffs), norm_stats(model, norm_key, learn=learn_norm):
        yield
