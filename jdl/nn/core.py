"""The layer protocol and the combinators that build networks from layers.

**The one rule.** A layer is an immutable value holding two pure functions:

* ``init(key, x) -> (params, state)``: ``x`` is an example input, an array or a
  ``jax.ShapeDtypeStruct`` (only its shape and dtype are read). ``params`` (trained) and
  ``state`` (not trained: batch-norm running statistics) are nested dicts of arrays with
  readable keys, ``{}`` where there is nothing.
* ``apply(params, state, x, *, key=None, train=False) -> (y, state)``: ``key`` is a PRNG
  key for stochastic layers (dropout needs one when ``train=True``); ``train`` switches
  batch statistics and dropout on.

Nothing else: no global state, no mutation, no hidden RNG. Combinators (``Sequential``,
``Residual``, ``Parallel``, ``Concat``) are layers made of layers; they give every child a
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

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jdl._checks import as_shape_struct, check_keys

Params = Any  # a nested dict of arrays
State = Any  # a nested dict of arrays


@dataclasses.dataclass(frozen=True, eq=False)
class Layer:
    """A layer: a pair of pure functions and a name.

    Attributes:
      init: ``init(key, x) -> (params, state)``.
      apply: ``apply(params, state, x, *, key=None, train=False) -> (y, state)``.
      name: the short name a combinator files this layer's params under (``"dense"``).
      description: how the layer introduces itself in errors (``"Dense(features=10)"``).
    """

    init: Callable[..., tuple[Params, State]]
    apply: Callable[..., tuple[Any, State]]
    name: str
    description: str

    def __repr__(self) -> str:
        return self.description


def make_layer(
    name: str,
    description: str,
    init: Callable[[jax.Array, jax.ShapeDtypeStruct], tuple[Params, State]],
    apply: Callable[..., tuple[Any, State]],
) -> Layer:
    """Wrap a layer's own ``init`` so that it sees only the example's shape and dtype.

    ``init`` is then free of real compute on the example, and ``jax.eval_shape(layer.init,
    key, x)`` gives the parameter shapes of any model without allocating them.
    """

    def init_from_example(key, x):
        # Any pytree of arrays (a layer's output may be nested: (outputs, (carry_f, carry_b))).
        example = jax.tree.map(as_shape_struct, x, is_leaf=lambda leaf: isinstance(leaf, jax.ShapeDtypeStruct))
        return init(key, example)

    return Layer(init=init_from_example, apply=apply, name=name, description=description)


def output_shape(layer: Layer, params: Params, state: State, x: Any) -> Any:
    """The shape and dtype of ``layer``'s output for input ``x``, without computing it."""
    return jax.eval_shape(lambda p, s, v: layer.apply(p, s, v, train=False)[0], params, state, x)


def child_key(key: jax.Array | None, index: int) -> jax.Array | None:
    """The PRNG key of a combinator's ``index``-th child (``None`` stays ``None``)."""
    return None if key is None else jax.random.fold_in(key, index)


