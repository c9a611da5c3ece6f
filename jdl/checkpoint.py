"""Checkpoints: arrays in safetensors, structure in JSON, written atomically. No pickle.

Layout on disk::

    <directory>/
      step_10/
        arrays.safetensors   every leaf's values, keyed by its path in the tree
                             ("params/encoder/block_0/self_attention/query/w")
        checkpoint.json      {"format": "jdl.checkpoint", "format_version": 1, "jdl_version",
                              "step", "metadata", "metrics", "arrays_sha256", "tree"}
      step_20/
      .tmp-<random>-step_30/ a save in progress, or what a crash left: readers ignore it

A path joins dict keys, sequence indices and NamedTuple field names with ``/``, as
``jax.tree_util.tree_flatten_with_path`` names them. ``"tree"`` describes the structure:
dicts (str or int keys), lists, tuples, NamedTuples (module, qualname and fields), ``None``
and, per leaf, its kind, dtype and shape. safetensors holds arrays and nothing else, so
it cannot run code, any tool reads it, and the JSON keeps what it cannot say.

* **Leaves.** Arrays of any JAX dtype, 0-d included, come back as jax arrays. A dtype that
  safetensors' NumPy API cannot read back (bfloat16, float8, int4, complex128) is stored
  as its bits (``uint16`` for bfloat16; ``"stored_dtype"`` in the JSON says so). A typed PRNG
  key array is stored as ``jax.random.key_data`` with its implementation's name and rebuilt
  with ``jax.random.wrap_key_data``. Python ``bool``/``int``/``float`` leaves are stored in
  the safetensors file as 0-d ``bool``/``int64``/``float64`` arrays (bit for bit, NaN included)
  and come back as Python scalars. Anything else (a string, an object) is refused at save time.
* **Atomic.** A save writes both files into a hidden temporary directory beside the steps,
  fsyncs them, and publishes it with one ``os.rename`` to ``step_<N>``: a step directory is
  complete or absent, and a failed save removes its temporary directory and leaves every
  earlier step intact. Saving an existing step raises ``FileExistsError`` unless
  ``overwrite=True``; renaming onto a non-empty directory fails, so of two writers of one
  step exactly one wins. With ``overwrite=True`` the complete new directory is built first,
  the old one is renamed aside (hidden) and the new one into place; if that rename fails the
  old one is put back. A crash between the two renames leaves the old copy in the hidden
  ``.tmp-*-replaced-step_<N>`` directory (rename it back by hand). Hidden directories older
  than any running save can be deleted.
* **Several processes** (``jax.distributed``). Every process calls ``save`` with the same
  global tree; each writes the shards it holds (one copy of each part) to
  ``arrays.process_<i>.safetensors``, keyed ``<path>#<start>:<stop>,...``, in one staging
  directory on a filesystem they all see; process 0 writes the JSON (``format_version`` 2,
  every file's SHA-256) and publishes the step with the one rename. ``restore`` reads every
  file, checks that the shards cover each leaf exactly once and lays it out as ``like``'s
  shardings say, so a checkpoint written on one mesh and number of processes restores on any
  other (each process reads the whole checkpoint: for trees larger than a host's memory, use
  orbax-checkpoint).
* **Checked on restore.** The arrays file must have the SHA-256 the JSON records (a truncated
  or corrupted file is named), hold exactly the paths the JSON lists, and ``like`` (a tree of
  arrays, ``jax.ShapeDtypeStruct`` s or Python scalars) must match the stored tree's structure,
  shapes and dtypes; errors name the step directory and the first path that differs.

Example:
    >>> import os, tempfile, jax, jax.numpy as jnp
    >>> from jdl import checkpoint
    >>> directory = tempfile.mkdtemp()
    >>> params = {"dense": {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}}
    >>> path = checkpoint.save(directory, {"params": params, "epoch": 3}, step=10)
    >>> sorted(os.listdir(path)), checkpoint.latest_step(directory)
    (['arrays.safetensors', 'checkpoint.json'], 10)
    >>> restored = checkpoint.restore(directory)
    >>> restored["epoch"], restored["params"]["dense"]["w"].shape
    (3, (2, 3))
    >>> like = {"params": jax.eval_shape(lambda: params), "epoch": 0}
    >>> checkpoint.restore(directory, like, step=10)["params"]["dense"]["b"]
    Array([0., 0., 0.], dtype=float32)
"""
from __future__ import annotations

import dataclasses
import errno
import hashlib
import importlib
import json
import os
import re
import secrets
import shutil
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy

from jdl._checks import (NonNegativeInt, PositiveInt, check_bool, check_declared, check_non_negative_int, check_that,
                          is_concrete)
from jdl.io import _fsync_directory, _to_json, atomic_write_bytes, atomic_write_json

__all__ = ["CheckpointManager", "all_steps", "latest_step", "read_metadata", "restore", "save"]

