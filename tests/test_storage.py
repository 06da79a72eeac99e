"""Tests for impresslearn.storage: atomic writes leave the old file or the new one, never a
half-written file, and never a temp file."""

import json
import os

import pytest

from impresslearn import storage
from impresslearn.storage import (
    append_line,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
)


def test_atomic_write_bytes_writes_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "run" / "banks.safetensors"  # the parent folder is created
    atomic_write_bytes(target, b"\x00\x01\xff")
    assert target.read_bytes() == b"\x00\x01\xff"
    assert os.listdir(target.parent) == [target.name]


def test_atomic_write_replaces_an_existing_file(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new, longer content")
    assert target.read_text() == "new, longer content"
    assert os.listdir(tmp_path) == [target.name]


def test_atomic_write_text_is_utf8(tmp_path):
    target = tmp_path / "notes.txt"
    atomic_write_text(target, "α = 0.02, β ∈ Δ")
    assert target.read_bytes() == "α = 0.02, β ∈ Δ".encode()


def test_atomic_write_json_round_trips(tmp_path):
    target = tmp_path / "config.json"
    obj = {"density": 0.5, "tasks": [0, 1], "name": None}
    atomic_write_json(target, obj)
    assert json.loads(target.read_text()) == obj
    assert target.read_text().endswith("\n")


def failing(*args, **kwargs):
    raise OSError("disk on fire")


@pytest.mark.parametrize("step", ["replace", "fsync"])
def test_a_failure_mid_write_keeps_the_old_file_and_no_temp_file(tmp_path, monkeypatch, step):
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"version": 1})
    monkeypatch.setattr(storage.os, step, failing)
    with pytest.raises(OSError, match="disk on fire"):
        atomic_write_json(target, {"version": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"version": 1}
    assert os.listdir(tmp_path) == [target.name]


def test_a_failure_on_a_first_write_leaves_nothing(tmp_path, monkeypatch):
    target = tmp_path / "metrics.json"
    monkeypatch.setattr(storage.os, "replace", failing)
    with pytest.raises(OSError):
        atomic_write_bytes(target, b"data")
    monkeypatch.undo()
    assert os.listdir(tmp_path) == []


def test_an_interrupt_mid_write_is_cleaned_up_too(tmp_path, monkeypatch):
    """A KeyboardInterrupt (Ctrl-C during a long run) is not an Exception; still no temp file."""
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old")

    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(storage.os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == [target.name]


def test_append_line_appends_one_line_each(tmp_path):
    target = tmp_path / "events.jsonl"
    append_line(target, '{"event": "begin"}')
    append_line(target, '{"event": "end"}\n')  # a trailing newline is not doubled
    assert target.read_text() == '{"event": "begin"}\n{"event": "end"}\n'
