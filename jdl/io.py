"""Files written atomically: a reader sees the old file or the new one, never half of one.

Each write goes to a temporary file in the destination's folder, is flushed to disk, and
then replaces the destination with ``os.replace`` (atomic on POSIX and Windows). If
anything fails on the way, the temporary file is removed, the previous file is intact,
and the error names the destination (not the temporary file).

Permissions: a rewritten file keeps its mode (a 0600 file stays 0600); a new file gets the
mode a plain ``open()`` would give, ``0o666`` less the umask at the time of the write.

Example:
    >>> import os, tempfile, jdl
    >>> path = os.path.join(tempfile.mkdtemp(), "results.json")
    >>> jdl.io.atomic_write_json(path, {"mlp": {"test_accuracy": 0.8}})
    >>> open(path).read().startswith("{")
    True
"""
from __future__ import annotations

import json
import math
import os
import secrets
import stat
from typing import Any

import jax.numpy as jnp
import numpy as np

from jdl._checks import check_that, is_concrete

# Flags of the temporary file: new (never an existing file or a planted link), write-only,
# binary on Windows, not inherited by child processes.
_CREATE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOFOLLOW", 0)
                 | getattr(os, "O_CLOEXEC", 0))


def _existing_mode(path: str) -> int | None:
    """The permission bits of the file at ``path``, or ``None`` if there is none yet."""
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        return None


def _create_temporary(directory: str, name: str, mode: int | None) -> tuple[int, str]:
    """Create an empty temporary file next to the destination; return its descriptor and path.

    It is created with ``os.open(..., 0o666)``, as a plain ``open()`` would, so the kernel
    applies the umask in force now (and any default ACL of the folder): the umask is never
    read, because reading it means setting it (``os.umask``), which changes it for every
    thread of the process for a moment. When the destination exists, the file is created
    with the destination's mode instead (never more open than it, even for a moment) and then
    given that mode exactly (by the caller, which owns the file from here on).
    """
    for _ in range(100):
        tmp = os.path.join(directory, f".tmp-{secrets.token_hex(8)}-{name[:200]}")
        try:
            fd = os.open(tmp, _CREATE_FLAGS, 0o666 if mode is None else mode)
        except FileExistsError:
            continue
        return fd, tmp
    raise FileExistsError(f"could not create a temporary file in {directory}")


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating the folder if needed.

    An ``OSError`` on the way (a full disk, a folder in the way) is raised with its own
    type and errno, naming ``path``; the original error is chained as its cause.
    """
    check_that(isinstance(data, (bytes, bytearray)), "atomic_write_bytes", "bytes", type(data).__name__, TypeError)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = None
    try:
        mode = _existing_mode(path)
        fd, tmp = _create_temporary(directory, os.path.basename(path), mode)
        with os.fdopen(fd, "wb") as f:  # owns fd from here on: closed whatever happens
            if mode is not None:
                os.chmod(tmp, mode)  # exactly the destination's: the umask may have removed some bits
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        if tmp is not None and os.path.lexists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError):
            raise _naming_destination(error, path) from error
        raise
    _fsync_directory(directory)


def _naming_destination(error: OSError, path: str) -> OSError:
    """The same kind of error (``PermissionError``, errno ENOSPC, ...) naming the destination."""
    if error.errno is None:
        return type(error)(f"atomic_write_bytes: {error} (writing {path!r})")
    return type(error)(error.errno, f"atomic_write_bytes: {error.strerror}", path)


def _fsync_directory(directory: str) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


_JSON_TYPES = "JSON data (dict, list, tuple, str, int, float, bool, None, or a NumPy or JAX number or array)"


def _array_to_json(value: Any, path: str) -> Any:
    """A NumPy or JAX number or array as Python numbers: a scalar or 0-d array as one, an array
    of rank >= 1 as nested lists (the shape is kept in the nesting). Floats become Python
    floats of the same value (a float32 0.1 is written as 0.10000000149011612)."""
    check_that(is_concrete(value), "atomic_write_json", "concrete values (a traced array has none to write)",
               f"a traced array at {path}", TypeError)
    array = np.asarray(value)
    if array.dtype == bool or jnp.issubdtype(array.dtype, jnp.integer):
        return array.tolist()
    check_that(jnp.issubdtype(array.dtype, jnp.floating), "atomic_write_json", _JSON_TYPES,
               f"a {array.dtype.name} array at {path}", TypeError)
    array = array.astype(np.float64)  # exact for every float dtype (bfloat16 too)
    for index in np.argwhere(~np.isfinite(array))[:1]:
        _check_finite(float(array[tuple(index)]), path + "".join(f"[{i}]" for i in index))
    return array.tolist()


def _check_finite(value: float, path: str) -> None:
    check_that(math.isfinite(value), "atomic_write_json", "finite numbers (JSON has no NaN or Infinity; write "
               "None or a string instead)", f"{value} at {path}")


def _to_json(value: Any, path: str) -> Any:
    """``value`` as plain JSON data, with NumPy and JAX numbers converted, or an error naming
    the path of the first value JSON cannot hold (``obj['loss'][3]``)."""
    if isinstance(value, dict):
        return {key: _to_json(item, f"{path}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(item, f"{path}[{index}]") for index, item in enumerate(value)]
    if value is None or isinstance(value, (str, bool)):
        return value
    if hasattr(value, "dtype") and hasattr(value, "shape"):  # before float: np.float64 is a float
        return _array_to_json(value, path)
    if isinstance(value, float):
        _check_finite(value, path)
        return value
    check_that(isinstance(value, int), "atomic_write_json", _JSON_TYPES, f"{type(value).__name__} at {path}",
               TypeError)
    return value


def atomic_write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented, standard JSON to ``path`` atomically.

    NumPy and JAX numbers and 0-d arrays are written as numbers, arrays of rank >= 1 as
    nested lists. NaN and Infinity, which standard JSON cannot hold (Python's ``json`` would
    write the non-standard tokens ``NaN``/``Infinity``), are a ``ValueError`` naming where
    they are; a value JSON cannot hold is a ``TypeError``. Nothing is written then.
    """
    text = json.dumps(_to_json(obj, "obj"), indent=2, allow_nan=False)
    atomic_write_text(path, text + "\n")
