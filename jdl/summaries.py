"""Model summaries: one row per layer with its output shape, params, bytes and FLOPs, computed without running it.

:func:`summary` traces ``model.apply`` on the example's shapes (``jax.make_jaxpr``: no
array is computed) while a recorder notes every :class:`~jdl.nn.Layer` ``apply`` call of
that forward pass (the hook :data:`jdl.nn.core.apply_hook`). Each call becomes a
:class:`Row`:

* ``path``: ``""`` for the model, then where the layer's params sit in its parent's
  (``conv_1``, ``encoder/block_0/self_attention``); a layer without params of its own falls
  back to the parent's field that holds it (``dropout``), then to its ``name``; a second
  call at the same path gets ``#2``.
* ``params`` and ``bytes``: the scalars and bytes of the params the call received
  (``sum(prod(shape))``, ``sum(prod(shape) * itemsize)``). Params a sibling already received
  (a shared embedding table) count once, at their first use, so that on a model whose
  parents hold no params of their own the children's rows add up to the parent's.
* ``flops``: the forward FLOPs of that call, children included: :func:`jaxpr_flops` of
  ``make_jaxpr`` of the layer's ``apply`` on the shapes it received. The model's row is the total.

**FLOPs** follow MaxText's convention: a multiply-add counts 2, and only the contractions
are counted:

* ``dot_general``: ``2 * prod(output shape) * prod(contracted sizes)``
  (``2 B N M`` for ``[B, N] @ [N, M]``);
* ``conv_general_dilated``: ``2 * output elements * prod(window) * in_channels / groups``.

Elementwise ops, reductions, softmax and normalisation are not counted. Sub-programs
are followed: ``jit``, custom JVP/VJP functions (their primal) and ``remat`` count once,
``scan`` ``length`` times (a recurrent layer over ``T`` steps is ``T`` steps),
``cond`` its costliest branch, ``while`` one iteration (then the count is a lower bound
and ``flops_exact`` is False: the trip count is unknown at trace time).

XLA's own count (``jax.jit(f).lower(...).compile().cost_analysis()["flops"]``) is the same
on bias-free dense layers and unpadded convolutions. It differs by design elsewhere: it adds
the elementwise ops (+2% on the MNIST-1D MLP, +4% on its CNN computed as matmuls), skips the
kernel taps that fall on padding (-2% on that CNN as XLA convolutions, -5% on a small padded
Conv2D net), and counts a loop's body once (a GRU over 40 steps reads a third of this count).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> from jdl.summaries import summary
    >>> model = nn.Sequential([nn.Dense(32), nn.ReLU(), nn.Dense(10)])
    >>> table = summary(model, jax.ShapeDtypeStruct((8, 40), jnp.float32))
    >>> [row.path for row in table.rows]
    ['', 'dense_0', 'relu_1', 'dense_2']
    >>> table.total_params, table.total_flops  # 40*32 + 32 + 32*10 + 10;  2*8*(40*32 + 32*10)
    (1642, 25600)
    >>> print(table)  # doctest: +NORMALIZE_WHITESPACE
    path        layer               output         params  bytes   FLOPs
    ----------  ------------------  -------------  ------  -----  ------
    sequential  Sequential(...)     float32[8,10]   1,642  6,568  25,600
      dense_0   Dense(features=32)  float32[8,32]   1,312  5,248  20,480
      relu_1    ReLU()              float32[8,32]       0      0       0
      dense_2   Dense(features=10)  float32[8,10]     330  1,320   5,120
    total                                           1,642  6,568  25,600
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import functools
import inspect
import math
from collections.abc import Mapping
from typing import Any, Callable, NamedTuple

import jax
import jax.extend.core
import jax.numpy as jnp
from jax.extend.core import ClosedJaxpr, Jaxpr

from jdl._checks import check_int_at_least, check_that
from jdl.nn.core import Layer, _key_struct, apply_hook

__all__ = ["summary", "Summary", "Row", "count_params", "flops", "jaxpr_flops", "FlopCount", "capture_intermediates"]

WHERE = "jdl.summary"


# ----------------------------------------------------------------------------- params


def _is_key(leaf: Any) -> bool:
    dtype = getattr(leaf, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _param_leaves(params: Any) -> list:
    """The leaves that are params: typed PRNG keys (``jax.random.key``) are not."""
    return [leaf for leaf in jax.tree.leaves(params) if not _is_key(leaf)]


def _size(leaf: Any) -> int:
    return math.prod(getattr(leaf, "shape", ()))


def _bytes(leaves: list) -> int:
    return sum(_size(leaf) * jnp.dtype(leaf.dtype).itemsize for leaf in leaves)


def count_params(params: Any) -> int:
    """The number of scalars in a params tree, ``sum(prod(leaf.shape))``; typed PRNG keys are not params.

    Leaves may be arrays, tracers or ``jax.ShapeDtypeStruct`` (``jax.eval_shape(model.init, ...)``).

    Example:
        >>> import jax.numpy as jnp
        >>> count_params({"dense": {"w": jnp.zeros((40, 32)), "b": jnp.zeros(32)}, "relu": {}})
        1312
    """
    return sum(_size(leaf) for leaf in _param_leaves(params))


# ----------------------------------------------------------------------------- FLOPs


class FlopCount(NamedTuple):
    """FLOPs of a program; ``exact`` is False when a ``while`` loop's body was counted once."""

    flops: int
    exact: bool = True


