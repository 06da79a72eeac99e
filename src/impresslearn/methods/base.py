"""The role a continual-learning method plays, and the method registry.

A method is a small role: it is told when a task begins and ends, hands the training loop the
parameters to optimise, and selects a task's state for evaluation through a context manager.
:class:`Method` states the role: the members every method writes, what it supports as data
(scenarios, inference procedures), the hooks a declared support obliges it to, and the optional
hooks with their defaults, so a new method writes only what it changes, in one file of this
package plus its registration (``@METHODS.register("name")`` on the class, whose
``config_class`` is a frozen dataclass with a ``name`` field). Nothing outside this package asks
which method it holds. How to add one: docs/extending.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

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
from impresslearn.metrics import AccuracyMatrix, ReferenceAccuracy
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


# Task-inference procedures every method offers through the required members alone.
BASIC_PROCEDURES = frozenset(("oneshot", "binary", "shortlist", "binary_shortlist", "exhaustive"))


class Method:
    """What the experiment runner needs from SupSup, ImpressLearn, ...: the base of every method.

    **Required members** (every method writes them): :meth:`begin_task`,
    :meth:`training_context`, :meth:`trainable_parameters`, :meth:`end_task`,
    :meth:`task_context`, :meth:`learned_tasks`, :meth:`mixed_coeffs`, :meth:`bytes_per_task`.

    **What it supports, as data** (read by the config checks and ``impresslearn list``):
    :attr:`scenarios`, the evaluation scenarios and experiment kinds it can run (``GG``, ``GNs``,
    ``GNu``; ``NNs`` = the ``nns`` kind, new-task detection), and :attr:`procedures`, the task
    inference procedures it offers. Declaring one obliges the method to its *capability hooks*,
    which have no default here (a test checks every registered method):

    * ``NNs``: ``new_task_candidates(min_candidates)``, a context manager yielding the
      :class:`Candidates` the new-task test superposes (stored tasks, the one being learned, and
      untrained ones up to ``min_candidates``);
    * ``entropy_fit``: ``entropy_fit_start()``, per-layer coeffs the fit starts from, and
      ``nearest_task(coeffs)``, the learned task nearest to fitted coeffs.

    **Optional hooks** (defaults below do nothing): :meth:`check_config`, :meth:`check_stream`,
    :meth:`prepare`, :meth:`loss_regulariser`, :meth:`after_task`, :meth:`references`,
    :meth:`extra_metrics`, :meth:`checkpoint_state`, :meth:`restore_state`, :meth:`to`.

    Tensors a method holds outside the model (e.g. ImpressLearn's alphas) live on the model's
    device and move with :meth:`to`.
    """

    name: str
    config_class: type
    model: nn.Module
    scenarios: frozenset[str] = frozenset(("GG", "GNs", "GNu"))
    procedures: frozenset[str] = BASIC_PROCEDURES

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

    def resident_bytes_per_task(self) -> int:
        """Memory one more learned task holds while the run lives (checked against the memory
        available before a run starts). The default: what it stores on disk; a method that
        holds a task's state in another form says so (SupSup's masks as one bool per weight)."""
        return sum(self.bytes_per_task().values())

    # ------------------------------------------------------------- optional hooks (defaults)

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Refuse an experiment (an :class:`~impresslearn.config.ExperimentConfig`) this method
        cannot run; called whenever a config is built, before anything runs or is written. The
        default refuses what :attr:`scenarios` and :attr:`procedures` do not declare; an override
        adds its own checks and calls ``super().check_config(config)``."""
        detects = config.kind == "nns"
        if detects and "NNs" not in cls.scenarios:
            raise ConfigError(
                f"method {cls.name!r} cannot detect new tasks (kind=nns needs a method that "
                f"supports NNs: {', '.join(_supporting('NNs'))})"
            )
        if config.eval.scenario not in cls.scenarios:
            raise ConfigError(
                f"method {cls.name!r} does not support eval.scenario={config.eval.scenario}: it "
                f"supports {', '.join(sorted(cls.scenarios))}"
            )
        if (
            detects or config.eval.infers_tasks
        ) and config.inference.procedure not in cls.procedures:
            raise ConfigError(
                f"inference.procedure={config.inference.procedure} is not offered by method "
                f"{cls.name!r}: use one of {', '.join(sorted(cls.procedures))}"
                + (
                    " (entropy_fit needs coefficient vectors per task: method.name=impresslearn)"
                    if config.inference.procedure == "entropy_fit"
                    else ""
                )
            )

    @classmethod
    def unused_settings(cls, config: Any) -> dict[str, str]:
        """Fields of ``config.method`` that ``config`` does not read, each with why: a new run
        that sets one away from its default is refused (see
        :func:`impresslearn.runners.check_unused`). By default none."""
        return {}

    def check_stream(self, num_tasks: int) -> None:
        """Refuse a stream of ``num_tasks`` tasks this method cannot learn (called before a run
        writes anything)."""

    def reserve(self, num_tasks: int) -> None:
        """Allocate, once, the memory a stream of ``num_tasks`` tasks will hold (called after the
        memory check, before the stream starts or resumes); by default nothing."""

    def prepare(self, trainer: MaskTrainer, num_tasks: int) -> None:
        """Work before the stream starts (e.g. learning ImpressLearn's impressions)."""

    def loss_regulariser(self) -> Tensor | None:
        """An extra loss term for the current task, or ``None``."""
        return None

    def after_task(self, task_id: int, trainer: MaskTrainer, evaluate: Callable[[], float]) -> None:
        """Reference measurements after a task (``evaluate()`` = accuracy on its test set)."""

    def references(self) -> list[ReferenceAccuracy]:
        """Per-task accuracies of reference models measured by :meth:`after_task` (e.g. a
        dedicated SupSup mask), reported and plotted beside the method's own."""
        return []

    def extra_metrics(self, matrix: AccuracyMatrix) -> dict[str, Any]:
        """Method-specific entries of ``metrics.json`` (``matrix``: the evaluated entries)."""
        return {}

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """All the state beyond the layers' banks and norm statistics, as tensors and JSON-able
        metadata: what a checkpoint's snapshot holds (after the preparation)."""
        return {}, {}

    def restore_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`checkpoint_state` on a freshly built method (``tensors`` are on the
        model's device)."""

    def task_state(self, task_id: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """What a checkpoint appends for task ``task_id`` once the task has ended (and its
        :meth:`after_task` has run), beyond the banks and norm statistics, which are appended
        anyway. The default is the whole :meth:`checkpoint_state`, correct for any method but
        growing with the number of tasks; a method whose per-task state is frozen when the task
        ends (SupSup's task order, ImpressLearn's alphas) returns only that task's, so that a
        checkpoint costs the same at task 2,500 as at task 10, and overrides
        :meth:`restore_task` with it."""
        return self.checkpoint_state()

    def restore_task(self, task_id: int, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        """Inverse of :meth:`task_state`, called in task order after :meth:`restore_state`
        (``tensors`` on the model's device). The default restores the whole state."""
        self.restore_state(tensors, meta)

    @property
    def device(self) -> torch.device:
        """The device the model and the method's state live on."""
        return masked_layers(self.model)[0].weight.device

    def to(self, device: torch.device | str) -> Method:
        """Move the model and every tensor the method holds to ``device`` (between tasks)."""
        self.model.to(device)
        return self


# The capability hooks each declared support obliges a method to write (see Method).
CAPABILITY_HOOKS = {
    "NNs": ("new_task_candidates",),
    "entropy_fit": ("entropy_fit_start", "nearest_task"),
}


def _supporting(scenario: str) -> list[str]:
    return [name for name in METHODS.names() if scenario in METHODS.get(name).scenarios]


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


def unknown_task(task_id: int, learned: Sequence[int]) -> ConfigError:
    """The error for selecting a task that was not learned (a one-line message with the tasks
    that were)."""
    if not learned:
        return ConfigError(f"task {task_id} has not been learned: no task has been learned yet")
    shown = ", ".join(map(str, learned[:10])) + (", ..." if len(learned) > 10 else "")
    return ConfigError(f"task {task_id} has not been learned; the learned tasks are {shown}")


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
