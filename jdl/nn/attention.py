"""Attention: scaled dot-product, multi-head (with a key/value cache), additive (Bahdanau).

**Scaled dot-product attention** (Vaswani et al., 2017), per head::

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + B) V

with ``d_k`` the head size and ``B`` an optional additive bias. A boolean ``mask`` (``True``
= attend) removes keys from the softmax. A query whose every key is masked gets a zero
output and zero weights, never NaN, and a finite (zero) gradient.

**Multi-head attention** projects the queries, keys and values ``h`` times, attends in
each head and projects the concatenated heads back::

    MultiHead(X, C) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(X W_i^Q, C W_i^K, C W_i^V)

``C = X`` for self-attention; ``C`` is the ``context`` (the encoder's output) for cross
attention.

**Additive attention** (Bahdanau et al., 2015, as the seeds write it) scores a decoder
state ``s`` against every encoder state ``h_j``::

    e_j = v^T tanh(W_s s + W_h h_j),   alpha = softmax(e),   c = sum_j alpha_j h_j

Layout: arrays are ``[batch..., length, heads, head_dim]`` (flax's and
``jax.nn.dot_product_attention``'s); masks and biases ``[batch..., heads or 1, q_len or 1,
kv_len]``, broadcast as numpy does, from the right. Masks are boolean: flax's mask
helpers return float 1/0 masks by default; pass those as ``mask.astype(bool)``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> attention = nn.MultiHeadAttention(num_heads=2)
    >>> x = jnp.ones((3, 5, 8))                       # batch 3, length 5, 8 features
    >>> params, state = attention.init(jax.random.key(0), x)
    >>> params["query"]["w"].shape                   # (in_features, heads, head_dim)
    (8, 2, 4)
    >>> y, _ = attention.apply(params, state, x, mask=nn.causal_mask(5))
    >>> y.shape
    (3, 5, 8)
"""
from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdl import init as initializers
from jdl._checks import check_array, check_floating, check_keys, check_min_rank, check_param_shape
from jdl.nn.core import Layer, make_layer
from jdl.nn.dense import init_kernel_and_bias

IMPLEMENTATIONS = ("auto", "jax", "cudnn", "plain")


# ----------------------------------------------------------------------------- masks


def _valid_tokens(where: str, valid, length: int | None, what: str) -> jax.Array:
    """A ``[batch..., len]`` boolean token mask from a token mask or (with ``length``) lengths."""
    check_array(where, valid, what)
    if length is not None:
        if not jnp.issubdtype(valid.dtype, jnp.integer):
            raise TypeError(f"{where}: expected integer {what} lengths with a length given, got {valid.dtype}")
        return jnp.arange(length) < jnp.asarray(valid)[..., None]
    if valid.dtype == jnp.bool_:
        return jnp.asarray(valid)
    if jnp.issubdtype(valid.dtype, jnp.integer):
        return jnp.asarray(valid) != 0
    raise TypeError(
        f"{where}: expected a boolean or integer {what} token mask (nonzero = a real token), got "
        f"{jnp.dtype(valid.dtype).name} of shape {tuple(valid.shape)}"
    )


def padding_mask(key_valid, *, query_valid=None, key_length: int | None = None,
                 query_length: int | None = None) -> jax.Array:
    """A boolean attention mask that keeps real tokens and drops padding.

    ``mask[..., 0, i, j] = query_valid[..., i] and key_valid[..., j]``: flax's
    ``make_attention_mask(query_valid, key_valid)``, but boolean, and with the keys first,
    because the key mask is the one every padded batch needs.

    Args:
      key_valid: which keys are real tokens: a token mask ``[batch..., kv_len]`` (boolean,
        or integers where nonzero marks a real token, so token ids with pad id 0 work as
        they are), or, with ``key_length``, the key sequences' lengths ``[batch...]``.
      query_valid: the same for the queries; ``None`` keeps every query, and the mask's query
        axis is 1 (it broadcasts).
      key_length, query_length: the padded lengths, when lengths are given.

    Returns:
      A boolean mask ``[batch..., 1, q_len (or 1), kv_len]``.

    Example:
        >>> import jax.numpy as jnp
        >>> padding_mask(jnp.array([3, 1]), key_length=4)[:, 0, 0].astype(int)
        Array([[1, 1, 1, 0],
               [1, 0, 0, 0]], dtype=int32)
    """
    keys = _valid_tokens("padding_mask", key_valid, key_length, "key")
    if query_valid is None:
        return keys[..., None, None, :]
    queries = _valid_tokens("padding_mask", query_valid, query_length, "query")
    if queries.shape[:-1] != keys.shape[:-1]:
        raise ValueError(
            f"padding_mask: expected query and key masks with the same batch axes, got query "
            f"{tuple(queries.shape)} and key {tuple(keys.shape)}"
        )
    return (queries[..., :, None] & keys[..., None, :])[..., None, :, :]


