"""Sharding rules: where each param lives on a device mesh, by its readable name.

JAX is already the distributed engine (GSPMD: a jitted function whose inputs carry
``NamedSharding``s is partitioned by XLA, collectives included); what this module adds is
the plumbing that makes it one line for jdl's models. A **rule** maps a regular expression
over a param's path (``"decoder/block_0/self_attention/query/w"``, the keys of the params
tree joined by ``/``) to a ``PartitionSpec`` (or to a function of the param's shape that
returns one); the first rule whose pattern matches (``re.search``) decides, and a param no
rule matches is replicated. Presets:

* :func:`data_parallel`: every param replicated; the batch is split along ``data``.
* :func:`fsdp`: every param (and so the optimizer state, which has the params' shapes)
  split along ``data`` on its largest axis that divides evenly (ZeRO-3 / FSDP); small
  params (under ``min_size`` elements) stay replicated.
* :func:`tensor_parallel`: Megatron-LM's layout (Shoeybi et al., 2019) for jdl's names: the
  attention's query, key and value projections split by heads and its output projection by
  heads on its input side; the feed-forward's hidden layer split by hidden units and its
  output layer on its input side. Each block then needs one all-reduce forward and one
  backward per sub-layer, which XLA inserts.
* ``tensor_parallel() + fsdp()``: the product (rules are tuples; the first match wins, so
  the tensor-parallel names come first and the rest is sharded along ``data``).
  :func:`with_fsdp` also shards the tensor-parallel params along ``data`` on another axis.
* :func:`stacked` adapts any rules to params stacked on a leading layer axis (``nn.Repeat``,
  ``scan_layers``): the layer axis stays whole and the rest is split as for one block.

:func:`init` runs a model's (or a train state's) initialiser under ``jax.jit`` with the
rules' shardings as ``out_shardings``: each device computes only its own shards, and the
full params never exist on one device. :func:`shard_batch` places a batch split along the
data axis (in a multi-process run each process passes its own part, the rows
:func:`process_rows` names).

**Several processes** (hosts, or processes on one host): each runs the same script, calls
:func:`initialize_distributed` first (``jax.distributed.initialize``: one coordinator, every
process's devices in one global list; on CPU the collectives are gloo's), builds the same mesh
over ``jax.devices()`` and feeds its own rows of every batch; ``jit``, ``jdl.train`` and the
rules are unchanged, and ``jdl.checkpoint.save`` writes each process's shards to its own file.

Example (on one device the mesh is 1 x 1, and everything is where the rules say):
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn, sharding
    >>> mesh = sharding.make_mesh({"data": 1, "model": 1})
    >>> model = nn.Sequential([nn.Dense(8), nn.ReLU(), nn.Dense(2)])
    >>> rules = sharding.fsdp(min_size=1)
    >>> params, state = sharding.init(model.init, mesh, rules, jax.random.key(0), jnp.ones((4, 3)))
    >>> spec = sharding.partition_specs(rules, params, mesh)["dense_0"]["w"]   # (3, 8): the 8 split
    >>> spec == sharding.P(None, "data") == params["dense_0"]["w"].sharding.spec
    True
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Callable, Union

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jdl._checks import check_positive_int, check_that

P = PartitionSpec
SpecFunction = Callable[[tuple[int, ...], Mesh], PartitionSpec]
Rule = tuple[str, Union[PartitionSpec, SpecFunction]]
Rules = tuple[Rule, ...]


# ----------------------------------------------------------------------------- the mesh


def make_mesh(axes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A device mesh with named axes, ``{"data": 4, "model": 2}``: the sizes multiply to the
    number of devices (all of them by default), the first axis outermost."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = tuple(axes.values())
    check_that(all(isinstance(size, int) and size > 0 for size in sizes), "make_mesh",
               "positive int axis sizes", dict(axes))
    check_that(math.prod(sizes) == len(devices), "make_mesh", f"axis sizes whose product is the {len(devices)} "
               f"devices", f"{dict(axes)} (product {math.prod(sizes)})")
    return Mesh(np.asarray(devices).reshape(sizes), tuple(axes))


# ----------------------------------------------------------------------------- rules


def path_name(path: tuple) -> str:
    """A params path as the rules see it: the keys joined by ``/`` (``"encoder/block_0/norm_1/gamma"``)."""
    return "/".join(str(getattr(entry, "key", getattr(entry, "idx", getattr(entry, "name", entry)))) for entry in path)


def _axis_size(mesh: Mesh, axis: str | tuple[str, ...] | None) -> int:
    if axis is None:
        return 1
    return math.prod(mesh.shape[name] for name in ((axis,) if isinstance(axis, str) else axis))


def _check_spec(name: str, shape: tuple[int, ...], spec: PartitionSpec, mesh: Mesh) -> None:
    """A spec that fits the param: no more entries than axes, mesh axes that exist, even splits."""
    where = f"sharding rule for {name!r}"
    check_that(isinstance(spec, PartitionSpec), where, "a PartitionSpec", repr(spec), TypeError)
    check_that(len(spec) <= len(shape), where, f"a spec of at most {len(shape)} entries for shape {shape}", spec)
    for size, axis in zip(shape, spec):
        names = () if axis is None else (axis,) if isinstance(axis, str) else tuple(axis)
        missing = [a for a in names if a not in mesh.shape]
        check_that(not missing, where, f"mesh axes among {tuple(mesh.shape)}", f"{spec} (no axis {missing})")
        split = _axis_size(mesh, axis)
        check_that(size % split == 0, where, f"axes divisible by their mesh axes: {size} across {split} devices "
                   f"({axis!r})", f"{spec} for shape {shape}")


def spec_for(rules: Rules, name: str, shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
    """The first matching rule's spec for the param ``name`` of ``shape`` (replicated if none matches)."""
    for pattern, target in rules:
        if re.search(pattern, name):
            spec = target(tuple(shape), mesh) if callable(target) else target
            _check_spec(name, tuple(shape), spec, mesh)
            return spec
    return P()


