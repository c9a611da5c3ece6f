"""Weight initialisers, with the fan-in and fan-out of dense and convolution kernels.

Every initialiser has the signature of `jax.nn.initializers`: ``init(key, shape,
dtype=jnp.float32) -> array``, so the two can be swapped freely.

Kernels follow flax's layout: a dense kernel is ``(fan_in_features, out_features)`` and an
N-d convolution kernel is ``(*window, in_channels // groups, out_channels)``. For both,

    fan_in  = in_features  * prod(window)
    fan_out = out_features * prod(window)

The formulas, as the course material writes them (``sigma`` is a standard deviation):

=====================  ======================================================
Gaussian               ``N(0, sigma)``
uniform fan-in         ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``
Xavier/Glorot uniform  ``U(-x, x)``, ``x = sqrt(6 / (fan_in + fan_out))``
Xavier/Glorot normal   ``N(0, sqrt(2 / (fan_in + fan_out)))``
He/Kaiming uniform     ``U(-x, x)``, ``x = sqrt(6 / fan_in)``
He/Kaiming normal      ``N(0, sqrt(2 / fan_in))``
LeCun uniform / normal variance ``1 / fan_in``
orthogonal             a (semi-)orthogonal matrix times ``scale``
=====================  ======================================================

The same factory called with the same arguments returns the same function
(``he_normal() is he_normal()``), so two layers built alike compare equal and share
``jit``'s cache and the layers' memoised shape checks.

All of them except the Gaussian and orthogonal are :func:`variance_scaling`, the one
place where the fan arithmetic lives. Note that ``jax.nn.initializers.glorot_normal``,
``he_normal`` and ``lecun_normal`` draw from a *truncated* normal; the course's Xavier
and He normals are plain normals, and so are jdl's. ``lecun_normal`` follows jax/flax
(truncated), because it is the default kernel initialiser of flax's ``Dense`` and jdl's.

Example:
    >>> import jax, jdl
    >>> w = jdl.init.he_normal()(jax.random.key(0), (784, 256))
    >>> w.shape
    (784, 256)
"""
from __future__ import annotations

import functools
import math
from typing import Callable, Sequence

import jax
import jax.numpy as jnp

from jdl._checks import check_that

Initializer = Callable[..., jax.Array]

_MODES = ("fan_in", "fan_out", "fan_avg")
_DISTRIBUTIONS = ("normal", "truncated_normal", "uniform")


def _same_for_same_arguments(factory: Callable) -> Callable:
    """``factory`` memoised on its (hashable) arguments: equal arguments, the same initialiser."""
    cached = functools.lru_cache(maxsize=None)(factory)

    @functools.wraps(factory)
    def memoised(*args, **kwargs):
        try:
            return cached(*args, **kwargs)
        except TypeError:  # an unhashable argument: a fresh initialiser, as before
            return factory(*args, **kwargs)

    return memoised


def compute_fans(shape: Sequence[int], in_axis: int = -2, out_axis: int = -1) -> tuple[int, int]:
    """Fan-in and fan-out of a kernel: the in/out feature axes times the receptive field.

    For a dense kernel ``(in, out)`` this is ``(in, out)``; for a conv kernel
    ``(kh, kw, in, out)`` it is ``(kh*kw*in, kh*kw*out)``. With the receptive field
    ``prod(shape) / (in * out)``, that is ``fan_in = prod(shape) / out`` and
    ``fan_out = prod(shape) / in``, exact integers even when ``in_axis`` and ``out_axis``
    are the same axis (an embedding table ``(num, features)`` with ``out_axis=0`` has
    ``fan_in = features``, as in jax).
    """
    shape = tuple(int(d) for d in shape)
    check_that(len(shape) >= 2, "compute_fans", "a kernel shape of rank >= 2 (..., in, out)", shape)
    in_size, out_size = shape[in_axis], shape[out_axis]
    if in_size * out_size == 0:
        return 0, 0
    size = math.prod(shape)
    return size // out_size, size // in_size


def zeros(key, shape, dtype=jnp.float32):
    """All zeros (the usual bias initialiser)."""
    del key
    return jnp.zeros(shape, dtype)


def ones(key, shape, dtype=jnp.float32):
    """All ones (the usual scale initialiser of a normalisation layer)."""
    del key
    return jnp.ones(shape, dtype)


@_same_for_same_arguments
def constant(value: float) -> Initializer:
    """Every entry equal to ``value``."""

    def init(key, shape, dtype=jnp.float32):
        del key
        return jnp.full(shape, value, dtype)

    return init


@_same_for_same_arguments
def normal(stddev: float = 1e-2) -> Initializer:
    """The course's Gaussian initialisation ``N(0, sigma)`` with ``sigma = stddev``."""
    check_that(stddev >= 0, "normal", "stddev >= 0", stddev)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.normal(key, shape, dtype) * jnp.asarray(stddev, dtype)

    return init


@_same_for_same_arguments
def uniform(scale: float = 1e-2) -> Initializer:
    """``U(0, scale)``, as ``jax.nn.initializers.uniform``.

    For the course's symmetric uniform use :func:`uniform_fan_in` or
    :func:`variance_scaling` with ``distribution="uniform"``.
    """
    check_that(scale >= 0, "uniform", "scale >= 0", scale)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, 0.0, scale)

    return init


