"""Shape layers: Flatten and Reshape (no params; the element count never changes).

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import nn
    >>> nn.Flatten().apply({}, {}, jnp.zeros((8, 5, 25)))[0].shape
    (8, 125)
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from jdl._checks import check_array, check_min_rank
from jdl.nn.core import Layer, stateless


def Flatten(start_axis: int = 1, name: str = "flatten") -> Layer:
    """Merge every axis from ``start_axis`` on: ``(B, d1, d2, ...) -> (B, d1*d2*...)``.

    Use ``start_axis=0`` for a single example (inside ``jax.vmap`` over examples).
    """
    description = f"Flatten(start_axis={start_axis})"

    def check(x):
        check_min_rank(description, x, start_axis + 1, f"{start_axis} leading axes to keep, then any")

    return stateless(name, description, lambda x: x.reshape(x.shape[:start_axis] + (-1,)), check)


def Reshape(shape: Sequence[int], start_axis: int = 1, name: str = "reshape") -> Layer:
    """Reshape the axes from ``start_axis`` on to ``shape`` (one entry may be -1)."""
    shape = tuple(int(d) for d in shape)
    description = f"Reshape(shape={shape}, start_axis={start_axis})"
    if sum(d == -1 for d in shape) > 1 or any(d < -1 or d == 0 for d in shape):
        raise ValueError(f"{description}: expected positive sizes and at most one -1, got {shape}")

    def check(x):
        check_array(description, x)
        check_min_rank(description, x, start_axis, f"{start_axis} leading axes to keep, then any")
        size = math.prod(x.shape[start_axis:])
        known = math.prod(d for d in shape if d != -1)
        fits = size % known == 0 if -1 in shape else size == known
        if not fits:
            raise ValueError(
                f"{description}: cannot reshape axes {tuple(x.shape[start_axis:])} of input "
                f"{tuple(x.shape)} ({size} elements) to {shape}"
            )

    return stateless(name, description, lambda x: x.reshape(x.shape[:start_axis] + shape), check)
