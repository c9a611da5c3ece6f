"""The layer protocol, the one generic params check, and the combinators.

**The one rule.** A layer is an immutable value with two pure methods:

* ``init(key, x) -> (params, state)``: ``x`` is an example input, an array or a
  ``jax.ShapeDtypeStruct`` (only its shape and dtype are read). ``params`` (trained) and
  ``state`` (not trained: batch-norm running statistics) are nested dicts of arrays with
  readable keys, ``{}`` where there is nothing.
* ``apply(params, state, x, *, key=None, train=False) -> (y, state)``: ``key`` is a PRNG
  key for stochastic layers (dropout needs one when ``train=True``); ``train`` switches
  batch statistics and dropout on. ``y`` has one type whatever the keywords.

Every layer, combinator and model is a subclass of :class:`Layer`: a frozen dataclass
whose fields are its configuration and its sub-layers, whose ``repr`` (the required
fields, those that differ from their defaults and those named in ``always_shown``) is the
description errors use. A model with more entry points (``encode``, ``decode_step``,
``loss``) is the same kind of value with more methods. Params stay outside, as plain dicts.

**Checks stated once.** :func:`check_params` compares a layer's params and state with
what its own ``init`` gives for the input at hand (``jax.eval_shape``, memoised per layer
and input shape), and names the layer and the first path that differs. A layer states its
input checks in a short block at the top of ``apply``, then the math.

Combinators (``Sequential``, ``Residual``, ``Parallel``, ``Concat``) give every child a
name, pass it its own slice of params and state, and derive its PRNG key with
``jax.random.fold_in`` so that adding a layer never changes the randomness of another.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> model = nn.Sequential([nn.Dense(32), nn.ReLU(), nn.Dense(10)])
    >>> params, state = model.init(jax.random.key(0), jax.ShapeDtypeStruct((8, 40), jnp.float32))
    >>> sorted(params)
    ['dense_0', 'dense_2', 'relu_1']
    >>> logits, state = model.apply(params, state, jnp.ones((8, 40)))
    >>> logits.shape
    (8, 10)
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
from collections.abc import Mapping, Sequence
from typing import Any, Callable, ClassVar

import jax
import jax.numpy as jnp

from jdl._checks import as_shape_struct, check_array, check_declared, check_floating, check_same_dtype, check_that

Params = Any  # a nested dict of arrays
State = Any  # a nested dict of arrays

KW_ONLY = dataclasses.KW_ONLY


def _is_struct(leaf) -> bool:
    return isinstance(leaf, jax.ShapeDtypeStruct)


def shape_structs(x: Any) -> Any:
    """Any pytree of arrays, tracers or ``jax.ShapeDtypeStruct`` as ``jax.ShapeDtypeStruct``."""
    return jax.tree.map(as_shape_struct, x, is_leaf=_is_struct)


class Layer:
    """The base of every layer, combinator and model: a frozen dataclass with ``init``/``apply``.

    Subclasses declare their configuration as annotated fields (they become frozen dataclass
    fields; do not decorate them again). A field whose type declares a check
    (``features: PositiveInt``, ``rate: Rate``, ``readout: Literal["final", "mean"]``,
    ``use_bias: bool``) is checked on construction; ``__post_init__`` checks what the types
    cannot say (how two fields relate) and builds sub-layers. Subclasses implement
    ``init`` and ``apply``. Each declares a keyword-only ``name: str = "..."``, the key a
    combinator files its params under (``"dense"`` gives ``"dense_0"``).
    """

    name: str = "layer"
    # Fields the repr shows even at their default value (``LayerNorm(epsilon=1e-06)``).
    always_shown: ClassVar[tuple[str, ...]] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        dataclasses.dataclass(frozen=True, repr=False)(cls)
        cls.__post_init__ = _checking_fields_first(cls.__post_init__)
        if "apply" in cls.__dict__:
            cls.apply = _observable(cls.__dict__["apply"])

    def __post_init__(self):
        pass

    def init(self, key: jax.Array, x: Any) -> tuple[Params, State]:
        raise NotImplementedError

    def apply(self, params: Params, state: State, x: Any, *, key: jax.Array | None = None,
              train: bool = False) -> tuple[Any, State]:
        raise NotImplementedError

    def __repr__(self) -> str:
        shown = []
        for field in dataclasses.fields(self):
            if not field.repr or field.name == "name":
                continue
            value = getattr(self, field.name)
            required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
            if required or field.name in self.always_shown or not _same(value, field.default):
                shown.append(f"{field.name}={value!r}")
        return f"{type(self).__name__}({', '.join(shown)})"

    @property
    def description(self) -> str:
        """How the layer introduces itself in errors: ``Dense(features=10)``."""
        return repr(self)


def _checking_fields_first(post_init: Callable) -> Callable:
    """``__post_init__`` that first runs the checks the fields' annotations declare
    (``features: PositiveInt``, ``activation: Literal["tanh", "relu"]``; see ``jdl._checks``).

    Only the outermost class's wrapper checks, so a ``super().__post_init__()`` chain checks once.
    """
    post_init = getattr(post_init, "__wrapped__", post_init)

    @functools.wraps(post_init)
    def __post_init__(self):
        if type(self).__post_init__ is __post_init__:
            check_declared(self, type(self), {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.init})
        post_init(self)

    return __post_init__


# A tool that watches a forward pass (``jdl.summary`` records every layer's call) sets this to
# ``hook(apply, layer, *args, **kwargs)``, which must return ``apply(layer, *args, **kwargs)``.
# Unset (None), a call costs one ContextVar lookup, at trace time only under jit.
apply_hook: contextvars.ContextVar[Callable | None] = contextvars.ContextVar("jdl_apply_hook", default=None)

# True while shapes are inferred (:func:`expected_shapes`, :func:`output_shape`): ``init`` and
# ``apply`` then run with init's float32 params on an input of any precision, so checks that
# compare the dtypes of two branches (a Residual's sum, a Concat's join) wait for the real apply.
inferring_shapes: contextvars.ContextVar[bool] = contextvars.ContextVar("jdl_inferring_shapes", default=False)


def _observable(apply: Callable) -> Callable:
    """``apply`` that goes through :data:`apply_hook` when one is set."""
    @functools.wraps(apply)
    def observable_apply(self, *args, **kwargs):
        hook = apply_hook.get()
        if hook is None:
            return apply(self, *args, **kwargs)
        return hook(apply, self, *args, **kwargs)

    return observable_apply


def _same(value, default) -> bool:
    try:
        return bool(value == default)
    except Exception:  # arrays and other values without a plain truth value
        return value is default


# ----------------------------------------------------------------------------- the generic check


@functools.lru_cache(maxsize=2048)
def _expected_cached(layer: Layer, treedef, leaves: tuple) -> tuple[Params, State]:
    return _expected_uncached(layer, treedef.unflatten(leaves))


@functools.cache
def _key_struct() -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct((), jax.random.key(0).dtype)


def _expected_uncached(layer: Layer, example: Any) -> tuple[Params, State]:
    token = apply_hook.set(None)  # init's shape inference runs children's apply: not the forward pass
    inferring = inferring_shapes.set(True)
    try:
        return jax.eval_shape(layer.init, _key_struct(), example)
    finally:
        inferring_shapes.reset(inferring)
        apply_hook.reset(token)


def expected_shapes(layer: Layer, x: Any) -> tuple[Params, State]:
    """The shapes and dtypes of ``layer.init(key, x)``, traced once per layer and input shape."""
    leaves, treedef = jax.tree.flatten(shape_structs(x), is_leaf=_is_struct)
    try:
        return _expected_cached(layer, treedef, tuple(leaves))
    except TypeError as error:  # a layer with an unhashable field: trace every time
        if "unhashable" not in str(error):
            raise
        return _expected_uncached(layer, shape_structs(x))


def _path_text(what: str, path: tuple) -> str:
    return what + "".join(f"[{entry!r}]" for entry in path)


def _compare(layer: Layer, what: str, got: Any, want: Any, path: tuple = ()) -> None:
    here = _path_text(what, path)
    origin = f"are these {what} from another model?" if what == "params" else f"is this {what} from another model?"
    if isinstance(want, Mapping):
        check_that(isinstance(got, Mapping), layer, f"{here} to be a dict with keys {sorted(want)}",
                   f"{type(got).__name__}; {origin}", TypeError)
        check_that(set(got) == set(want), layer, f"{here} with keys {sorted(want)}", f"keys {sorted(got)}; {origin}")
        for name in sorted(want):
            _compare(layer, what, got[name], want[name], path + (name,))
        return
    check_that(hasattr(got, "shape") and hasattr(got, "dtype"), layer, f"{here} to be an array of shape "
               f"{tuple(want.shape)}", f"{type(got).__name__}; {origin}", TypeError)
    check_that(tuple(got.shape) == tuple(want.shape), layer, f"{here} of shape {tuple(want.shape)}",
               f"{tuple(got.shape)}; {origin}")
    kind = _dtype_kind(want.dtype)
    check_that(_dtype_kind(got.dtype) == kind, layer, f"{here} of a {kind} dtype (as init makes it; nothing is "
               f"cast)", jnp.dtype(got.dtype).name, TypeError)


def _dtype_kind(dtype) -> str:
    """The kind a leaf must keep: trained params are floating, counters integer (widths may differ)."""
    for kind, base in (("floating", jnp.floating), ("complex", jnp.complexfloating), ("integer", jnp.integer)):
        if jnp.issubdtype(dtype, base):
            return kind
    return jnp.dtype(dtype).name


def check_params(layer: Layer, params: Params, state: State, x: Any) -> None:
    """``params`` and ``state`` have the keys and shapes ``layer.init`` gives for input ``x``.

    The one params check every layer calls at the top of ``apply`` (after its input
    checks, so that an input that does not fit good params is reported as the input's
    fault). Dtype kinds are compared, widths are not: params cast to bfloat16 are still the
    model's params, but integer params are refused (they would be cast, and trained, silently).
    Raises naming the layer and the first path that differs, at trace time.
    """
    if inferring_shapes.get():
        # Shape inference runs apply on params its init just made: checking them would trace
        # that init a second time (for every layer of a deep network).
        return
    expected_params, expected_state = expected_shapes(layer, x)
    _compare(layer, "params", params, expected_params)
    _compare(layer, "state", state, expected_state)


# ----------------------------------------------------------------------------- helpers


def output_shape(layer: Layer, params: Params, state: State, x: Any) -> Any:
    """The shape and dtype of ``layer``'s output for input ``x``, without computing it.

    Memoised per layer and shapes, as :func:`expected_shapes`: a network of repeated blocks
    (ResNet-110's 54) traces each distinct block once while its ``init`` infers the shapes.
    """
    leaves, treedef = jax.tree.flatten(shape_structs((params, state, x)), is_leaf=_is_struct)
    try:
        return _output_shape_cached(layer, treedef, tuple(leaves))
    except TypeError as error:  # a layer with an unhashable field: trace every time
        if "unhashable" not in str(error):
            raise
        return _output_shape_uncached(layer, treedef, leaves)


def _output_shape_uncached(layer: Layer, treedef, leaves) -> Any:
    params, state, x = treedef.unflatten(leaves)
    token = inferring_shapes.set(True)
    try:
        return jax.eval_shape(lambda p, s, v: layer.apply(p, s, v, train=False)[0], params, state, x)
    finally:
        inferring_shapes.reset(token)


_output_shape_cached = functools.lru_cache(maxsize=2048)(_output_shape_uncached)


@contextlib.contextmanager
def inside(owner: Layer, child_name: str):
    """Errors raised by a child carry its path in the model: ``Sequential[dense_2] Dense(features=4): ...``.

    Each combinator level adds its own step, so a nested error reads outermost first; the
    exception keeps its type and traceback.
    """
    try:
        yield
    except (ValueError, TypeError) as error:
        if error.args and isinstance(error.args[0], str):
            error.args = (f"{type(owner).__name__}[{child_name}] {error.args[0]}",) + error.args[1:]
        raise


def child_key(key: jax.Array | None, index: int) -> jax.Array | None:
    """The PRNG key of a combinator's ``index``-th child (``None`` stays ``None``)."""
    return None if key is None else jax.random.fold_in(key, index)


class ParamFree(Layer):
    """The base of layers without params or state: ``y = fn(x)`` after ``check_input(x)``.

    Activations, pooling, reshapes and dropout are of this kind; the default input check
    asks for a floating input.
    """

    def check_input(self, x) -> None:
        check_floating(self, x)

    def fn(self, x):
        raise NotImplementedError

    def init(self, key, x):
        self.check_input(x)
        return {}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        check_params(self, params, state, x)  # which runs init's check_input on x
        return self.fn(x), state


class Lambda(ParamFree):
    """Lift a pure function of one input into a layer with no params (``Lambda(jnp.abs)``)."""

    function: Callable[[Any], Any]
    _: KW_ONLY
    name: str = "lambda"

    def __repr__(self) -> str:
        return f"Lambda({getattr(self.function, '__name__', 'fn')})"

    def check_input(self, x) -> None:
        for leaf in jax.tree.leaves(x):  # any input the function accepts, but no empty array
            check_array(self, leaf)

    def fn(self, x):
        return self.function(x)


# ----------------------------------------------------------------------------- combinators


def _named_children(owner: str, layers: Any) -> tuple[tuple[str, Layer], ...]:
    """Children as ``(name, layer)`` pairs: a mapping keeps its keys; a list names each
    child ``<layer name>_<index>``."""
    if isinstance(layers, Layer):
        raise TypeError(f"{owner}: expected a list or dict of layers, got a single layer {layers}")
    if isinstance(layers, Mapping):
        children = tuple(layers.items())
    elif isinstance(layers, Sequence) and layers and all(isinstance(c, tuple) and len(c) == 2 for c in layers) \
            and all(isinstance(c[1], Layer) for c in layers):
        children = tuple(layers)  # already (name, layer) pairs
    else:
        children = tuple((f"{layer.name}_{i}" if isinstance(layer, Layer) else str(i), layer)
                         for i, layer in enumerate(layers))
    check_that(children, owner, "at least one layer", "none")
    for child_name, layer in children:
        check_that(isinstance(layer, Layer), owner, "every child to be a jdl Layer",
                   f"{type(layer).__name__} for {child_name!r}", TypeError)
        check_that(isinstance(child_name, str), owner, "string names for the layers", repr(child_name), TypeError)
    return children


class _Branches(Layer):
    """Children with names, each with its own params, state and key (the combinators' base)."""

    layers: Any

    def __post_init__(self):
        object.__setattr__(self, "layers", _named_children(type(self).__name__, self.layers))

    def __repr__(self) -> str:
        return f"{type(self).__name__}([" + ", ".join(f"{n}={layer}" for n, layer in self.layers) + "])"

    def init_children(self, key, x):
        params, state = {}, {}
        for index, (child_name, layer) in enumerate(self.layers):
            with inside(self, child_name):
                params[child_name], state[child_name] = layer.init(jax.random.fold_in(key, index), x)
        return params, state


class Sequential(_Branches):
    """Apply layers one after another: ``y = f_n(... f_2(f_1(x)))``.

    ``layers`` is a list (children are named ``"<name>_<index>"``: ``"dense_0"``,
    ``"relu_1"``) or a dict from name to layer (``{"encoder": ..., "head": ...}``).
    Each child's init sees the output shape of the one before it, found with
    ``jax.eval_shape``, so no real compute is spent on shape inference.
    """

    _: KW_ONLY
    name: str = "sequential"

    def init(self, key, x):
        params, state = {}, {}
        for index, (child_name, layer) in enumerate(self.layers):
            with inside(self, child_name):
                params[child_name], state[child_name] = layer.init(jax.random.fold_in(key, index), x)
                x = output_shape(layer, params[child_name], state[child_name], x)
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        check_params(self, params, state, x)
        new_state = {}
        for index, (child_name, layer) in enumerate(self.layers):
            with inside(self, child_name):
                x, new_state[child_name] = layer.apply(params[child_name], state[child_name], x,
                                                       key=child_key(key, index), train=train)
        return x, new_state


class Parallel(_Branches):
    """Apply every layer to the same input; the output is the tuple of their outputs."""

    _: KW_ONLY
    name: str = "parallel"

    def init(self, key, x):
        return self.init_children(key, x)

    def apply(self, params, state, x, *, key=None, train=False):
        check_params(self, params, state, x)
        return self.apply_children(params, state, x, key=key, train=train)

    def apply_children(self, params, state, x, *, key=None, train=False):
        """Every child on ``x``: the tuple of their outputs, and their new states."""
        outputs, new_state = [], {}
        for index, (child_name, layer) in enumerate(self.layers):
            with inside(self, child_name):
                out, new_state[child_name] = layer.apply(params[child_name], state[child_name], x,
                                                         key=child_key(key, index), train=train)
            outputs.append(out)
        return tuple(outputs), new_state


class Concat(Parallel):
    """Apply every layer to the same input and concatenate the outputs along ``axis``.

    This is an Inception block's join: branches may differ in size along ``axis`` only.
    """

    axis: int = -1
    _: KW_ONLY
    name: str = "concat"

    def __repr__(self) -> str:
        return super().__repr__()[:-1] + f", axis={self.axis})"

    def _concatenate(self, outputs, dtypes: bool = True):
        if dtypes:
            check_same_dtype(self, outputs, "branch outputs of one dtype")
        reference = outputs[0]
        check_that(-reference.ndim <= self.axis < reference.ndim, self, f"axis in [-{reference.ndim}, "
                   f"{reference.ndim}) (the branch outputs have rank {reference.ndim})", self.axis)
        axis = self.axis % reference.ndim
        for out in outputs[1:]:
            check_that(out.ndim == reference.ndim and all(a == b for i, (a, b) in enumerate(zip(
                out.shape, reference.shape)) if i != axis), self, f"branch outputs that differ only along axis "
                f"{self.axis}", f"shapes {[tuple(o.shape) for o in outputs]}")
        return jnp.concatenate(outputs, axis=self.axis)

    def init(self, key, x):
        params, state = self.init_children(key, x)
        # Fail at init, not at first use: the branches' outputs must concatenate.
        dtypes = not inferring_shapes.get()
        jax.eval_shape(lambda p, s, v: self._concatenate(self.apply_children(p, s, v)[0], dtypes), params, state, x)
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        outputs, state = super().apply(params, state, x, key=key, train=train)
        return self._concatenate(outputs, dtypes=not inferring_shapes.get()), state


class Residual(Layer):
    """``y = layer(x) + shortcut(x)`` (He et al., 2016); the shortcut is the identity by default.

    Params are ``{"main": ..., "shortcut": ...}`` (no ``"shortcut"`` entry for the identity).
    The two branches must give the same shape and dtype: nothing is broadcast or cast.
    """

    layer: Layer
    shortcut: Layer | None = None
    _: KW_ONLY
    name: str = "residual"

    def __repr__(self) -> str:
        return f"Residual({self.layer}" + (f", shortcut={self.shortcut})" if self.shortcut else ")")

    @property
    def _branches(self) -> dict[str, Layer]:
        return {"main": self.layer} if self.shortcut is None else {"main": self.layer, "shortcut": self.shortcut}

    def _check_sum(self, main_out, skip_out, x, dtypes: bool = True) -> None:
        """The two branches add up: one shape, and (at apply, where the params' dtypes are known) one dtype."""
        if dtypes:
            check_same_dtype(self, [main_out, skip_out], "the main branch and the shortcut to give the same dtype "
                             "for the sum")
        check_that(main_out.shape == skip_out.shape, self, f"the main branch to keep the shape of its input "
                   f"{tuple(x.shape)} for the sum", f"{tuple(main_out.shape)} from the main branch and "
                   f"{tuple(skip_out.shape)} from the shortcut; give a shortcut layer that matches them")

    def init(self, key, x):
        params, state = {}, {}
        for index, (branch, child) in enumerate(self._branches.items()):
            with inside(self, branch):
                params[branch], state[branch] = child.init(jax.random.fold_in(key, index), x)
        main_out = output_shape(self.layer, params["main"], state["main"], x)
        skip_out = output_shape(self.shortcut, params["shortcut"], state["shortcut"], x) if self.shortcut else x
        self._check_sum(main_out, skip_out, x, dtypes=False)  # init's float32 params are not apply's
        return params, state

    def apply(self, params, state, x, *, key=None, train=False):
        check_params(self, params, state, x)
        new_state = {}
        with inside(self, "main"):
            main_out, new_state["main"] = self.layer.apply(params["main"], state["main"], x, key=child_key(key, 0),
                                                           train=train)
        skip_out = x
        if self.shortcut is not None:
            with inside(self, "shortcut"):
                skip_out, new_state["shortcut"] = self.shortcut.apply(params["shortcut"], state["shortcut"], x,
                                                                      key=child_key(key, 1), train=train)
        self._check_sum(main_out, skip_out, x, dtypes=not inferring_shapes.get())
        return main_out + skip_out, new_state
