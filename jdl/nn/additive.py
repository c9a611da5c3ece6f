"""Additive attention (Bahdanau et al., 2015): a decoder state scores every encoder state.

With the decoder state ``s`` (the paper's ``s_{i-1}``) and the encoder states ``h_j``::

    e_j = v^T tanh(W_s s + W_h h_j [+ b]),   alpha_j = exp(e_j) / sum_k exp(e_k),
    c = sum_j alpha_j h_j

(the seeds' ``e_ij = v_a^T tanh(u_h s_{i-1} + u_b h_j)``; the paper's ``W_a``, ``U_a``,
``v_a``). ``W_h h_j [+ b]`` does not depend on the decoder: :func:`additive_attention_keys`
computes it once per sentence, outside a decoder's ``lax.scan``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> attention = nn.AdditiveAttention(16, context_features=6)
    >>> s, h = jnp.ones((2, 4)), jnp.ones((2, 7, 6))   # decoder state, 7 encoder states
    >>> params, state = attention.init(jax.random.key(0), s)
    >>> (c, alpha), _ = jax.jit(attention.apply)(params, state, s, context=h)
    >>> c.shape, alpha.shape, bool(jnp.allclose(alpha.sum(-1), 1.0))
    ((2, 6), (2, 7), True)
"""
from __future__ import annotations

from dataclasses import field
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jdl import init as initializers
from jdl._checks import (
    PositiveInt, check_batch_axes, check_bool_mask, check_floating, check_floating_min_rank, check_last_axis,
    check_shape, check_that,
)
from jdl.nn.core import KW_ONLY, Layer, check_params
from jdl.nn.masks import masked_softmax


def additive_attention_keys(params, context, *, dtype=None, where: Any = "additive_attention_keys") -> jax.Array:
    """``W_h h_j [+ b]`` for every encoder state ``h_j``: the part of :class:`AdditiveAttention`'s
    score that does not depend on the decoder, ``[batch..., kv_len, attention_features]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> params, _ = AdditiveAttention(16, context_features=6).init(jax.random.key(0), jnp.ones((2, 4)))
        >>> additive_attention_keys(params, jnp.ones((2, 7, 6))).shape
        (2, 7, 16)
    """
    w_h = params["w_h"]
    check_floating(where, context, "context")
    check_last_axis(where, context, w_h.shape[0], "the params' context_features", "context")

    dtype = dtype or jnp.result_type(context.dtype, w_h.dtype)
    keys = jnp.dot(context.astype(dtype), w_h.astype(dtype))
    return keys + params["b"].astype(dtype) if "b" in params else keys


def _fan_in(params, name: str, x, attention_features: int) -> int:
    """The input size the kernel ``params[name]`` ``(in, attention_features)`` was made for; ``x``'s own
    when the kernel is malformed, so that check_params names the kernel rather than the input."""
    w = params.get(name) if isinstance(params, dict) else None
    return w.shape[0] if getattr(w, "ndim", 0) == 2 and w.shape[1] == attention_features else x.shape[-1]


class AdditiveAttention(Layer):
    """Additive attention (Bahdanau et al., 2015): ``c = sum_j alpha_j h_j``, ``alpha = softmax(e)``,
    ``e_j = v^T tanh(W_s s + W_h h_j [+ b])``.

    Params: ``{"w_s": (query_features, A), "w_h": (context_features, A), "v": (A,)}``, plus
    ``"b": (A,)`` with ``use_bias`` (the paper has none), ``A = attention_features``.

    ``apply(params, state, s, *, context, mask=None, keys=None, key=None, train=False)``:
    ``s`` is ``[batch..., query_features]``, ``context`` (the ``h_j``) ``[batch..., kv_len,
    context_features]``, ``mask`` boolean ``[batch..., kv_len]`` (``True`` = a real encoder
    position; a state with no position left gets ``c = 0`` and ``alpha = 0``). ``keys``, the
    ``W_h h_j [+ b]`` from :func:`additive_attention_keys`, may be passed in by a decoder loop
    that computed them once. ``y`` is ``(c, alpha)``: ``[batch..., context_features]`` and
    ``[batch..., kv_len]``.
    """

    attention_features: PositiveInt
    _: KW_ONLY
    context_features: PositiveInt | None = None
    use_bias: bool = False
    kernel_init: Callable = field(default=initializers.lecun_normal(), repr=False)
    bias_init: Callable = field(default=initializers.zeros, repr=False)
    param_dtype: Any = jnp.float32
    dtype: Any = None
    name: str = "additive_attention"

    def _check_query(self, s) -> None:
        check_floating_min_rank(self, s, 1, "batch..., query_features")

    def init(self, key, s):
        self._check_query(s)
        w_s_key, w_h_key, v_key, b_key = jax.random.split(key, 4)
        features = self.attention_features
        params = {
            "w_s": self.kernel_init(w_s_key, (s.shape[-1], features), self.param_dtype),
            "w_h": self.kernel_init(w_h_key, (self.context_features or s.shape[-1], features), self.param_dtype),
            # v is a (A, 1) kernel: a dense layer from the A tanh units to one score.
            "v": self.kernel_init(v_key, (features, 1), self.param_dtype).reshape(features),
        }
        if self.use_bias:
            params["b"] = self.bias_init(b_key, (features,), self.param_dtype)
        return params, {}

    def apply(self, params, state, s, *, context=None, mask=None, keys=None, key=None, train=False):
        self._check_query(s)
        check_that(context is not None, self, "context=[batch..., kv_len, features] (the encoder states)", "None")
        check_floating(self, context, "context")
        check_batch_axes(self, context, s.shape[:-1], 2, "context", "the query's")
        query_in = _fan_in(params, "w_s", s, self.attention_features)
        check_last_axis(self, s, query_in, "the params' query_features", "a query (decoder state)")
        check_params(self, params, state, s)
        if mask is not None:
            check_bool_mask(self, mask, context.shape[:-1], "[batch..., kv_len], True = a real encoder position")

        dtype = self.dtype or jnp.result_type(s.dtype, context.dtype, *(p.dtype for p in params.values()))
        keys_shape = tuple(context.shape[:-1]) + (self.attention_features,)
        if mask is not None:  # padded positions, whatever they hold (NaN too), reach no output nor gradient
            context = jnp.where(mask[..., None], context, jnp.zeros((), context.dtype))
        if keys is None:  # W_h h_j [+ b], which checks the context against the params too
            keys = additive_attention_keys(params, context, dtype=dtype, where=self)
        else:
            check_shape(self, keys, keys_shape, "..., kv_len, attention_features", "keys (additive_attention_keys)")
            keys = keys if mask is None else jnp.where(mask[..., None], keys, jnp.zeros((), keys.dtype))

        queries = jnp.dot(s.astype(dtype), params["w_s"].astype(dtype))
        scores = jnp.dot(jnp.tanh(queries[..., None, :] + keys.astype(dtype)), params["v"].astype(dtype))
        weights = masked_softmax(scores, mask)
        context_vector = jnp.einsum("...s,...sd->...d", weights, context.astype(dtype))
        return (context_vector, weights), state