def _dot_flops(eqn) -> int:
    """``2 * prod(output shape) * prod(contracted sizes)``: one multiply-add per output and contracted index."""
    (lhs_contracting, _), _ = eqn.params["dimension_numbers"]
    lhs_shape = eqn.invars[0].aval.shape
    return 2 * _size(eqn.outvars[0].aval) * math.prod(lhs_shape[axis] for axis in lhs_contracting)


def _conv_flops(eqn) -> int:
    """``2 * output elements * prod(window) * in_channels / groups``: the kernel's in-feature axis
    already holds ``in_channels / groups``, so it is the product of the kernel's axes but the out-feature one."""
    kernel_shape = eqn.invars[1].aval.shape
    _, *per_output_axes = eqn.params["dimension_numbers"].rhs_spec
    return 2 * _size(eqn.outvars[0].aval) * math.prod(kernel_shape[axis] for axis in per_output_axes)


def _sub_jaxprs(eqn) -> list:
    """The programs an equation runs (a ``scan``'s body, a ``cond``'s branches, a ``jit``'s function)."""
    found = []
    for value in eqn.params.values():
        for item in value if isinstance(value, tuple) else (value,):
            if isinstance(item, (Jaxpr, ClosedJaxpr)):
                found.append(item)
    return found


def _sum(counts) -> FlopCount:
    counts = list(counts)
    return FlopCount(sum(c.flops for c in counts), all(c.exact for c in counts))


def _eqn_flops(eqn) -> FlopCount:
    name = eqn.primitive.name
    if name == "dot_general":
        return FlopCount(_dot_flops(eqn))
    if name == "conv_general_dilated":
        return FlopCount(_conv_flops(eqn))
    inner = [jaxpr_flops(sub) for sub in _sub_jaxprs(eqn)]
    if name == "scan":
        body = _sum(inner)
        return FlopCount(body.flops * eqn.params["length"], body.exact)
    if name == "cond":  # one branch runs; which one is known only at run time
        return max(inner, key=lambda count: count.flops)
    if name == "while":  # the trip count is a run-time value: one iteration, flagged
        return FlopCount(_sum(inner).flops, False)
    return _sum(inner)  # jit, closed_call, custom_jvp/vjp (the primal), remat, ...: once


def jaxpr_flops(jaxpr: Jaxpr | ClosedJaxpr) -> FlopCount:
    """FLOPs of a jaxpr: 2 per multiply-add of ``dot_general`` and ``conv_general_dilated``,
    following ``jit``, ``scan`` (times its length), ``cond`` (the costliest branch), ``while``
    (one iteration, ``exact=False``), custom JVP/VJP and ``remat``; elementwise ops count 0."""
    return _sum(_eqn_flops(eqn) for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns)


