"""Multi-head attention (Vaswani et al., 2017), with a key/value cache for decoding.

The queries, keys and values are projected ``h`` times; each head attends
(:func:`~jdl.nn.dot_product_attention`) and the heads are projected back::

    MultiHead(X, C) = Concat(head_1, ..., head_h) W^O,  head_i = Attention(X W_i^Q, C W_i^K, C W_i^V)

``C = X`` for self-attention; ``C`` is the ``context`` (the encoder's output) for cross
attention. The projections go straight to and from ``[batch..., length, heads, head_dim]``
(``W^Q`` is ``(in, heads, head_dim)``, ``W^O`` ``(heads, head_dim, out)``), the layout
:func:`~jdl.nn.dot_product_attention` takes: the heads are never split or concatenated as
arrays, and XLA chooses where to transpose (see :mod:`jdl.nn.scaled_dot_product`).

**Decoding.** :meth:`MultiHeadAttention.decode_step` runs self-attention for the next
positions only: their keys and values are written into a :class:`KVCache` at its index and
each position attends to the ones cached up to itself. Cross-attention to a fixed context
(an encoder's output) projects it once, :meth:`~MultiHeadAttention.context_cache`, and each
step attends to that cache, :meth:`~MultiHeadAttention.attend_cache`. Every step attends over all
``max_length`` slots (masked beyond the index), so its cost is fixed and the shapes never
change under ``jit`` or ``lax.scan``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> attention = nn.MultiHeadAttention(num_heads=2)
    >>> x = jnp.ones((3, 5, 8))                       # batch 3, length 5, 8 features
    >>> params, state = attention.init(jax.random.key(0), x)
    >>> params["query"]["w"].shape                   # (in_features, heads, head_dim)
    (8, 2, 4)
    >>> y, _ = attention.apply(params, state, x, mask=nn.causal_mask(5))
    >>> y.shape, attention.attention_weights(params, x).shape
    ((3, 5, 8), (3, 2, 5, 5))
"""
from __future__ import annotations

from dataclasses import field
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp

from jdl import init as initializers
from jdl._checks import (
    PositiveInt, Rate, check_batch_axes, check_divisible, check_floating_min_rank, check_integer_scalar,
    check_last_axis, check_rank, check_that, check_train_flag, check_training_key, checks_arguments,
)
from jdl.nn.core import KW_ONLY, Layer, check_params
from jdl.nn.dense import init_kernel_and_bias
from jdl.nn.masks import combine_masks
from jdl.nn.scaled_dot_product import (
    Implementation, attend, attention_weights, check_attention_mask, logits_shape_of, swap_heads,
)

PROJECTIONS = ("query", "key", "value")

# ----------------------------------------------------------------------------- key/value cache


class KVCache(NamedTuple):
    """Keys and values of the positions decoded so far, for incremental decoding.

    Attributes:
      key: ``[batch..., heads, max_length, head_dim]``, the projected keys, heads first (each
        decoding step reads the whole cache, in the layout of the attention's batched products).
      value: ``[batch..., heads, max_length, head_dim]``, the projected values.
      index: int32 scalar, the next position to write (the number of positions written).
    """

    key: jax.Array
    value: jax.Array
    index: jax.Array


@checks_arguments
def init_kv_cache(params, batch_shape: tuple[int, ...], max_length: PositiveInt, dtype=None) -> KVCache:
    """An empty :class:`KVCache` for a :class:`MultiHeadAttention` layer with these params.

    The head layout is read from the params (``params["key"]["w"]`` is ``(in, heads,
    head_dim)``), so the cache needs nothing else from the layer. ``dtype`` is the keys'
    dtype, the params' by default.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> layer = MultiHeadAttention(num_heads=2)
        >>> params, _ = layer.init(jax.random.key(0), jnp.zeros((1, 1, 8)))
        >>> cache = init_kv_cache(params, (3,), max_length=10)
        >>> cache.key.shape, int(cache.index)
        ((3, 2, 10, 4), 0)
    """
    for name in ("key", "value"):
        check_rank("init_kv_cache", params[name].get("w"), 3, "in_features, heads, head_dim", f"params[{name!r}]['w']")
    batch_shape, dtype = tuple(batch_shape), dtype or params["key"]["w"].dtype
    _, heads, head_dim = params["key"]["w"].shape
    return KVCache(key=jnp.zeros(batch_shape + (heads, max_length, head_dim), dtype),
                   value=jnp.zeros(batch_shape + (heads, max_length, params["value"]["w"].shape[-1]), dtype),
                   index=jnp.zeros((), jnp.int32))


