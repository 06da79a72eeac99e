"""WSN, Winning SubNetworks (Kang, Mina, Madjid, Yoon, Hasegawa-Johnson, Hwang, Yoo, *Forget-free
Continual Learning with Winning Subnetworks*, ICML 2022; reference code ihaeyong/WSN).

Every task learns a binary mask keeping the top ``capacity`` fraction of each layer's weights by
``|scores|`` (straight-through, as SupSup), and **the weights are trained too**: a weight that an
earlier task's mask selected (the union of the stored masks, the "consolidated" mask) gets no
gradient, the others are trained jointly with the scores. The scores are carried from task to
task, as the reference code does (a new task starts from the previous one's mask and tends to
reuse its already-trained weights). A task stores its mask; forgetting is zero because the
weights a stored mask selects never change after its task ends.

Within the layer contract: the masks live in each layer's bank, so a task is selected (and tasks
are superposed for task inference, GNs/GNu) exactly as SupSup's; the one addition is
:meth:`~impresslearn.layers.MaskedLayer.train_weight`, the weight as a Parameter while a mask is
learned. Because the weights are trained, the checkpoint keeps what each task changed: the new
values of the weights it trained (and the scores the next task starts from).

Bytes per task, counted honestly: the mask (1 bit per weight) plus the weights the task adds to
the shared state (4 B per weight its mask selected that no earlier mask had), averaged over the
tasks learned; ``capacity_used`` in ``metrics.json`` is the fraction of weights selected by some
stored mask after every task. The paper's compression is measured too: each weight's bits
across the stored masks (a T-bit pattern) Huffman-coded over the patterns of its layer, the
code table counted (T bits and a length per distinct pattern); ``huffman_mask_bytes_per_task``
in ``metrics.json`` is that total over the tasks (the masks are stored uncompressed).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from impresslearn.errors import ConfigError
from impresslearn.layers import DensityRule
from impresslearn.methods.base import METHODS
from impresslearn.methods.supsup import SupSup
from impresslearn.metrics import AccuracyMatrix


@dataclass(frozen=True)
class WSNConfig:
    """WSN's settings. ``capacity``: the fraction ``c`` of each layer's weights a task's mask
    keeps (top-k of ``|scores|``); ``seed``: seeds the first task's scores."""

    name: str = "wsn"
    capacity: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.capacity <= 1.0:
            raise ConfigError(f"method.capacity must be in (0, 1], got {self.capacity}")

    # What SupSup's machinery reads: WSN's masks are exact top-k of |scores| at one density.
    mask_kind = "topk"

    def rule(self) -> DensityRule:
        return DensityRule("uniform", self.capacity)