def flops(fn: Callable, *args, **kwargs) -> int:
    """Forward FLOPs of ``fn(*args, **kwargs)`` (see :func:`jaxpr_flops`); ``args`` may be
    ``jax.ShapeDtypeStruct``; ``kwargs`` are closed over (static).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> a, b = jax.ShapeDtypeStruct((8, 40), jnp.float32), jax.ShapeDtypeStruct((40, 32), jnp.float32)
        >>> flops(jnp.matmul, a, b)  # 2 * 8 * 40 * 32
        20480
    """
    return jaxpr_flops(jax.make_jaxpr(functools.partial(fn, **kwargs))(*args)).flops


# ----------------------------------------------------------------------------- recording the calls


def _struct_or_value(leaf: Any) -> Any:
    """An array's shape and dtype; anything else (``train=True``, an ``offset`` int) as it is."""
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype)
    return leaf


def _frozen(tree: Any) -> tuple:
    """``(treedef, leaves)`` of a tree with arrays as ``jax.ShapeDtypeStruct``: no tracer escapes the trace."""
    leaves, treedef = jax.tree.flatten(tree)
    return treedef, tuple(_struct_or_value(leaf) for leaf in leaves)


def _jaxpr_of(fn: Callable, arguments: tuple) -> ClosedJaxpr:
    """``make_jaxpr`` of ``fn(*args, **kwargs)`` for ``arguments = _frozen((args, kwargs))``: the
    arrays are traced, the other leaves (``train=True``, an ``offset`` int) stay Python values."""
    treedef, leaves = arguments
    arrays = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.ShapeDtypeStruct)]

    def run(*values):
        filled = list(leaves)
        for i, value in zip(arrays, values):
            filled[i] = value
        args, kwargs = jax.tree.unflatten(treedef, filled)
        return fn(*args, **kwargs)

    return jax.make_jaxpr(run)(*(leaves[i] for i in arrays))


class _Call(NamedTuple):
    """One recorded ``apply``: enough to trace it again on its own."""

    path: str
    depth: int
    layer: Layer
    apply: Callable  # the class's own apply (not the observable wrapper)
    arguments: tuple  # _frozen((args, kwargs))
    output: Any  # the output y as jax.ShapeDtypeStruct
    params: int
    bytes: int


@dataclasses.dataclass
class _Frame:
    """A call in progress: what naming its children and sharing out its params needs."""

    path: str
    layer: Layer
    params: Any  # the live tree, to find a child's params in by identity
    counted: set = dataclasses.field(default_factory=set)  # ids of param leaves a child already received
    paths: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def _key_path(tree: Any, target: Any) -> tuple[str, ...]:
    """Where ``target`` (by identity) sits in a nested dict ``tree``; ``()`` when it does not."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            if value is target:
                return (str(key),)
            found = _key_path(value, target)
            if found:
                return (str(key),) + found
    return ()


def _items(value: Any):
    """A field's sub-layers with their keys: a dict's items, a tuple's or list's indices."""
    if isinstance(value, Mapping):
        return value.items()
    return enumerate(value) if isinstance(value, (tuple, list)) else ()


def _field_name(owner: Layer, layer: Layer) -> str | None:
    """The field of ``owner`` holding ``layer`` (``dropout``, ``encoder_blocks/0``), if one does."""
    for field in dataclasses.fields(owner):
        value = getattr(owner, field.name, None)
        if value is layer:
            return field.name
        for key, item in _items(value):
            if item is layer:
                return f"{field.name}/{key}"
    return None


def _child_path(parent: _Frame, layer: Layer, params: Any) -> str:
    """Where the child's params sit in its parent's, else the parent's field holding it, else its name."""
    name = "/".join(_key_path(parent.params, params)) or _field_name(parent.layer, layer) or layer.name
    path = f"{parent.path}/{name}" if parent.path else name
    parent.paths[path] += 1
    calls = parent.paths[path]
    return path if calls == 1 else f"{path}#{calls}"


