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
    (y, cache), state = decoder_block.apply(params, state, x_t, context=memory, cross_mask=..., cache=cache)

With ``cache`` (the self-attention's :class:`~jdl.nn.KVCache`), ``x`` holds the next
positions only, which attend to the cached ones (causally); the updated cache is returned.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> block = nn.TransformerEncoderBlock(num_heads=2, mlp_features=32)
    >>> x = jnp.ones((3, 5, 8))
    >>> params, state = block.init(jax.random.key(0), x)
    >>> sorted(params)
    ['feed_forward', 'norm_1', 'norm_2', 'self_attention']
    >>> y, _ = block.apply(params, state, x, mask=nn.padding_mask(jnp.array([5, 3, 1]), key_length=5))
    >>> y.shape
    (3, 5, 8)
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jdl import init as initializers
from jdl._checks import check_floating, check_keys, check_min_rank
from jdl.nn.attention import MultiHeadAttention
from jdl.nn.core import Layer, child_key, make_layer
from jdl.nn.dense import Dense
from jdl.nn.dropout import Dropout
from jdl.nn.norm import LayerNorm

ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "relu": jax.nn.relu,
    "gelu": jax.nn.gelu,
}


def _check_positive_int(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{owner}: expected {name} to be a positive int, got {value!r}")


def _check_rate(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"{owner}: expected {name} in [0, 1), got {value!r}")


def FeedForward(mlp_features: int, *, out_features: int | None = None, activation: str = "relu",
                dropout_rate: float = 0.0, kernel_init=initializers.lecun_normal(), param_dtype=jnp.float32,
                name: str = "feed_forward") -> Layer:
    """The position-wise feed-forward network ``FFN(x) = act(x W_1 + b_1) W_2 + b_2``.

    Params ``{"hidden": {"w", "b"}, "output": {"w", "b"}}``; ``out_features`` defaults to the
    input's size; ``dropout_rate`` drops the hidden activations in training (0 in the paper,
    whose dropout is on the sublayer's output; the block does that).
    """
    _check_positive_int("FeedForward", "mlp_features", mlp_features)
    if out_features is not None:
        _check_positive_int("FeedForward", "out_features", out_features)
    if activation not in ACTIVATIONS:
        raise ValueError(f"FeedForward: expected activation in {sorted(ACTIVATIONS)}, got {activation!r}")
    _check_rate("FeedForward", "dropout_rate", dropout_rate)
    description = f"FeedForward(mlp_features={mlp_features}, activation={activation!r})"
    function = ACTIVATIONS[activation]
    hidden = Dense(mlp_features, kernel_init=kernel_init, param_dtype=param_dtype)
    dropout = Dropout(dropout_rate)

    def init(key, x):
        check_floating(description, x)
        check_min_rank(description, x, 1, "..., features")
        output = Dense(out_features or x.shape[-1], kernel_init=kernel_init, param_dtype=param_dtype)
        hidden_params, _ = hidden.init(jax.random.fold_in(key, 0), x)
        h = jax.ShapeDtypeStruct(x.shape[:-1] + (mlp_features,), jnp.result_type(x.dtype, param_dtype))
        output_params, _ = output.init(jax.random.fold_in(key, 1), h)
        return {"hidden": hidden_params, "output": output_params}, {}

    def apply(params, state, x, *, key=None, train=False):
        check_keys(description, params, ["hidden", "output"])
        h, _ = hidden.apply(params["hidden"], {}, x)
        h, _ = dropout.apply({}, {}, function(h), key=key, train=train)
        output = Dense(params["output"]["w"].shape[-1], kernel_init=kernel_init, param_dtype=param_dtype)
        return output.apply(params["output"], {}, h)[0], state

    return make_layer(name, description, init, apply)


class _Sublayers:
    """What the two blocks share: the residual-and-norm wiring of each sublayer."""

    def __init__(self, owner: str, dropout_rate: float, pre_ln: bool, epsilon: float, param_dtype):
        self.owner, self.pre_ln = owner, pre_ln
        self.norm = LayerNorm(epsilon, param_dtype=param_dtype)
        self.dropout = Dropout(dropout_rate)

    def residual(self, params, norm_name, x, sublayer, key, train):
        """``x + Dropout(F(LN(x)))`` (pre-LN) or ``LN(x + Dropout(F(x)))`` (post-LN); ``F`` may return extras."""
        inputs = self.norm.apply(params[norm_name], {}, x)[0] if self.pre_ln else x
        out, extra = sublayer(inputs)
        out, _ = self.dropout.apply({}, {}, out, key=key, train=train)
        y = x + out
        if not self.pre_ln:
            y, _ = self.norm.apply(params[norm_name], {}, y)
        return y, extra

    def check_input(self, x):
        check_floating(self.owner, x)
        check_min_rank(self.owner, x, 2, "batch..., length, features")


def _describe(kind: str, num_heads: int, mlp_features: int, dropout_rate: float, pre_ln: bool) -> str:
    return (f"{kind}(num_heads={num_heads}, mlp_features={mlp_features}, dropout_rate={dropout_rate}"
            + (", pre_ln=True)" if pre_ln else ")"))


def TransformerEncoderBlock(num_heads: int, mlp_features: int, *, dropout_rate: float = 0.1,
                            attention_dropout_rate: float = 0.0, pre_ln: bool = False, activation: str = "relu",
                            epsilon: float = 1e-6, kernel_init=initializers.lecun_normal(), param_dtype=jnp.float32,
                            attention_implementation: str = "auto", name: str = "encoder_block") -> Layer:
    """Self-attention then a feed-forward network, each with a residual connection and LayerNorm.

    ``apply(params, state, x, *, key=None, train=False, mask=None)``: ``x`` is ``[batch...,
    length, d_model]``; ``mask`` the self-attention's (padding) mask. Dropout (``dropout_rate``
    on each sublayer's output, ``attention_dropout_rate`` on the attention weights) needs
    ``key`` when ``train=True``.
    """
    _check_positive_int("TransformerEncoderBlock", "num_heads", num_heads)
    _check_positive_int("TransformerEncoderBlock", "mlp_features", mlp_features)
    _check_rate("TransformerEncoderBlock", "dropout_rate", dropout_rate)
    description = _describe("TransformerEncoderBlock", num_heads, mlp_features, dropout_rate, pre_ln)
    attention = MultiHeadAttention(num_heads, dropout_rate=attention_dropout_rate, kernel_init=kernel_init,
                                   param_dtype=param_dtype, implementation=attention_implementation)
    feed_forward = FeedForward(mlp_features, activation=activation, kernel_init=kernel_init, param_dtype=param_dtype)
    wiring = _Sublayers(description, dropout_rate, pre_ln, epsilon, param_dtype)

    def init(key, x):
        wiring.check_input(x)
        params = {"self_attention": attention.init(child_key(key, 0), x)[0],
                  "norm_1": wiring.norm.init(child_key(key, 1), x)[0],
                  "feed_forward": feed_forward.init(child_key(key, 2), x)[0],
                  "norm_2": wiring.norm.init(child_key(key, 3), x)[0]}
        return params, {}

    def apply(params, state, x, *, key=None, train=False, mask=None):
        wiring.check_input(x)
        check_keys(description, params, ["self_attention", "norm_1", "feed_forward", "norm_2"])
        x, _ = wiring.residual(params, "norm_1", x, lambda h: (attention.apply(
            params["self_attention"], {}, h, key=child_key(key, 0), train=train, mask=mask)[0], None),
            child_key(key, 1), train)
        x, _ = wiring.residual(params, "norm_2", x, lambda h: (feed_forward.apply(
            params["feed_forward"], {}, h)[0], None), child_key(key, 2), train)
        return x, state

    return make_layer(name, description, init, apply)


def TransformerDecoderBlock(num_heads: int, mlp_features: int, *, dropout_rate: float = 0.1,
                            attention_dropout_rate: float = 0.0, pre_ln: bool = False, activation: str = "relu",
                            epsilon: float = 1e-6, kernel_init=initializers.lecun_normal(), param_dtype=jnp.float32,
                            attention_implementation: str = "auto", name: str = "decoder_block") -> Layer:
    """Masked self-attention, cross-attention over the encoder's output, then a feed-forward network.

    ``apply(params, state, x, *, context, key=None, train=False, self_mask=None,
    cross_mask=None, cache=None)``: ``x`` the decoder's inputs ``[batch..., length, d_model]``,
    ``context`` the encoder's output ``[batch..., source_length, d_model]``. ``self_mask``
    is usually ``causal_mask(length)`` (combined with the target's padding); ``cross_mask``
    the source's padding (``padding_mask(source_ids)``). With ``cache`` (a
    :class:`~jdl.nn.KVCache` of the self-attention), ``y`` is ``(output, new_cache)`` and the
    positions in ``x`` attend causally to the cached ones (``self_mask`` is then over the cache).
    ``return_cross_weights=True`` (without a cache) gives ``y = (output, weights)``, the
    cross-attention's weights ``[batch..., heads, length, source_length]`` (for plots).
    """
    _check_positive_int("TransformerDecoderBlock", "num_heads", num_heads)
    _check_positive_int("TransformerDecoderBlock", "mlp_features", mlp_features)
    _check_rate("TransformerDecoderBlock", "dropout_rate", dropout_rate)
    description = _describe("TransformerDecoderBlock", num_heads, mlp_features, dropout_rate, pre_ln)
    options = dict(dropout_rate=attention_dropout_rate, kernel_init=kernel_init, param_dtype=param_dtype,
                   implementation=attention_implementation)
    self_attention = MultiHeadAttention(num_heads, name="self_attention", **options)
    cross_attention = MultiHeadAttention(num_heads, name="cross_attention", **options)
    feed_forward = FeedForward(mlp_features, activation=activation, kernel_init=kernel_init, param_dtype=param_dtype)
    names = ["self_attention", "norm_1", "cross_attention", "norm_2", "feed_forward", "norm_3"]
    wiring = _Sublayers(description, dropout_rate, pre_ln, epsilon, param_dtype)

    def init(key, x):
        wiring.check_input(x)
        params = {"self_attention": self_attention.init(child_key(key, 0), x)[0],
                  "norm_1": wiring.norm.init(child_key(key, 1), x)[0],
                  "cross_attention": cross_attention.init(child_key(key, 2), x)[0],
                  "norm_2": wiring.norm.init(child_key(key, 3), x)[0],
                  "feed_forward": feed_forward.init(child_key(key, 4), x)[0],
                  "norm_3": wiring.norm.init(child_key(key, 5), x)[0]}
        return params, {}

    def apply(params, state, x, *, context=None, key=None, train=False, self_mask=None, cross_mask=None,
              cache=None, return_cross_weights=False):
        wiring.check_input(x)
        if context is None:
            raise ValueError(f"{description}: expected context (the encoder's output, [batch..., source_length, "
                             f"d_model]), got None")
        check_keys(description, params, names)

        def attend_self(h):
            y, _ = self_attention.apply(params["self_attention"], {}, h, key=child_key(key, 0), train=train,
                                        mask=self_mask, cache=cache)
            return y if cache is not None else (y, None)

        def attend_context(h):
            y, _ = cross_attention.apply(params["cross_attention"], {}, h, key=child_key(key, 2), train=train,
                                         context=context, mask=cross_mask, return_weights=return_cross_weights)
            return y if return_cross_weights else (y, None)

        if return_cross_weights and cache is not None:
            raise ValueError(f"{description}: return_cross_weights is for full sequences, got a cache too")
        x, new_cache = wiring.residual(params, "norm_1", x, attend_self, child_key(key, 1), train)
        x, weights = wiring.residual(params, "norm_2", x, attend_context, child_key(key, 3), train)
        x, _ = wiring.residual(params, "norm_3", x, lambda h: (feed_forward.apply(
            params["feed_forward"], {}, h)[0], None), child_key(key, 4), train)
        if cache is not None:
            return (x, new_cache), state
        return ((x, weights) if return_cross_weights else x), state

    return make_layer(name, description, init, apply)