@METHODS.register("wsn")
class WSN(SupSup):
    """SupSup's masks over weights that are trained where no stored mask selects them."""

    name = "wsn"
    config_class = WSNConfig
    scenarios = frozenset(("GG", "GNs", "GNu"))

    def __init__(self, model: nn.Module, config: WSNConfig) -> None:
        super().__init__(model, config)
        self._carried: list[Tensor] | None = None  # scores the next task starts from
        self._weights: list[nn.Parameter] = []
        self._hooks: list[Any] = []
        self._start: list[Tensor] = []  # each layer's weight when the task began
        self._added: dict[str, Tensor] = {}  # what the last task changed (its task_state)

    @classmethod
    def check_config(cls, config: Any) -> None:
        super().check_config(config)
        if config.train.weight_decay:
            raise ConfigError(
                f"train.weight_decay={config.train.weight_decay} would change the weights earlier "
                "tasks' masks selected (the optimiser adds it after their gradient is zeroed), "
                "and with them those tasks' outputs: WSN trains without it; remove the setting"
            )

    def begin_task(self, task_id: int) -> None:
        super().begin_task(task_id)  # fresh seeded scores in every layer
        if self._carried is not None:  # WSN carries the scores from task to task
            with torch.no_grad():
                for scores, carried in zip(self._scores, self._carried, strict=True):
                    scores.copy_(carried)
        self._start = [layer.weight.detach().clone() for layer in self.layers]
        self._weights = [layer.train_weight() for layer in self.layers]
        self._hooks = [
            weight.register_hook(self._free_gradients(layer))
            for weight, layer in zip(self._weights, self.layers, strict=True)
        ]

    def _free_gradients(self, layer):
        """A gradient hook zeroing the gradient of every weight a stored mask selects."""
        if layer.num_masks == 0:
            return lambda grad: grad
        free = (~layer.bank.any(0)).to(layer.weight.dtype)
        return lambda grad: grad * free

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [*self._scores, *self._weights]

    def end_task(self, task_id: int) -> None:
        self._carried = [scores.detach().clone() for scores in self._scores]
        for hook in self._hooks:
            hook.remove()
        for layer in self.layers:
            layer.freeze_weight()
        self._added = {}
        for layer, start, carried in zip(self.layers, self._start, self._carried, strict=True):
            changed = (layer.weight != start).reshape(-1).nonzero().reshape(-1).to(torch.int32)
            key = f"{layer.layer_index}"
            self._added[f"weight.{key}.index"] = changed.cpu()
            self._added[f"weight.{key}.value"] = layer.weight.reshape(-1)[changed].detach().cpu()
            self._added[f"scores.{key}"] = carried.cpu()
        self._weights, self._hooks, self._start = [], [], []
        super().end_task(task_id)

    # ------------------------------------------------------------------------- the checkpoint

    def checkpoint_state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        tensors, meta = super().checkpoint_state()
        for layer in self.layers:
            tensors[f"weight.{layer.layer_index}"] = layer.weight.detach().cpu()
        if self._carried is not None:
            for layer, carried in zip(self.layers, self._carried, strict=True):
                tensors[f"scores.{layer.layer_index}"] = carried.cpu()
        return tensors, meta

    def restore_state(self, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        super().restore_state(tensors, meta)
        with torch.no_grad():
            for layer in self.layers:
                stored = tensors.get(f"weight.{layer.layer_index}")
                if stored is not None:
                    layer.weight.copy_(stored.to(layer.weight.device))
        if f"scores.{self.layers[0].layer_index}" in tensors:
            self._carried = [
                tensors[f"scores.{layer.layer_index}"].to(layer.weight.device)
                for layer in self.layers
            ]

    def task_state(self, task_id: int) -> tuple[dict[str, Tensor], dict[str, Any]]:
        return dict(self._added), {}

    def restore_task(self, task_id: int, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
        super().restore_task(task_id, tensors, meta)
        with torch.no_grad():
            for layer in self.layers:
                key = f"{layer.layer_index}"
                index = tensors[f"weight.{key}.index"].to(layer.weight.device)
                value = tensors[f"weight.{key}.value"].to(layer.weight.device)
                layer.weight.view(-1)[index] = value
        self._carried = [
            tensors[f"scores.{layer.layer_index}"].to(layer.weight.device) for layer in self.layers
        ]

    # ---------------------------------------------------------------------------- accounting

    def capacity_used(self) -> list[float]:
        """After each task: the fraction of all weights some stored mask selects."""
        total = sum(layer.weight.numel() for layer in self.layers)
        used = [torch.zeros_like(layer.weight, dtype=torch.bool) for layer in self.layers]
        out = []
        for index in range(self.layers[0].num_masks):
            for u, layer in zip(used, self.layers, strict=True):
                u |= layer.bank[index]
            out.append(sum(int(u.sum()) for u in used) / total)
        return out

    def bytes_per_task(self) -> dict[str, int]:
        out = super().bytes_per_task()
        total = sum(layer.weight.numel() for layer in self.layers)
        used = self.capacity_used()
        tasks = max(1, len(used))
        out["weights"] = round(4 * (used[-1] if used else 0.0) * total / tasks)
        return out

    def extra_metrics(self, matrix: AccuracyMatrix) -> dict[str, Any]:
        tasks = self.layers[0].num_masks
        bits = sum(huffman_bits(layer.bank.cpu().numpy()) for layer in self.layers)
        return {
            "capacity_used": self.capacity_used(),
            "huffman_mask_bytes_per_task": bits / 8 / max(1, tasks),
        }


def huffman_bits(bank: np.ndarray) -> int:
    """Bits of a bank of T bool masks ``(T, *shape)`` coded as WSN compresses them: each
    weight's T-bit pattern across the masks, Huffman-coded over the layer's patterns, plus the
    code table (T bits and an 8-bit code length per distinct pattern)."""
    tasks = bank.shape[0]
    if tasks == 0:
        return 0
    packed = np.packbits(bank.reshape(tasks, -1), axis=0).T  # (weights, ceil(T / 8)) bytes
    _, counts = np.unique(packed, axis=0, return_counts=True)
    table = len(counts) * (tasks + 8)
    if len(counts) == 1:
        return int(counts[0]) + table  # one pattern: one bit per weight
    heap = [(int(c), i, 0) for i, c in enumerate(counts)]  # (weight, tie-break, bits so far)
    heapq.heapify(heap)
    total, order = 0, len(counts)
    while len(heap) > 1:
        a, _, bits_a = heapq.heappop(heap)
        b, _, bits_b = heapq.heappop(heap)
        # merging two subtrees adds one bit to the code of every weight below them
        total_bits = bits_a + bits_b + a + b
        heapq.heappush(heap, (a + b, order, total_bits))
        order += 1
    total = heap[0][2]
    return int(total) + table