def _own_leaves(parent: _Frame | None, params: Any) -> list:
    """The param leaves a call received that no earlier sibling did (a shared table counts once)."""
    leaves = _param_leaves(params)
    if parent is None:
        return leaves
    fresh = [leaf for leaf in leaves if id(leaf) not in parent.counted]
    parent.counted.update(id(leaf) for leaf in fresh)
    return fresh


class _Recorder:
    """The :data:`~jdl.nn.core.apply_hook` of a summary: each apply call, in call order, with its path."""

    def __init__(self):
        self.calls: list[_Call | None] = []
        self.stack: list[_Frame] = []

    def __call__(self, apply, layer, *args, **kwargs):
        if self.stack and self.stack[-1].layer is layer:  # super().apply(...) inside the same call
            return apply(layer, *args, **kwargs)
        params = list(inspect.signature(apply).bind(layer, *args, **kwargs).arguments.values())[1]
        parent = self.stack[-1] if self.stack else None
        path = "" if parent is None else _child_path(parent, layer, params)
        leaves = _own_leaves(parent, params)
        index, depth = len(self.calls), len(self.stack)
        self.calls.append(None)  # the slot keeps call order: parents before their children
        self.stack.append(_Frame(path, layer, params))
        try:
            result = apply(layer, *args, **kwargs)
        finally:
            self.stack.pop()
        output = jax.tree.map(_struct_or_value, result[0])
        self.calls[index] = _Call(path, depth, layer, apply, _frozen((args, kwargs)), output,
                                  sum(_size(leaf) for leaf in leaves), _bytes(leaves))
        return result


def _record(model: Layer, arguments: tuple) -> tuple[list[_Call], FlopCount]:
    """Trace ``model.apply`` once with the recorder on; the calls and the whole program's FLOPs."""
    recorder = _Recorder()
    token = apply_hook.set(recorder)
    try:
        jaxpr = _jaxpr_of(model.apply, arguments)
    finally:
        apply_hook.reset(token)
    return recorder.calls, jaxpr_flops(jaxpr)


def _call_flops(call: _Call, memo: dict) -> FlopCount:
    """FLOPs of one recorded call, traced again alone (a block repeated with one shape is traced once)."""
    treedef, leaves = call.arguments
    memo_key = (call.apply, call.layer, treedef, leaves)
    try:
        if memo_key in memo:
            return memo[memo_key]
    except TypeError:  # an unhashable layer or option: traced every time
        memo_key = None
    count = jaxpr_flops(_jaxpr_of(functools.partial(call.apply, call.layer), call.arguments))
    if memo_key is not None:
        memo[memo_key] = count
    return count


# ----------------------------------------------------------------------------- the summary


class Row(NamedTuple):
    """One layer call of the forward pass (see the module docstring for what each field counts)."""

    path: str  # "" for the model; "conv_1", "encoder/block_0/self_attention"
    layer: str  # its repr
    depth: int  # 0 for the model, 1 for its children, ...
    output: Any  # the output's jax.ShapeDtypeStruct (a tuple of them for a tuple output)
    params: int
    bytes: int
    flops: int  # forward, children included
    flops_exact: bool  # False: a while loop's body counted once (a lower bound)


def _shapes_text(output: Any) -> str:
    """``float32[8,19,25]``; a tree of outputs as ``(float32[2,5,8], float32[2,8])``."""
    texts = [f"{jnp.dtype(leaf.dtype).name}[{','.join(map(str, leaf.shape))}]" if isinstance(
        leaf, jax.ShapeDtypeStruct) else repr(leaf) for leaf in jax.tree.leaves(output)]
    return texts[0] if len(texts) == 1 else f"({', '.join(texts)})"


def _layer_text(layer: str, width: int = 64) -> str:
    """The repr, or the class name alone when the repr lists a whole model."""
    return layer if len(layer) <= width else layer.split("(", 1)[0] + "(...)"


def _flops_text(count: int, exact: bool) -> str:
    return f"{count:,}" if exact else f">={count:,}"


