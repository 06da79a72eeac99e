"""The three files of a run's checkpoint, and how each proves it is intact.

* ``checkpoint.safetensors``, the **snapshot**: the whole run at one moment (after the
  preparation; or a run written by an older impresslearn, converted once), written atomically.
  Its metadata holds a SHA-256 of every tensor and one of the whole metadata, so a changed byte
  anywhere is found, and named: which tensor, or the metadata.
* ``checkpoint.tasks``, the **segments**: one record per task learned after the snapshot, only
  ever appended: ``MAGIC``, the payload's length (8 bytes, little-endian), its SHA-256 (32 bytes),
  then the payload (a safetensors blob of what the task added, with its tensors' SHA-256s, so
  a damaged segment names its task and tensor).
* ``checkpoint.json``, the **manifest**, written atomically after each append: how many segments
  and bytes of ``checkpoint.tasks`` belong to the run, and the snapshot's digest. Bytes past
  that length (a write cut short by a kill) are not part of the run and are cut off by the next
  writer.

A task costs one append and one small manifest, whatever the number of tasks before it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from impresslearn.errors import CheckpointError
from impresslearn.storage import atomic_write_json

FORMAT = "impresslearn-checkpoint"
FORMAT_VERSION = 2  # 1: a single file rewritten after every task (read, converted on resume)
CHECKPOINT_NAME = "checkpoint.safetensors"
SEGMENTS_SUFFIX = ".tasks"
MANIFEST_SUFFIX = ".json"
MAGIC = b"ILTASK01"
_FRAME = len(MAGIC) + 8 + 32
DIGEST_KEY = "content_sha256"
TENSORS_KEY = "tensor_sha256"  # {name: SHA-256 of the tensor}, in snapshots and segments
SEGMENT_DIGEST = 16  # hex digits of a tensor's SHA-256 kept in a segment


def segments_path(path: Path) -> Path:
    return Path(path).with_suffix(SEGMENTS_SUFFIX)


def manifest_path(path: Path) -> Path:
    return Path(path).with_suffix(MANIFEST_SUFFIX)


def checkpoint_files(path: Path) -> list[Path]:
    """The files of the checkpoint at ``path`` that exist."""
    files = [Path(path), segments_path(path), manifest_path(path)]
    return [f for f in files if f.is_file()]


def _hash_metadata(h: Any, metadata: dict[str, str]) -> None:
    for key in sorted(metadata):
        if key != DIGEST_KEY:
            h.update(json.dumps([key, metadata[key]]).encode())


def _hash_tensor(h: Any, t: torch.Tensor) -> None:
    t = t.contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")


def content_digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over every tensor (name, dtype, shape, bytes) and every metadata entry but the
    digest itself (the snapshot's digest before tensors had their own; a task's additions)."""
    h = hashlib.sha256()
    _hash_metadata(h, metadata)
    for key in sorted(tensors):
        h.update(key.encode())
        _hash_tensor(h, tensors[key])
    return h.hexdigest()


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of one tensor (dtype, shape, bytes)."""
    h = hashlib.sha256()
    _hash_tensor(h, t)
    return h.hexdigest()


def _metadata_digest(metadata: dict[str, str]) -> str:
    """SHA-256 over every metadata entry but the digest itself (the tensors' digests included)."""
    h = hashlib.sha256()
    _hash_metadata(h, metadata)
    return h.hexdigest()


def _with_tensor_digests(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str], length: int = 64
) -> dict[str, str]:
    """``metadata`` with every tensor's digest (its first ``length`` hex digits: a segment,
    checked whole by its frame's SHA-256, needs them only to name the damage)."""
    digests = {k: tensor_digest(tensors[k])[:length] for k in sorted(tensors)}
    return {**metadata, TENSORS_KEY: json.dumps(digests)}


def check_tensors(tensors: dict[str, torch.Tensor], metadata: dict[str, str], what: str) -> None:
    """Refuse tensors that do not match the digests recorded beside them, naming them."""
    try:
        recorded = json.loads(metadata[TENSORS_KEY])
        if not isinstance(recorded, dict):
            raise ValueError("not a JSON object")
    except (KeyError, ValueError) as e:
        raise CheckpointError(f"{what} is corrupt: its record of tensor digests is ({e})") from None
    changed = sorted(set(recorded) ^ set(tensors))  # a tensor missing or renamed
    changed += [
        k
        for k in sorted(tensors)
        if k in recorded
        and (
            len(recorded[k]) < SEGMENT_DIGEST
            or not tensor_digest(tensors[k]).startswith(recorded[k])
        )
    ]
    if changed:
        names = ", ".join(changed[:5]) + (
            f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        )
        raise CheckpointError(
            f"{what} is corrupt: tensor {names} does not match the SHA-256 written with it (a "
            "changed byte); restore it from a copy or run again with --overwrite"
        )


def encode_snapshot(
    tensors: dict[str, torch.Tensor], metadata: dict[str, str]
) -> tuple[bytes, str]:
    """The snapshot file's bytes, and its content digest (over the metadata, which holds every
    tensor's digest)."""
    metadata = {**metadata, "format": FORMAT, "format_version": str(FORMAT_VERSION)}
    metadata = _with_tensor_digests(tensors, metadata)
    metadata[DIGEST_KEY] = _metadata_digest(metadata)
    return st_save(tensors, metadata=metadata), metadata[DIGEST_KEY]


