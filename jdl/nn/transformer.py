"""Transformer blocks (Vaswani et al., 2017): the position-wise feed-forward network, the
encoder block and the decoder block, post-LN (the paper's) or pre-LN.

Each sublayer ``F`` (self-attention, cross-attention, feed-forward) is wrapped in a
residual connection with dropout on its output and a LayerNorm::

    post-LN (the paper):  x <- LayerNorm(x + Dropout(F(x)))
    pre-LN:               x <- x + Dropout(F(LayerNorm(x)))

(a pre-LN stack ends with one more LayerNorm, which :class:`jdl.models.Transformer` adds).
The feed-forward network is ``FFN(x) = act(x W_1 + b_1) W_2 + b_2`` (ReLU in the paper).

Params are nested dicts named after the sublayers::

    encoder block: {"self_attention", "norm_1", "feed_forward", "norm_2"}
    decoder block: {"self_attention", "norm_1", "cross_attention", "norm_2", "feed_forward", "norm_3"}

``norm_k`` is the LayerNorm of the ``k``-th sublayer in either order (it normalises the
sublayer's output in post-LN, its input in pre-LN), so both variants have the same params.

The blocks take their masks and context as keywords (:func:`jdl.nn.padding_mask`,
:func:`jdl.nn.causal_mask`)::

    y, state = encoder_block.apply(params, state, x, mask=None, key=None, train=False)
    y, state = decoder_block.apply(params, state, x, context=memory, self_mask=None, cross_mask=None)
    y, cache = decoder_block.decode_step(params, x_t, cache, context=memory, cross_mask=None)
    weights = decoder_block.cross_attention_weights(params, x, context=memory, self_mask=..., cross_mask=...)

In :meth:`TransformerDecoderBlock.decode_step`, ``x`` holds the next positions only, which
attend causally to the ones in the self-attention's :class:`~jdl.nn.KVCache`
(``block.self_attention.init_cache(params["self_attention"], ...)``). Its ``context`` is the
encoder's output or, projected once for all the steps, ``block.context_cache(params, memory)``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> block = nn.TransformerEncoderBlock(num_heads=2, mlp_features=32)
    >>> x = jnp.ones((3, 5, 8))
    >>> params, state = jax.jit(block.init)(jax.random.key(0), x)
    >>> sorted(params)
    ['feed_forward', 'norm_1', 'norm_2', 'self_attention']
    >>> mask = nn.padding_mask(jnp.array([5, 3, 1]), key_length=5)
    >>> y, _ = jax.jit(block.apply)(params, state, x, mask=mask)
    >>> y.shape
    (3, 5, 8)
"""
from __future__ import annotations

from dataclasses import field
from typing import Any, Callable, ClassVar, Literal

import jax
import jax.numpy as jnp

from jdl import init as initializers
from jdl._checks import Positive, PositiveInt, Rate, check_floating_min_rank, check_last_axis, check_that
from jdl.nn.core import KW_ONLY, Layer, check_params, child_key
from jdl.nn.dense import check_features, in_features_of, init_kernel_and_bias
from jdl.nn.dropout import Dropout
from jdl.nn.multi_head import KVCache, MultiHeadAttention
from jdl.nn.norm import LayerNorm
from jdl.nn.scaled_dot_product import Implementation as AttentionImplementation

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
}


def _affine(params, x) -> jax.Array:
    """``x W + b`` in the promoted dtype of ``x`` and ``W`` (a :class:`~jdl.nn.Dense` layer's math)."""
    dtype = jnp.result_type(x.dtype, params["w"].dtype)
    return jnp.dot(x.astype(dtype), params["w"].astype(dtype)) + params["b"].astype(dtype)


class FeedForward(Layer):
    """The position-wise feed-forward network ``FFN(x) = act(x W_1 + b_1) W_2 + b_2``.

    Params ``{"hidden": {"w", "b"}, "output": {"w", "b"}}`` (the two dense layers');
    ``out_features`` defaults to the input's size; ``dropout_rate`` drops the hidden
    activations in training (0 in the paper, whose dropout is on the sublayer's output; the
    block does that).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> ffn = FeedForward(32)
        >>> params, state = ffn.init(jax.random.key(0), jnp.ones((2, 5, 8)))
        >>> params["hidden"]["w"].shape, params["output"]["w"].shape
        ((8, 32), (32, 8))
    """

    mlp_features: PositiveInt
    _: KW_ONLY
    out_features: PositiveInt | None = None
    activation: Literal["gelu", "relu"] = "relu"
    dropout_rate: Rate = 0.0
    kernel_init: Callable = field(default=initializers.lecun_normal(), repr=False)
    param_dtype: Any = jnp.float32
    name: str = "feed_forward"
    always_shown: ClassVar[tuple] = ("activation",)
    dropout: Dropout = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "dropout", Dropout(self.dropout_rate))

    def init(self, key, x):
        check_features(self, x)
        sizes = (x.shape[-1], self.mlp_features, self.out_features or x.shape[-1])
        params = {name: init_kernel_and_bias(jax.random.fold_in(key, index), sizes[index:index + 2], True,
                                             self.kernel_init, initializers.zeros, self.param_dtype)
                  for index, name in enumerate(("hidden", "output"))}
        return params, {}

    def apply(self, params, state, x, *, key=None, train=False):
        check_features(self, x)
        hidden = params.get("hidden") if isinstance(params, dict) else None
        in_features = in_features_of(hidden)
        if in_features is not None and hidden["w"].shape[-1] == self.mlp_features:
            check_last_axis(self, x, in_features, "the params' in_features")
        check_params(self, params, state, x)

        hidden = ACTIVATIONS[self.activation](_affine(params["hidden"], x))
        hidden, _ = self.dropout.apply({}, {}, hidden, key=key, train=train)
        return _affine(params["output"], hidden), state