@dataclasses.dataclass(frozen=True)
class Summary:
    """What :func:`summary` returns: the rows (data) and the totals; ``str()`` is the table."""

    name: str  # the model's name, the first row's label in the table
    rows: tuple[Row, ...]
    total_params: int
    total_bytes: int
    total_flops: int
    flops_exact: bool

    def as_dicts(self) -> list[dict]:
        """The rows as plain dicts (``output`` as text: ``"float32[8,10]"``), e.g. for a JSON file."""
        return [row._asdict() | {"output": _shapes_text(row.output)} for row in self.rows]

    def _cells(self) -> list[tuple[str, ...]]:
        """Each row's texts; the name column is the path relative to the parent, indented by depth."""
        cells, parents = [], {}
        for row in self.rows:
            parent = parents.get(row.depth - 1, "")
            label = self.name if row.depth == 0 else row.path[len(parent) + 1 if parent else 0:]
            parents[row.depth] = row.path
            cells.append(("  " * row.depth + label, _layer_text(row.layer), _shapes_text(row.output),
                          f"{row.params:,}", f"{row.bytes:,}", _flops_text(row.flops, row.flops_exact)))
        return cells

    def table(self) -> str:
        """The rows as a text table, thousands separated, with the totals at the bottom."""
        header = ("path", "layer", "output", "params", "bytes", "FLOPs")
        total = ("total", "", "", f"{self.total_params:,}", f"{self.total_bytes:,}",
                 _flops_text(self.total_flops, self.flops_exact))
        lines = [header, *self._cells(), total]
        widths = [max(len(line[i]) for line in lines) for i in range(len(header))]

        def render(line) -> str:  # text columns to the left, numbers to the right
            return "  ".join(cell.ljust(w) if i < 3 else cell.rjust(w) for i, (cell, w) in enumerate(
                zip(line, widths))).rstrip()

        rule = "  ".join("-" * w for w in widths)
        text = "\n".join([render(header), rule, *map(render, lines[1:])])
        if not self.flops_exact:
            text += "\n>=: a while loop's body counted once (its trip count is known only at run time)"
        return text

    def __str__(self) -> str:
        return self.table()


@contextlib.contextmanager
def _blamed_on_the_example(example_text: str):
    """The model's own error (its path and what it expected), introduced as ``jdl.summary``'s."""
    try:
        yield
    except (ValueError, TypeError) as error:
        if error.args and isinstance(error.args[0], str):
            error.args = (f"{WHERE}: tracing the model on the example {example_text} failed: {error.args[0]}",
                          ) + error.args[1:]
        raise


def summary(model: Layer, example: Any, *, key: Any = None, train: bool = False, depth: int | None = None,
            **options) -> Summary:
    """The per-layer table of ``model`` on an input shaped like ``example``, nothing computed.

    ``example``: an array, a ``jax.ShapeDtypeStruct`` or a tree of them (the Transformer's
    ``(source_ids, decoder_inputs)``). ``key``, ``train`` and ``options`` (the keywords of the
    model's ``apply``: ``context=``, ``lengths=``; arrays or ``jax.ShapeDtypeStruct``) are passed
    to ``apply``; dropout needs a key when ``train=True``. ``depth`` keeps the rows nested at
    most that deep (0: the model alone, 1: and its children); the totals are always the whole
    model's. The rows, paths and FLOPs are described in the module docstring.
    """
    check_that(isinstance(model, Layer), WHERE, "a jdl Layer (a layer, combinator or model) as the model",
               type(model).__name__, TypeError)
    check_int_at_least(WHERE, "depth", depth, 0, none_ok=True)
    example = jax.tree.map(_struct_or_value, example)
    with _blamed_on_the_example(_shapes_text(example)):
        params, state = jax.eval_shape(model.init, _key_struct(), example)
        calls, total = _record(model, _frozen(((params, state, example), dict(key=key, train=train, **options))))
    memo = {}
    rows = tuple(Row(call.path, repr(call.layer), call.depth, call.output, call.params, call.bytes,
                     *_call_flops(call, memo)) for call in calls if depth is None or call.depth <= depth)
    leaves = _param_leaves(params)
    return Summary(model.name, rows, count_params(params), _bytes(leaves), total.flops, total.exact)


