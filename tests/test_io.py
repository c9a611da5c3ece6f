"""Atomic writes: complete files, usual permissions, and the old file intact on failure.

Also: a rewrite keeps the file's mode, a new file follows the umask of the moment, JSON is
standard (NaN and Infinity refused, naming where), NumPy and JAX numbers are written as
numbers, and an OS error names the destination, not the temporary file.
"""
import json
import os
import stat

import jax
import jax.numpy as jnp
import numpy as np
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


def test_rewrite_keeps_the_files_permissions(tmp_path):
    path = tmp_path / "secret.json"
    io.atomic_write_json(str(path), {"token": 1})
    os.chmod(path, 0o600)
    io.atomic_write_json(str(path), {"token": 2})  # used to come back 0o666 & ~umask (0644)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o640)
    io.atomic_write_text(str(path), "x")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_new_files_follow_the_umask_at_write_time(tmp_path):
    previous = os.umask(0o077)  # the umask used to be read once, at import
    try:
        io.atomic_write_text(str(tmp_path / "private.txt"), "x")
        os.umask(0o027)
        io.atomic_write_text(str(tmp_path / "group.txt"), "x")
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "group.txt").stat().st_mode) == 0o640


@pytest.mark.parametrize("bad, where", [
    ({"loss": float("nan")}, r"obj\['loss'\]"),
    ({"curve": [0.5, float("inf")]}, r"obj\['curve'\]\[1\]"),
    ({"m": {"x": np.float64("-inf")}}, r"obj\['m'\]\['x'\]"),
    ({"acts": jnp.array([[1.0, 2.0], [jnp.nan, 0.0]])}, r"obj\['acts'\]\[1\]\[0\]"),
], ids=["nan", "inf_in_a_list", "numpy_minus_inf", "nan_in_a_jax_array"])
def test_nan_and_infinity_are_refused_naming_where(tmp_path, bad, where):
    """Python's json writes the non-standard tokens NaN / Infinity, which strict readers reject."""
    path = tmp_path / "results.json"
    io.atomic_write_json(str(path), {"step": 1})
    message = rf"^atomic_write_json: expected finite numbers .*, got -?(nan|inf) at {where}$"
    with pytest.raises(ValueError, match=message):
        io.atomic_write_json(str(path), bad)
    assert json.loads(path.read_text()) == {"step": 1}


def test_numpy_and_jax_numbers_and_arrays_are_written_as_json_numbers(tmp_path):
    path = tmp_path / "results.json"
    io.atomic_write_json(str(path), {
        "loss": jnp.float32(0.5), "acc": np.float64(0.25), "step": jnp.array(3), "best": np.int64(7),
        "done": np.bool_(True), "curve": jnp.array([1.0, 2.0], jnp.bfloat16), "grid": np.arange(4).reshape(2, 2),
    })  # a JAX scalar used to be a TypeError
    assert json.loads(path.read_text()) == {
        "loss": 0.5, "acc": 0.25, "step": 3, "best": 7, "done": True, "curve": [1.0, 2.0], "grid": [[0, 1], [2, 3]],
    }
    with pytest.raises(TypeError, match=r"^atomic_write_json: expected JSON data .*, got a complex64 array at obj"):
        io.atomic_write_json(str(path), [jnp.array(1j, jnp.complex64)])
    with pytest.raises(TypeError, match=r"^atomic_write_json: expected concrete values .*, got a traced array at obj"):
        jax.eval_shape(lambda x: io.atomic_write_json(str(path), {"x": x}) or x, 1.0)
    with pytest.raises(TypeError, match=r"^atomic_write_json: expected JSON data .*, got object at obj\['step'\]"):
        io.atomic_write_json(str(path), {"step": object()})


def test_os_errors_name_the_destination_not_the_temporary_file(tmp_path, monkeypatch):
    in_the_way = tmp_path / "results.json"
    in_the_way.mkdir()  # a folder where the file should go: os.replace fails
    with pytest.raises(IsADirectoryError) as error:
        io.atomic_write_text(str(in_the_way), "x")
    assert error.value.filename == str(in_the_way) and ".tmp-" not in str(error.value)
    assert "atomic_write_bytes" in str(error.value) and os.listdir(tmp_path) == ["results.json"]

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full_disk)
    path = tmp_path / "notes.txt"
    with pytest.raises(OSError, match="No space left on device") as error:
        io.atomic_write_text(str(path), "x")
    assert error.value.errno == 28 and error.value.filename == str(path)  # used to name no file at all
    assert sorted(os.listdir(tmp_path)) == ["results.json"]