class _Block(Layer):
    """What the two blocks share: the configuration, the sublayers built from it, and the
    residual-and-norm wiring of each sublayer."""

    num_heads: PositiveInt
    mlp_features: PositiveInt
    _: KW_ONLY
    dropout_rate: Rate = 0.1
    attention_dropout_rate: Rate = 0.0
    pre_ln: bool = False
    activation: Literal["gelu", "relu"] = "relu"
    epsilon: Positive = 1e-6
    kernel_init: Callable = field(default=initializers.lecun_normal(), repr=False)
    param_dtype: Any = jnp.float32
    attention_implementation: AttentionImplementation = "auto"
    name: str = "block"
    always_shown: ClassVar[tuple] = ("dropout_rate",)
    # The sublayers, built once from the configuration (one LayerNorm serves every norm_k).
    self_attention: MultiHeadAttention = field(init=False, repr=False, compare=False)
    feed_forward: FeedForward = field(init=False, repr=False, compare=False)
    norm: LayerNorm = field(init=False, repr=False, compare=False)
    dropout: Dropout = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        sublayers = dict(
            self_attention=self.attention("self_attention"),
            feed_forward=FeedForward(self.mlp_features, activation=self.activation, kernel_init=self.kernel_init,
                                     param_dtype=self.param_dtype),
            norm=LayerNorm(self.epsilon, param_dtype=self.param_dtype),
            dropout=Dropout(self.dropout_rate))
        for name, layer in sublayers.items():
            object.__setattr__(self, name, layer)

    def attention(self, name: str) -> MultiHeadAttention:
        """A multi-head attention sublayer of this configuration."""
        return MultiHeadAttention(self.num_heads, dropout_rate=self.attention_dropout_rate,
                                  kernel_init=self.kernel_init, param_dtype=self.param_dtype,
                                  implementation=self.attention_implementation, name=name)

    def _check_input(self, x) -> None:
        check_floating_min_rank(self, x, 2, "batch..., length, d_model")

    def init(self, key, x):
        self._check_input(x)
        params = {}
        for index, name in enumerate(self.PARAMS):  # "self_attention", "norm_1", ...: each its own key
            sublayer = self.norm if name.startswith("norm") else getattr(self, name)
            params[name] = sublayer.init(child_key(key, index), x)[0]
        return params, {}

    # ------------------------------------------------------------------------- the wiring

    def _sublayer_input(self, norm_params, x):
        """``LayerNorm(x)`` in pre-LN, ``x`` in post-LN."""
        return self.norm.apply(norm_params, {}, x)[0] if self.pre_ln else x

    def _add_and_norm(self, norm_params, x, y, key=None, train=False):
        """``x + Dropout(y)`` in pre-LN, ``LayerNorm(x + Dropout(y))`` in post-LN."""
        y, _ = self.dropout.apply({}, {}, y, key=key, train=train)
        y = x + y
        return y if self.pre_ln else self.norm.apply(norm_params, {}, y)[0]

    def _attend_self(self, params, x, mask, key, train):
        """Sublayer 1: multi-head self-attention (masked: padding, causality)."""
        h = self._sublayer_input(params["norm_1"], x)
        y, _ = self.self_attention.apply(params["self_attention"], {}, h, mask=mask, key=child_key(key, 0),
                                         train=train)
        return self._add_and_norm(params["norm_1"], x, y, child_key(key, 1), train)

    def _feed_forward(self, params, x, norm_name, key, train):
        """The last sublayer: the position-wise feed-forward network."""
        y, _ = self.feed_forward.apply(params["feed_forward"], {}, self._sublayer_input(params[norm_name], x))
        return self._add_and_norm(params[norm_name], x, y, key, train)


