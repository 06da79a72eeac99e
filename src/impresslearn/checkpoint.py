"""Checkpoints: a trained run in one safetensors file (no pickle), written atomically.

What a run is: the backbone as its seed and architecture config
(weights are regenerated, then checked against a stored fingerprint), every masked layer's bank
bit-packed at 1 bit per weight, every per-task batch-norm layer's frozen statistics (float16), the
method's per-task state (SupSup: the task order; ImpressLearn: alphas), the accuracy matrix so far, the per-task events and the resolved config.

The file is written after every task through a temp file, fsync and rename, so a run killed at any
moment (even by SIGKILL mid-write) leaves the previous complete checkpoint readable. The file holds
CPU tensors and says nothing about the device: a checkpoint restores onto whatever device the
model was built on (a run started on a GPU resumes on a CPU and back).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from impresslearn.config import ExperimentConfig, config_from_dict
from impresslearn.errors import CheckpointError, ImpressLearnError
from impresslearn.inference.calibration import Calibration
from impresslearn.layers import masked_layers, pack_bits, task_norms, unpack_bits
from impresslearn.storage import atomic_write_bytes

FORMAT = "impresslearn-checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.safetensors"


@dataclass
class RunState:
    """Progress of a run: tasks ``0..next_task-1`` are finished."""

    next_task: int
    matrix: np.ndarray
    task_seconds: list[float]
    events: list[dict[str, Any]]
    prepare_seconds: float
    checkpoint_sizes: list[int] = field(default_factory=list)  # bytes after prepare, each task
    calibration: Calibration = field(default_factory=Calibration)


def weight_fingerprint(model: nn.Module) -> str:
    """SHA-256 over every masked layer's frozen weight: identifies the backbone exactly."""
    digest = hashlib.sha256()
    for layer in masked_layers(model):
        digest.update(str(tuple(layer.weight.shape)).encode())
        digest.update(layer.weight.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(
    path: Path,
    config: ExperimentConfig,
    model: nn.Module,
    method: Any,
    state: RunState,
    shape: tuple[tuple[int, ...], int] | None = None,
) -> int:
    """Write the checkpoint atomically; returns its size in bytes. ``shape`` is the scenario's
    (input shape, classes per task), so that a saved model can be rebuilt without its data."""
    tensors: dict[str, torch.Tensor] = {
        "accuracy_matrix": torch.from_numpy(np.ascontiguousarray(state.matrix, dtype=np.float64))
    }
    for i, layer in enumerate(masked_layers(model)):
        tensors[f"bank.{i}"] = pack_bits(layer.bank)
    norms = task_norms(model)
    norm_keys = sorted(norms[0].stats) if norms else []
    for i, norm in enumerate(norms):
        tensors.update({f"norm.{i}.{key}": norm.stats[key].cpu() for key in norm_keys})
    method_tensors, method_meta = method.checkpoint_state()
    tensors.update({f"method.{k}": v.contiguous().cpu() for k, v in method_tensors.items()})
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": config.to_json(),
        "weight_fingerprint": weight_fingerprint(model),
        "bank_sizes": json.dumps([layer.num_masks for layer in masked_layers(model)]),
        "next_task": str(state.next_task),
        "task_seconds": json.dumps(state.task_seconds),
        "events": json.dumps(state.events),
        "prepare_seconds": repr(state.prepare_seconds),
        "checkpoint_sizes": json.dumps(state.checkpoint_sizes),
        "calibration": state.calibration.to_json(),
        "method_state": json.dumps(method_meta),
        "norm_keys": json.dumps(norm_keys),
        "input_shape": json.dumps(list(shape[0]) if shape else None),
        "num_classes": json.dumps(shape[1] if shape else None),
    }
    data = st_save(tensors, metadata=metadata)
    atomic_write_bytes(Path(path), data)
    return len(data)


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a checkpoint file, with clear errors for a bad file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}: is this a run folder?") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    try:
        tensors = st_load(raw)
        # safetensors layout: 8-byte little-endian header length, then a JSON header.
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({e})") from None
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an impresslearn checkpoint")
    version = metadata.get("format_version")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this impresslearn reads version "
            f"{FORMAT_VERSION}: use the impresslearn version that wrote it"
        )
    return tensors, metadata


def checkpoint_config(path: Path) -> ExperimentConfig:
    """The resolved config stored in a checkpoint."""
    _, metadata = read_checkpoint(path)
    try:
        return config_from_dict(json.loads(metadata["config"]))
    except (KeyError, json.JSONDecodeError, ImpressLearnError) as e:
        raise CheckpointError(f"checkpoint {path} holds no valid config ({e})") from None