def causal_mask(length: int) -> jax.Array:
    """``mask[0, 0, i, j] = j <= i``: position ``i`` attends to itself and to the past only.

    Shape ``(1, 1, length, length)`` (flax's ``make_causal_mask`` of a batch of one); it
    broadcasts over batch and heads. Inside a per-example ``vmap`` use ``causal_mask(n)[0]``.

    Example:
        >>> causal_mask(3)[0, 0].astype(int)
        Array([[1, 0, 0],
               [1, 1, 0],
               [1, 1, 1]], dtype=int32)
    """
    if not isinstance(length, (int, np.integer)) or length < 0:
        raise ValueError(f"causal_mask: expected a non-negative int length, got {length!r}")
    return jnp.asarray(np.tril(np.ones((length, length), bool)))[None, None]


def combine_masks(*masks) -> jax.Array | None:
    """The logical and of the masks that are not ``None`` (``None`` if all are).

    flax's ``combine_masks``, boolean, and broadcasting masks of different ranks from the
    right as numpy does (flax asks for equal ranks).

    Example:
        >>> import jax.numpy as jnp
        >>> mask = combine_masks(causal_mask(3), None, padding_mask(jnp.array([2]), key_length=3))
        >>> mask.shape, mask[0, 0].astype(int).tolist()
        ((1, 1, 3, 3), [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    for m in present:
        check_array("combine_masks", m, "mask")
        if m.dtype != jnp.bool_:
            raise TypeError(
                f"combine_masks: expected boolean masks (True = attend), got {jnp.dtype(m.dtype).name} "
                f"of shape {tuple(m.shape)}; pass mask.astype(bool)"
            )
    try:
        np.broadcast_shapes(*(tuple(m.shape) for m in present))
    except ValueError:
        raise ValueError(
            f"combine_masks: expected masks that broadcast together, got shapes "
            f"{[tuple(m.shape) for m in present]}"
        ) from None
    mask = present[0]
    for other in present[1:]:
        mask = jnp.logical_and(mask, other)
    return mask


# ----------------------------------------------------------------------------- scaled dot-product


def _check_broadcastable(where: str, array, target: tuple[int, ...], what: str) -> None:
    """``array`` broadcasts to ``target`` (``[batch..., heads, q_len, kv_len]``) from the right."""
    fits = 3 <= array.ndim <= len(target) and all(
        size in (1, want) for size, want in zip(array.shape[::-1], target[::-1])
    )
    if not fits:
        raise ValueError(
            f"{where}: expected a {what} of shape [batch..., heads or 1, q_len or 1, kv_len or 1] "
            f"that broadcasts to {target} (batch..., heads, q_len, kv_len), got shape {tuple(array.shape)}"
            + ("; build it with padding_mask / causal_mask" if what == "mask" else "")
        )


def _check_mask(where: str, mask, logits_shape: tuple[int, ...]) -> None:
    check_array(where, mask, "mask")
    if mask.dtype != jnp.bool_:
        raise TypeError(
            f"{where}: expected a boolean mask (True = attend), got {jnp.dtype(mask.dtype).name} "
            f"of shape {tuple(mask.shape)}; flax's float masks convert with mask.astype(bool)"
        )
    _check_broadcastable(where, mask, logits_shape, "mask")


def _check_qkv(where: str, query, key, value) -> None:
    for name, array in (("query", query), ("key", key), ("value", value)):
        check_floating(where, array, name)
        check_min_rank(where, array, 3, "batch..., length, heads, head_dim", name)
    if not query.dtype == key.dtype == value.dtype:
        raise TypeError(
            f"{where}: expected query, key and value of one dtype (nothing is cast), got "
            f"{query.dtype}, {key.dtype} and {value.dtype}"
        )
    if key.shape[:-1] != value.shape[:-1]:
        raise ValueError(
            f"{where}: expected key and value with the same [batch..., kv_len, heads], got key "
            f"{tuple(key.shape)} and value {tuple(value.shape)}"
        )
    if query.ndim != key.ndim or query.shape[:-3] != key.shape[:-3]:
        raise ValueError(
            f"{where}: expected query and key with the same batch axes (nothing is broadcast), got "
            f"query {tuple(query.shape)} and key {tuple(key.shape)}"
        )
    if query.shape[-2:] != key.shape[-2:]:
        raise ValueError(
            f"{where}: expected query and key with the same (heads, head_dim), got query "
            f"{tuple(query.shape)} with {tuple(query.shape[-2:])} and key {tuple(key.shape)} with "
            f"{tuple(key.shape[-2:])}"
        )


def _as_full_rank(array, rank: int):
    return array.reshape((1,) * (rank - array.ndim) + tuple(array.shape))


def _to_one_batch_axis(array, batch: tuple[int, ...]):
    """``[batch..., a, b, c]`` -> ``[B, a, b, c]``; an array broadcast over the batch keeps 1."""
    rest = tuple(array.shape[len(batch):])
    if all(size == 1 for size in array.shape[:len(batch)]):
        return array.reshape((1,) + rest)
    return jnp.broadcast_to(array, batch + rest).reshape((math.prod(batch),) + rest)


def _fused_attention(query, key, value, mask, bias, scale, implementation):
    """``jax.nn.dot_product_attention``, which wants exactly one batch axis."""
    batch = tuple(query.shape[:-3])
    flat = lambda t: t.reshape((math.prod(batch),) + tuple(t.shape[len(batch):]))  # noqa: E731
    out = jax.nn.dot_product_attention(
        flat(query), flat(key), flat(value),
        bias=None if bias is None else _to_one_batch_axis(bias, batch),
        mask=None if mask is None else _to_one_batch_axis(mask, batch),
        scale=scale, implementation="cudnn" if implementation == "cudnn" else None,
    )
    return out.reshape(batch + tuple(out.shape[1:]))


def _plain_attention(query, key, value, mask, bias, scale, dropout_rate, dropout_key):
    """softmax(Q K^T scale + B) V with jnp: the path that returns weights and applies dropout."""
    logits_dtype = jnp.promote_types(query.dtype, jnp.float32)  # softmax in float32 at least
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key, preferred_element_type=logits_dtype)
    logits = logits * jnp.asarray(scale, logits_dtype)
    if bias is not None:
        logits = logits + bias.astype(logits_dtype)
    if mask is not None:
        # A finite stand-in for -inf: a fully masked row stays finite (then zeroed below).
        logits = jnp.where(mask, logits, jnp.finfo(logits_dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    if mask is not None:
        weights = jnp.where(jnp.any(mask, axis=-1, keepdims=True), weights, 0.0)
    used = weights
    if dropout_key is not None and dropout_rate > 0.0:
        keep = jax.random.bernoulli(dropout_key, 1.0 - dropout_rate, weights.shape)
        used = jnp.where(keep, weights / jnp.asarray(1.0 - dropout_rate, weights.dtype), 0.0)
    out = jnp.einsum("...hqk,...khd->...qhd", used.astype(value.dtype), value)
    return out, weights.astype(query.dtype)


def _attention(where, query, key, value, *, mask=None, bias=None, scale=None, dropout_rate=0.0,
               dropout_key=None, return_weights=False, implementation="auto"):
    _check_qkv(where, query, key, value)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{where}: expected implementation in {IMPLEMENTATIONS}, got {implementation!r}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"{where}: expected dropout_rate in [0, 1), got {dropout_rate}")
    batch = tuple(query.shape[:-3])
    q_len, heads, head_dim = query.shape[-3:]
    logits_shape = batch + (heads, q_len, key.shape[-3])
    if mask is not None:
        _check_mask(where, mask, logits_shape)
        mask = _as_full_rank(mask, len(logits_shape))
    if bias is not None:
        check_floating(where, bias, "bias")
        _check_broadcastable(where, bias, logits_shape, "bias")
        bias = _as_full_rank(bias, len(logits_shape))
    scale = 1.0 / math.sqrt(head_dim) if scale is None else scale

    dropout = dropout_key is not None and dropout_rate > 0.0
    needs_plain = return_weights or dropout or value.shape[-1] != head_dim
    if implementation == "auto":
        # XLA's CPU build of jax.nn's grouped formulation is slower than the plain einsums
        # (fwd+bwd 12.6 ms against 9.2 ms at batch 32, length 64, 8 heads of 32).
        implementation = "plain" if needs_plain or jax.default_backend() == "cpu" else "jax"
    elif implementation != "plain" and needs_plain:
        raise ValueError(
            f"{where}: implementation={implementation!r} computes neither attention weights nor "
            f"dropout, and needs value's head_dim equal to the query's; use implementation='plain' or 'auto'"
        )

    if implementation == "plain":
        out, weights = _plain_attention(query, key, value, mask, bias, scale, dropout_rate, dropout_key)
        return (out, weights) if return_weights else out
    out = _fused_attention(query, key, value, mask, bias, scale, implementation)
    if mask is not None:
        # jax.nn spreads a fully masked row evenly over its keys; jdl gives zeros.
        any_key = jnp.swapaxes(jnp.any(mask, axis=-1), -1, -2)[..., None]  # [batch..., q, heads, 1]
        out = jnp.where(any_key, out, jnp.zeros((), out.dtype))
    return out


def dot_product_attention(query, key, value, *, mask=None, bias=None, scale=None, dropout_rate: float = 0.0,
                          dropout_key=None, return_weights: bool = False, implementation: str = "auto"):
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
      return_weights: also return the attention weights ``[batch..., heads, q_len, kv_len]``
        (before dropout).
      implementation: ``"auto"`` (the default) calls ``jax.nn.dot_product_attention`` on
        accelerators when neither weights nor dropout are asked for and ``value``'s head size
        equals the query's, and the plain ``jnp`` path otherwise and on CPU, where the plain
        path measures faster; ``"jax"`` and ``"cudnn"`` force ``jax.nn.dot_product_attention``
        (``"cudnn"``: its cuDNN flash-attention kernel), ``"plain"`` the ``jnp`` path.

    Returns:
      ``[batch..., q_len, heads, v_head_dim]``, or ``(output, weights)``.

    Example:
        >>> import jax.numpy as jnp
        >>> q = k = jnp.ones((1, 2, 1, 4))                 # batch 1, length 2, 1 head of 4
        >>> v = jnp.array([[[[1.0]], [[3.0]]]])           # the two keys' values: 1 and 3
        >>> dot_product_attention(q, k, v, implementation="plain")[0, :, 0, 0]
        Array([2., 2.], dtype=float32)
        >>> dot_product_attention(q, k, v, mask=causal_mask(2))[0, :, 0, 0]
        Array([1., 2.], dtype=float32)
    """
    return _attention("dot_product_attention", query, key, value, mask=mask, bias=bias, scale=scale,
                      dropout_rate=dropout_rate, dropout_key=dropout_key, return_weights=return_weights,
                      implementation=implementation)