def stateless(name: str, description: str, fn: Callable[[Any], Any], check: Callable[[Any], None] | None = None) -> Layer:
    """A layer with no params and no state that applies ``fn`` to its input."""

    def init(key, x):
        del key
        if check is not None:
            check(x)
        return {}, {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_keys(description, params, set(), "params")
        check_keys(description, state, set(), "state")
        if check is not None:
            check(x)
        return fn(x), state

    return make_layer(name, description, init, apply)


def Lambda(fn: Callable[[Any], Any], name: str = "lambda") -> Layer:
    """Lift a pure function of one input into a layer with no params (``Lambda(jnp.abs)``)."""
    return stateless(name, f"Lambda({getattr(fn, '__name__', 'fn')})", fn)


def _named_children(layers: Sequence[Layer] | Mapping[str, Layer], owner: str):
    """Children as ``(name, layer)`` pairs, their names, and the combinator's description.

    A mapping keeps its keys; a list names each child ``<layer name>_<index>``.
    """
    if isinstance(layers, Layer):
        raise TypeError(f"{owner}: expected a list or dict of layers, got a single layer {layers}")
    if isinstance(layers, Mapping):
        children = list(layers.items())
    else:
        children = [(f"{layer.name}_{i}" if isinstance(layer, Layer) else str(i), layer) for i, layer in enumerate(layers)]
    if not children:
        raise ValueError(f"{owner}: expected at least one layer, got none")
    for child_name, layer in children:
        if not isinstance(layer, Layer):
            raise TypeError(f"{owner}: expected every child to be a jdl Layer, got {type(layer).__name__} for {child_name!r}")
        if not isinstance(child_name, str):
            raise TypeError(f"{owner}: expected string names for the layers, got {child_name!r}")
    names = [child_name for child_name, _ in children]
    description = f"{owner}([" + ", ".join(f"{n}={layer}" for n, layer in children) + "])"
    return children, names, description


def Sequential(layers: Sequence[Layer] | Mapping[str, Layer], name: str = "sequential") -> Layer:
    """Apply layers one after another: ``y = f_n(... f_2(f_1(x)))``.

    ``layers`` is a list (children are named ``"<name>_<index>"``: ``"dense_0"``,
    ``"relu_1"``) or a dict from name to layer (``{"encoder": ..., "head": ...}``).
    Each child's init sees the output shape of the one before it, found with
    ``jax.eval_shape``, so no real compute is spent on shape inference.
    """
    children, names, description = _named_children(layers, "Sequential")

    def init(key, x):
        params, state = {}, {}
        for index, (child_name, layer) in enumerate(children):
            params[child_name], state[child_name] = layer.init(jax.random.fold_in(key, index), x)
            x = output_shape(layer, params[child_name], state[child_name], x)
        return params, state

    def apply(params, state, x, *, key=None, train=False):
        check_keys(description, params, names, "params")
        check_keys(description, state, names, "state")
        new_state = {}
        for index, (child_name, layer) in enumerate(children):
            x, new_state[child_name] = layer.apply(
                params[child_name], state[child_name], x, key=child_key(key, index), train=train
            )
        return x, new_state

    return make_layer(name, description, init, apply)


def Residual(layer: Layer, shortcut: Layer | None = None, name: str = "residual") -> Layer:
    """``y = layer(x) + shortcut(x)`` (He et al., 2016); the shortcut is the identity by default.

    Params are ``{"main": ..., "shortcut": ...}`` (no ``"shortcut"`` entry for the identity).
    The two branches must give the same shape: nothing is broadcast.
    """
    description = f"Residual({layer}" + (f", shortcut={shortcut})" if shortcut else ")")
    branches = {"main": layer} if shortcut is None else {"main": layer, "shortcut": shortcut}

    def check_shapes(main_out, skip_out, x):
        if main_out.dtype != skip_out.dtype:
            raise TypeError(
                f"{description}: expected the main branch and the shortcut to give the same dtype for "
                f"the sum (nothing is cast), got {main_out.dtype} and {skip_out.dtype}"
            )
        if main_out.shape != skip_out.shape:
            raise ValueError(
                f"{description}: expected the main branch to keep the shape of its input "
                f"{tuple(x.shape)} for the sum, got {tuple(main_out.shape)} from the main branch and "
                f"{tuple(skip_out.shape)} from the shortcut; give a shortcut layer that matches them"
            )

    def init(key, x):
        params, state = {}, {}
        for index, (branch, child) in enumerate(branches.items()):
            params[branch], state[branch] = child.init(jax.random.fold_in(key, index), x)
        main_out = output_shape(layer, params["main"], state["main"], x)
        skip_out = output_shape(shortcut, params["shortcut"], state["shortcut"], x) if shortcut else x
        check_shapes(main_out, skip_out, x)
        return params, state

    def apply(params, state, x, *, key=None, train=False):
        check_keys(description, params, branches, "params")
        check_keys(description, state, branches, "state")
        new_state = {}
        main_out, new_state["main"] = layer.apply(params["main"], state["main"], x, key=child_key(key, 0), train=train)
        if shortcut is None:
            skip_out = x
        else:
            skip_out, new_state["shortcut"] = shortcut.apply(
                params["shortcut"], state["shortcut"], x, key=child_key(key, 1), train=train
            )
        check_shapes(main_out, skip_out, x)
        return main_out + skip_out, new_state

    return make_layer(name, description, init, apply)


def Parallel(layers: Sequence[Layer] | Mapping[str, Layer], name: str = "parallel") -> Layer:
    """Apply every layer to the same input; the output is the tuple of their outputs."""
    children, names, description = _named_children(layers, "Parallel")

    def init(key, x):
        params, state = {}, {}
        for index, (child_name, layer) in enumerate(children):
            params[child_name], state[child_name] = layer.init(jax.random.fold_in(key, index), x)
        return params, state

    def apply(params, state, x, *, key=None, train=False):
        check_keys(description, params, names, "params")
        check_keys(description, state, names, "state")
        outputs, new_state = [], {}
        for index, (child_name, layer) in enumerate(children):
            out, new_state[child_name] = layer.apply(
                params[child_name], state[child_name], x, key=child_key(key, index), train=train
            )
            outputs.append(out)
        return tuple(outputs), new_state

    return make_layer(name, description, init, apply)


def Concat(layers: Sequence[Layer] | Mapping[str, Layer], axis: int = -1, name: str = "concat") -> Layer:
    """Apply every layer to the same input and concatenate the outputs along ``axis``.

    This is an Inception block's join: branches may differ in size along ``axis`` only.
    """
    branches = Parallel(layers, name=name)
    description = branches.description.replace("Parallel(", "Concat(", 1)[:-1] + f", axis={axis})"

    def concatenate(outputs):
        reference = outputs[0]
        if len({out.dtype for out in outputs}) > 1:
            raise TypeError(
                f"{description}: expected branch outputs of one dtype (nothing is cast), got "
                f"{[str(out.dtype) for out in outputs]}"
            )
        for out in outputs[1:]:
            same_rank = out.ndim == reference.ndim
            other_axes_match = same_rank and all(
                a == b for i, (a, b) in enumerate(zip(out.shape, reference.shape)) if i != axis % reference.ndim
            )
            if not other_axes_match:
                raise ValueError(
                    f"{description}: expected branch outputs that differ only along axis {axis}, got shapes "
                    f"{[tuple(o.shape) for o in outputs]}"
                )
        return jnp.concatenate(outputs, axis=axis)

    def init(key, x):
        params, state = branches.init(key, x)
        jax.eval_shape(concatenate, output_shape(branches, params, state, x))  # fail at init, not at first use
        return params, state

    def apply(params, state, x, *, key=None, train=False):
        outputs, state = branches.apply(params, state, x, key=key, train=train)
        return concatenate(outputs), state

    return make_layer(name, description, init, apply)