FORMAT, FORMAT_VERSION = "jdl.checkpoint", 1
ARRAYS_FILE, INFO_FILE = "arrays.safetensors", "checkpoint.json"
_STEP = re.compile(r"step_(0|[1-9][0-9]*)")  # no leading zeros: one name per step
# What safetensors.numpy.load gives back; other dtypes are stored as their bits.
_NATIVE = frozenset({"float64", "float32", "float16", "int64", "uint64", "int32", "uint32", "int16", "uint16",
                     "int8", "uint8", "bool", "complex64"})
_SCALAR_DTYPES = {"bool": np.bool_, "int": np.int64, "float": np.float64}
_LEAF_KINDS = ("array", "key", "scalar")
_LEAVES = "arrays, Python scalars (bool, int, float) or None as leaves"
_SHARD = "#"  # between a leaf's path and a shard's index in a multi-process save's files
SHARDED_FORMAT_VERSION = 2  # a multi-process save: one arrays file per process


# ----------------------------------------------------------------------------- describing a tree

def _join(name: str, part: Any) -> str:
    return f"{name}/{part}" if name else str(part)


def _describe(tree: Any, leaf_fn: Callable[[Any, str], dict], where: str, name: str = "") -> dict:
    """The JSON description of ``tree``'s structure; ``leaf_fn(leaf, name)`` describes each leaf.

    Containers are matched as ``jax.tree_util`` sees them: any dict, NamedTuple (a tuple with
    ``_fields``), list or tuple; ``None`` is an empty node. Other pytree nodes reach ``leaf_fn``.
    """
    if tree is None:
        return {"kind": "none"}
    if isinstance(tree, dict):
        bad = [key for key in tree if isinstance(key, bool) or not isinstance(key, (str, int))]
        check_that(not bad, where, "dict keys that are str or int",
                   f"{next(iter(bad), None)!r} in {name or 'the tree'}", TypeError)
        return {"kind": "dict", "keys": list(tree),
                "children": [_describe(value, leaf_fn, where, _join(name, key)) for key, value in tree.items()]}
    if isinstance(tree, tuple) and hasattr(type(tree), "_fields"):
        cls = type(tree)
        return {"kind": "namedtuple", "module": cls.__module__, "qualname": cls.__qualname__,
                "fields": list(cls._fields),
                "children": [_describe(value, leaf_fn, where, _join(name, field))
                             for field, value in zip(cls._fields, tree)]}
    if isinstance(tree, (list, tuple)):
        return {"kind": "list" if isinstance(tree, list) else "tuple",
                "children": [_describe(value, leaf_fn, where, _join(name, index)) for index, value in enumerate(tree)]}
    return leaf_fn(tree, name)


def _leaf_spec(leaf: Any, name: str, where: str) -> dict:
    """A leaf's kind, dtype and shape (no values): an array, a typed key array or a Python scalar."""
    if type(leaf) in (bool, int, float):  # exact types: np.float64 subclasses float but is an array here
        return {"kind": "scalar", "type": type(leaf).__name__}
    check_that(hasattr(leaf, "shape") and hasattr(leaf, "dtype"), where, _LEAVES,
               f"{type(leaf).__name__} at {name or 'the tree'}", TypeError)
    if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
        return {"kind": "key", "dtype": str(leaf.dtype), "shape": list(leaf.shape)}
    return {"kind": "array", "dtype": np.dtype(leaf.dtype).name, "shape": list(leaf.shape)}


def _storable(dtype: np.dtype) -> bool:
    """Numbers and booleans: NumPy's own kinds and ml_dtypes' (bfloat16, float8, int4)."""
    return dtype.kind in "biufc" or dtype.type.__module__ == "ml_dtypes"


