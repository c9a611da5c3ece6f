"""Embedding: a learned lookup table from integer ids to vectors.

``y[..., :] = E[ids[...], :]`` with ``E`` of shape ``(num_embeddings, features)``; it is
a one-hot vector times ``E``, computed as a gather. :func:`attend` is the transpose
(``x E^T``), the output projection of a model whose input and output embeddings are tied.

Ids outside ``[0, num_embeddings)``, negative ones included, are an error where the ids
are concrete (outside ``jit``); under ``jit`` they cannot be checked and give NaN rows,
never a silently clipped or wrapped row.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> embed = nn.Embedding(1000, 64)
    >>> params, state = embed.init(jax.random.key(0), jnp.zeros((2, 7), jnp.int32))
    >>> embed.apply(params, state, jnp.array([[1, 2, 3]]))[0].shape
    (1, 3, 64)
"""
from __future__ import annotations

from dataclasses import field
from typing import Any, Callable

import jax.numpy as jnp

from jdl import init as initializers
from jdl._checks import PositiveInt, check_floating, check_integer, check_that, check_token_ids
from jdl.nn.core import KW_ONLY, Layer, check_params


class Embedding(Layer):
    """Look up rows of ``params["embedding"]`` (``(num_embeddings, features)``) by integer id.

    The default initialiser is flax's: ``N(0, 1/sqrt(features))``.
    """

    num_embeddings: PositiveInt
    features: PositiveInt
    _: KW_ONLY
    embedding_init: Callable = field(
        default=initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0), repr=False)
    param_dtype: Any = jnp.float32
    name: str = "embedding"

    def init(self, key, ids):
        check_integer(self, ids, "ids")
        return {"embedding": self.embedding_init(key, (self.num_embeddings, self.features), self.param_dtype)}, {}

    def apply(self, params, state, ids, *, key=None, train=False):
        check_token_ids(self, ids, self.num_embeddings)  # by value too, where the ids are concrete
        check_params(self, params, state, ids)

        table = params["embedding"]
        # Out-of-range ids, negative ones too (no Python-style wrap to the last rows), give NaN.
        in_range = (ids >= 0) & (ids < self.num_embeddings)
        rows = jnp.take(table, jnp.where(in_range, ids, 0), axis=0)
        return jnp.where(in_range[..., None], rows, jnp.asarray(jnp.nan, table.dtype)), state


def attend(params, x):
    """Scores of ``x`` against every embedding: ``x E^T``, for tied output projections."""
    table = params["embedding"]
    check_floating("attend", x)
    check_that(x.shape[-1] == table.shape[1], "attend", f"x with last axis {table.shape[1]}", f"shape {tuple(x.shape)}")
    return jnp.dot(x, table.T)
