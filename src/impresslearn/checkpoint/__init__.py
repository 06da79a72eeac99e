"""Checkpoints: a trained run as a snapshot plus one appended segment per task (no pickle).

What a run is: the backbone as its seed and architecture config (weights are regenerated, then
checked against a stored fingerprint), every masked layer's bank bit-packed at 1 bit per weight,
every per-task batch-norm layer's frozen statistics (float16), the method's per-task state
(SupSup: the task order; ImpressLearn: alphas), the evaluated entries of the accuracy matrix, the
per-task events and the resolved config.

A learned task never changes, so after each task the :class:`CheckpointWriter` appends only what
the task added (its mask or coefficients, its statistics, its matrix entries, its event) to
``checkpoint.tasks`` and then rewrites the small manifest ``checkpoint.json`` atomically
(:mod:`~impresslearn.checkpoint.files`): the cost of a checkpoint does not grow with the number
of tasks. A run killed at any moment (even by SIGKILL between a segment and its manifest) leaves
the last complete state readable; the bytes of an unfinished append are cut off by the next
writer. Every file carries a SHA-256 of its contents, so corruption is an error, not a silently
different model. A checkpoint of format version 1 (one file rewritten after every task, written
by earlier impresslearn versions) loads as before and is converted to a snapshot the first time
its run resumes.

The files hold CPU tensors and say nothing about the device: a checkpoint restores onto whatever
device the model was built on (a run started on a GPU resumes on a CPU and back).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from impresslearn.checkpoint.files import (
    CHECKPOINT_NAME,
    Manifest,
    append_segment,
    checkpoint_files,
    encode_segment,
    encode_snapshot,
    read_segments,
    read_snapshot,
    segments_path,
)
from impresslearn.checkpoint.state import (
    Additions,
    RunState,
    TaskAdditions,
    merge_calibration,
    weight_fingerprint,
)
from impresslearn.config import ExperimentConfig, config_from_dict
from impresslearn.errors import CheckpointError, ImpressLearnError
from impresslearn.inference.calibration import Calibration
from impresslearn.layers import masked_layers, pack_bits, task_norms, unpack_bits
from impresslearn.metrics import AccuracyMatrix
from impresslearn.storage import atomic_write_bytes

__all__ = [
    "CHECKPOINT_NAME",
    "Additions",
    "CheckpointWriter",
    "RunState",
    "TaskAdditions",
    "checkpoint_bytes",
    "checkpoint_config",
    "checkpoint_shape",
    "checkpoint_tasks",
    "recorded_threads",
    "restore_checkpoint",
    "weight_fingerprint",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ writing


def _snapshot(
    config: ExperimentConfig,
    model: nn.Module,
    method: Any,
    state: RunState,
    shape: tuple[tuple[int, ...], int] | None,
) -> tuple[bytes, str]:
    rows, cols, values = state.matrix.entries()
    tensors: dict[str, torch.Tensor] = {
        "matrix.after_task": torch.from_numpy(rows),
        "matrix.task": torch.from_numpy(cols),
        "matrix.accuracy": torch.from_numpy(values),
    }
    for i, layer in enumerate(masked_layers(model)):
        tensors[f"bank.{i}"] = pack_bits(layer.bank)
    norms = task_norms(model)
    norm_keys = list(norms[0].stats) if norms else []
    for i, norm in enumerate(norms):
        tensors.update({f"norm.{i}.{key}": norm.stats[key].cpu() for key in norm_keys})
    method_tensors, method_meta = method.checkpoint_state()
    tensors.update({f"method.{k}": v.contiguous().cpu() for k, v in method_tensors.items()})
    metadata = {
        "config": config.to_json(),
        "weight_fingerprint": weight_fingerprint(model),
        "bank_sizes": json.dumps([layer.num_masks for layer in masked_layers(model)]),
        "next_task": str(state.next_task),
        "matrix_tasks": str(state.matrix.num_tasks),
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
    return encode_snapshot(tensors, metadata)


class CheckpointWriter:
    """Writes the checkpoint at ``path`` (``RUN/checkpoint.safetensors`` and its two siblings):
    :meth:`start` a snapshot of the run as it is, then :meth:`task` after every task, appending
    what it added. Each call returns the bytes it wrote and appends the checkpoint's size to
    ``state.checkpoint_sizes``."""

    def __init__(
        self,
        path: Path,
        config: ExperimentConfig,
        model: nn.Module,
        method: Any,
        shape: tuple[tuple[int, ...], int] | None = None,
    ) -> None:
        self.path, self.config, self.model, self.method = Path(path), config, model, method
        self.shape = shape
        self._manifest: Manifest | None = None
        self._snapshot_bytes = 0

    def start(self, state: RunState) -> int:
        """A snapshot of ``state`` (the whole run so far) and an empty list of segments."""
        data, digest = _snapshot(self.config, self.model, self.method, state, self.shape)
        atomic_write_bytes(self.path, data)
        segments_path(self.path).unlink(missing_ok=True)
        self._manifest = Manifest(digest, 0, 0, self.config.to_dict(), torch.get_num_threads())
        self._snapshot_bytes = len(data)
        written = len(data) + self._manifest.write(self.path)
        state.checkpoint_sizes.append(self._snapshot_bytes)
        return written

    def resume(self, state: RunState) -> int:
        """Continue the checkpoint ``state`` was restored from; a checkpoint without a manifest
        (format version 1, or stopped before its first) is written as a snapshot first."""
        manifest = Manifest.read(self.path)
        _, metadata = read_snapshot(self.path)
        if manifest is None or metadata.get("format_version") == "1":
            if metadata.get("format_version") == "1":
                log.info("converting %s to checkpoint format version 2", self.path)
            return self.start(state)
        self._manifest = replace(manifest, config=self.config.to_dict())  # a stream may grow
        self._snapshot_bytes = self.path.stat().st_size
        return self._manifest.write(self.path)

    def task(self, state: RunState, task: int, added: TaskAdditions) -> int:
        """Append task ``task``'s segment (``added``, its matrix row, seconds and event)."""
        if self._manifest is None:
            raise RuntimeError("CheckpointWriter.task before start or resume")
        cols, values = state.matrix.entries_of(task)
        tensors = {
            **added.tensors,
            "matrix.task": torch.from_numpy(cols.copy()),
            "matrix.accuracy": torch.from_numpy(values.copy()),
        }
        metadata = {
            "task": str(task),
            "added": json.dumps(added.meta),
            "task_seconds": repr(state.task_seconds[task]),
            "event": json.dumps(state.events[task]),
        }
        record = encode_segment(tensors, metadata)
        manifest = self._manifest
        append_segment(self.path, record, manifest.segment_bytes)
        self._manifest = replace(
            manifest,
            segments=manifest.segments + 1,
            segment_bytes=manifest.segment_bytes + len(record),
        )
        written = len(record) + self._manifest.write(self.path)
        state.checkpoint_sizes.append(self._snapshot_bytes + self._manifest.segment_bytes)
        return written


