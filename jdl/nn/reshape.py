"""Shape layers: Flatten and Reshape (no params; the element count never changes).

Both keep the axes before ``start_axis`` and reshape the rest: ``Flatten`` to one axis,
``Reshape`` to a given shape.

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import nn
    >>> nn.Flatten().apply({}, {}, jnp.zeros((8, 5, 25)))[0].shape
    (8, 125)
    >>> nn.Reshape((5, -1)).apply({}, {}, jnp.zeros((8, 125)))[0].shape
    (8, 5, 25)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from jdl._checks import check_min_rank
from jdl.nn.core import KW_ONLY, ParamFree


class _ReshapeTail(ParamFree):
    """Keep the axes before ``start_axis``, reshape the others to ``tail_shape(x)``."""

    always_shown: ClassVar[tuple] = ("start_axis",)
    # How many axes from start_axis on the input needs (Flatten merges at least one).
    min_tail_rank: ClassVar[int] = 0

    def tail_shape(self, x) -> tuple[int, ...]:
        raise NotImplementedError

    def check_input(self, x):
        layout = f"{self.start_axis} leading axes to keep, then any"
        check_min_rank(self, x, self.start_axis + self.min_tail_rank, layout)
        self.tail_shape(x)  # raises if the tail does not fit

    def fn(self, x):
        return x.reshape(x.shape[:self.start_axis] + self.tail_shape(x))


class Flatten(_ReshapeTail):
    """Merge every axis from ``start_axis`` on: ``(B, d1, d2, ...) -> (B, d1*d2*...)``.

    Use ``start_axis=0`` for a single example (inside ``jax.vmap`` over examples).
    """

    start_axis: int = 1
    _: KW_ONLY
    name: str = "flatten"
    min_tail_rank: ClassVar[int] = 1

    def tail_shape(self, x):
        return (-1,)


class Reshape(_ReshapeTail):
    """Reshape the axes from ``start_axis`` on to ``shape`` (one entry may be -1)."""

    shape: Sequence[int]
    start_axis: int = 1
    _: KW_ONLY
    name: str = "reshape"

    def __post_init__(self):
        object.__setattr__(self, "shape", tuple(int(d) for d in self.shape))
        if sum(d == -1 for d in self.shape) > 1 or any(d < -1 or d == 0 for d in self.shape):
            raise ValueError(f"{self}: expected positive sizes and at most one -1, got {self.shape}")

    def tail_shape(self, x):
        size = math.prod(x.shape[self.start_axis:])
        known = math.prod(d for d in self.shape if d != -1)
        fits = size % known == 0 if -1 in self.shape else size == known
        if not fits:
            raise ValueError(f"{self}: cannot reshape axes {tuple(x.shape[self.start_axis:])} of input "
                             f"{tuple(x.shape)} ({size} elements) to {self.shape}")
        return self.shape