def _encode(array: np.ndarray) -> np.ndarray:
    """The array as safetensors stores it: itself, or its bits as unsigned ints of the same width
    when safetensors' NumPy API cannot read the dtype back (complex128: bytes on a new last axis)."""
    array = np.asarray(array, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
    if array.dtype.name in _NATIVE:
        return array
    if array.dtype.itemsize in (1, 2, 4, 8):
        return array.view(f"uint{8 * array.dtype.itemsize}")
    return array.reshape(array.shape + (1,)).view(np.uint8)


def _store_leaf(leaf: Any, name: str, where: str, arrays: dict, shards: bool = False) -> dict:
    """Describe ``leaf`` and put its values, as safetensors takes them, in ``arrays[name]``.

    With ``shards`` (a multi-process save) a jax array's values are this process's shards
    instead, one entry per shard it holds the first replica of (``name#0:2,0:8``: its index
    along each axis); other leaves are stored by process 0 alone."""
    spec = _leaf_spec(leaf, name, where)
    check_that(spec["kind"] == "scalar" or is_concrete(leaf), where, "concrete values to save",
               f"a {type(leaf).__name__} at {name or 'the tree'}", TypeError)
    check_that(name not in arrays, where, "distinct leaf paths", f"two leaves at {name!r} (a key with '/'?)")
    if spec["kind"] == "scalar":
        check_that(spec["type"] != "int" or -2**63 <= leaf < 2**63, where, "Python ints that fit int64",
                   f"{leaf} at {name}")
        data = np.asarray(leaf, _SCALAR_DTYPES[spec["type"]])
    elif spec["kind"] == "key":
        spec["impl"] = str(jax.random.key_impl(leaf))
        data = jax.random.key_data(leaf)
    else:
        data = leaf
        check_that(_storable(np.dtype(data.dtype)), where, _LEAVES, f"a {np.dtype(data.dtype)} array at {name}",
                   TypeError)
    stored_dtype, stored_shape = _encoded_layout(np.dtype(data.dtype), tuple(data.shape))
    if shards and isinstance(data, jax.Array):
        spec["sharded"] = True
        for shard in data.addressable_shards:
            if shard.replica_id == 0:  # one copy of each part across all processes
                arrays[f"{name}{_SHARD}{_index_text(shard.index, data.shape)}"] = _encode(np.asarray(shard.data))
    elif not shards:
        arrays[name] = _encode(np.asarray(data))  # fetches a device array to the host
    elif jax.process_index() == 0:  # every key of a sharded save ends "#<index>": "#" alone for a whole leaf
        arrays[f"{name}{_SHARD}"] = _encode(np.asarray(data))
    return {**spec, "name": name, "stored_dtype": stored_dtype, "stored_shape": list(stored_shape)}


def _encoded_layout(dtype: np.dtype, shape: tuple[int, ...]) -> tuple[str, tuple[int, ...]]:
    """The dtype name and shape :func:`_encode` gives an array of ``dtype`` and ``shape``."""
    if dtype.name in _NATIVE:
        return dtype.name, shape
    if dtype.itemsize in (1, 2, 4, 8):
        return f"uint{8 * dtype.itemsize}", shape
    return "uint8", shape + (dtype.itemsize,)


def _index_text(index: tuple[slice, ...], shape: tuple[int, ...]) -> str:
    """A shard's index as ``"start:stop,start:stop"`` (one pair per axis, none for a 0-d array)."""
    return ",".join(f"{part.indices(size)[0]}:{part.indices(size)[1]}" for part, size in zip(index, shape))


def _index_from_text(text: str) -> tuple[slice, ...]:
    pairs = [pair.split(":") for pair in text.split(",")] if text else []
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError(f"not start:stop pairs: {text!r}")
    return tuple(slice(int(start), int(stop)) for start, stop in pairs)


# ----------------------------------------------------------------------------- saving

def _hidden_directory(directory: str, purpose: str) -> str:
    """A new, hidden directory beside the steps (``.tmp-`` as jdl.io's temporary files), for a
    save in progress or a step on its way out; the kernel gives it the umask's mode."""
    for _ in range(100):
        path = os.path.join(directory, f".tmp-{secrets.token_hex(8)}-{purpose}")
        try:
            os.mkdir(path, 0o777)
        except FileExistsError:
            continue
        return path
    raise FileExistsError(f"could not create a temporary directory in {directory}")


def _publish(staged: str, final: str, overwrite: bool, where: str) -> None:
    """Rename the complete ``staged`` directory to ``final``; see the module docstring for an existing one."""
    holder = aside = None
    if overwrite and os.path.isdir(final):
        holder = _hidden_directory(os.path.dirname(final), f"replaced-{os.path.basename(final)}")
        aside = os.path.join(holder, "old")
        try:
            os.rename(final, aside)
        except FileNotFoundError:  # another writer moved it first
            aside = None
    try:
        os.rename(staged, final)
    except OSError as error:
        if aside is not None:
            os.rename(aside, final)
        if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
            raise FileExistsError(f"{where}: expected a new step (pass overwrite=True to replace it), got {final}, "
                                  f"saved meanwhile by another writer") from error
        raise
    finally:
        if holder is not None:
            shutil.rmtree(holder, ignore_errors=True)


def save(directory: str | os.PathLike, tree: Any, *, step: int, metadata: Any = None,
         metrics: dict | None = None, overwrite: bool = False) -> str:
    """Save ``tree`` as ``<directory>/step_<step>`` atomically; return that path.

    ``metadata`` and ``metrics`` are stored in the JSON as they are (standard JSON: NaN is refused).
    An existing step raises ``FileExistsError`` unless ``overwrite=True``.
    """
    directory = os.fspath(directory)
    where = f"jdl.checkpoint.save({directory})"
    check_non_negative_int(where, "step", step)
    check_bool(where, "overwrite", overwrite)
    final = os.path.join(directory, f"step_{step}")
    check_that(overwrite or not os.path.exists(final), where, "a new step (pass overwrite=True to replace it)",
               f"existing {final}", FileExistsError)
    if jax.process_count() > 1:
        return _save_sharded(directory, final, tree, step, metadata, metrics, overwrite, where)
    arrays: dict[str, np.ndarray] = {}
    tree_json = _describe(tree, lambda leaf, name: _store_leaf(leaf, name, where, arrays), where)
    payload = safetensors.numpy.save(arrays, metadata={"format": FORMAT, "step": str(step)})
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "jdl_version": _jdl_version(), "step": step,
            "metadata": metadata, "metrics": metrics, "arrays_sha256": hashlib.sha256(payload).hexdigest(),
            "tree": tree_json}
    os.makedirs(directory, exist_ok=True)
    staged = _hidden_directory(directory, f"step_{step}")
    try:
        atomic_write_json(os.path.join(staged, INFO_FILE), info)  # first: refuses bad metadata before the big write
        atomic_write_bytes(os.path.join(staged, ARRAYS_FILE), payload)  # both fsync the files and the directory
        _publish(staged, final, overwrite, where)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # gone after a successful rename; the debris of a failed one
    _fsync_directory(directory)
    return final