# ----------------------------------------------------------------------------- key/value cache


class KVCache(NamedTuple):
    """Keys and values of the positions decoded so far, for incremental decoding.

    Attributes:
      key: ``[batch..., max_length, heads, head_dim]``, the projected keys.
      value: ``[batch..., max_length, heads, head_dim]``, the projected values.
      index: int32 scalar, the next position to write (the number of positions written).
    """

    key: jax.Array
    value: jax.Array
    index: jax.Array


def init_kv_cache(params, batch_shape: tuple[int, ...], max_length: int, dtype=None) -> KVCache:
    """An empty :class:`KVCache` for a :func:`MultiHeadAttention` layer with these params.

    The head layout is read from the params (``params["key"]["w"]`` is ``(in, heads,
    head_dim)``), so the cache needs nothing else from the layer. ``dtype`` is the keys'
    dtype, the params' by default. Each decoding step attends over all ``max_length``
    slots (masked beyond ``index``), so its cost is fixed, with no recomputation of the
    prefix, and the shapes never change under ``jit`` or ``lax.scan``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> layer = MultiHeadAttention(num_heads=2)
        >>> params, _ = layer.init(jax.random.key(0), jnp.zeros((1, 1, 8)))
        >>> cache = init_kv_cache(params, (3,), max_length=10)
        >>> cache.key.shape, int(cache.index)
        ((3, 10, 2, 4), 0)
    """
    where = "init_kv_cache"
    check_keys(where, params, ["query", "key", "value", "out"])
    for name in ("key", "value"):
        check_array(where, params[name].get("w"), f"params[{name!r}]['w']")
        if params[name]["w"].ndim != 3:
            raise ValueError(
                f"{where}: expected params[{name!r}]['w'] of shape (in_features, heads, head_dim), got "
                f"{tuple(params[name]['w'].shape)}; are these params from another model?"
            )
    if not isinstance(max_length, (int, np.integer)) or max_length <= 0:
        raise ValueError(f"{where}: expected a positive int max_length, got {max_length!r}")
    batch_shape = tuple(batch_shape)
    dtype = dtype or params["key"]["w"].dtype
    _, heads, head_dim = params["key"]["w"].shape
    value_dim = params["value"]["w"].shape[-1]
    return KVCache(
        key=jnp.zeros(batch_shape + (max_length, heads, head_dim), dtype),
        value=jnp.zeros(batch_shape + (max_length, heads, value_dim), dtype),
        index=jnp.zeros((), jnp.int32),
    )


