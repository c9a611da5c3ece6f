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

import jax
import jax.numpy as jnp
import numpy as np

from jdl import init as initializers
from jdl._checks import check_array, check_floating, check_integer, check_keys, check_min_rank, check_param_shape
from jdl.nn.core import Layer, make_layer


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
    if not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"sinusoidal_positions: expected a non-negative int length, got {length!r}")
    if not isinstance(features, (int, np.integer)) or features <= 0:
        raise ValueError(f"sinusoidal_positions: expected a positive int features, got {features!r}")
    positions = jnp.asarray(offset) + jnp.arange(length)
    return _sinusoids(positions, features, max_timescale, dtype)


def _positions(description: str, max_length: int, x, offset, positions):
    """The positions of ``x``'s length axis, checked against ``max_length`` where that is possible."""
    length = x.shape[-2]
    if length > max_length:
        raise ValueError(
            f"{description}: expected a sequence of at most max_length={max_length} positions (axis -2), got "
            f"input of shape {tuple(x.shape)} with {length}"
        )
    if positions is not None:
        if not (isinstance(offset, int) and offset == 0):
            raise ValueError(f"{description}: expected either offset or positions, got both")
        check_integer(description, positions, "positions")
        if positions.ndim < 1 or positions.shape[-1] != length or positions.ndim > x.ndim - 1 or any(
                p not in (1, s) for p, s in zip(positions.shape[::-1], x.shape[-2::-1])):
            raise ValueError(
                f"{description}: expected positions of shape [batch..., {length}] matching the input "
                f"{tuple(x.shape)} (batch axes may be 1 or absent), got {tuple(positions.shape)}"
            )
        return jnp.asarray(positions)
    check_array(description, jnp.asarray(offset), "offset")
    offset = jnp.asarray(offset)
    if offset.shape != () or not jnp.issubdtype(offset.dtype, jnp.integer):
        raise TypeError(f"{description}: expected an integer scalar offset, got {offset.dtype}{tuple(offset.shape)}")
    try:
        start = int(offset)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        start = None  # traced: out-of-range positions give NaN instead
    if start is not None and not 0 <= start <= max_length - length:
        raise ValueError(
            f"{description}: expected positions in [0, {max_length}), got positions {start}..{start + length - 1} "
            f"(offset {start}, length {length})"
        )
    return offset + jnp.arange(length)


def _add(x, encoding, positions, max_length):
    in_range = (positions >= 0) & (positions < max_length)
    encoding = jnp.where(in_range[..., None], encoding, jnp.asarray(jnp.nan, encoding.dtype))
    return x + encoding


def SinusoidalPositionalEncoding(max_length: int, *, max_timescale: float = 10000.0,
                                 name: str = "sinusoidal_positions") -> Layer:
    """Add the sinusoidal encoding of each position: ``y = x + PE[positions]``.

    No params. ``apply(params, state, x, *, offset=0, positions=None)``: ``x`` is
    ``[batch..., length, features]``; ``positions`` (integers ``[batch..., length]``) replaces
    ``offset + arange(length)``. The encoding is computed in ``x``'s dtype (float32 at least)
    from the positions, not stored, so the program carries no ``max_length x features``
    constant; ``max_length`` only bounds the positions.
    """
    if not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"SinusoidalPositionalEncoding: expected a positive int max_length, got {max_length!r}")
    description = f"SinusoidalPositionalEncoding(max_length={max_length})"

    def check_input(x):
        check_floating(description, x)
        check_min_rank(description, x, 2, "batch..., length, features")

    def init(key, x):
        del key
        check_input(x)
        _positions(description, max_length, x, 0, None)
        return {}, {}

    def apply(params, state, x, *, key=None, train=False, offset=0, positions=None):
        del key, train
        check_input(x)
        check_keys(description, params, [])
        check_keys(description, state, [], "state")
        positions = _positions(description, max_length, x, offset, positions)
        encoding = _sinusoids(positions, x.shape[-1], max_timescale, x.dtype)
        return _add(x, encoding, positions, max_length), state

    return make_layer(name, description, init, apply)


def LearnedPositionalEmbedding(max_length: int, *, embedding_init=initializers.normal(0.02),
                               param_dtype=jnp.float32, name: str = "learned_positions") -> Layer:
    """Add a learned vector for each position: ``y = x + E[positions]``.

    Params ``{"embedding": (max_length, features)}``, drawn from ``N(0, 0.02)`` by default
    (BERT, GPT-2, and flax's WMT example). ``apply(params, state, x, *, offset=0,
    positions=None)`` as :func:`SinusoidalPositionalEncoding`.

    Example (a decoding step at position 5 adds row 5):
        >>> import jax, jax.numpy as jnp
        >>> layer = LearnedPositionalEmbedding(max_length=16)
        >>> params, state = layer.init(jax.random.key(0), jnp.zeros((2, 16, 8)))
        >>> y, _ = layer.apply(params, state, jnp.zeros((2, 1, 8)), offset=5)
        >>> bool(jnp.all(y[0, 0] == params["embedding"][5]))
        True
    """
    if not isinstance(max_length, int) or max_length <= 0:
        raise ValueError(f"LearnedPositionalEmbedding: expected a positive int max_length, got {max_length!r}")
    description = f"LearnedPositionalEmbedding(max_length={max_length})"

    def check_input(x):
        check_floating(description, x)
        check_min_rank(description, x, 2, "batch..., length, features")

    def init(key, x):
        check_input(x)
        _positions(description, max_length, x, 0, None)
        return {"embedding": embedding_init(key, (max_length, x.shape[-1]), param_dtype)}, {}

    def apply(params, state, x, *, key=None, train=False, offset=0, positions=None):
        del key, train
        check_input(x)
        check_keys(description, params, ["embedding"])
        check_keys(description, state, [], "state")
        table = params["embedding"]
        check_array(description, table, "params['embedding']")
        if table.ndim != 2 or table.shape[0] != max_length:
            check_param_shape(description, table, (max_length, x.shape[-1]), "embedding")
        if x.shape[-1] != table.shape[1]:
            raise ValueError(
                f"{description}: expected input with last axis {table.shape[1]} (the table's features), got "
                f"input of shape {tuple(x.shape)}"
            )
        positions = _positions(description, max_length, x, offset, positions)
        rows = jnp.take(table, jnp.clip(positions, 0, max_length - 1), axis=0)
        compute_dtype = jnp.result_type(x.dtype, table.dtype)
        return _add(x.astype(compute_dtype), rows.astype(compute_dtype), positions, max_length), state

    return make_layer(name, description, init, apply)
