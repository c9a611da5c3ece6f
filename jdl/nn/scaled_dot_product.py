"""Scaled dot-product attention (Vaswani et al., 2017), for every head at once::

    weights = softmax(Q K^T * scale + B),   Attention(Q, K, V) = weights V

with ``scale = 1 / sqrt(d_k)`` (``d_k`` the head size) and ``B`` an optional additive bias.
A boolean ``mask`` (``True`` = attend; :mod:`jdl.nn.masks`) removes keys from the
softmax; a query whose every key is masked gets zero weights and a zero output, never NaN.

As in flax, the output and the weights are two functions: :func:`dot_product_attention`
and :func:`dot_product_attention_weights`. Layout: ``query`` ``[batch..., q_len, heads,
head_dim]``, ``key`` and ``value`` ``[batch..., kv_len, heads, head_dim]`` (flax's and
``jax.nn.dot_product_attention``'s); masks and biases ``[batch..., heads or 1, q_len or 1,
kv_len or 1]``, broadcast from the right; weights ``[batch..., heads, q_len, kv_len]``.

The products are written in that layout too (``...qhd,...khd->...hqk``), and
:class:`~jdl.nn.MultiHeadAttention` projects into it and calls :func:`attend`: XLA then
places the transposes, and on CPU it runs every product and weight gradient as one of its
library matmuls (a heads-first ``[batch..., heads, length, head_dim]`` layout inside, tried
before, forced transposing copies in the projections' weight gradients and left the value
gradient to a slower loop: the Transformer's train step took 3% longer). A query with no key
left is zeroed on the output (``[..., head_dim]``) rather than on the weights
(``[..., kv_len]``): less memory traffic, forward and backward.

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import nn
    >>> q = k = jnp.ones((1, 2, 1, 4))                 # batch 1, length 2, 1 head of 4
    >>> v = jnp.array([[[[1.0]], [[3.0]]]])           # the two keys' values: 1 and 3
    >>> nn.dot_product_attention(q, k, v, mask=nn.causal_mask(2))[0, :, 0, 0]
    Array([1., 2.], dtype=float32)
    >>> nn.dot_product_attention_weights(q, k, mask=nn.causal_mask(2))[0, 0]
    Array([[1. , 0. ],
           [0.5, 0.5]], dtype=float32)
"""
from __future__ import annotations

import math
import typing
from typing import Literal

import jax
import jax.numpy as jnp

from jdl._checks import (
    check_array, check_broadcasts_to, check_choice, check_floating, check_floating_min_rank, check_mask_dtype,
    check_rate, check_same_axes, check_same_dtype,
)
from jdl.nn.masks import masked_softmax

Implementation = Literal["auto", "jax", "cudnn", "plain"]
IMPLEMENTATIONS = typing.get_args(Implementation)


# ----------------------------------------------------------------------------- checks


LOGITS_LAYOUT = "batch..., heads, q_len, kv_len"


def check_attention_mask(where, mask, logits_shape: tuple[int, ...]) -> None:
    """A boolean mask that broadcasts to the logits ``[batch..., heads, q_len, kv_len]``."""
    check_mask_dtype(where, mask, hint="; flax's float masks convert with mask.astype(bool)")
    check_broadcasts_to(where, mask, logits_shape, "mask of shape [batch..., heads or 1, q_len or 1, kv_len or 1]",
                        LOGITS_LAYOUT, min_ndim=3, hint="; build it with padding_mask / causal_mask")


def _check_query_key(where, query, key) -> None:
    for name, array in (("query", query), ("key", key)):
        check_floating_min_rank(where, array, 3, "batch..., length, heads, head_dim", name)
    check_same_axes(where, query, key, slice(None, -3), ("query", "key"), "batch axes")
    check_same_axes(where, query, key, slice(-2, None), ("query", "key"), "(heads, head_dim)")


def logits_shape_of(query, key, kv_heads_first: bool = False) -> tuple[int, ...]:
    """``[batch..., heads, q_len, kv_len]`` for ``[batch..., q_len, heads, head_dim]`` queries and
    ``[batch..., kv_len, heads, head_dim]`` keys (``[batch..., heads, kv_len, head_dim]`` if ``kv_heads_first``)."""
    return tuple(query.shape[:-3]) + (query.shape[-2], query.shape[-3], key.shape[-2 if kv_heads_first else -3])


def _logit_terms(where, query, key, mask, bias, scale, kv_heads_first=False):
    """The checked mask and bias at the logits' rank, and the scale (``1 / sqrt(head_dim)`` by default)."""
    logits_shape = logits_shape_of(query, key, kv_heads_first)
    full_rank = lambda array: array.reshape((1,) * (len(logits_shape) - array.ndim) + tuple(array.shape))  # noqa: E731
    if mask is not None:
        check_attention_mask(where, mask, logits_shape)
        mask = full_rank(mask)
    if bias is not None:
        check_floating(where, bias, "bias")
        check_broadcasts_to(where, bias, logits_shape, "bias of shape [batch..., heads or 1, q_len or 1, kv_len or 1]",
                            LOGITS_LAYOUT, min_ndim=3)
        bias = full_rank(bias)
    return mask, bias, 1.0 / math.sqrt(query.shape[-1]) if scale is None else scale