def _process_file(process: int) -> str:
    return f"arrays.process_{process}.safetensors"


def _save_sharded(directory: str, final: str, tree: Any, step: int, metadata: Any, metrics: Any,
                  overwrite: bool, where: str) -> str:
    """A multi-process save (``jax.distributed``): every process calls it with the same global tree.

    Each process writes the shards it holds into its own arrays file in one staging directory
    (the directory must be on a filesystem every process sees); process 0 then writes the JSON,
    with every file's SHA-256, and publishes the step with one rename. Each stage ends with the
    processes telling each other whether their part worked (a collective), so a failure
    anywhere raises in every process (the failing one its own error) instead of leaving the
    others waiting, and the step stays unpublished."""
    from jax.experimental import multihost_utils

    process = jax.process_index()
    # Refused here, before any collective, not by process 0 alone when it writes the JSON.
    json.dumps(_to_json({"metadata": metadata, "metrics": metrics}, "save"), allow_nan=False)
    arrays: dict[str, np.ndarray] = {}
    tree_json = _describe(tree, lambda leaf, name: _store_leaf(leaf, name, where, arrays, shards=True), where)
    payload = safetensors.numpy.save(arrays, metadata={"format": FORMAT, "step": str(step)})
    digests = multihost_utils.process_allgather(np.frombuffer(hashlib.sha256(payload).digest(), np.uint8))
    # One staging directory for all: its name from a number process 0 draws.
    token = int(multihost_utils.broadcast_one_to_all(np.int64(secrets.randbits(62))))
    staged = os.path.join(directory, f".tmp-{token:016x}-step_{step}")
    try:
        _in_every_process(lambda: os.makedirs(staged) if process == 0 else None, "create the staging directory",
                          where)
        _in_every_process(lambda: atomic_write_bytes(os.path.join(staged, _process_file(process)), payload),
                          "write its arrays file", where)

        def publish():
            if process == 0:
                info = {"format": FORMAT, "format_version": SHARDED_FORMAT_VERSION, "jdl_version": _jdl_version(),
                        "step": step, "metadata": metadata, "metrics": metrics,
                        "arrays_sha256": {_process_file(i): bytes(digest).hex()
                                          for i, digest in enumerate(np.asarray(digests, np.uint8))},
                        "tree": tree_json}
                atomic_write_json(os.path.join(staged, INFO_FILE), info)
                _publish(staged, final, overwrite, where)
                _fsync_directory(directory)

        _in_every_process(publish, "publish the step", where)
    finally:
        if process == 0:
            shutil.rmtree(staged, ignore_errors=True)  # gone after a successful rename; the debris of a failed one
    return final


def _in_every_process(part: Callable[[], Any], stage: str, where: str) -> None:
    """Run this process's ``part`` of ``stage``, then agree with every process on whether all
    parts worked (a collective): the failing process re-raises its error, the others a
    ``RuntimeError`` naming it, so none is left waiting at the next barrier."""
    from jax.experimental import multihost_utils

    error = None
    try:
        part()
    except Exception as caught:  # noqa: BLE001 - re-raised below, after the others are told
        error = caught
    failed = np.flatnonzero(np.asarray(multihost_utils.process_allgather(np.int32(error is not None))))
    if error is not None:
        raise error
    if failed.size:
        raise RuntimeError(f"{where}: expected every process to {stage}, got a failure in process(es) "
                           f"{failed.tolist()}; the step was not published")


def _jdl_version() -> str:
    import jdl  # here, not at the top: jdl/__init__ imports this module before it sets __version__

    return jdl.__version__


# ----------------------------------------------------------------------------- finding steps