def _concrete_int(x) -> int | None:
    """``x`` as a Python int when it is known at trace time, else ``None`` (a tracer)."""
    try:
        return int(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        return None


def _update_cache(where: str, cache, key, value):
    """Write a step's keys and values at ``cache.index``; the causal mask over the cache."""
    if not isinstance(cache, KVCache):
        raise TypeError(f"{where}: expected cache to be a KVCache (init_kv_cache), got {type(cache).__name__}")
    check_array(where, cache.key, "cache.key")
    batch, steps = tuple(key.shape[:-3]), key.shape[-3]
    expected_key = batch + (cache.key.shape[-3],) + tuple(key.shape[-2:])
    expected_value = batch + (cache.key.shape[-3],) + tuple(value.shape[-2:])
    if cache.key.ndim != key.ndim or tuple(cache.key.shape) != expected_key:
        raise ValueError(
            f"{where}: expected a cache with key shape [batch..., max_length, heads, head_dim] = "
            f"{expected_key[:len(batch)]} + (max_length,) + {tuple(key.shape[-2:])} for an input with batch "
            f"axes {batch}, got cache.key of shape {tuple(cache.key.shape)}"
        )
    if tuple(cache.value.shape) != expected_value:
        raise ValueError(f"{where}: expected cache.value of shape {expected_value}, got {tuple(cache.value.shape)}")
    if cache.key.dtype != key.dtype or cache.value.dtype != value.dtype:
        raise TypeError(
            f"{where}: expected a cache of dtype {key.dtype} (the projected keys'; nothing is cast), got "
            f"{cache.key.dtype}"
        )
    max_length = cache.key.shape[-3]
    index = jnp.asarray(cache.index)
    if index.shape != () or not jnp.issubdtype(index.dtype, jnp.integer):
        raise TypeError(f"{where}: expected cache.index to be an integer scalar, got {index.dtype}{tuple(index.shape)}")
    start = _concrete_int(index)
    if start is not None and not 0 <= start <= max_length - steps:
        raise ValueError(
            f"{where}: the cache holds max_length={max_length} positions, got a write of {steps} "
            f"position(s) at index {start}; init_kv_cache with a larger max_length"
        )
    zero = jnp.zeros((), index.dtype)
    at = (zero,) * len(batch) + (index, zero, zero)
    new_cache = KVCache(
        key=jax.lax.dynamic_update_slice(cache.key, key, at),
        value=jax.lax.dynamic_update_slice(cache.value, value, at),
        index=index + steps,
    )
    # Query i sits at position index + i and sees the cache slots up to there: the slots
    # written before and the ones it wrote itself, never the empty ones after.
    positions = index + jnp.arange(steps, dtype=index.dtype)
    mask = (jnp.arange(max_length, dtype=index.dtype)[None, :] <= positions[:, None])[None]
    # A concrete index was checked above; a traced one can only flag its output.
    fits = None if start is not None else index + steps <= max_length
    return new_cache, mask, fits


# ----------------------------------------------------------------------------- multi-head attention


def MultiHeadAttention(
    num_heads: int,
    *,
    qkv_features: int | None = None,
    out_features: int | None = None,
    context_features: int | None = None,
    dropout_rate: float = 0.0,
    use_bias: bool = True,
    kernel_init=initializers.lecun_normal(),
    bias_init=initializers.zeros,
    out_kernel_init=None,
    param_dtype=jnp.float32,
    dtype=None,
    implementation: str = "auto",
    name: str = "attention",
) -> Layer:
    """Multi-head attention (Vaswani et al., 2017), for self and cross attention.

    ``y = Concat(head_1, ..., head_h) W^O + b^O``, ``head_i = Attention(x W_i^Q + b_i^Q,
    c W_i^K + b_i^K, c W_i^V + b_i^V)``, with ``c = x`` (self-attention) or ``c = context``.

    Params (``d = qkv_features // num_heads``)::

        {"query": {"w": (in, heads, d), "b": (heads, d)},
         "key":   {"w": (context_in, heads, d), "b": (heads, d)},
         "value": {"w": (context_in, heads, d), "b": (heads, d)},
         "out":   {"w": (heads, d, out), "b": (out,)}}

    ``w[:, i, :]`` is the paper's ``W_i^Q`` (flax's ``DenseGeneral`` layout, so weights copy
    between the two as they are). The kernels are drawn as the flat ``(in, heads * d)`` (and
    ``(heads * d, out)``) matrices of one dense layer and reshaped, so fan-in and fan-out are
    the dense layer's, as in flax.

    ``apply(params, state, x, *, key=None, train=False, context=None, mask=None,
    cache=None, return_weights=False)``:

    * ``x``: the queries' source ``[batch..., q_len, in]``; ``context``: the keys' and
      values' source ``[batch..., kv_len, context_in]`` (``None``: ``x``, self-attention).
    * ``mask``: boolean, broadcastable to ``[batch..., heads, q_len, kv_len]``
      (:func:`padding_mask`, :func:`causal_mask`, :func:`combine_masks`).
    * ``train=True`` with ``dropout_rate > 0`` drops attention weights and needs ``key``.
    * ``cache``: a :class:`KVCache` (:func:`init_kv_cache`) for incremental self-attention
      decoding: ``x`` holds the next ``steps >= 1`` positions, their keys and values are
      written at ``cache.index``, each attends to the positions up to its own, and the
      updated cache is returned. ``mask`` then covers the cache: ``[..., steps, max_length]``.
      Writing past ``max_length`` is an error when the index is known at trace time; under
      ``jit`` it gives NaN outputs (a traced index cannot raise).
    * ``y`` is the output ``[batch..., q_len, out]``, or a tuple: ``(output, weights)`` with
      ``return_weights``, ``(output, cache)`` with a cache, ``(output, weights, cache)`` with both.

    Args:
      num_heads: number of heads ``h``.
      qkv_features: ``h * d``, the size of the queries, keys and values (``in`` by default).
      out_features: the output size (``in`` by default).
      context_features: the context's last axis (``in`` by default, as in self-attention).
      dropout_rate: dropout on the attention weights in training.
      use_bias, kernel_init, bias_init, param_dtype, dtype: as in :func:`jdl.nn.Dense`;
        ``out_kernel_init`` is the output kernel's initialiser (``kernel_init`` by default).
      implementation: see :func:`dot_product_attention`.

    Example (cached decoding gives the causal forward pass, one position at a time):
        >>> import jax, jax.numpy as jnp
        >>> layer = MultiHeadAttention(num_heads=2)
        >>> x = jax.random.normal(jax.random.key(1), (1, 4, 8))
        >>> params, state = layer.init(jax.random.key(0), x)
        >>> full, _ = layer.apply(params, state, x, mask=causal_mask(4))
        >>> cache = init_kv_cache(params, (1,), max_length=4)
        >>> steps = []
        >>> for t in range(4):
        ...     (y, cache), _ = layer.apply(params, state, x[:, t:t + 1], cache=cache)
        ...     steps.append(y)
        >>> bool(jnp.allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5))
        True
    """
    if not isinstance(num_heads, int) or num_heads <= 0:
        raise ValueError(f"MultiHeadAttention: expected num_heads to be a positive int, got {num_heads!r}")
    for arg, value in (("qkv_features", qkv_features), ("out_features", out_features),
                       ("context_features", context_features)):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ValueError(f"MultiHeadAttention: expected {arg} to be a positive int or None, got {value!r}")
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"MultiHeadAttention: expected dropout_rate in [0, 1), got {dropout_rate}")
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"MultiHeadAttention: expected implementation in {IMPLEMENTATIONS}, got {implementation!r}")
    args = [f"num_heads={num_heads}"] + [
        f"{arg}={value}" for arg, value in (("qkv_features", qkv_features), ("out_features", out_features),
                                            ("context_features", context_features), ("dropout_rate", dropout_rate))
        if value
    ]
    description = f"MultiHeadAttention({', '.join(args)})"
    if qkv_features is not None and qkv_features % num_heads:
        raise ValueError(
            f"{description}: expected qkv_features divisible by num_heads={num_heads}, got {qkv_features}"
        )
    out_kernel_init = out_kernel_init or kernel_init
    param_keys = ["w", "b"] if use_bias else ["w"]

    def check_input(x, what="input"):
        check_floating(description, x, what)
        check_min_rank(description, x, 2, "batch..., length, features", what)

    def init(key, x):
        check_input(x)
        in_features = x.shape[-1]
        qkv = qkv_features or in_features
        if qkv % num_heads:
            raise ValueError(
                f"{description}: expected features divisible by num_heads={num_heads} (qkv_features defaults "
                f"to the input's last axis), got {qkv} from input of shape {tuple(x.shape)}"
            )
        heads_shape = (num_heads, qkv // num_heads)
        sources = {"query": in_features, "key": context_features or in_features,
                   "value": context_features or in_features}
        keys = jax.random.split(key, 4)
        params = {}
        for k, (proj, fan_in) in zip(keys, sources.items()):
            flat = init_kernel_and_bias(k, (fan_in, qkv), use_bias, kernel_init, bias_init, param_dtype)
            params[proj] = {"w": flat["w"].reshape((fan_in,) + heads_shape)}
            if use_bias:
                params[proj]["b"] = flat["b"].reshape(heads_shape)
        flat = init_kernel_and_bias(keys[3], (qkv, out_features or in_features), use_bias, out_kernel_init,
                                    bias_init, param_dtype)
        params["out"] = {"w": flat["w"].reshape(heads_shape + (flat["w"].shape[-1],)), **(
            {"b": flat["b"]} if use_bias else {})}
        return params, {}

    def check_shape(proj, param_name, array, expected):
        check_array(description, array, f"params[{proj!r}][{param_name!r}]")
        if tuple(array.shape) != tuple(expected):
            raise ValueError(
                f"{description}: expected params[{proj!r}][{param_name!r}] of shape {tuple(expected)}, got "
                f"{tuple(array.shape)}; are these params from another model?"
            )

    def check_params(params):
        """Shapes follow from the query kernel ``(in, heads, head_dim)``, checked first."""
        check_keys(description, params, ["query", "key", "value", "out"])
        for proj in ("query", "key", "value", "out"):
            check_keys(f"{description}: params[{proj!r}]", params[proj], param_keys)
        w_q = params["query"]["w"]
        check_array(description, w_q, "params['query']['w']")
        head_dim = qkv_features // num_heads if qkv_features else (w_q.shape[-1] if w_q.ndim == 3 else "head_dim")
        if w_q.ndim != 3 or tuple(w_q.shape[1:]) != (num_heads, head_dim):
            raise ValueError(
                f"{description}: expected params['query']['w'] of shape (in_features, {num_heads}, {head_dim}), "
                f"got {tuple(w_q.shape)}; are these params from another model?"
            )
        heads_shape = (num_heads, head_dim)
        w_k = params["key"]["w"]
        check_array(description, w_k, "params['key']['w']")
        context_in = context_features or (w_k.shape[0] if w_k.ndim == 3 else w_q.shape[0])
        check_shape("key", "w", w_k, (context_in,) + heads_shape)
        check_shape("value", "w", params["value"]["w"], (context_in,) + heads_shape)
        w_o = params["out"]["w"]
        check_array(description, w_o, "params['out']['w']")
        out = out_features or (w_o.shape[-1] if w_o.ndim == 3 else w_q.shape[0])
        check_shape("out", "w", w_o, heads_shape + (out,))
        if use_bias:
            for proj in ("query", "key", "value"):
                check_shape(proj, "b", params[proj]["b"], heads_shape)
            check_shape("out", "b", params["out"]["b"], (out,))

    def project(params, x, dtype_):
        y = jnp.einsum("...i,ihd->...hd", x.astype(dtype_), params["w"].astype(dtype_))
        return y + params["b"].astype(dtype_) if use_bias else y

    def apply(params, state, x, *, key=None, train=False, context=None, mask=None, cache=None,
              return_weights=False):
        check_input(x)
        check_keys(description, state, [], "state")
        check_params(params)
        in_features = params["query"]["w"].shape[0]
        if x.shape[-1] != in_features:
            raise ValueError(
                f"{description}: expected input with last axis {in_features} (the params' in_features), "
                f"got input of shape {tuple(x.shape)}"
            )
        context_in = params["key"]["w"].shape[0]
        if context is None:
            if context_in != in_features:
                raise ValueError(
                    f"{description}: expected a context with last axis {context_in} (the key and value params' "
                    f"in_features) for cross attention, got context=None, i.e. self-attention on input of shape "
                    f"{tuple(x.shape)}"
                )
            source = x
        else:
            if cache is not None:
                raise ValueError(
                    f"{description}: the cache is for self-attention decoding, got a context too; a cross "
                    f"attention's keys and values do not change between steps, call it without a cache"
                )
            check_input(context, "context")
            if context.shape[:-2] != x.shape[:-2]:
                raise ValueError(
                    f"{description}: expected context with the input's batch axes {tuple(x.shape[:-2])} (nothing "
                    f"is broadcast), got context of shape {tuple(context.shape)} for input {tuple(x.shape)}"
                )
            if context.shape[-1] != context_in:
                raise ValueError(
                    f"{description}: expected context with last axis {context_in} (the key and value params' "
                    f"in_features), got context of shape {tuple(context.shape)}"
                )
            source = context
        dropout_key = None
        if train and dropout_rate > 0.0:
            if key is None:
                raise ValueError(
                    f"{description}: train=True needs a PRNG key for attention dropout, got key=None; call "
                    f"apply(params, state, x, key=jax.random.key(...), train=True)"
                )
            dropout_key = key

        compute_dtype = dtype or jnp.result_type(
            x.dtype, source.dtype, *(params[p]["w"].dtype for p in ("query", "key", "value", "out")))
        query = project(params["query"], x, compute_dtype)
        keys = project(params["key"], source, compute_dtype)
        values = project(params["value"], source, compute_dtype)
        decoding, fits = cache is not None, None
        if decoding:
            cache, cache_mask, fits = _update_cache(description, cache, keys, values)
            if mask is not None:
                logits_shape = tuple(query.shape[:-3]) + (num_heads, query.shape[-3], cache.key.shape[-3])
                _check_mask(description, mask, logits_shape)
            mask = combine_masks(mask, cache_mask)
            keys, values = cache.key, cache.value
        attended = _attention(description, query, keys, values, mask=mask, dropout_rate=dropout_rate,
                              dropout_key=dropout_key, return_weights=return_weights,
                              implementation=implementation)
        attended, weights = attended if return_weights else (attended, None)
        out = jnp.einsum("...hd,hdo->...o", attended, params["out"]["w"].astype(compute_dtype))
        if use_bias:
            out = out + params["out"]["b"].astype(compute_dtype)
        if fits is not None:
            out = jnp.where(fits, out, jnp.asarray(jnp.nan, out.dtype))  # a traced write past the end
        y = (out,) + ((weights,) if return_weights else ()) + ((cache,) if decoding else ())
        return (y[0] if len(y) == 1 else y), state

    return make_layer(name, description, init, apply)


# ----------------------------------------------------------------------------- additive attention


def AdditiveAttention(
    attention_features: int,
    *,
    context_features: int | None = None,
    use_bias: bool = False,
    kernel_init=initializers.lecun_normal(),
    bias_init=initializers.zeros,
    param_dtype=jnp.float32,
    dtype=None,
    name: str = "additive_attention",
) -> Layer:
    """Additive attention (Bahdanau et al., 2015): a decoder state scores every encoder state.

    With the decoder state ``s`` (the paper's ``s_{i-1}``) and the encoder states ``h_j``::

        e_j = v^T tanh(W_s s + W_h h_j [+ b]),   alpha_j = exp(e_j) / sum_k exp(e_k),
        c = sum_j alpha_j h_j

    (the seeds' ``e_ij = v_a^T tanh(u_h s_{i-1} + u_b h_j)``; the paper's ``W_a``, ``U_a``,
    ``v_a``). ``mask`` drops padded encoder positions from the softmax; a state with no
    position left gets ``c = 0`` and ``alpha = 0``.

    Params: ``{"w_s": (query_features, A), "w_h": (context_features, A), "v": (A,)}``, plus
    ``"b": (A,)`` with ``use_bias`` (the paper has none), ``A = attention_features``.

    ``apply(params, state, s, *, context, mask=None, keys=None)``: ``s`` is
    ``[batch..., query_features]``, ``context`` (the ``h_j``) ``[batch..., kv_len,
    context_features]``, ``mask`` boolean ``[batch..., kv_len]``. ``keys``, the
    ``W_h h_j [+ b]`` from :func:`additive_attention_keys`, depend only on the encoder: a
    decoder loop computes them once, outside its ``lax.scan``, and passes them every step.
    ``y`` is ``(c, alpha)``: ``[batch..., context_features]`` and ``[batch..., kv_len]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> attention = AdditiveAttention(16, context_features=6)
        >>> s, h = jnp.ones((2, 4)), jnp.ones((2, 7, 6))   # decoder state, 7 encoder states
        >>> params, state = attention.init(jax.random.key(0), s)
        >>> (c, alpha), _ = attention.apply(params, state, s, context=h)
        >>> c.shape, alpha.shape, bool(jnp.allclose(alpha.sum(-1), 1.0))
        ((2, 6), (2, 7), True)
    """
    if not isinstance(attention_features, int) or attention_features <= 0:
        raise ValueError(
            f"AdditiveAttention: expected attention_features to be a positive int, got {attention_features!r}")
    if context_features is not None and (not isinstance(context_features, int) or context_features <= 0):
        raise ValueError(
            f"AdditiveAttention: expected context_features to be a positive int or None, got {context_features!r}")
    description = f"AdditiveAttention(attention_features={attention_features}" + (
        f", context_features={context_features})" if context_features else ")")
    param_keys = ["w_s", "w_h", "v", "b"] if use_bias else ["w_s", "w_h", "v"]

    def init(key, s):
        check_floating(description, s)
        check_min_rank(description, s, 1, "batch..., query_features")
        w_s_key, w_h_key, v_key, b_key = jax.random.split(key, 4)
        params = {
            "w_s": kernel_init(w_s_key, (s.shape[-1], attention_features), param_dtype),
            "w_h": kernel_init(w_h_key, (context_features or s.shape[-1], attention_features), param_dtype),
            # v is a (A, 1) kernel: a dense layer from the A tanh units to one score.
            "v": kernel_init(v_key, (attention_features, 1), param_dtype).reshape(attention_features),
        }
        if use_bias:
            params["b"] = bias_init(b_key, (attention_features,), param_dtype)
        return params, {}

    def apply(params, state, s, *, key=None, train=False, context=None, mask=None, keys=None):
        del key, train
        check_floating(description, s)
        check_min_rank(description, s, 1, "batch..., query_features")
        check_keys(description, state, [], "state")
        if context is None:
            raise ValueError(
                f"{description}: expected context=[batch..., kv_len, features] (the encoder states), got None")
        check_floating(description, context, "context")
        check_min_rank(description, context, 2, "batch..., kv_len, features", "context")
        check_keys(description, params, param_keys)
        w_s = params["w_s"]
        check_array(description, w_s, "params['w_s']")
        if w_s.ndim != 2 or w_s.shape[1] != attention_features:
            check_param_shape(description, w_s, (s.shape[-1], attention_features), "w_s")
        if s.shape[-1] != w_s.shape[0]:
            raise ValueError(
                f"{description}: expected a query (decoder state) with last axis {w_s.shape[0]} (the params' "
                f"query_features), got query of shape {tuple(s.shape)}"
            )
        check_param_shape(description, params["v"], (attention_features,), "v")
        if s.shape[:-1] != context.shape[:-2]:
            raise ValueError(
                f"{description}: expected context with the query's batch axes {tuple(s.shape[:-1])} (nothing is "
                f"broadcast), got context of shape {tuple(context.shape)} for query {tuple(s.shape)}"
            )
        _check_context_kernel(description, params, context)
        if params["w_h"].shape[1] != attention_features:
            check_param_shape(description, params["w_h"], (context.shape[-1], attention_features), "w_h")
        compute_dtype = dtype or jnp.result_type(s.dtype, context.dtype, *(p.dtype for p in params.values()))
        if keys is None:
            keys = additive_attention_keys(params, context, dtype=compute_dtype, where=description)
        else:
            check_floating(description, keys, "keys")
            if tuple(keys.shape) != tuple(context.shape[:-1]) + (attention_features,):
                raise ValueError(
                    f"{description}: expected keys (additive_attention_keys) of shape "
                    f"{tuple(context.shape[:-1]) + (attention_features,)}, got {tuple(keys.shape)}"
                )
        if mask is not None:
            check_array(description, mask, "mask")
            if mask.dtype != jnp.bool_ or tuple(mask.shape) != tuple(context.shape[:-1]):
                raise ValueError(
                    f"{description}: expected a boolean mask of shape {tuple(context.shape[:-1])} "
                    f"([batch..., kv_len], True = a real encoder position), got {jnp.dtype(mask.dtype).name} of "
                    f"shape {tuple(mask.shape)}"
                )
        queries = jnp.dot(s.astype(compute_dtype), w_s.astype(compute_dtype))
        hidden = jnp.tanh(queries[..., None, :] + keys.astype(compute_dtype))
        scores = jnp.dot(hidden, params["v"].astype(compute_dtype))
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        weights = jax.nn.softmax(scores, axis=-1)
        if mask is not None:
            weights = jnp.where(jnp.any(mask, axis=-1, keepdims=True), weights, 0.0)
        context_vector = jnp.einsum("...s,...sd->...d", weights, context.astype(compute_dtype))
        return (context_vector, weights), state

    return make_layer(name, description, init, apply)


def _check_context_kernel(where: str, params, context) -> None:
    check_floating(where, context, "context")
    w_h = params["w_h"]
    check_array(where, w_h, "params['w_h']")
    if w_h.ndim != 2:
        raise ValueError(
            f"{where}: expected params['w_h'] of shape (context_features, attention_features), got "
            f"{tuple(w_h.shape)}; are these params from another model?"
        )
    if context.shape[-1] != w_h.shape[0]:
        raise ValueError(
            f"{where}: expected context with last axis {w_h.shape[0]} (the params' context_features), got "
            f"context of shape {tuple(context.shape)}"
        )
    if "b" in params:
        check_param_shape(where, params["b"], (w_h.shape[1],), "b")


def additive_attention_keys(params, context, *, dtype=None, where: str = "additive_attention_keys") -> jax.Array:
    """``W_h h_j [+ b]`` for every encoder state ``h_j``: the part of :func:`AdditiveAttention`'s
    score that does not depend on the decoder, ``[batch..., kv_len, attention_features]``."""
    _check_context_kernel(where, params, context)
    w_h = params["w_h"]
    dtype = dtype or jnp.result_type(context.dtype, w_h.dtype)
    keys = jnp.dot(context.astype(dtype), w_h.astype(dtype))
    return keys + params["b"].astype(dtype) if "b" in params else keys
