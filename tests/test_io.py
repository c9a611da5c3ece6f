"""Atomic writes: complete files, usual permissions, and the old file intact on failure."""
import json
import os
import stat

import pytest

from jdl import io


def test_writes_json_with_usual_permissions(tmp_path):
    path = tmp_path / "sub" / "results.json"
    io.atomic_write_json(str(path), {"mlp": {"test_accuracy": 0.8}})
    assert json.loads(path.read_text()) == {"mlp": {"test_accuracy": 0.8}}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    assert os.listdir(path.parent) == ["results.json"]  # no temporary file left behind


def test_failed_write_keeps_previous_file(tmp_path):
    path = tmp_path / "results.json"
    io.atomic_write_json(str(path), {"step": 1})
    with pytest.raises(TypeError):
        io.atomic_write_json(str(path), {"step": object()})  # not JSON: fails before writing
    with pytest.raises(TypeError, match="atomic_write_bytes: expected bytes, got str"):
        io.atomic_write_bytes(str(path), "text")
    assert json.loads(path.read_text()) == {"step": 1}
    assert os.listdir(tmp_path) == ["results.json"]


def test_replaces_existing_file(tmp_path):
    path = tmp_path / "notes.txt"
    io.atomic_write_text(str(path), "old")
    io.atomic_write_text(str(path), "new")
    assert path.read_text() == "new"