def swap_heads(array):
    """``[batch..., length, heads, d]`` <-> ``[batch..., heads, length, d]`` (the cache's layout, the mask's)."""
    return jnp.swapaxes(array, -3, -2)


# ----------------------------------------------------------------------------- the two paths


def _kv(kv_heads_first: bool) -> str:
    """The keys' and values' axes in an einsum: ``k`` the position, ``h`` the head, ``d`` the feature."""
    return "hkd" if kv_heads_first else "khd"


def _weights(query, key, mask, bias, scale, zero_empty_rows=True, kv_heads_first=False):
    """softmax(Q K^T scale + B), the logits and the softmax in float32 at least."""
    logits_dtype = jnp.promote_types(query.dtype, jnp.float32)
    logits = jnp.einsum(f"...qhd,...{_kv(kv_heads_first)}->...hqk", query, key, preferred_element_type=logits_dtype)
    logits = logits * jnp.asarray(scale, logits_dtype)
    if bias is not None:
        logits = logits + bias.astype(logits_dtype)
    return masked_softmax(logits, mask, zero_empty_rows=zero_empty_rows)


def _zero_queries_without_keys(out, mask):
    """Zeros for a query whose every key is masked (the softmax and jax.nn spread it evenly over the
    keys), and so a zero gradient through it."""
    if mask is None:
        return out
    return jnp.where(swap_heads(jnp.any(mask, axis=-1, keepdims=True)), out, jnp.zeros((), out.dtype))


def _zero_unattended_keys(key, value, mask, kv_heads_first):
    """Zeros for the keys and values no query attends (padding): whatever they hold (NaN
    included) then cannot reach an output or a gradient, as ``0 x NaN`` in the products would."""
    if mask is None:
        return key, value
    attended = jnp.any(mask, axis=-2)[..., None]  # [batch..., heads or 1, kv_len or 1, 1]
    if not kv_heads_first:
        attended = swap_heads(attended)
    return tuple(jnp.where(attended, t, jnp.zeros((), t.dtype)) for t in (key, value))


def _to_one_batch_axis(array, batch: tuple[int, ...]):
    """``[batch..., a, b, c]`` -> ``[B, a, b, c]``; an array broadcast over the batch keeps 1."""
    rest = tuple(array.shape[len(batch):])
    if all(size == 1 for size in array.shape[:len(batch)]):
        return array.reshape((1,) + rest)
    return jnp.broadcast_to(array, batch + rest).reshape((math.prod(batch),) + rest)


def _fused_attention(query, key, value, mask, bias, scale, implementation, kv_heads_first):
    """``jax.nn.dot_product_attention``, which wants ``[batch, length, heads, head_dim]``: one batch axis."""
    batch = tuple(query.shape[:-3])
    if kv_heads_first:
        key, value = swap_heads(key), swap_heads(value)
    out = jax.nn.dot_product_attention(
        *(_to_one_batch_axis(t, batch) for t in (query, key, value)),
        bias=None if bias is None else _to_one_batch_axis(bias, batch),
        mask=None if mask is None else _to_one_batch_axis(mask, batch),
        scale=scale, implementation="cudnn" if implementation == "cudnn" else None)
    return out.reshape(batch + tuple(out.shape[1:]))


# ----------------------------------------------------------------------------- the functions


def attention_weights(where, query, key, *, mask=None, bias=None, scale=None) -> jax.Array:
    """:func:`dot_product_attention_weights` of a layer's projections, consistent by construction:
    only mask and bias are checked, naming ``where``."""
    mask, bias, scale = _logit_terms(where, query, key, mask, bias, scale)
    return _weights(query, key, mask, bias, scale).astype(query.dtype)