@_same_for_same_arguments
def variance_scaling(scale: float, mode: str, distribution: str, in_axis: int = -2, out_axis: int = -1) -> Initializer:
    """Zero-mean draws with variance ``scale / n``, ``n`` the fan chosen by ``mode``.

    ``distribution`` is ``"normal"`` (std ``sqrt(scale/n)``), ``"uniform"`` (bound
    ``sqrt(3 scale/n)``) or ``"truncated_normal"`` (a normal cut at two standard
    deviations and rescaled so its variance is still ``scale/n``). Same arguments and
    same draws as ``jax.nn.initializers.variance_scaling``.
    """
    check_that(mode in _MODES, "variance_scaling", f"mode in {_MODES}", repr(mode))
    if distribution not in _DISTRIBUTIONS:
        raise ValueError(f"variance_scaling: expected distribution in {_DISTRIBUTIONS}, got {distribution!r}")
    check_that(scale > 0, "variance_scaling", "scale > 0", scale)

    def init(key, shape, dtype=jnp.float32):
        fan_in, fan_out = compute_fans(shape, in_axis, out_axis)
        fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
        variance = scale / max(1.0, fan)
        if distribution == "normal":
            return jax.random.normal(key, shape, dtype) * jnp.asarray(math.sqrt(variance), dtype)
        if distribution == "uniform":
            bound = math.sqrt(3.0 * variance)
            return jax.random.uniform(key, shape, dtype, -1.0, 1.0) * jnp.asarray(bound, dtype)
        # std of a standard normal truncated to [-2, 2]; divide it out to keep the variance.
        truncated_std = 0.87962566103423978
        std = math.sqrt(variance) / truncated_std
        return jax.random.truncated_normal(key, -2.0, 2.0, shape, dtype) * jnp.asarray(std, dtype)

    return init


def _preset(name: str, scale: float, mode: str, distribution: str, formula: str):
    """The initialiser ``name``: ``variance_scaling(scale, mode, distribution)``, taking only the kernel's axes."""

    def preset(in_axis: int = -2, out_axis: int = -1) -> Initializer:
        return variance_scaling(scale, mode, distribution, in_axis, out_axis)

    preset.__name__ = preset.__qualname__ = name
    preset.__doc__ = f"{formula}: ``variance_scaling({scale:.4g}, {mode!r}, {distribution!r}, in_axis, out_axis)``."
    return preset


# The course's uniform_fan_in is PyTorch's nn.Linear default; lecun_normal is jax's and flax's (truncated).
uniform_fan_in = _preset("uniform_fan_in", 1 / 3, "fan_in", "uniform", "The course's ``U(+-1/sqrt(fan_in))``")
xavier_uniform = _preset("xavier_uniform", 1.0, "fan_avg", "uniform", "Xavier ``U(+-sqrt(6 / (fan_in + fan_out)))``")
xavier_normal = _preset("xavier_normal", 1.0, "fan_avg", "normal", "Xavier ``N(0, sqrt(2 / (fan_in + fan_out)))``")
he_uniform = _preset("he_uniform", 2.0, "fan_in", "uniform", "He/Kaiming ``U(+-sqrt(6 / fan_in))``")
he_normal = _preset("he_normal", 2.0, "fan_in", "normal", "He/Kaiming ``N(0, sqrt(2 / fan_in))``, a plain normal")
lecun_uniform = _preset("lecun_uniform", 1.0, "fan_in", "uniform", "LeCun ``U(+-sqrt(3 / fan_in))``")
lecun_normal = _preset("lecun_normal", 1.0, "fan_in", "truncated_normal", "LeCun: variance ``1 / fan_in``, truncated")

glorot_uniform = xavier_uniform
glorot_normal = xavier_normal
kaiming_uniform = he_uniform
kaiming_normal = he_normal


@_same_for_same_arguments
def orthogonal(scale: float = 1.0, column_axis: int = -1) -> Initializer:
    """A random (semi-)orthogonal matrix times ``scale`` (Saxe et al., 2014).

    The kernel is reshaped to ``(rows, cols)`` with ``cols`` the size of
    ``column_axis``; the result has orthonormal columns if ``rows >= cols``, else
    orthonormal rows. It is the Q of the QR decomposition of a Gaussian matrix, with
    signs fixed by the diagonal of R so that the distribution is uniform (Haar).
    """

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        check_that(len(shape) >= 2, "orthogonal", "a shape of rank >= 2", shape)
        if math.prod(shape) == 0:  # nothing to orthogonalise (and rows = prod // 0 below)
            return jnp.zeros(shape, dtype)
        cols = shape[column_axis]
        rows = math.prod(shape) // cols
        big, small = max(rows, cols), min(rows, cols)
        gaussian = jax.random.normal(key, (big, small), jnp.float32)
        q, r = jnp.linalg.qr(gaussian)
        q = q * jnp.sign(jnp.diagonal(r))[None, :]
        if rows < cols:
            q = q.T
        q = q.reshape(tuple(d for i, d in enumerate(shape) if i != column_axis % len(shape)) + (cols,))
        q = jnp.moveaxis(q, -1, column_axis)
        return (scale * q).astype(dtype)

    return init
