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

import jax.numpy as jnp
from jax import lax

from jdl._checks import check_floating, check_min_rank
from jdl.nn.conv import _as_tuple, check_output_sizes, fold_batch_axes
from jdl.nn.core import Layer, stateless


def _pool(kind: str, window_shape, strides, padding, count_include_pad: bool, name: str) -> Layer:
    window = (window_shape,) if isinstance(window_shape, int) else tuple(window_shape)
    n = len(window)
    description = f"{kind}(window_shape={window}, strides={strides}, padding={padding!r})"
    if not 1 <= n <= 3 or not all(isinstance(w, int) and w > 0 for w in window):
        raise ValueError(f"{description}: expected 1 to 3 positive window sizes, got {window_shape!r}")
    strides_t = window if strides is None else _as_tuple(strides, n, "strides", description)
    if isinstance(padding, str):
        if padding.upper() not in ("SAME", "VALID"):
            raise ValueError(f"{description}: expected padding 'SAME', 'VALID', an int or pairs, got {padding!r}")
        pads = padding.upper()
    elif isinstance(padding, int):
        pads = [(padding, padding)] * n
    else:
        pads = [(p, p) if isinstance(p, int) else tuple(p) for p in padding]
        if len(pads) != n or not all(len(p) == 2 for p in pads):
            raise ValueError(f"{description}: expected padding for {n} spatial axes, got {padding!r}")
    layout = "*batch, " + ", ".join(f"spatial_{i}" for i in range(n)) + ", channels"

    def check(x):
        check_floating(description, x)
        check_min_rank(description, x, n + 1, layout)
        check_output_sizes(description, x.shape[x.ndim - n - 1: -1], window, strides_t, pads, (1,) * n)

    def pool(x):
        batched, leading = fold_batch_axes(x, n)
        dims = (1,) + window + (1,)
        steps = (1,) + strides_t + (1,)
        full_pads = pads if isinstance(pads, str) else [(0, 0)] + list(pads) + [(0, 0)]
        # Python scalars as init values: lax recognises them as the monoid's identity and
        # uses its differentiable max/sum windows. A jnp array is staged out under jit,
        # and the generic reduce_window it then falls back to has no reverse-mode rule.
        if kind.startswith("MaxPool"):
            y = lax.reduce_window(batched, -jnp.inf, lax.max, dims, steps, full_pads)
        else:
            total = lax.reduce_window(batched, 0.0, lax.add, dims, steps, full_pads)
            if count_include_pad:
                y = total / jnp.asarray(math.prod(window), x.dtype)
            else:
                # Divide each window by the number of real (unpadded) entries in it.
                ones = jnp.ones((1,) + batched.shape[1:-1] + (1,), x.dtype)
                counts = lax.reduce_window(ones, 0.0, lax.add, dims, steps, full_pads)
                y = total / counts
        return y.reshape(leading + y.shape[1:])

    return stateless(name, description, pool, check)


def MaxPool(window_shape: int | Sequence[int], strides=None, padding="VALID", name: str = "max_pool") -> Layer:
    """Max over each window; ``len(window_shape)`` spatial axes before the channel axis."""
    return _pool("MaxPool", window_shape, strides, padding, True, name)


def AvgPool(window_shape: int | Sequence[int], strides=None, padding="VALID", count_include_pad: bool = True,
            name: str = "avg_pool") -> Layer:
    """Mean over each window; padded zeros count unless ``count_include_pad=False`` (as flax)."""
    return _pool("AvgPool", window_shape, strides, padding, count_include_pad, name)


def MaxPool1D(window: int, strides=None, padding="VALID", name: str = "max_pool1d") -> Layer:
    """1-D max pooling over ``(*batch, length, channels)``."""
    return MaxPool(_as_tuple(window, 1, "window", "MaxPool1D"), strides, padding, name)


def MaxPool2D(window: int | Sequence[int], strides=None, padding="VALID", name: str = "max_pool2d") -> Layer:
    """2-D max pooling over ``(*batch, height, width, channels)``."""
    return MaxPool(_as_tuple(window, 2, "window", "MaxPool2D"), strides, padding, name)


def AvgPool1D(window: int, strides=None, padding="VALID", count_include_pad: bool = True,
              name: str = "avg_pool1d") -> Layer:
    """1-D average pooling over ``(*batch, length, channels)``."""
    return AvgPool(_as_tuple(window, 1, "window", "AvgPool1D"), strides, padding, count_include_pad, name)


def AvgPool2D(window: int | Sequence[int], strides=None, padding="VALID", count_include_pad: bool = True,
              name: str = "avg_pool2d") -> Layer:
    """2-D average pooling over ``(*batch, height, width, channels)``."""
    return AvgPool(_as_tuple(window, 2, "window", "AvgPool2D"), strides, padding, count_include_pad, name)


def _global_pool(kind: str, reduce, num_spatial: int, name: str) -> Layer:
    description = f"{kind}(num_spatial={num_spatial})"
    axes = tuple(range(-num_spatial - 1, -1))
    layout = "*batch, " + ", ".join(f"spatial_{i}" for i in range(num_spatial)) + ", channels"

    def check(x):
        check_floating(description, x)
        check_min_rank(description, x, num_spatial + 1, layout)

    return stateless(name, description, lambda x: reduce(x, axis=axes), check)


def GlobalAvgPool(num_spatial: int = 1, name: str = "global_avg_pool") -> Layer:
    """Mean over the ``num_spatial`` axes before the channel axis: ``(B, *spatial, C) -> (B, C)``."""
    return _global_pool("GlobalAvgPool", jnp.mean, num_spatial, name)


def GlobalMaxPool(num_spatial: int = 1, name: str = "global_max_pool") -> Layer:
    """Max over the ``num_spatial`` axes before the channel axis: ``(B, *spatial, C) -> (B, C)``."""
    return _global_pool("GlobalMaxPool", jnp.max, num_spatial, name)


__all__ = [
    "MaxPool", "AvgPool", "MaxPool1D", "MaxPool2D", "AvgPool1D", "AvgPool2D",
    "GlobalAvgPool", "GlobalMaxPool",
]
