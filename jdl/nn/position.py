"""Positional encodings: the sinusoidal table of "Attention is all you need", and a learned one.

Attention is blind to order, so a Transformer adds to each input vector a vector that
depends on its position. The sinusoidal encoding (Vaswani et al., 2017) is, for position
``pos`` and feature pair ``(2i, 2i + 1)`` of ``d``::

    PE(pos, 2i)     = sin(pos / 10000^(2i / d))
    PE(pos, 2i + 1) = cos(pos / 10000^(2i / d))

so every pair is a rotation at its own wavelength, from ``2 pi`` to ``10000 * 2 pi``, and
``PE(pos + k)`` is a linear function of ``PE(pos)``. Both features of a pair share the
exponent ``2i / d`` (the seeds' note writes ``2i + 1`` in the cosine's; the paper and every
reference implementation use ``2i``). Positions count from 0, as in the paper; the seeds'
example numbers the first word 1, which is ``offset=1``.

The learned encoding is a trained table ``(max_length, features)``, as in BERT and GPT.

Both layers map ``x`` ``[batch..., length, features]`` to ``x + PE[positions]``, with
``positions = offset + [0, ..., length - 1]`` or given explicitly, so a decoder writing
position ``t`` passes ``offset=t``. A sequence longer than ``max_length`` is an error at
trace time; an ``offset`` or ``positions`` only known inside ``jit`` cannot raise, and a
position outside ``[0, max_length)`` gives NaN rows there (as out-of-range ids do in
:func:`jdl.nn.Embedding`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> nn.sinusoidal_positions(2, 4)            # position 0: sin 0, cos 0, ...
    Array([[0.        , 1.        , 0.        , 1.        ],
           [0.84147096, 0.5403023 , 0.00999983, 0.99995   ]], dtype=float32)
    >>> encode = nn.SinusoidalPositionalEncoding(max_length=128)
    >>> params, state = encode.init(jax.random.key(0), jnp.zeros((2, 10, 16)))
    >>> y, _ = encode.apply(params, state, jnp.zeros((2, 10, 16)))
    >>> y.shape
    (2, 10, 16)
"""
from __future__ import annotations

from dataclasses import field
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jdl import init as initializers
from jdl._checks import (
    PositiveInt, check_floating_min_rank, check_int_at_least, check_integer, check_integer_scalar, check_last_axis,
    check_max_length, check_positive_int, check_that, is_concrete,
)
from jdl.nn.core import KW_ONLY, Layer, check_params


def _inverse_wavelengths(features: int, max_timescale: float) -> np.ndarray:
    """``1 / 10000^(2i / d)`` for every feature (the two of a pair share one), in float64."""
    pair = np.arange(features) // 2
    return max_timescale ** (-2.0 * pair / features)


def _sinusoids(positions, features: int, max_timescale: float, dtype) -> jax.Array:
    """``PE[positions]``: ``[..., features]``, computed from the positions (no table)."""
    compute_dtype = jnp.promote_types(dtype, jnp.float32)
    angles = positions.astype(compute_dtype)[..., None] * jnp.asarray(
        _inverse_wavelengths(features, max_timescale), compute_dtype)
    even = np.arange(features) % 2 == 0
    return jnp.where(even, jnp.sin(angles), jnp.cos(angles)).astype(dtype)


def sinusoidal_positions(length: int, features: int, *, offset=0, max_timescale: float = 10000.0,
                         dtype=jnp.float32) -> jax.Array:
    """The sinusoidal encodings of positions ``offset, ..., offset + length - 1``: ``[length, features]``.

    ``PE(pos, 2i) = sin(pos / max_timescale^(2i/d))``, ``PE(pos, 2i+1) = cos(...)``, with the
    paper's ``max_timescale = 10000``. ``offset`` may be traced (a decoding step under ``jit``).
    """
    check_int_at_least("sinusoidal_positions", "length", length, 0)
    check_positive_int("sinusoidal_positions", "features", features)
    positions = jnp.asarray(offset) + jnp.arange(length)
    return _sinusoids(positions, features, max_timescale, dtype)