def _concrete_int(x) -> int | None:
    """``x`` as a Python int when it is known at trace time, else ``None`` (a tracer)."""
    try:
        return int(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        return None


def _check_cache(where, cache, keys, values) -> None:
    """A cache whose slots fit this step's projected (heads-first) keys and values."""
    if not isinstance(cache, KVCache):
        raise TypeError(f"{where}: expected cache to be a KVCache (init_kv_cache), got {type(cache).__name__}")
    batch, max_length = tuple(keys.shape[:-3]), cache.key.shape[-2] if cache.key.ndim >= 3 else 0
    expected = tuple(batch + (new.shape[-3], max_length, new.shape[-1]) for new in (keys, values))
    got = (tuple(cache.key.shape), tuple(cache.value.shape))
    check_that(got == expected, where, f"a cache with key shape {expected[0]} (value {expected[1]}) for an input "
               f"with batch axes {batch}", f"cache.key of shape {got[0]} (value {got[1]})")
    check_that(cache.key.dtype == keys.dtype and cache.value.dtype == values.dtype, where, f"a cache of dtype "
               f"{keys.dtype} (the projected keys'; nothing is cast)", cache.key.dtype, TypeError)
    check_integer_scalar(where, cache.index, "cache.index")


def _slots_for(query, params, cache):
    """The heads-first keys' and values' shapes that ``cache`` must have for ``query`` (every slot)."""
    length = cache.key.shape[-2] if isinstance(cache, KVCache) and cache.key.ndim >= 3 else 0
    batch, heads = tuple(query.shape[:-3]), query.shape[-2]
    return tuple(jax.ShapeDtypeStruct(batch + (heads, length, head_dim), query.dtype)
                 for head_dim in (query.shape[-1], params["value"]["w"].shape[-1]))


def _write_cache(where, cache: KVCache, keys, values):
    """Write a step's keys and values ``[batch..., steps, heads, head_dim]`` at ``cache.index``: the new
    cache, the causal mask over its slots, and (for a traced index) whether the write fitted."""
    keys, values = swap_heads(keys), swap_heads(values)  # the cache's heads-first layout
    _check_cache(where, cache, keys, values)
    batch, steps, max_length = tuple(keys.shape[:-3]), keys.shape[-2], cache.key.shape[-2]
    index = jnp.asarray(cache.index)
    start = _concrete_int(index)
    if start is not None and not 0 <= start <= max_length - steps:
        raise ValueError(f"{where}: the cache holds max_length={max_length} positions, got a write of {steps} "
                         f"position(s) at index {start}; init_kv_cache with a larger max_length")
    zero = jnp.zeros((), index.dtype)
    at = (zero,) * len(batch) + (zero, index, zero)
    new_cache = KVCache(key=jax.lax.dynamic_update_slice(cache.key, keys, at),
                        value=jax.lax.dynamic_update_slice(cache.value, values, at), index=index + steps)
    # Query i sits at position index + i and sees the slots up to there: those written
    # before and the ones it wrote itself, never the empty ones after.
    positions = index + jnp.arange(steps, dtype=index.dtype)
    mask = (jnp.arange(max_length, dtype=index.dtype)[None, :] <= positions[:, None])[None]
    # A concrete index was checked above; a traced one can only flag its output.
    fits = None if start is not None else index + steps <= max_length
    return new_cache, mask, fits


# ----------------------------------------------------------------------------- the layer


def _without_unused_positions(x, source, mask, *, self_attention: bool):
    """The queries' and the keys' sources with zeros where the mask leaves a position out (padding):
    a query with no key, a key no query attends. Whatever they hold, NaN too, then reaches no
    other output and no gradient: the products with the attention weights and the projections'
    backward would multiply it by a zero, and 0 x NaN is NaN. Zeroing the sources (``[..., in]``)
    rather than the projected keys and values (``[..., heads, head_dim]`` each) moves half the
    memory, forward and backward; in self-attention the queries and the keys get their own copy,
    since a padded position is still a query under a key-only mask."""
    as_query = jnp.any(mask, axis=(-3, -1))[..., None]  # [batch..., q_len or 1, 1]
    as_key = jnp.any(mask, axis=(-3, -2))[..., None]  # [batch..., kv_len or 1, 1]
    source = x if self_attention else source
    return jnp.where(as_query, x, jnp.zeros((), x.dtype)), jnp.where(as_key, source, jnp.zeros((), source.dtype))


class MultiHeadAttention(Layer):
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

    ``apply(params, state, x, *, context=None, mask=None, key=None, train=False)``:
    ``x`` is the queries' source ``[batch..., q_len, in]``, ``context`` the keys' and values'
    ``[batch..., kv_len, context_in]`` (``None``: ``x``, self-attention); ``mask`` is
    boolean, broadcastable to ``[batch..., heads, q_len, kv_len]`` (:func:`~jdl.nn.padding_mask`,
    :func:`~jdl.nn.causal_mask`); ``train=True`` with ``dropout_rate > 0`` drops attention
    weights and needs ``key``. ``y`` is ``[batch..., q_len, out]``. The weights themselves
    come from :meth:`attention_weights`, cached decoding from :meth:`decode_step`.

    Args:
      num_heads: number of heads ``h``.
      qkv_features: ``h * d``, the size of the queries, keys and values (``in`` by default).
      out_features: the output size (``in`` by default).
      context_features: the context's last axis (``in`` by default, as in self-attention).
      dropout_rate: dropout on the attention weights in training.
      use_bias, kernel_init, bias_init, param_dtype, dtype: as in :class:`jdl.nn.Dense`;
        ``out_kernel_init`` is the output kernel's initialiser (``kernel_init`` by default).
      implementation: see :func:`~jdl.nn.dot_product_attention`.

    Example (cached decoding gives the causal forward pass, one position at a time):
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn
        >>> layer = MultiHeadAttention(num_heads=2)
        >>> x = jax.random.normal(jax.random.key(1), (1, 4, 8))
        >>> params, state = layer.init(jax.random.key(0), x)
        >>> full, _ = jax.jit(layer.apply)(params, state, x, mask=nn.causal_mask(4))
        >>> cache = layer.init_cache(params, (1,), max_length=4)
        >>> steps, decode_step = [], jax.jit(layer.decode_step)
        >>> for t in range(4):
        ...     y, cache = decode_step(params, x[:, t:t + 1], cache)
        ...     steps.append(y)
        >>> bool(jnp.allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5))
        True
    """

    num_heads: PositiveInt
    _: KW_ONLY
    qkv_features: PositiveInt | None = None
    out_features: PositiveInt | None = None
    context_features: PositiveInt | None = None
    dropout_rate: Rate = 0.0
    use_bias: bool = True
    kernel_init: Callable = field(default=initializers.lecun_normal(), repr=False)
    bias_init: Callable = field(default=initializers.zeros, repr=False)
    out_kernel_init: Callable | None = field(default=None, repr=False)
    param_dtype: Any = jnp.float32
    dtype: Any = None
    implementation: Implementation = "auto"
    name: str = "attention"

    def __post_init__(self):
        check_divisible(self, "qkv_features", self.qkv_features or 0, "num_heads", self.num_heads)

    def init(self, key, x):
        self._check_input(x)
        in_features = x.shape[-1]
        qkv = self.qkv_features or in_features
        check_divisible(self, "features", qkv, "num_heads", self.num_heads, source=f" from input of shape "
                        f"{tuple(x.shape)}", note=" (qkv_features defaults to the input's last axis)")
        heads = (self.num_heads, qkv // self.num_heads)
        out = self.out_features or in_features
        fan_ins = (in_features,) + (self.context_features or in_features,) * 2
        keys = jax.random.split(key, 4)
        params = {name: self._init_dense(k, fan_in, qkv, (fan_in,) + heads, heads, self.kernel_init)
                  for name, k, fan_in in zip(PROJECTIONS, keys, fan_ins)}
        params["out"] = self._init_dense(keys[3], qkv, out, heads + (out,), (out,),
                                         self.out_kernel_init or self.kernel_init)
        return params, {}

    def _init_dense(self, key, fan_in, fan_out, kernel_shape, bias_shape, kernel_init) -> dict:
        """A dense layer's ``(fan_in, fan_out)`` kernel and bias, reshaped to the heads' layout."""
        flat = init_kernel_and_bias(key, (fan_in, fan_out), self.use_bias, kernel_init, self.bias_init,
                                    self.param_dtype)
        shapes = {"w": kernel_shape, "b": bias_shape}
        return {name: value.reshape(shapes[name]) for name, value in flat.items()}

    # ------------------------------------------------------------------------- checks

    def _check_input(self, x, what: str = "input") -> None:
        check_floating_min_rank(self, x, 2, "batch..., length, features", what)

    def _fan_in(self, params, projection: str, x) -> int:
        """The input size the ``(in, heads, head_dim)`` kernel of ``projection`` was made for; ``x``'s own
        when the kernel is malformed, so that check_params names the kernel rather than the input."""
        kernel = params.get(projection) if isinstance(params, dict) else None
        w = kernel.get("w") if isinstance(kernel, dict) else None
        return w.shape[0] if getattr(w, "ndim", 0) == 3 and w.shape[1] == self.num_heads else x.shape[-1]

    def _checked_source(self, params, state, x, context):
        """The keys' and values' source (``context`` or ``x``), once the inputs and params are checked."""
        self._check_input(x)
        check_last_axis(self, x, self._fan_in(params, "query", x), "the params' in_features")
        source = x if context is None else context
        context_in = self._fan_in(params, "key", source)
        check_that(context is not None or context_in == x.shape[-1], self, f"a context with last axis {context_in} "
                   f"(the key and value params' in_features) for cross attention", f"context=None (self-attention on "
                   f"{tuple(x.shape)})")
        if context is not None:
            self._check_input(context, "context")
            check_batch_axes(self, context, x.shape[:-2], 2, "context", "the input's")
            check_last_axis(self, context, context_in, "the key and value params' in_features", "context")
        check_params(self, params, state, x)
        return source

    # ------------------------------------------------------------------------- the math

    def _project_inputs(self, params, x, source, projections=PROJECTIONS):
        """``x W^Q + b^Q`` and ``c W^K + b^K``, ``c W^V + b^V``, each ``[batch..., length, heads, head_dim]``."""
        dtype = self.dtype or jnp.result_type(x.dtype, source.dtype, *(params[p]["w"].dtype for p in PROJECTIONS))
        projected = []
        for name in projections:
            inputs = x if name == "query" else source
            y = jnp.einsum("...li,ihd->...lhd", inputs.astype(dtype), params[name]["w"].astype(dtype))
            projected.append(y + params[name]["b"].astype(dtype) if self.use_bias else y)
        return projected

    def _project_output(self, params, heads):
        """``Concat(head_1, ..., head_h) W^O + b^O``, contracting the heads' two axes at once."""
        y = jnp.einsum("...lhd,hdo->...lo", heads, params["w"].astype(heads.dtype))
        return y + params["b"].astype(heads.dtype) if self.use_bias else y

    def apply(self, params, state, x, *, context=None, mask=None, key=None, train=False):
        source = self._checked_source(params, state, x, context)
        check_train_flag(self, train)
        dropout = train and self.dropout_rate > 0.0
        if dropout:
            check_training_key(self, key)

        if mask is not None:
            check_attention_mask(self, mask, x.shape[:-2] + (self.num_heads, x.shape[-2], source.shape[-2]))
            x, source = _without_unused_positions(x, source, mask, self_attention=context is None)
        query, keys, values = self._project_inputs(params, x, source)
        heads = attend(self, query, keys, values, mask=mask, dropout_rate=self.dropout_rate,
                       dropout_key=key if dropout else None, implementation=self.implementation,
                       unattended_keys_are_finite=True)
        return self._project_output(params["out"], heads), state

    def attention_weights(self, params, x, *, context=None, mask=None) -> jax.Array:
        """The attention weights ``softmax(Q K^T / sqrt(d))`` of every head, ``[batch..., heads, q_len, kv_len]``
        (before dropout; a query with no key left gets zeros): for plots and probes."""
        source = self._checked_source(params, {}, x, context)
        query, keys = self._project_inputs(params, x, source, ("query", "key"))
        return attention_weights(self, query, keys, mask=mask)

    def init_cache(self, params, batch_shape: tuple[int, ...], max_length: int, dtype=None) -> KVCache:
        """An empty :class:`KVCache` of ``max_length`` slots (:func:`init_kv_cache`; ``dtype`` defaults
        to the layer's ``dtype``, else the params')."""
        return init_kv_cache(params, batch_shape, max_length, dtype or self.dtype)

    def context_cache(self, params, context) -> KVCache:
        """The keys and values of a fixed ``context`` ``[batch..., kv_len, context_in]`` (an encoder's
        output), projected once for every decoding step's cross-attention (:meth:`attend_cache`):
        a full :class:`KVCache`, ``index = kv_len``."""
        self._check_input(context, "context")
        check_last_axis(self, context, self._fan_in(params, "key", context), "the key and value params' in_features",
                        "context")
        keys, values = self._project_inputs(params, context, context, ("key", "value"))
        return KVCache(key=swap_heads(keys), value=swap_heads(values),
                       index=jnp.asarray(context.shape[-2], jnp.int32))

    def attend_cache(self, params, x, cache: KVCache, *, mask=None) -> jax.Array:
        """Cross-attention of ``x`` ``[batch..., q_len, in]`` to every slot of a :meth:`context_cache`:
        the output of :meth:`apply` with ``context`` the cached one, without projecting it again.
        ``mask`` as in :meth:`apply` (``[..., q_len or 1, kv_len]``)."""
        self._check_input(x)
        check_last_axis(self, x, self._fan_in(params, "query", x), "the params' in_features")
        check_params(self, params, {}, x)
        (query,) = self._project_inputs(params, x, x, ("query",))
        _check_cache(self, cache, *_slots_for(query, params, cache))
        heads = attend(self, query, cache.key, cache.value, mask=mask, implementation=self.implementation,
                       kv_heads_first=True)
        return self._project_output(params["out"], heads)

    def decode_step(self, params, x, cache: KVCache, *, mask=None) -> tuple[jax.Array, KVCache]:
        """Self-attention of the next positions ``x`` ``[batch..., steps, in]`` against the cache.

        Their keys and values are written at ``cache.index``; each attends causally to the
        cached positions up to its own. ``mask`` (padding) covers the cache's slots:
        ``[..., steps or 1, max_length]``. Returns ``(y, new_cache)``. Writing past
        ``max_length`` is an error when the index is known at trace time; under ``jit`` the
        step's output is NaN instead (a traced index cannot raise).
        """
        self._checked_source(params, {}, x, None)
        query, keys, values = self._project_inputs(params, x, x)
        cache, cache_mask, fits = _write_cache(self, cache, keys, values)
        if mask is not None:
            check_attention_mask(self, mask, logits_shape_of(query, cache.key, kv_heads_first=True))
        heads = attend(self, query, cache.key, cache.value, mask=combine_masks(mask, cache_mask),
                       implementation=self.implementation, kv_heads_first=True)
        y = self._project_output(params["out"], heads)
        if fits is not None:
            y = jnp.where(fits, y, jnp.asarray(jnp.nan, y.dtype))
        return y, cache