def all_steps(directory: str | os.PathLike) -> list[int]:
    """The steps saved in ``directory``, ascending (``[]`` if it does not exist). Only complete
    checkpoints have a ``step_<N>`` name: saves in progress are hidden."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    return sorted(int(match.group(1)) for match in map(_STEP.fullmatch, names) if match)


def latest_step(directory: str | os.PathLike) -> int | None:
    """The highest saved step, or ``None`` when there is none."""
    steps = all_steps(directory)
    return steps[-1] if steps else None


def _step_directory(directory: str, step: int | None, where: str) -> str:
    """``<directory>/step_<step>`` (the latest when ``step`` is None), or an error listing the steps there are."""
    steps = all_steps(directory)
    check_that(steps, where, f"a checkpoint (a step_<N> directory) in {directory}", "none", FileNotFoundError)
    step = steps[-1] if step is None else step
    check_that(step in steps, where, f"step {step!r} in {directory}", f"only steps {steps}", FileNotFoundError)
    return os.path.join(directory, f"step_{step}")


# ----------------------------------------------------------------------------- reading

def _read_info(step_dir: str, where: str) -> dict:
    path = os.path.join(step_dir, INFO_FILE)
    try:
        with open(path, encoding="utf-8") as file:
            info = json.load(file)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{where}: expected the metadata file {path}, got none; the checkpoint "
                                f"was altered after it was saved") from error
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{where}: expected JSON in {path}, got a corrupted file ({error})") from error
    check_that(isinstance(info, dict) and info.get("format") == FORMAT and info.get("format_version") in (FORMAT_VERSION, SHARDED_FORMAT_VERSION),
               where, f"{path} in the {FORMAT} format, version {FORMAT_VERSION} or {SHARDED_FORMAT_VERSION}", "another file", ValueError)
    return info


def _read_arrays(step_dir: str, info: dict, where: str) -> dict[str, np.ndarray]:
    """Every leaf's stored array by path: from the one arrays file, or assembled from the
    shards of a multi-process save's files (every file is read: any mesh can restore it)."""
    digests = info["arrays_sha256"]
    if isinstance(digests, str):
        return _read_file(step_dir, ARRAYS_FILE, digests, where)
    pieces: dict[str, np.ndarray] = {}
    for file_name, digest in digests.items():
        check_that(re.fullmatch(r"arrays\.process_(0|[1-9][0-9]*)\.safetensors", file_name), where,
                   f"arrays files named arrays.process_<i>.safetensors in {INFO_FILE}", repr(file_name))
        for key, piece in _read_file(step_dir, file_name, digest, where).items():
            check_that(key not in pieces, where, "each shard in one file", f"{key!r} in two files")
            pieces[key] = piece
    return _assemble(pieces, info["tree"], where)


def _read_file(step_dir: str, file_name: str, digest: str, where: str) -> dict[str, np.ndarray]:
    path = os.path.join(step_dir, file_name)
    try:
        with open(path, "rb") as file:
            payload = file.read()
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{where}: expected the arrays file {path}, got none") from error
    check_that(hashlib.sha256(payload).hexdigest() == digest, where,
               f"{path} with the SHA-256 {INFO_FILE} records", "other bytes: the file is truncated or corrupted, "
               "or comes from another save")
    try:
        return safetensors.numpy.load(payload)
    except (safetensors.SafetensorError, KeyError, ValueError) as error:
        raise ValueError(f"{where}: expected a safetensors file at {path}, got an unreadable one "
                         f"({error!r})") from error


def _assemble(pieces: dict[str, np.ndarray], tree: dict, where: str) -> dict[str, np.ndarray]:
    """Each leaf from a multi-process save's pieces (keys ``<path>#<index>``; ``#`` alone for a
    leaf stored whole): a sharded leaf put together with every element exactly once."""
    parts: dict[str, list] = {}
    for key, piece in pieces.items():
        name, separator, index = key.rpartition(_SHARD)
        check_that(separator, where, f"keys <path>{_SHARD}<index> in a multi-process save", repr(key))
        parts.setdefault(name, []).append((_parse_index(index, key, where), piece))
    arrays = {}
    for node in _leaves(tree):
        found = parts.pop(node["name"], None)
        if found is None:
            continue  # _decode_leaves names what is missing
        if not node.get("sharded"):
            check_that(len(found) == 1 and found[0][0] == (), where, f"{node['name']} stored whole, once",
                       f"{len(found)} pieces")
            arrays[node["name"]] = found[0][1]
            continue
        full = np.zeros(node["stored_shape"], node["stored_dtype"])
        covered = np.zeros(full.shape[:len(found[0][0])], np.int64)  # the axes an index names
        for index, piece in found:
            within = all(0 <= part.start <= part.stop <= size for part, size in zip(index, covered.shape))
            check_that(within and len(index) == covered.ndim and piece.shape == full[index].shape
                       and piece.dtype == full.dtype, where, f"shards of {node['name']} that fit its "
                       f"{full.dtype.name} {list(full.shape)}", f"a {piece.dtype.name} {list(piece.shape)} piece at "
                       f"{_index_text(index, covered.shape)}")
            full[index] = piece
            covered[index] += 1
        check_that(bool(np.all(covered == 1)), where, f"the shards of {node['name']} to cover it once",
                   f"{int(np.sum(covered == 0))} elements missing and {int(np.sum(covered > 1))} stored twice")
        arrays[node["name"]] = full
    arrays.update({f"{name}{_SHARD}": None for name in parts})  # pieces of no leaf: "unexpected"
    return arrays