def checkpoint_tasks(path: Path) -> int:
    """How many tasks the checkpoint at ``path`` holds (0 where there is none yet), read from
    its manifest (or, for format version 1, its snapshot)."""
    path = Path(path)
    if not path.exists():
        return 0
    manifest = Manifest.read(path)
    if manifest is not None:
        _, metadata = read_snapshot(path)
        return int(metadata["next_task"]) + manifest.segments
    return int(read_snapshot(path)[1]["next_task"])


def recorded_threads(path: Path) -> int | None:
    """The intra-op thread count the run of the checkpoint at ``path`` started with (None when
    there is no checkpoint or it does not say): a resumed run keeps it, to stay bit-identical."""
    try:
        manifest = Manifest.read(Path(path))
    except CheckpointError:
        return None  # the resume itself reports the damage
    return None if manifest is None else manifest.threads


def checkpoint_bytes(run_dir: Path) -> int:
    """Bytes on disk of a run folder's checkpoint (snapshot, segments and manifest)."""
    return sum(f.stat().st_size for f in checkpoint_files(Path(run_dir) / CHECKPOINT_NAME))


# ------------------------------------------------------------------------------------ reading


def _saved_config(path: Path, metadata: dict[str, str], manifest: Manifest | None):
    try:
        raw = manifest.config if manifest is not None else json.loads(metadata["config"])
        return config_from_dict(raw)
    except (KeyError, json.JSONDecodeError, ImpressLearnError) as e:
        raise CheckpointError(f"checkpoint {path} holds no valid config ({e})") from None


def _check_manifest(path: Path, metadata: dict[str, str], manifest: Manifest | None) -> None:
    if manifest is not None and metadata.get("format_version") != "1":
        if manifest.snapshot_digest != metadata.get("content_sha256"):
            raise CheckpointError(
                f"checkpoint {path} does not belong to its manifest {path.with_suffix('.json')} "
                "(another run's snapshot?); restore the run folder from a copy or run again with "
                "--overwrite"
            )


def checkpoint_config(path: Path) -> ExperimentConfig:
    """The resolved config stored in a checkpoint."""
    _, metadata = read_snapshot(path)
    manifest = Manifest.read(path)
    return _saved_config(Path(path), metadata, manifest)


def checkpoint_shape(path: Path) -> tuple[tuple[int, ...], int]:
    """The (input shape, classes per task) a checkpoint's model was built for."""
    _, metadata = read_snapshot(path)
    try:
        shape = json.loads(metadata["input_shape"])
        classes = json.loads(metadata["num_classes"])
    except (KeyError, json.JSONDecodeError):
        shape = classes = None
    if shape is None or classes is None:
        raise CheckpointError(f"checkpoint {path} does not record its input shape")
    return tuple(shape), int(classes)


