"""Input validation shared by every layer, loss and metric: each check under one name.

The first argument, ``where``, is the context that errors start with: a layer (its repr,
``Dense(features=10)``) or a function's name (``"padding_mask"``). Each check runs at trace time (on shapes and dtypes, never on values), so a bad input
fails with a message that names the function that saw it, what it expected and what it
got, instead of an XLA error deep inside `jit`. Checks of values (token ids in range)
run only on concrete arrays; under `jit` they cannot.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def check_array(where: str, x: Any, what: str = "input") -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{where}: expected {what} to be an array, got {type(x).__name__}")


def check_floating(where: str, x: Any, what: str = "input") -> None:
    check_array(where, x, what)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{where}: expected a floating-point {what}, got {jnp.dtype(x.dtype).name} "
            f"{what} of shape {tuple(x.shape)}; cast it explicitly (x.astype(jnp.float32))"
        )


def check_integer(where: str, x: Any, what: str = "input") -> None:
    check_array(where, x, what)
    if not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(
            f"{where}: expected an integer {what}, got {jnp.dtype(x.dtype).name} "
            f"{what} of shape {tuple(x.shape)}"
        )


def check_min_rank(where: str, x: Any, min_ndim: int, layout: str, what: str = "input") -> None:
    check_array(where, x, what)
    if x.ndim < min_ndim:
        raise ValueError(
            f"{where}: expected {what} of rank >= {min_ndim} ({layout}), "
            f"got rank {x.ndim} with shape {tuple(x.shape)}"
        )


def check_rank(where: str, x: Any, ndim: int, layout: str, what: str = "input") -> None:
    check_array(where, x, what)
    if x.ndim != ndim:
        raise ValueError(
            f"{where}: expected {what} of rank {ndim} ({layout}), "
            f"got rank {x.ndim} with shape {tuple(x.shape)}"
        )


def check_same_shape(where: str, a: Any, b: Any, a_name: str, b_name: str) -> None:
    check_array(where, a, a_name)
    check_array(where, b, b_name)
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(
            f"{where}: expected {a_name} and {b_name} of the same shape (nothing is "
            f"broadcast), got {a_name} {tuple(a.shape)} and {b_name} {tuple(b.shape)}"
        )


def check_same_dtype(where: Any, arrays: Any, what: str) -> None:
    """Arrays of one dtype: nothing is cast to make them agree."""
    dtypes = [jnp.dtype(a.dtype).name for a in arrays]
    if len(set(dtypes)) > 1:
        raise TypeError(f"{where}: expected {what} (nothing is cast), got {' and '.join(dtypes)}")


def check_positive_int(where: Any, name: str, value: Any) -> None:
    """A configuration size: a positive int (``True`` is not a size)."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{where}: expected {name} to be a positive int, got {value!r}")


def check_rate(where: Any, name: str, value: Any) -> None:
    """A probability that may be zero but not one (dropout, label smoothing): ``[0, 1)``."""
    if not isinstance(value, numbers.Real) or isinstance(value, bool) or not 0.0 <= value < 1.0:
        raise ValueError(f"{where}: expected {name} in [0, 1), got {value!r}")


def check_choice(where: Any, name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{where}: expected {name} in {choices}, got {value!r}")


def check_last_axis(where: Any, x: Any, size: int, source: str, what: str = "input") -> None:
    """``x.shape[-1] == size``: an input that does not fit good params is the input's fault."""
    if x.shape[-1] != size:
        raise ValueError(f"{where}: expected {what} with last axis {size} ({source}), got {what} of shape "
                         f"{tuple(x.shape)}")


def check_keys(where: str, tree: Any, expected: set[str] | list[str], what: str = "params") -> None:
    """Check that a params/state dict has exactly the expected keys."""
    expected = set(expected)
    if not isinstance(tree, Mapping):
        raise TypeError(
            f"{where}: expected {what} to be a dict with keys {sorted(expected)}, "
            f"got {type(tree).__name__}; are these {what} from another model?"
        )
    got = set(tree.keys())
    if got != expected:
        raise ValueError(
            f"{where}: expected {what} with keys {sorted(expected)}, got keys {sorted(got)}; "
            f"are these {what} from another model?"
        )


def check_param_shape(where: str, param: Any, expected: tuple[int, ...], name: str, what: str = "params") -> None:
    """Check the shape of ``params[name]`` (or, with ``what="state"``, of ``state[name]``)."""
    check_array(where, param, f"{what}[{name!r}]")
    if tuple(param.shape) != tuple(expected):
        question = "are these params" if what == "params" else f"is this {what}"
        raise ValueError(
            f"{where}: expected {what}[{name!r}] of shape {tuple(expected)}, got "
            f"{tuple(param.shape)}; {question} from another model?"
        )


def check_kernel_matches_input(where: str, w: Any, x: Any, out_features: int, name: str = "w") -> None:
    """A ``(in_features, out_features)`` kernel, and an input whose last axis is its ``in_features``.

    The kernel is checked first, so params from another model are reported as such; a
    kernel that fits but an input that does not is reported as the input's fault.
    """
    check_array(where, w, f"params[{name!r}]")
    if w.ndim != 2 or w.shape[1] != out_features:
        check_param_shape(where, w, (x.shape[-1], out_features), name)
    if x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"{where}: expected input with last axis {w.shape[0]} (the params' in_features), "
            f"got input of shape {tuple(x.shape)}"
        )


def as_shape_struct(x: Any) -> jax.ShapeDtypeStruct:
    """The shape and dtype of an array, a tracer or a `jax.ShapeDtypeStruct`."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
    raise TypeError(
        f"expected an array or a jax.ShapeDtypeStruct as the example input, got {type(x).__name__}"
    )


def is_concrete(x: Any) -> bool:
    """A value that can be read now: not a tracer (under ``jit``) nor a ``jax.ShapeDtypeStruct``."""
    if isinstance(x, jax.core.Tracer):
        return False
    return isinstance(x, (numbers.Number, np.ndarray, np.generic, jax.Array))


def check_token_ids(where: str, ids: Any, vocab_size: int, what: str = "ids") -> None:
    """Integer ids; when they are concrete, every one in ``[0, vocab_size)``.

    Under ``jit`` values cannot be checked: an id out of range then gives NaN (the
    :func:`~jdl.nn.Embedding` rule), never a silently clipped one.
    """
    check_integer(where, ids, what)
    if is_concrete(ids):
        values = np.asarray(ids)
        if values.size and (values.min() < 0 or values.max() >= vocab_size):
            raise ValueError(f"{where}: expected {what} in [0, {vocab_size}) (the vocabulary), "
                             f"got {what} from {values.min()} to {values.max()}")


def check_lengths(where: str, lengths: Any, batch_shape: tuple[int, ...], steps: int) -> None:
    """Integer sequence lengths, one per sequence; when concrete, each in ``[0, steps]``."""
    check_integer(where, lengths, "lengths")
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(f"{where}: expected lengths of shape {tuple(batch_shape)} (one per sequence), "
                         f"got shape {tuple(lengths.shape)}")
    if is_concrete(lengths):
        values = np.asarray(lengths)
        if values.size and (values.min() < 0 or values.max() > steps):
            raise ValueError(f"{where}: expected lengths in [0, {steps}] (the time axis has {steps} steps), "
                             f"got lengths from {values.min()} to {values.max()}")