def _parse_index(text: str, key: str, where: str) -> tuple[slice, ...]:
    try:
        return _index_from_text(text)
    except ValueError as error:
        raise ValueError(f"{where}: expected a shard index start:stop,... after {_SHARD!r}, got {key!r}") from error


def _leaves(node: dict):
    """The leaf nodes of a description, in order."""
    if node["kind"] in _LEAF_KINDS:
        yield node
    for child in node.get("children", ()):
        yield from _leaves(child)


def _decode(node: dict, stored: np.ndarray, where: str) -> Any:
    """A leaf's value from its stored array: a NumPy array, a Python scalar or a jax key array."""
    expected = (node["stored_dtype"], node["stored_shape"])
    check_that((stored.dtype.name, list(stored.shape)) == expected, where, f"{node['name'] or 'the tree'} stored "
               f"as {expected[0]} {expected[1]} ({INFO_FILE})",
               f"{stored.dtype.name} {list(stored.shape)} in {ARRAYS_FILE}")
    if node["kind"] == "scalar":
        return stored.item()  # a Python bool, int or float: int64 / float64 hold them exactly
    if node["kind"] == "key":
        return jax.random.wrap_key_data(jnp.asarray(stored), impl=node["impl"])
    dtype = np.dtype(jnp.dtype(node["dtype"]))
    check_that(_storable(dtype), where, _LEAVES, f"dtype {dtype} at {node['name']} ({INFO_FILE})", TypeError)
    return stored if stored.dtype == dtype else stored.view(dtype).reshape(node["shape"])


def _decode_leaves(tree: dict, arrays: dict, where: str) -> dict[str, Any]:
    """Every leaf's value by path, once the two files are shown to belong together."""
    nodes = list(_leaves(tree))
    listed = {node["name"] for node in nodes}
    missing, extra = sorted(listed - arrays.keys()), sorted(arrays.keys() - listed)
    check_that(not missing and not extra, where, f"{ARRAYS_FILE} to hold exactly the arrays {INFO_FILE} lists",
               f"missing {missing}, unexpected {extra}: the two files are not from one save")
    return {node["name"]: _decode(node, arrays[node["name"]], where) for node in nodes}


def _as_jax(value: Any, name: str, where: str) -> Any:
    """NumPy arrays as jax arrays; a 64-bit dtype JAX would silently narrow (x64 off) is refused."""
    if not isinstance(value, np.ndarray):
        return value
    _check_jax_holds(value, name, where)
    return jnp.asarray(value)


def _check_jax_holds(value: np.ndarray, name: str, where: str) -> None:
    check_that(jax.dtypes.canonicalize_dtype(value.dtype) == value.dtype, where,
               f"a dtype JAX holds at {name or 'the tree'}",
               f"{value.dtype} (enable jax_enable_x64, or restore with a NumPy array in like)", TypeError)


def _named_tuple_class(node: dict, name: str, where: str) -> type:
    """The NamedTuple class the JSON names, imported by module and qualname, with the recorded fields."""
    label = f"{node['module']}.{node['qualname']}"
    try:
        cls = importlib.import_module(node["module"])
        for part in node["qualname"].split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError) as error:
        raise ImportError(f"{where}: cannot import the NamedTuple {label} at {name or 'the tree'} ({error}); "
                          f"restore with like= to give the structure") from error
    check_that(isinstance(cls, type) and issubclass(cls, tuple) and list(getattr(cls, "_fields", ())) == node["fields"],
               where, f"{label} to be a NamedTuple with fields {node['fields']}", repr(cls), TypeError)
    return cls


def _build(node: dict, values: dict, where: str, name: str = "") -> Any:
    """The tree the description gives, with jax arrays at the leaves."""
    kind = node["kind"]
    if kind == "none":
        return None
    if kind in _LEAF_KINDS:
        return _as_jax(values[node["name"]], name, where)
    parts = {"dict": node.get("keys"), "namedtuple": node.get("fields")}.get(kind) or range(len(node["children"]))
    children = [_build(child, values, where, _join(name, part)) for part, child in zip(parts, node["children"])]
    if kind == "dict":
        return dict(zip(node["keys"], children))
    if kind == "namedtuple":
        return _named_tuple_class(node, name, where)(*children)
    return children if kind == "list" else tuple(children)


# ----------------------------------------------------------------------------- restoring

