"""Max and average pooling over 1 or 2 (or 3) spatial axes, and global pooling.

Pooling summarises each window of the spatial axes of a channels-last input
``(*batch, *spatial, channels)``: max pooling keeps the largest value, average pooling
the mean. The output size follows :func:`jdl.nn.conv_output_size` with the window as
kernel; ``strides`` default to the window (non-overlapping windows).

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import nn
    >>> pool = nn.MaxPool2D(2)
    >>> pool.apply({}, {}, jnp.ones((8, 28, 28, 3)))[0].shape
    (8, 14, 14, 3)
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import jax.numpy as jnp
from jax import lax

from jdl._checks import PositiveInt
from jdl.nn.conv import _as_tuple, check_output_sizes, check_spatial_input, fold_batch_axes, frozen
from jdl.nn.core import KW_ONLY, ParamFree


class _Pool(ParamFree):
    """Summarise each window of the spatial axes; subclasses say how (``reduce_windows``)."""

    window_shape: int | Sequence[int]
    strides: Any = None
    padding: Any = "VALID"
    _: KW_ONLY
    name: str = "pool"
    always_shown: ClassVar[tuple] = ("strides", "padding")

    def __post_init__(self):
        window = (self.window_shape,) if isinstance(self.window_shape, int) else tuple(self.window_shape)
        for name, value in (("window_shape", window), ("strides", self.strides), ("padding", self.padding)):
            object.__setattr__(self, name, frozen(value))
        n = len(window)
        if not 1 <= n <= 3 or not all(isinstance(w, int) and w > 0 for w in window):
            raise ValueError(f"{self}: expected 1 to 3 positive window sizes, got {window!r}")
        window_strides = window if self.strides is None else _as_tuple(self.strides, n, "strides", self)
        object.__setattr__(self, "_window_strides", window_strides)
        object.__setattr__(self, "_pads", self._padding_pairs(n))

    def _padding_pairs(self, n: int):
        """``"SAME"``/``"VALID"`` or ``n`` ``(low, high)`` pairs."""
        padding = self.padding
        if isinstance(padding, str):
            if padding.upper() not in ("SAME", "VALID"):
                raise ValueError(f"{self}: expected padding 'SAME', 'VALID', an int or pairs, got {padding!r}")
            return padding.upper()
        if isinstance(padding, int):
            return ((padding, padding),) * n
        pads = tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)
        if len(pads) != n or not all(len(p) == 2 for p in pads):
            raise ValueError(f"{self}: expected padding for {n} spatial axes, got {padding!r}")
        return pads

    def check_input(self, x):
        n = len(self.window_shape)
        check_spatial_input(self, x, n)
        check_output_sizes(self, x.shape[x.ndim - n - 1: -1], self.window_shape, self._window_strides, self._pads,
                           (1,) * n)

    def reduce_windows(self, batched, dims, steps, pads):
        """``lax.reduce_window`` over ``(B, *spatial, C)``. Its init value is a Python scalar: lax
        recognises it as the monoid's identity and uses its differentiable max/sum windows (a jnp
        array is staged out under jit, and the generic window it falls back to has no reverse-mode rule)."""
        raise NotImplementedError

    def fn(self, x):
        batched, leading = fold_batch_axes(x, len(self.window_shape))
        dims = (1,) + self.window_shape + (1,)
        steps = (1,) + self._window_strides + (1,)
        pads = self._pads if isinstance(self._pads, str) else ((0, 0),) + self._pads + ((0, 0),)
        y = self.reduce_windows(batched, dims, steps, pads)
        return y.reshape(leading + y.shape[1:])


class MaxPool(_Pool):
    """Max over each window; ``len(window_shape)`` spatial axes before the channel axis."""

    _: KW_ONLY
    name: str = "max_pool"

    def reduce_windows(self, batched, dims, steps, pads):
        return lax.reduce_window(batched, -jnp.inf, lax.max, dims, steps, pads)


class AvgPool(_Pool):
    """Mean over each window; padded zeros count unless ``count_include_pad=False`` (as flax)."""

    count_include_pad: bool = True
    _: KW_ONLY
    name: str = "avg_pool"

    def reduce_windows(self, batched, dims, steps, pads):
        total = lax.reduce_window(batched, 0.0, lax.add, dims, steps, pads)
        if self.count_include_pad:
            return total / jnp.asarray(math.prod(self.window_shape), batched.dtype)
        # Divide each window by the number of real (unpadded) entries in it.
        ones = jnp.ones((1,) + batched.shape[1:-1] + (1,), batched.dtype)
        return total / lax.reduce_window(ones, 0.0, lax.add, dims, steps, pads)


def MaxPool1D(window: int, strides=None, padding="VALID", name: str = "max_pool1d") -> MaxPool:
    """1-D max pooling over ``(*batch, length, channels)``."""
    return MaxPool(_as_tuple(window, 1, "window", "MaxPool1D"), strides, padding, name=name)


def MaxPool2D(window: int | Sequence[int], strides=None, padding="VALID", name: str = "max_pool2d") -> MaxPool:
    """2-D max pooling over ``(*batch, height, width, channels)``."""
    return MaxPool(_as_tuple(window, 2, "window", "MaxPool2D"), strides, padding, name=name)


def AvgPool1D(window: int, strides=None, padding="VALID", count_include_pad: bool = True,
              name: str = "avg_pool1d") -> AvgPool:
    """1-D average pooling over ``(*batch, length, channels)``."""
    return AvgPool(_as_tuple(window, 1, "window", "AvgPool1D"), strides, padding, count_include_pad, name=name)


def AvgPool2D(window: int | Sequence[int], strides=None, padding="VALID", count_include_pad: bool = True,
              name: str = "avg_pool2d") -> AvgPool:
    """2-D average pooling over ``(*batch, height, width, channels)``."""
    return AvgPool(_as_tuple(window, 2, "window", "AvgPool2D"), strides, padding, count_include_pad, name=name)


class _GlobalPool(ParamFree):
    """Reduce the ``num_spatial`` axes before the channel axis: ``(*batch, *spatial, C) -> (*batch, C)``."""

    num_spatial: PositiveInt = 1
    _: KW_ONLY
    name: str = "global_pool"
    always_shown: ClassVar[tuple] = ("num_spatial",)

    def check_input(self, x):
        check_spatial_input(self, x, self.num_spatial)

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        return tuple(range(-self.num_spatial - 1, -1))

    def reduce(self, x, axis):
        raise NotImplementedError

    def fn(self, x):
        return self.reduce(x, axis=self.spatial_axes)


class GlobalAvgPool(_GlobalPool):
    """Mean over the ``num_spatial`` axes before the channel axis: ``(B, *spatial, C) -> (B, C)``."""

    _: KW_ONLY
    name: str = "global_avg_pool"

    def reduce(self, x, axis):
        return jnp.mean(x, axis=axis)


class GlobalMaxPool(_GlobalPool):
    """Max over the ``num_spatial`` axes before the channel axis: ``(B, *spatial, C) -> (B, C)``."""

    _: KW_ONLY
    name: str = "global_max_pool"

    def reduce(self, x, axis):
        return jnp.max(x, axis=axis)


__all__ = [
    "MaxPool", "AvgPool", "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D",
    "GlobalAvgPool", "GlobalMaxPool",
]