def restore_checkpoint(
    path: Path, config: ExperimentConfig, model: nn.Module, method: Any
) -> RunState:
    """Load a checkpoint into a freshly built ``model`` / ``method`` of ``config``.

    ``config`` must equal the saved one, except that ``scenario.num_tasks`` may grow: the stream
    is extended (task ``t`` of every scenario is defined by the seed and ``t`` alone, so the
    extended run equals a run started with the longer stream).
    """
    path = Path(path)
    tensors, metadata = read_snapshot(path)
    manifest = Manifest.read(path) if metadata.get("format_version") != "1" else None
    _check_manifest(path, metadata, manifest)
    saved = _saved_config(path, metadata, manifest)
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
    segments = read_segments(path, manifest) if manifest is not None else []
    try:
        state = _apply_snapshot(tensors, metadata, model, method)
        n = config.scenario.num_tasks  # >= the saved stream's: it may have grown
        state.matrix = state.matrix.grown(n)
        size = path.stat().st_size
        if manifest is not None:  # the writer counted the snapshot itself after writing it
            state.checkpoint_sizes.append(size)
        for seg_tensors, seg_meta, seg_bytes in segments:
            _apply_segment(state, seg_tensors, seg_meta, model, method)
            size += seg_bytes
            state.checkpoint_sizes.append(size)
    except (KeyError, ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"checkpoint {path} is inconsistent ({e})") from None
    if config.eval.matrix != "full":
        # A stream that grew: the rows that were last rows were evaluated in full, and are
        # ordinary rows now.
        for i in state.matrix.rows:
            if 0 < i < n - 1 and len(state.matrix.entries_of(i)[0]) == i + 1:
                state.matrix.keep(i, config.eval.evaluated_tasks(i, n, config.scenario.seed))
    return state


def _device(model: nn.Module) -> torch.device:
    layers = masked_layers(model)
    return layers[0].weight.device if layers else torch.device("cpu")


def _apply_snapshot(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str], model: nn.Module, method: Any
) -> RunState:
    sizes = json.loads(metadata["bank_sizes"])
    layers = masked_layers(model)
    for i, (layer, count) in enumerate(zip(layers, sizes, strict=True)):
        for mask in unpack_bits(tensors[f"bank.{i}"], (count, *layer.weight.shape)):
            layer.add_to_bank(mask)
    device = _device(model)
    for i, norm in enumerate(task_norms(model)):
        for key in json.loads(metadata.get("norm_keys", "[]")):
            norm.stats[key] = tensors[f"norm.{i}.{key}"].to(device, copy=True)
    method_tensors = {k[7:]: v.to(device) for k, v in tensors.items() if k.startswith("method.")}
    method.restore_state(method_tensors, json.loads(metadata["method_state"]))
    if "accuracy_matrix" in tensors:  # format version 1: the dense matrix
        matrix = AccuracyMatrix.from_dense(tensors["accuracy_matrix"].numpy())
    else:
        matrix = AccuracyMatrix(int(metadata["matrix_tasks"]))
        rows = tensors["matrix.after_task"].numpy()
        cols, values = tensors["matrix.task"].numpy(), tensors["matrix.accuracy"].numpy()
        for i in np.unique(rows):
            matrix.set_row(int(i), cols[rows == i], values[rows == i])
    return RunState(
        next_task=int(metadata["next_task"]),
        matrix=matrix,
        task_seconds=json.loads(metadata["task_seconds"]),
        events=json.loads(metadata["events"]),
        prepare_seconds=float(metadata["prepare_seconds"]),
        checkpoint_sizes=json.loads(metadata["checkpoint_sizes"]),
        calibration=Calibration.from_json(metadata.get("calibration", "{}")),
    )


def _apply_segment(
    state: RunState,
    tensors: dict[str, torch.Tensor],
    metadata: dict[str, str],
    model: nn.Module,
    method: Any,
) -> None:
    """Add one task's segment to the restored run."""
    task = int(metadata["task"])
    if task != state.next_task:
        raise ValueError(f"segment of task {task} where task {state.next_task} was expected")
    added = json.loads(metadata["added"])
    for i, (layer, count) in enumerate(zip(masked_layers(model), added["bank_added"], strict=True)):
        if count:
            for mask in unpack_bits(tensors[f"bank.{i}"], (count, *layer.weight.shape)):
                layer.add_to_bank(mask)
    device = _device(model)
    for i, norm in enumerate(task_norms(model)):
        for key in added["norm_added"]:
            norm.stats[key] = tensors[f"norm.{i}.{key}"].to(device, copy=True)
    method_tensors = {k[7:]: v.to(device) for k, v in tensors.items() if k.startswith("method.")}
    method.restore_task(task, method_tensors, added["method_state"])
    merge_calibration(state.calibration, added["calibration"])
    state.matrix.set_row(task, tensors["matrix.task"].numpy(), tensors["matrix.accuracy"].numpy())
    state.task_seconds.append(float(metadata["task_seconds"]))
    state.events.append(json.loads(metadata["event"]))
    state.next_task = task + 1


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