def _what(node: dict) -> str:
    """A description node in words, for errors."""
    kind = node["kind"]
    if kind in ("array", "key"):
        return f"{'a PRNG key array' if kind == 'key' else 'an array'} of shape {tuple(node['shape'])} {node['dtype']}"
    if kind == "dict":
        return f"a dict with keys {sorted(node['keys'], key=str)}"
    if kind == "namedtuple":
        return f"a NamedTuple with fields {node['fields']}"
    if kind in ("list", "tuple"):
        return f"a {kind} of length {len(node['children'])}"
    return f"a Python {node['type']}" if kind == "scalar" else "None"


def _mismatch(stored: dict, wanted: dict, name: str = "") -> tuple[str, str] | None:
    """``(expected, got)`` in words at the first path where the checkpoint's tree differs from
    ``like``'s, or ``None``. Dicts are matched by key, so key order does not matter; NamedTuples
    by fields, not by class (optax's and jdl's ``ScaleByAdamState`` are interchangeable)."""
    shown = name or "the tree"
    if stored["kind"] == wanted["kind"] and stored["kind"] in ("array", "key"):
        same = (stored["shape"], stored["dtype"]) == (wanted["shape"], wanted["dtype"])
        return None if same else (f"{shown} of shape {tuple(wanted['shape'])} {wanted['dtype']} (from like)",
                                  f"{tuple(stored['shape'])} {stored['dtype']}")
    parts = {"dict": "keys", "namedtuple": "fields"}.get(stored["kind"])
    children, wanted_children = stored.get("children", ()), wanted.get("children", ())
    same = stored["kind"] == wanted["kind"] and stored.get("type") == wanted.get("type") and (
        sorted(stored["keys"], key=str) == sorted(wanted["keys"], key=str) if parts == "keys"
        else stored.get(parts) == wanted.get(parts) and len(children) == len(wanted_children))
    if not same:
        return f"{shown} to be {_what(wanted)} (from like)", f"{_what(stored)}; is this a checkpoint of another model?"
    if parts == "keys":
        pairs = [(key, children[stored["keys"].index(key)], child)
                 for key, child in zip(wanted["keys"], wanted_children)]
    else:
        pairs = list(zip(wanted.get("fields") or range(len(wanted_children)), children, wanted_children))
    return next(filter(None, (_mismatch(mine, theirs, _join(name, part)) for part, mine, theirs in pairs)), None)


def _as_like(value: Any, like_leaf: Any, name: str, where: str) -> Any:
    """A restored leaf as ``like``'s leaf is: NumPy for NumPy, else jax (on ``like``'s sharding if it has one)."""
    if isinstance(like_leaf, (np.ndarray, np.generic)):
        return np.array(value)  # a copy: arrays read from the file are read-only
    sharding = getattr(like_leaf, "sharding", None)
    if sharding is None or not isinstance(value, (np.ndarray, jax.Array)):
        return _as_jax(value, name, where)
    if isinstance(value, jax.Array) and jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(_place(np.asarray(jax.random.key_data(value)), sharding, name, where),
                                        impl=jax.random.key_impl(value))
    return _place(value, sharding, name, where)


def _place(value: np.ndarray, sharding: jax.sharding.Sharding, name: str, where: str) -> jax.Array:
    """``value`` laid out as ``sharding`` says, each process putting only its own devices' parts
    (so it works across processes, where ``jax.device_put`` of a host array may not)."""
    _check_jax_holds(value, name, where)
    return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def _path_name(path: tuple) -> str:
    """A ``tree_flatten_with_path`` path as the checkpoint names it: ``encoder/block_0/query/w``."""
    parts = [getattr(entry, "key", getattr(entry, "idx", getattr(entry, "name", entry))) for entry in path]
    return "/".join(map(str, parts))


def restore(directory: str | os.PathLike, like: Any = None, *, step: int | None = None) -> Any:
    """The tree saved at ``step`` (the latest when ``None``) in ``directory``.

    Without ``like`` the tree is rebuilt from the JSON: dicts, lists, tuples, ``None``, and
    NamedTuples re-imported by module and qualname (an ``ImportError`` naming the class when
    that fails: pass ``like`` then). With ``like`` (arrays, ``jax.ShapeDtypeStruct`` s, Python
    scalars) the stored structure, shapes and dtypes must match it, and the result has
    ``like``'s structure. Leaves are jax arrays (NumPy where ``like`` has NumPy), typed key
    arrays and Python scalars, bit for bit as saved.
    """
    directory = os.fspath(directory)
    step_dir = _step_directory(directory, step, f"jdl.checkpoint.restore({directory})")
    where = f"jdl.checkpoint.restore({step_dir})"
    info = _read_info(step_dir, where)
    values = _decode_leaves(info["tree"], _read_arrays(step_dir, info, where), where)
    if like is None:
        return _build(info["tree"], values, where)
    mismatch = _mismatch(info["tree"], _describe(like, lambda leaf, name: _leaf_spec(leaf, name, where), where))
    if mismatch:
        raise ValueError(f"{where}: expected {mismatch[0]}, got {mismatch[1]}")
    paths, treedef = jax.tree_util.tree_flatten_with_path(like)
    return jax.tree_util.tree_unflatten(
        treedef, [_as_like(values[_path_name(path)], leaf, _path_name(path), where) for path, leaf in paths])


