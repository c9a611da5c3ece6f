"""Files written atomically: a reader sees the old file or the new one, never half of one.

Each write goes to a temporary file in the destination's folder, is flushed to disk, and
then replaces the destination with ``os.replace`` (atomic on POSIX and Windows). If
anything fails on the way, the temporary file is removed and the previous file is intact.

Example:
    >>> import os, tempfile, jdl
    >>> path = os.path.join(tempfile.mkdtemp(), "results.json")
    >>> jdl.io.atomic_write_json(path, {"mlp": {"test_accuracy": 0.8}})
    >>> open(path).read().startswith("{")
    True
"""
from __future__ import annotations

import json
import os
import tempfile
from typing import Any

from jdl._checks import check_that


def _process_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


# Read once, at import: os.umask can only be read by setting it, which races with threads.
_UMASK = _process_umask()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, creating the folder if needed."""
    check_that(isinstance(data, (bytes, bytearray)), "atomic_write_bytes", "bytes", type(data).__name__, TypeError)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix="-" + os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:  # owns fd from here on: closed whatever happens
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file private (0600); give it the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


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


def atomic_write_json(path: str, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically; nothing is written if it is not JSON."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")