def partition_specs(rules: Rules, params: Any, mesh: Mesh) -> Any:
    """The ``PartitionSpec`` of every leaf of ``params`` (arrays or ``jax.ShapeDtypeStruct``s), by its path."""
    return jax.tree_util.tree_map_with_path(
        lambda path, leaf: spec_for(rules, path_name(path), tuple(np.shape(leaf)), mesh), params)


def named_shardings(rules: Rules, params: Any, mesh: Mesh) -> Any:
    """:func:`partition_specs` as ``NamedSharding``s on ``mesh``."""
    return jax.tree.map(lambda spec: NamedSharding(mesh, spec), partition_specs(rules, params, mesh),
                        is_leaf=lambda x: isinstance(x, PartitionSpec))


# ----------------------------------------------------------------------------- presets


def data_parallel() -> Rules:
    """Every param replicated (the default for anything no rule matches): pure data parallelism."""
    return ()


def largest_even_axis(axis: str, min_size: int = 2**12) -> SpecFunction:
    """A spec function: split the param's largest axis that ``axis`` divides evenly (ties: the
    last such axis); replicate params under ``min_size`` elements or with no such axis."""

    def spec(shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
        candidates = [i for i, n in enumerate(shape) if n % mesh.shape[axis] == 0]
        if math.prod(shape) < min_size or not candidates:
            return P()
        return _on(shape, max(candidates, key=lambda i: (shape[i], i)), axis)

    return spec


def _on(shape: tuple[int, ...], index: int, axis: str) -> PartitionSpec:
    """``axis`` at ``index`` (trailing axes left out: ``P("data")``, not ``P("data", None)``)."""
    return P(*([None] * index + [axis]))


def fsdp(axis: str = "data", min_size: int = 2**12) -> Rules:
    """Fully sharded data parallelism: every param of at least ``min_size`` elements split along
    ``axis`` on its largest evenly divisible axis (its optimizer state follows the same specs)."""
    return ((r".", largest_even_axis(axis, min_size)),)


def tensor_parallel(axis: str = "model") -> Rules:
    """Megatron-LM's layout for jdl's attention and feed-forward names.

    * attention ``query|key|value/w`` ``(in, heads, head_dim)`` -> ``P(None, axis)``,
      their ``b`` ``(heads, head_dim)`` -> ``P(axis)``: each device holds whole heads;
    * attention ``out/w`` ``(heads, head_dim, out)`` -> ``P(axis)``; its bias replicated;
    * feed-forward ``hidden/w`` ``(d, d_ff)`` -> ``P(None, axis)``, ``hidden/b`` -> ``P(axis)``;
      ``output/w`` ``(d_ff, d)`` -> ``P(axis)``.

    Embeddings, norms and the remaining biases are replicated.
    """
    attention = r"(attention|self_attention|cross_attention)/"
    return (
        (attention + r"(query|key|value)/w$", P(None, axis)),
        (attention + r"(query|key|value)/b$", P(axis)),
        (attention + r"out/w$", P(axis)),
        (r"feed_forward/hidden/w$", P(None, axis)),
        (r"feed_forward/hidden/b$", P(axis)),
        (r"feed_forward/output/w$", P(axis)),
    )


def with_fsdp(rules: Rules, axis: str = "data", min_size: int = 2**12) -> Rules:
    """``rules`` with each matched spec also split along ``axis`` on its largest free axis that
    divides evenly, and every param no rule matches sharded by :func:`fsdp`: tensor x FSDP."""

    def also_on(target):
        def spec(shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
            base = tuple(target(shape, mesh) if callable(target) else target)
            base = base + (None,) * (len(shape) - len(base))
            free = [i for i, n in enumerate(shape) if base[i] is None and n % mesh.shape[axis] == 0]
            if math.prod(shape) < min_size or not free:
                return P(*base)
            index = max(free, key=lambda i: (shape[i], i))
            entries = [axis if i == index else entry for i, entry in enumerate(base)]
            while entries and entries[-1] is None:
                entries.pop()
            return P(*entries)

        return spec

    return tuple((pattern, also_on(target)) for pattern, target in rules) + fsdp(axis, min_size)


def stacked(rules: Rules, under: str = r"(?:^|/)blocks/(?!block_\d+/)") -> Rules:
    """``rules`` that also fit params stacked on a leading layer axis (:class:`~jdl.nn.Repeat`'s,
    ``scan_layers``'s), found by ``under`` in their path (by default ``blocks/`` not followed by
    an unrolled ``block_<i>/``): there a rule's spec is computed for one block's shape and
    shifted one axis right (``P(None, "model")`` -> ``P(None, None, "model")``), so the layer
    axis is never split. Params outside ``under`` keep the rules as they are. Write ``under``
    with non-capturing groups, so the rules' own backreferences keep their numbers."""

    def shifted(target):
        def spec(shape: tuple[int, ...], mesh: Mesh) -> PartitionSpec:
            return P(None, *(target(shape[1:], mesh) if callable(target) else target))

        return spec

    inside_stack = tuple((f"^(?=.*(?:{under}))(?:.*?)(?:{pattern})", shifted(target)) for pattern, target in rules)
    return inside_stack + tuple(rules)


# ----------------------------------------------------------------------------- placing things


def _like_params(tree: Any, params: Any, param_shardings: Any, replicated: NamedSharding) -> Any:
    """Shardings for a tree that holds copies of the params (an optimizer state's moments): each
    subtree with the params' structure and shapes gets the params' shardings, every other leaf
    (a step count, a scalar) is replicated."""
    treedef, shapes = jax.tree.structure(params), [np.shape(leaf) for leaf in jax.tree.leaves(params)]

    def is_params_like(node: Any) -> bool:
        return jax.tree.structure(node) == treedef and [np.shape(leaf) for leaf in jax.tree.leaves(node)] == shapes

    return jax.tree.map(lambda node: param_shardings if is_params_like(node) else replicated, tree,
                        is_leaf=is_params_like)


def train_state_shardings(rules: Rules, train_state: Any, mesh: Mesh) -> Any:
    """Shardings of a ``jdl.train.TrainState`` (arrays or shapes): the params by the rules, the
    optimizer state's params-shaped subtrees like the params, everything else replicated."""
    param_shardings = named_shardings(rules, train_state.params, mesh)
    replicated = NamedSharding(mesh, P())
    return type(train_state)(
        params=param_shardings,
        state=jax.tree.map(lambda _: replicated, train_state.state),
        opt_state=_like_params(train_state.opt_state, train_state.params, param_shardings, replicated),
        step=replicated, key=replicated)


def init(init_fn: Callable, mesh: Mesh, rules: Rules, *args) -> Any:
    """``init_fn(*args)`` computed in place on ``mesh``: ``(params, state)`` from a layer's
    ``init``, or a ``TrainState`` from ``jdl.train.init`` (``functools.partial`` it with the
    model and optimizer). The outputs' shardings are decided from their shapes
    (``jax.eval_shape``) before anything is computed, so no device ever holds the full params."""
    shapes = jax.eval_shape(init_fn, *args)
    replicated = NamedSharding(mesh, P())
    if hasattr(shapes, "opt_state") and hasattr(shapes, "params"):
        out_shardings = train_state_shardings(rules, shapes, mesh)
    else:
        params, state = shapes
        out_shardings = (named_shardings(rules, params, mesh), jax.tree.map(lambda _: replicated, state))
    return jax.jit(init_fn, out_shardings=out_shardings)(*args)


def initialize_distributed(coordinator_address: str, num_processes: int, process_id: int, *,
                           local_device_count: int | None = None, **kwargs) -> None:
    """Join a multi-process run: ``jax.distributed.initialize`` with these arguments (``kwargs``
    passed on), before anything else touches JAX's devices. ``local_device_count`` sets how many
    CPU devices this process has (``jax_num_cpu_devices``; for tests and CPU clusters: an
    accelerator's process has its chips). Afterwards ``jax.devices()`` lists every process's
    devices and ``jax.local_devices()`` this one's."""
    where = "sharding.initialize_distributed"
    check_positive_int(where, "num_processes", num_processes)
    check_that(isinstance(process_id, int) and 0 <= process_id < num_processes, where,
               f"a process_id in [0, {num_processes})", repr(process_id))
    if local_device_count is not None:
        jax.config.update("jax_num_cpu_devices", local_device_count)
    jax.distributed.initialize(coordinator_address, num_processes=num_processes, process_id=process_id, **kwargs)


def process_rows(mesh: Mesh, global_batch: int, axis: str | tuple[str, ...] = "data") -> slice:
    """The rows of a global batch of ``global_batch`` examples that this process feeds to
    :func:`shard_batch` (all of them in a single process): those its devices hold along ``axis``."""
    split = _axis_size(mesh, axis)
    check_that(global_batch % split == 0, "sharding.process_rows", f"a global batch that divides across the {split} "
               f"devices of {axis!r}", str(global_batch))
    held = {index[0].indices(global_batch)[:2] for index in
            batch_sharding(mesh, axis).addressable_devices_indices_map((global_batch,)).values()}
    rows = slice(min(start for start, _ in held), max(stop for _, stop in held))
    check_that(sum(stop - start for start, stop in held) == rows.stop - rows.start, "sharding.process_rows",
               "a mesh whose data axis holds this process's devices side by side (one run of rows)",
               f"rows {sorted(held)} of {global_batch}")
    return rows


def batch_sharding(mesh: Mesh, axis: str | tuple[str, ...] = "data") -> NamedSharding:
    """A batch's sharding: axis 0 split along ``axis`` (the data axes), the rest replicated."""
    return NamedSharding(mesh, P(axis))


def shard_batch(batch: Any, mesh: Mesh, axis: str | tuple[str, ...] = "data") -> Any:
    """Place a batch (any pytree of arrays, examples on axis 0) split along ``axis``.

    In a single process ``batch`` is the global batch. In a multi-process run
    (``jax.distributed``) each process passes its own part (``global_batch / process_count``
    examples) and the global array is assembled with ``jax.make_array_from_process_local_data``.
    """
    sharding = batch_sharding(mesh, axis)
    split = _axis_size(mesh, axis)

    def place(x):
        x = np.asarray(x) if not isinstance(x, jax.Array) else x
        if jax.process_count() > 1:
            return jax.make_array_from_process_local_data(sharding, np.asarray(x))
        check_that(x.ndim >= 1 and x.shape[0] % split == 0, "shard_batch", f"a batch whose axis 0 divides "
                   f"across the {split} devices of {axis!r}", f"shape {tuple(x.shape)}")
        return jax.device_put(x, sharding)

    return jax.tree.map(place, batch)