def read_metadata(directory: str | os.PathLike, *, step: int | None = None) -> dict:
    """``{"step", "metadata", "metrics", "jdl_version"}`` of a checkpoint (the latest when ``step`` is None),
    read from its JSON alone."""
    directory = os.fspath(directory)
    where = f"jdl.checkpoint.read_metadata({directory})"
    info = _read_info(_step_directory(directory, step, where), where)
    return {key: info.get(key) for key in ("step", "metadata", "metrics", "jdl_version")}


# ----------------------------------------------------------------------------- the manager

def _remove_step(directory: str, step: int) -> None:
    """Delete a step: first renamed to a hidden name (one atomic step out of readers' sight), then removed."""
    hidden = _hidden_directory(directory, f"removed-step_{step}")
    try:
        os.rename(os.path.join(directory, f"step_{step}"), os.path.join(hidden, "old"))
    except FileNotFoundError:
        pass  # another manager removed it first
    finally:
        shutil.rmtree(hidden, ignore_errors=True)


@dataclasses.dataclass(frozen=True)
class CheckpointManager:
    """Saves steps into ``directory``, keeping the last ``max_to_keep`` (``None``: all) and, with
    ``best_metric``, the ``keep_best`` best by that metric (lowest for ``best_mode="min"``).

    The manager holds no state but its settings: the steps and their metrics (recorded in
    each checkpoint's JSON) are read from the directory, so a new manager over an existing
    directory, or several managers at once, see the same checkpoints. Each save is atomic
    (see the module docstring); a step removed by pruning is renamed out of sight first.

    Example:
        >>> import tempfile, jax.numpy as jnp
        >>> from jdl.checkpoint import CheckpointManager
        >>> manager = CheckpointManager(tempfile.mkdtemp(), max_to_keep=2, best_metric="loss")
        >>> for step, loss in [(1, 0.5), (2, 0.1), (3, 0.4), (4, 0.3)]:
        ...     _ = manager.save(step, {"w": jnp.full(2, step)}, metrics={"loss": loss})
        >>> manager.steps(), manager.best_step(), manager.latest_step()
        ([2, 3, 4], 2, 4)
        >>> manager.restore(step=2)["w"]
        Array([2, 2], dtype=int32)
    """

    directory: str | os.PathLike
    max_to_keep: PositiveInt | None = 5
    best_metric: str | None = None
    best_mode: Literal["min", "max"] = "min"
    keep_best: NonNegativeInt = 1

    def __post_init__(self):
        check_declared(self, type(self), self)
        object.__setattr__(self, "directory", os.fspath(self.directory))

    def save(self, step: int, tree: Any, *, metrics: dict | None = None, metadata: Any = None,
             overwrite: bool = False) -> str:
        """Save ``tree`` as ``step`` (see :func:`save`), then remove the steps no longer kept.

        A step saved without ``best_metric`` among its ``metrics`` (no evaluation yet, or a NaN
        one) is never ranked among the best: it is kept only while it is among the last.
        """
        path = save(self.directory, tree, step=step, metadata=metadata, metrics=metrics, overwrite=overwrite)
        steps = self.steps()
        kept = set(steps if self.max_to_keep is None else steps[-self.max_to_keep:])
        kept |= set(self._ranked(steps)[:self.keep_best])
        for old in set(steps) - kept:
            _remove_step(self.directory, old)
        return path

    def _ranked(self, steps: list[int]) -> list[int]:
        """The steps that record ``best_metric``, best first (the earlier step wins a tie)."""
        if self.best_metric is None:
            return []
        sign = 1.0 if self.best_mode == "min" else -1.0
        scored = [(sign * value, step) for step in steps if (value := self._metric(step)) is not None]
        return [step for _, step in sorted(scored)]

    def _metric(self, step: int) -> float | None:
        try:
            info = _read_info(os.path.join(self.directory, f"step_{step}"), repr(self))
        except FileNotFoundError:  # removed meanwhile by another manager
            return None
        value = (info.get("metrics") or {}).get(self.best_metric)
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def restore(self, like: Any = None, step: int | None = None) -> Any:
        """:func:`restore` from this manager's directory (the latest step when ``step`` is None)."""
        return restore(self.directory, like, step=step)

    def read_metadata(self, step: int | None = None) -> dict:
        return read_metadata(self.directory, step=step)

    def steps(self) -> list[int]:
        return all_steps(self.directory)

    def latest_step(self) -> int | None:
        return latest_step(self.directory)

    def best_step(self) -> int | None:
        """The best step by ``best_metric`` among those saved, or ``None`` (no metric, or no checkpoint)."""
        ranked = self._ranked(self.steps())
        return ranked[0] if ranked else None