def _decode(raw: bytes, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    try:
        tensors = st_load(raw)
        # safetensors layout: 8-byte little-endian header length, then a JSON header.
        header_len = int.from_bytes(raw[:8], "little")
        metadata = json.loads(raw[8 : 8 + header_len]).get("__metadata__") or {}
    except (SafetensorError, ValueError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{what} is corrupt or truncated ({e})") from None
    return tensors, metadata


def read_snapshot(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a snapshot (format version 1 or 2), checked: a version-2
    snapshot must match its content digest."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}: is this a run folder?") from None
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {e}") from None
    tensors, metadata = _decode(raw, f"checkpoint {path}")
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an impresslearn checkpoint")
    version = metadata.get("format_version")
    if version not in ("1", str(FORMAT_VERSION)):
        raise CheckpointError(
            f"checkpoint {path} has format version {version}; this impresslearn reads versions 1 "
            f"and {FORMAT_VERSION}: use the impresslearn version that wrote it"
        )
    if version == "1":
        return tensors, metadata
    if TENSORS_KEY in metadata:  # every tensor named, then the metadata
        check_tensors(tensors, metadata, f"checkpoint {path}")
        intact = metadata.get(DIGEST_KEY) == _metadata_digest(metadata)
    else:  # written before the tensors had digests of their own
        intact = metadata.get(DIGEST_KEY) == content_digest(tensors, metadata)
    if not intact:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: its metadata (the header: config, events, "
            "bookkeeping) does not match the digest written with it (a changed byte); restore it "
            "from a copy or run again with --overwrite"
        )
    return tensors, metadata


@dataclass(frozen=True)
class Manifest:
    """Which bytes of ``checkpoint.tasks`` belong to the run, and the config it runs."""

    snapshot_digest: str
    segments: int
    segment_bytes: int
    config: dict[str, Any]
    threads: int | None = None  # torch's intra-op threads when the run started

    def write(self, path: Path) -> int:
        obj = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "snapshot_digest": self.snapshot_digest,
            "segments": self.segments,
            "segment_bytes": self.segment_bytes,
            "config": self.config,
            "threads": self.threads,
        }
        atomic_write_json(manifest_path(path), obj)
        return manifest_path(path).stat().st_size

    @classmethod
    def read(cls, path: Path) -> Manifest | None:
        """The manifest beside the snapshot ``path``, None if there is none (a snapshot alone:
        version 1, or a run stopped before its first manifest)."""
        file = manifest_path(path)
        try:
            obj = json.loads(file.read_text())
            if obj.get("format") != FORMAT:
                raise CheckpointError(f"{file} is not an impresslearn checkpoint manifest")
            return cls(
                str(obj["snapshot_digest"]),
                int(obj["segments"]),
                int(obj["segment_bytes"]),
                dict(obj["config"]),
                None if obj.get("threads") is None else int(obj["threads"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"checkpoint manifest {file} is corrupt ({e})") from None


def encode_segment(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> bytes:
    """One framed segment record."""
    payload = st_save(tensors, metadata=_with_tensor_digests(tensors, metadata, SEGMENT_DIGEST))
    digest = hashlib.sha256(payload).digest()
    return MAGIC + len(payload).to_bytes(8, "little") + digest + payload


def read_segments(
    path: Path, manifest: Manifest
) -> list[tuple[dict[str, torch.Tensor], dict[str, str], int]]:
    """The manifest's segments of ``checkpoint.tasks`` (tensors, metadata, bytes on disk), each
    checked against its SHA-256."""
    file = segments_path(path)
    if manifest.segments == 0:
        return []
    try:
        with open(file, "rb") as f:
            raw = f.read(manifest.segment_bytes)
    except OSError as e:
        raise CheckpointError(f"cannot read the task segments {file}: {e}") from None
    if len(raw) < manifest.segment_bytes:
        raise CheckpointError(
            f"{file} holds {len(raw)} bytes but its manifest counts {manifest.segment_bytes}: "
            "the file was truncated; restore it from a copy or run again with --overwrite"
        )
    out, offset = [], 0
    for k in range(manifest.segments):
        head = raw[offset : offset + _FRAME]
        if len(head) < _FRAME or head[: len(MAGIC)] != MAGIC:
            raise CheckpointError(f"{file}: segment {k} (byte {offset}) has no valid header")
        size = int.from_bytes(head[len(MAGIC) : len(MAGIC) + 8], "little")
        payload = raw[offset + _FRAME : offset + _FRAME + size]
        if hashlib.sha256(payload).digest() != head[len(MAGIC) + 8 :]:
            raise _segment_damage(payload, f"{file}: segment {k} (byte {offset})")
        out.append((*_decode(payload, f"{file} segment {k}"), _FRAME + size))
        offset += _FRAME + size
    if offset != manifest.segment_bytes:
        raise CheckpointError(
            f"{file}: segments end at byte {offset}, the manifest says {manifest.segment_bytes}"
        )
    return out


def _segment_damage(payload: bytes, what: str) -> CheckpointError:
    """The error for a segment whose SHA-256 does not match: its task and the tensor that
    changed, where the payload still decodes."""
    try:
        tensors, metadata = _decode(payload, what)
    except CheckpointError:
        part = "its header"
    else:
        what = f"{what}, task {metadata.get('task', '?')},"
        try:
            check_tensors(tensors, metadata, what)
        except CheckpointError as e:
            return e
        part = "its metadata (event, accuracies, bookkeeping)"
    return CheckpointError(
        f"{what} is corrupt: {part} does not match the SHA-256 written with it (a changed "
        "byte); restore the file from a copy or run again with --overwrite"
    )


def append_segment(path: Path, record: bytes, keep: int) -> None:
    """Cut ``checkpoint.tasks`` to its first ``keep`` bytes (the run's), append ``record``, and
    flush it to disk."""
    file = segments_path(path)
    fd = os.open(file, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        os.ftruncate(fd, keep)
        os.lseek(fd, keep, os.SEEK_SET)
        view = memoryview(record)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