def restore_checkpoint(
    path: Path, config: ExperimentConfig, model: nn.Module, method: Any
) -> RunState:
    """Load a checkpoint into a freshly built ``model`` / ``method`` of ``config``.

    ``config`` must equal the saved one, except that ``scenario.num_tasks`` may grow: the stream
    is extended (task ``t`` of every scenario is defined by the seed and ``t`` alone, so the
    extended run equals a run started with the longer stream); the accuracy matrix is padded.
    """
    tensors, metadata = read_checkpoint(path)
    saved = checkpoint_config(path)
    if saved != config and not is_extension(saved, config):
        hint = ""
        if config.scenario.num_tasks < saved.scenario.num_tasks:
            hint = " (scenario.num_tasks can grow on resume, never shrink)"
        raise CheckpointError(
            f"checkpoint {path} was written by a different config; differences: "
            f"{_config_diff(saved, config)}{hint}"
        )
    if metadata.get("weight_fingerprint") != weight_fingerprint(model):
        raise CheckpointError(
            f"checkpoint {path} does not match this backbone: its weights came from another "
            "backbone seed, architecture or weight init (fingerprint mismatch)"
        )
    try:
        sizes = json.loads(metadata["bank_sizes"])
        layers = masked_layers(model)
        for i, (layer, count) in enumerate(zip(layers, sizes, strict=True)):
            bank = unpack_bits(tensors[f"bank.{i}"], (count, *layer.weight.shape))
            for mask in bank:
                layer.add_to_bank(mask)
        device = layers[0].weight.device if layers else torch.device("cpu")
        for i, norm in enumerate(task_norms(model)):
            for key in json.loads(metadata.get("norm_keys", "[]")):
                norm.stats[key] = tensors[f"norm.{i}.{key}"].to(device, copy=True)
        method_tensors = {
            k[7:]: v.to(device) for k, v in tensors.items() if k.startswith("method.")
        }
        method.restore_state(method_tensors, json.loads(metadata["method_state"]))
        matrix = tensors["accuracy_matrix"].numpy().copy()
        n, saved_n = config.scenario.num_tasks, len(matrix)
        if saved_n < n:  # an extended stream: tasks not learned yet are NaN
            matrix = np.pad(matrix, ((0, n - saved_n), (0, n - saved_n)), constant_values=np.nan)
            if config.eval.matrix == "diagonal":  # the old last task is no longer the last one
                matrix[saved_n - 1, : saved_n - 1] = np.nan
        return RunState(
            next_task=int(metadata["next_task"]),
            matrix=matrix,
            task_seconds=json.loads(metadata["task_seconds"]),
            events=json.loads(metadata["events"]),
            prepare_seconds=float(metadata["prepare_seconds"]),
            checkpoint_sizes=json.loads(metadata["checkpoint_sizes"]),
            calibration=Calibration.from_json(metadata.get("calibration", "{}")),
        )
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is inconsistent ({e})") from None


def is_extension(saved: ExperimentConfig, config: ExperimentConfig) -> bool:
    """Whether ``config`` is ``saved`` with a longer stream (more ``scenario.num_tasks``)."""
    more = config.scenario.num_tasks > saved.scenario.num_tasks
    longer = replace(saved, scenario=replace(saved.scenario, num_tasks=config.scenario.num_tasks))
    return more and longer == config


def _config_diff(a: ExperimentConfig, b: ExperimentConfig) -> str:
    da, db = a.to_dict(), b.to_dict()
    diffs = []
    for section in da:
        if isinstance(da[section], dict):
            for key in sorted(set(da[section]) | set(db.get(section, {}))):
                va, vb = da[section].get(key), db.get(section, {}).get(key)
                if va != vb:
                    diffs.append(f"{section}.{key}: saved {va!r}, given {vb!r}")
        elif da[section] != db.get(section):
            diffs.append(f"{section}: saved {da[section]!r}, given {db.get(section)!r}")
    return "; ".join(diffs) or "none"


def checkpoint_shape(path: Path) -> tuple[tuple[int, ...], int]:
    """The (input shape, classes per task) a checkpoint's model was built for."""
    _, metadata = read_checkpoint(path)
    try:
        shape = json.loads(metadata["input_shape"])
        classes = json.loads(metadata["num_classes"])
    except (KeyError, json.JSONDecodeError):
        shape = classes = None
    if shape is None or classes is None:
        raise CheckpointError(f"checkpoint {path} does not record its input shape")
    return tuple(shape), int(classes)