class TransformerEncoderBlock(_Block):
    """Self-attention then a feed-forward network, each with a residual connection and LayerNorm.

    ``apply(params, state, x, *, mask=None, key=None, train=False)``: ``x`` is ``[batch...,
    length, d_model]``; ``mask`` the self-attention's (padding) mask. Dropout (``dropout_rate``
    on each sublayer's output, ``attention_dropout_rate`` on the attention weights) needs
    ``key`` when ``train=True``.
    """

    _: KW_ONLY
    name: str = "encoder_block"
    PARAMS: ClassVar[tuple] = ("self_attention", "norm_1", "feed_forward", "norm_2")

    def apply(self, params, state, x, *, mask=None, key=None, train=False):
        check_params(self, params, state, x)  # init's input check included

        x = self._attend_self(params, x, mask, key, train)
        x = self._feed_forward(params, x, "norm_2", child_key(key, 2), train)
        return x, state

    def decode_step(self, params, x, cache: KVCache, *, mask=None) -> tuple[jax.Array, KVCache]:
        """The block run causally on the next positions ``x`` ``[batch, steps, d_model]`` against
        the self-attention's key/value ``cache`` (a decoder-only model's cached step): the same
        output as :meth:`apply` with a causal mask, at those positions."""
        h = self._sublayer_input(params["norm_1"], x)
        y, cache = self.self_attention.decode_step(params["self_attention"], h, cache, mask=mask)
        x = self._add_and_norm(params["norm_1"], x, y)
        return self._feed_forward(params, x, "norm_2", None, False), cache


class TransformerDecoderBlock(_Block):
    """Masked self-attention, cross-attention over the encoder's output, then a feed-forward network.

    ``apply(params, state, x, *, context, self_mask=None, cross_mask=None, key=None,
    train=False)``: ``x`` the decoder's inputs ``[batch..., length, d_model]``, ``context`` the
    encoder's output ``[batch..., source_length, d_model]``. ``self_mask`` is usually
    ``causal_mask(length)`` (combined with the target's padding); ``cross_mask`` the source's
    padding (``padding_mask(source_ids)``).

    :meth:`decode_step` runs the next positions against the self-attention's key/value cache;
    :meth:`cross_attention_weights` gives the cross-attention's weights (for plots).
    """

    _: KW_ONLY
    name: str = "decoder_block"
    PARAMS: ClassVar[tuple] = ("self_attention", "norm_1", "cross_attention", "norm_2", "feed_forward", "norm_3")
    cross_attention: MultiHeadAttention = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "cross_attention", self.attention("cross_attention"))

    def _check_inputs(self, params, state, x, context) -> None:
        check_that(context is not None, self, "context (the encoder's output, [batch..., source_length, d_model])",
                   None)
        check_params(self, params, state, x)

    def _attend_context(self, params, x, context, mask, key, train):
        """Sublayer 2: multi-head attention over the encoder's output."""
        h = self._sublayer_input(params["norm_2"], x)
        if isinstance(context, KVCache):  # projected once (context_cache): decoding, no dropout
            y = self.cross_attention.attend_cache(params["cross_attention"], h, context, mask=mask)
        else:
            y, _ = self.cross_attention.apply(params["cross_attention"], {}, h, context=context, mask=mask,
                                              key=child_key(key, 2), train=train)
        return self._add_and_norm(params["norm_2"], x, y, child_key(key, 3), train)

    def apply(self, params, state, x, *, context, self_mask=None, cross_mask=None, key=None, train=False):
        self._check_inputs(params, state, x, context)

        x = self._attend_self(params, x, self_mask, key, train)
        x = self._attend_context(params, x, context, cross_mask, key, train)
        x = self._feed_forward(params, x, "norm_3", child_key(key, 4), train)
        return x, state

    def context_cache(self, params, context) -> KVCache:
        """The cross-attention's keys and values of ``context`` (the encoder's output), projected once:
        pass it as :meth:`decode_step`'s ``context`` and no step projects the context again."""
        return self.cross_attention.context_cache(params["cross_attention"], context)

    def decode_step(self, params, x, cache: KVCache, *, context, cross_mask=None) -> tuple[jax.Array, KVCache]:
        """The block on the next positions ``x`` only, their self-attention against ``cache`` (causal).

        ``context``: the encoder's output, or its :meth:`context_cache` (the same result,
        without projecting the context at every step). Returns ``(y, new_cache)``; see
        :meth:`MultiHeadAttention.decode_step`. Evaluation mode: no dropout.
        """
        self._check_inputs(params, {}, x, context)

        h = self._sublayer_input(params["norm_1"], x)
        y, cache = self.self_attention.decode_step(params["self_attention"], h, cache)
        x = self._add_and_norm(params["norm_1"], x, y)
        x = self._attend_context(params, x, context, cross_mask, None, False)
        return self._feed_forward(params, x, "norm_3", None, False), cache

    def cross_attention_weights(self, params, x, *, context, self_mask=None, cross_mask=None) -> jax.Array:
        """The cross-attention's weights ``[batch..., heads, length, source_length]`` (evaluation mode)."""
        self._check_inputs(params, {}, x, context)

        x = self._attend_self(params, x, self_mask, None, False)
        h = self._sublayer_input(params["norm_2"], x)
        return self.cross_attention.attention_weights(params["cross_attention"], h, context=context, mask=cross_mask)