# ----------------------------------------------------------------------------- intermediates


class _Capture:
    """The :data:`~jdl.nn.core.apply_hook` of :func:`capture_intermediates`: outputs by path."""

    def __init__(self, keep: Callable[[str, Layer], bool]):
        self.keep = keep
        self.stack: list[_Frame] = []
        self.values: dict[str, Any] = {}
        self.trace_state = jax.extend.core.get_opaque_trace_state(convention="flax")

    def __call__(self, apply, layer, *args, **kwargs):
        if self.stack and self.stack[-1].layer is layer:  # super().apply(...) inside the same call
            return apply(layer, *args, **kwargs)
        params = list(inspect.signature(apply).bind(layer, *args, **kwargs).arguments.values())[1]
        path = _child_path(self.stack[-1], layer, params) if self.stack else ""
        self.stack.append(_Frame(path, layer, params))
        try:
            result = apply(layer, *args, **kwargs)
        finally:
            self.stack.pop()
        # A call inside a transformation the parent runs (a cell inside a recurrent layer's scan)
        # sees another trace: its output is a per-step value that cannot leave that scan.
        same_trace = jax.extend.core.get_opaque_trace_state(convention="flax") == self.trace_state
        if same_trace and self.keep(path, layer):
            self.values[path or layer.name] = result[0]
        return result


def _keep_rule(filter: Any) -> Callable[[str, Layer], bool]:
    if filter is None:
        return lambda path, layer: True
    if isinstance(filter, type) or (isinstance(filter, tuple) and all(isinstance(t, type) for t in filter)):
        return lambda path, layer: isinstance(layer, filter)
    check_that(callable(filter), "jdl.capture_intermediates", "filter: None, a Layer class, a tuple of classes or "
               "a function (path, layer) -> bool", repr(filter), TypeError)
    return filter


def capture_intermediates(model: Layer, params: Any, state: Any, x: Any, *, filter: Any = None, key: Any = None,
                          train: bool = False, **options) -> tuple[Any, Any, dict[str, Any]]:
    """``model.apply`` that also returns the output of every layer it calls, by path.

    Returns ``(y, new_state, intermediates)``: ``y`` and ``new_state`` are ``apply``'s,
    ``intermediates`` maps each layer's path (as in :func:`summary`: ``dense_0``,
    ``encoder/block_0/self_attention``; the model itself under its ``name``) to its output.
    ``filter`` keeps some: a layer class (``nn.ReLU``), a tuple of classes, or a function
    ``(path, layer) -> bool``; ``None`` keeps all. Layers a parent calls inside its own
    ``scan`` or ``vmap`` (a recurrent layer's cell) are not captured: their outputs are per
    step and stay inside that transformation.

    The hidden activations it returns are what the toolkit's analyses read: the activation
    pattern of a ReLU network (:mod:`jdl.regions`), the fraction of dead units
    (:func:`jdl.metrics.dead_unit_fraction`). It works under ``jit``, ``grad`` and ``vmap``
    (the capture happens while ``apply`` is traced).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn, capture_intermediates
        >>> model = nn.Sequential([nn.Dense(8), nn.ReLU(), nn.Dense(8), nn.ReLU(), nn.Dense(1)])
        >>> params, state = model.init(jax.random.key(0), jnp.zeros((5, 2)))
        >>> y, _, hidden = capture_intermediates(model, params, state, jnp.ones((5, 2)), filter=nn.ReLU)
        >>> sorted(hidden), hidden["relu_1"].shape
        (['relu_1', 'relu_3'], (5, 8))
    """
    check_that(isinstance(model, Layer), "jdl.capture_intermediates", "a jdl Layer as the model",
               type(model).__name__, TypeError)
    capture = _Capture(_keep_rule(filter))
    token = apply_hook.set(capture)
    try:
        y, new_state = model.apply(params, state, x, key=key, train=train, **options)
    finally:
        apply_hook.reset(token)
    return y, new_state, capture.values