class _PositionalEncoding(Layer):
    """Adds an encoding of each position of ``x`` ``[batch..., length, features]``: ``x + PE[positions]``.

    Subclasses give ``encode(params, positions, x) -> (x, PE[positions])`` (``x`` cast to
    the dtype of the sum); positions outside ``[0, max_length)`` give NaN rows.
    """

    max_length: PositiveInt

    def check_input(self, x):
        check_floating_min_rank(self, x, 2, "batch..., length, features")
        check_max_length(self, x, self.max_length)

    def check_fits_params(self, params, x):
        """An input that does not fit good params is the input's fault (checked before the params)."""

    def init_params(self, key, x):
        return {}

    def init(self, key, x):
        self.check_input(x)
        return self.init_params(key, x), {}

    def positions_of(self, x, offset, positions):
        """``offset + [0, ..., length - 1]``, or ``positions`` as given; checked where they are concrete."""
        length = x.shape[-2]
        if positions is not None:
            check_that(isinstance(offset, int) and offset == 0, self, "either offset or positions", "both")
            check_integer(self, positions, "positions")
            check_that(positions.shape[-1:] == (length,) and _broadcasts_to(positions.shape, x.shape[:-1]), self,
                       f"positions of shape [batch..., {length}] matching the input {tuple(x.shape)} (batch axes may "
                       f"be 1 or absent)", tuple(positions.shape))
            return jnp.asarray(positions)
        offset = jnp.asarray(offset)
        check_integer_scalar(self, offset, "offset")
        # A traced offset (a decoding step under jit) cannot be checked: its positions past the table give NaN.
        if is_concrete(offset):
            check_that(0 <= int(offset) <= self.max_length - length, self, f"positions in [0, {self.max_length})",
                       f"positions {int(offset)}..{int(offset) + length - 1} (offset {int(offset)}, length {length})")
        return offset + jnp.arange(length)

    def encode(self, params, positions, x):
        raise NotImplementedError

    def apply(self, params, state, x, *, key=None, train=False, offset=0, positions=None):
        self.check_input(x)
        self.check_fits_params(params, x)
        check_params(self, params, state, x)

        positions = self.positions_of(x, offset, positions)
        x, encoding = self.encode(params, positions, x)
        in_range = (positions >= 0) & (positions < self.max_length)
        return x + jnp.where(in_range[..., None], encoding, jnp.asarray(jnp.nan, encoding.dtype)), state


def _broadcasts_to(shape, target) -> bool:
    try:
        return np.broadcast_shapes(tuple(shape), tuple(target)) == tuple(target)
    except ValueError:
        return False


class SinusoidalPositionalEncoding(_PositionalEncoding):
    """Add the sinusoidal encoding of each position: ``y = x + PE[positions]``.

    No params. ``apply(params, state, x, *, offset=0, positions=None)``: ``x`` is
    ``[batch..., length, features]``; ``positions`` (integers ``[batch..., length]``) replaces
    ``offset + arange(length)``. The encoding is computed in ``x``'s dtype (float32 at least)
    from the positions, not stored, so the program carries no ``max_length x features``
    constant; ``max_length`` only bounds the positions.
    """

    _: KW_ONLY
    max_timescale: float = 10000.0
    name: str = "sinusoidal_positions"

    def encode(self, params, positions, x):
        return x, _sinusoids(positions, x.shape[-1], self.max_timescale, x.dtype)


class LearnedPositionalEmbedding(_PositionalEncoding):
    """Add a learned vector for each position: ``y = x + E[positions]``.

    Params ``{"embedding": (max_length, features)}``, drawn from ``N(0, 0.02)`` by default
    (BERT, GPT-2, and flax's WMT example). ``apply(params, state, x, *, offset=0,
    positions=None)`` as :class:`SinusoidalPositionalEncoding`.

    Example (a decoding step at position 5 adds row 5):
        >>> import jax, jax.numpy as jnp
        >>> layer = LearnedPositionalEmbedding(max_length=16)
        >>> params, state = layer.init(jax.random.key(0), jnp.zeros((2, 16, 8)))
        >>> y, _ = layer.apply(params, state, jnp.zeros((2, 1, 8)), offset=5)
        >>> bool(jnp.all(y[0, 0] == params["embedding"][5]))
        True
    """

    _: KW_ONLY
    embedding_init: Callable = field(default=initializers.normal(0.02), repr=False)
    param_dtype: Any = jnp.float32
    name: str = "learned_positions"

    def init_params(self, key, x):
        return {"embedding": self.embedding_init(key, (self.max_length, x.shape[-1]), self.param_dtype)}

    def check_fits_params(self, params, x):
        table = params.get("embedding") if isinstance(params, dict) else None
        if getattr(table, "ndim", 0) == 2 and table.shape[0] == self.max_length:
            check_last_axis(self, x, table.shape[1], "the table's features")

    def encode(self, params, positions, x):
        table = params["embedding"]
        rows = jnp.take(table, jnp.clip(positions, 0, self.max_length - 1), axis=0)
        compute_dtype = jnp.result_type(x.dtype, table.dtype)
        return x.astype(compute_dtype), rows.astype(compute_dtype)