def attend(where, query, key, value, *, mask=None, bias=None, scale=None, dropout_rate: float = 0.0,
           dropout_key=None, implementation: str = "auto", unattended_keys_are_finite: bool = False,
           kv_heads_first: bool = False) -> jax.Array:
    """:func:`dot_product_attention` of a layer's projections; checks as :func:`attention_weights`.
    ``unattended_keys_are_finite``: the caller has already made the keys and values that no
    query attends finite (a layer that zeroed their source), so they are not zeroed again.
    ``kv_heads_first``: keys and values are ``[batch..., heads, kv_len, head_dim]`` (a
    :class:`~jdl.nn.KVCache`'s layout)."""
    check_choice(where, "implementation", implementation, IMPLEMENTATIONS)
    check_rate(where, "dropout_rate", dropout_rate)
    mask, bias, scale = _logit_terms(where, query, key, mask, bias, scale, kv_heads_first)
    if not unattended_keys_are_finite:
        key, value = _zero_unattended_keys(key, value, mask, kv_heads_first)
    dropout = dropout_key is not None and dropout_rate > 0.0
    needs_plain = dropout or value.shape[-1] != query.shape[-1]
    if implementation == "auto":
        # XLA's CPU build of jax.nn's grouped formulation is slower than the plain einsums
        # (fwd+bwd 12.6 ms against 9.2 ms at batch 32, length 64, 8 heads of 32).
        implementation = "plain" if needs_plain or jax.default_backend() == "cpu" else "jax"
    elif implementation != "plain" and needs_plain:
        raise ValueError(f"{where}: implementation={implementation!r} applies no dropout to the attention weights "
                         f"and needs value's head_dim equal to the query's; use implementation='plain' or 'auto'")
    if implementation != "plain":
        out = _fused_attention(query, key, value, mask, bias, scale, implementation, kv_heads_first)
        return _zero_queries_without_keys(out, mask)

    weights = _weights(query, key, mask, bias, scale, zero_empty_rows=False, kv_heads_first=kv_heads_first)
    if dropout:
        keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, weights.shape)
        weights = jnp.where(keep, weights / jnp.asarray(1.0 - dropout_rate, weights.dtype), 0.0)
    out = jnp.einsum(f"...hqk,...{_kv(kv_heads_first)}->...qhd", weights.astype(value.dtype), value)
    return _zero_queries_without_keys(out, mask)


def dot_product_attention(query, key, value, *, mask=None, bias=None, scale=None, dropout_rate: float = 0.0,
                          dropout_key=None, implementation: str = "auto") -> jax.Array:
    """Scaled dot-product attention, ``softmax(Q K^T / sqrt(d) + bias) V`` for every head.

    Args:
      query: ``[batch..., q_len, heads, head_dim]``.
      key: ``[batch..., kv_len, heads, head_dim]``.
      value: ``[batch..., kv_len, heads, v_head_dim]``.
      mask: boolean, ``True`` where a query may attend to a key, broadcastable to
        ``[batch..., heads, q_len, kv_len]`` (rank 3 at least: ``[heads or 1, q_len, kv_len]``).
        A query with no key left gets zeros.
      bias: added to the logits, broadcastable like ``mask``; finite (remove keys with
        ``mask``: a row of ``-inf`` biases has no softmax).
      scale: the logits' scale, ``1 / sqrt(head_dim)`` by default.
      dropout_rate, dropout_key: inverted dropout on the attention weights, applied when a
        key is given and the rate is positive (each weight independently).
      implementation: ``"auto"`` (the default) calls ``jax.nn.dot_product_attention`` on
        accelerators when there is no dropout and ``value``'s head size equals the query's,
        and the plain ``jnp`` path otherwise and on CPU, where the plain path measures
        faster; ``"jax"`` and ``"cudnn"`` force ``jax.nn.dot_product_attention``
        (``"cudnn"``: its cuDNN flash-attention kernel), ``"plain"`` the ``jnp`` path.

    Returns:
      ``[batch..., q_len, heads, v_head_dim]``.

    Example:
        >>> import jax.numpy as jnp
        >>> q = k = jnp.ones((1, 2, 1, 4))
        >>> v = jnp.array([[[[1.0]], [[3.0]]]])
        >>> dot_product_attention(q, k, v)[0, :, 0, 0]      # equal logits: the mean value
        Array([2., 2.], dtype=float32)
    """
    where = "dot_product_attention"
    _check_query_key(where, query, key)
    check_array(where, value, "value")
    check_same_axes(where, key, value, slice(None, -1), ("key", "value"), "[batch..., kv_len, heads]")
    check_same_dtype(where, (query, key, value), "query, key and value of one dtype")
    return attend(where, query, key, value, mask=mask, bias=bias, scale=scale, dropout_rate=dropout_rate,
                  dropout_key=dropout_key, implementation=implementation)


def dot_product_attention_weights(query, key, *, mask=None, bias=None, scale=None) -> jax.Array:
    """The attention weights ``softmax(Q K^T / sqrt(d) + bias)``, ``[batch..., heads, q_len, kv_len]``.

    The arguments are :func:`dot_product_attention`'s; a query with no key left gets zero
    weights. The weights have the query's dtype (the softmax runs in float32 at least).

    Example:
        >>> import jax.numpy as jnp
        >>> q, k = jnp.ones((1, 3, 2, 4)), jnp.ones((1, 5, 2, 4))
        >>> weights = dot_product_attention_weights(q, k)
        >>> weights.shape, round(float(weights[0, 0, 0, 0]), 6)
        ((1, 2, 3, 5), 0.2)
    """
    where = "dot_product_attention_weights"
    _check_query_key(where, query, key)
    return attention_weights(where, query, key, mask=mask, bias=bias, scale=scale)
