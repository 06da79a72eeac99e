"""Atomic file writes: a temp file in the same folder, fsync, then rename over the target.

A reader (or a run killed mid-write) sees either the old file or the complete new one, never a
half-written file. The result files that commands read back (``metrics.json``, saved
evaluations) carry a ``content_sha256`` of their own contents, checked when they are read, so a
changed number is an error, never a different result.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from impresslearn.errors import CheckpointError

DIGEST_FIELD = "content_sha256"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp creates 0600; a run's files are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def append_line(path: Path, line: str) -> None:
    """Append one line (for ``events.jsonl``) and flush it to disk."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(line.rstrip("\n") + "\n")
        f.flush()
        os.fsync(f.fileno())


def json_digest(obj: dict[str, Any]) -> str:
    """SHA-256 of a JSON object's contents (every entry but ``content_sha256``)."""
    body = {k: v for k, v in obj.items() if k != DIGEST_FIELD}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_checked_json(path: Path, obj: dict[str, Any]) -> None:
    """Write ``obj`` atomically with its ``content_sha256`` (see :func:`read_checked_json`)."""
    atomic_write_json(path, {**obj, DIGEST_FIELD: json_digest(obj)})


def read_checked_json(path: Path) -> dict[str, Any]:
    """Read a JSON object written by :func:`write_checked_json`, checked against its
    ``content_sha256`` (a file without one, from an older impresslearn, is read as it is).

    Raises:
        CheckpointError: the file is missing, not JSON, or changed since it was written.
    """
    path = Path(path)
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e})") from None
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    expected = obj.pop(DIGEST_FIELD, None)
    if expected is not None and expected != json_digest(obj):
        raise CheckpointError(
            f"{path} was changed after impresslearn wrote it (its content_sha256 does not match "
            "its contents): restore it from a copy, or run or evaluate again"
        )
    return obj
