"""SupSup: one learned supermask per task over a frozen random backbone.

Wortsman et al., "Supermasks in Superposition", NeurIPS 2020. For each task a binary mask over
every layer's frozen weight is learned from trainable scores (top-k of ``|scores|`` at a given
density, or SupSup's MNIST variant ``scores >= 0``), then stored in the layer's bank. A known task
is evaluated with one-hot coeffs over the bank, which selects exactly its mask. The backbone and
the stored masks never change, so nothing is forgotten. A backbone with batch norm keeps each
task's running statistics with its mask (:mod:`impresslearn.layers.norm`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from impresslearn.errors import ConfigError
from impresslearn.layers import (
    MASK_KINDS,
    DensityRule,
    extra_masks,
    freeze_norm_stats,
    masked_layers,
    norm_stats,
    norm_stats_bytes,
    one_hot,
)
from impresslearn.methods.base import (
    METHODS,
    Candidates,
    Method,
    begin_masks,
    check_densities,
    random_masks,
    unknown_task,
    use_task,
)

RANDOM_CANDIDATE_SEED = 20_000  # seed shift of NNs' random candidate masks, apart from the scores


@dataclass(frozen=True)
class SupSupConfig:
    """SupSup's settings.

    ``density``: fraction of weights a mask keeps (the Erdos-Renyi scale when
    ``density_rule='erdos_renyi'``). ``mask_kind``: ``topk`` (exact density, the largest
    ``|scores|``), ``topk_raw`` (exact density, the largest signed scores) or ``threshold``
    (``scores >= 0``; density is then learned, SupSup's MNIST setting). ``seed``: seeds the scores.
    """

    name: str = "supsup"
    density: float = 0.5
    density_rule: str = "uniform"
    mask_kind: str = "topk"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.mask_kind not in MASK_KINDS:
            raise ConfigError(
                f"method.mask_kind={self.mask_kind!r} is unknown; use one of {MASK_KINDS}"
            )
        try:
            self.rule()  # validates density and density_rule
        except ConfigError as e:
            raise ConfigError(f"method.density / method.density_rule: {e}") from None

    def rule(self) -> DensityRule:
        return DensityRule(self.density_rule, self.density)


@METHODS.register("supsup")
class SupSup(Method):
    """One supermask per task; the task's index in every layer's bank is its position here."""

    name = "supsup"
    config_class = SupSupConfig
    scenarios = frozenset(("GG", "GNs", "GNu", "NNs"))

    def __init__(self, model: nn.Module, config: SupSupConfig) -> None:
        self.model = model
        self.config = config
        self.layers = masked_layers(model)
        if not self.layers:
            raise ConfigError("SupSup needs a backbone built from masked layers")
        check_densities(self.layers, config.rule(), config.mask_kind)
        self.task_ids: list[int] = []  # bank index -> task_id
        self._scores: list[nn.Parameter] = []
        self._current_task: int | None = None
        self._random: tuple[torch.device, list[list[Tensor]]] | None = None  # NNs fill masks

    def begin_task(self, task_id: int) -> None:
        if task_id in self.task_ids:
            raise ValueError(f"task {task_id} already has a mask")
        cfg = self.config
        self._scores = begin_masks(self.layers, cfg.rule(), cfg.mask_kind, cfg.seed, task_id)
        self._current_task = task_id

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self._scores)

    def training_context(self) -> AbstractContextManager[None]:
        # No coeffs set: the layers use the scores being learned; norms learn this task's stats.
        return norm_stats(self.model, self._current_task, learn=True)

    def end_task(self, task_id: int) -> None:
        for layer in self.layers:
            layer.add_to_bank(layer.end_scores())
        freeze_norm_stats(self.model, task_id)
        self.task_ids.append(task_id)
        self._scores = []
        self._current_task = None

    def task_context(self, task_id: int) -> AbstractContextManager[None]:
        if task_id not in self.task_ids:
            raise unknown_task(task_id, self.task_ids)
        index = self.task_ids.index(task_id)
        return use_task(self.model, one_hot(index, len(self.task_ids), self.device), task_id)

    def learned_tasks(self) -> list[int]:
        """Task ids in bank order (the order of beta's entries in task inference)."""
        return list(self.task_ids)

    def mixed_coeffs(self, beta: Tensor) -> Tensor:
        """Coeffs superposing the learned tasks with weights ``beta``: beta itself."""
        return beta

    @contextmanager
    def new_task_candidates(self, min_candidates: int) -> Iterator[Candidates]:
        """Scenario NNs: the stored masks, the mask being learned (if any) and, up to
        ``min_candidates``, seeded random masks at the same densities (SupSup's reference code
        superposes at least five masks, the unlearned ones random), all in the banks for the
        block; the coeffs are beta itself."""
        learning = (
            [[layer.current_mask() for layer in self.layers]]
            if self.layers[0].scores is not None
            else []
        )
        stored = self.layers[0].num_masks
        fill = self._random_candidates(min_candidates)
        fill = fill[: max(0, min_candidates - stored - len(learning))]
        with extra_masks(self.model, learning + fill):
            count = self.layers[0].num_masks
            yield Candidates(self.model, count, stored + len(learning), lambda beta: beta)

    def _random_candidates(self, count: int) -> list[list[Tensor]]:
        """``count`` seeded random masks (per-layer lists) on the model's device, made once."""
        if self._random is None or self._random[0] != self.device or len(self._random[1]) < count:
            rule = self.config.rule()
            per_layer = [
                random_masks(
                    tuple(layer.weight.shape),
                    rule.for_shape(tuple(layer.weight.shape)),
                    count,
                    self.config.seed + RANDOM_CANDIDATE_SEED,
                    layer.layer_index,
                ).to(self.device)
                for layer in self.layers
            ]
            self._random = (self.device, [[m[i] for m in per_layer] for i in range(count)])
        return self._random[1][:count]

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {}, {"task_ids": self.task_ids}

    def restore_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        self.task_ids = [int(t) for t in meta["task_ids"]]

    def reserve(self, num_tasks: int) -> None:
        # One mask per task in every layer's bank: allocated once, never grown by copying.
        for layer in self.layers:
            layer.reserve_bank(num_tasks)

    def task_state(self, task_id: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return {}, {}  # the task's mask is in the bank's appended rows

    def restore_task(self, task_id: int, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        self.task_ids.append(task_id)  # its mask is the bank's next row

    def resident_bytes_per_task(self) -> int:
        # The bank holds a mask as one bool per weight (8x its bit-packed size on disk).
        return sum(layer.weight.numel() for layer in self.layers) + norm_stats_bytes(self.model)

    def bytes_per_task(self) -> dict[str, int]:
        mask = sum((layer.weight.numel() + 7) // 8 for layer in self.layers)
        return {"mask": mask, "coeffs": 0, "norm_stats": norm_stats_bytes(self.model)}
