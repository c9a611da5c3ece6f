"""Transformer blocks against flax.linen twins with copied weights (outputs and gradients, post-LN
and pre-LN), the cross-attention weights against flax's sown weights, cached decoding against
the full causal pass, dropout, and bad input."""
import functools

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn
from jdl.nn import transformer as transformer_module

RENAME = {"w": "kernel", "b": "bias", "gamma": "scale", "beta": "bias"}


def _to_flax(tree):
    if isinstance(tree, dict):
        return {RENAME.get(name, name): _to_flax(value) for name, value in tree.items()}
    return tree


class FlaxFeedForward(fnn.Module):
    mlp_features: int
    activation: str = "relu"

    @fnn.compact
    def __call__(self, x):
        hidden = fnn.Dense(self.mlp_features, name="hidden")(x)
        return fnn.Dense(x.shape[-1], name="output")(getattr(fnn, self.activation)(hidden))


class FlaxBlock(fnn.Module):
    """The encoder block, or with ``decoder`` the decoder block, from flax.linen's pieces."""

    num_heads: int
    mlp_features: int
    pre_ln: bool
    decoder: bool

    @fnn.compact
    def __call__(self, x, context=None, self_mask=None, cross_mask=None):
        def sublayer(x, norm_name, function):
            norm = fnn.LayerNorm(epsilon=1e-6, name=norm_name)
            return x + function(norm(x)) if self.pre_ln else norm(x + function(x))

        attention = functools.partial(fnn.MultiHeadDotProductAttention, self.num_heads)
        x = sublayer(x, "norm_1", lambda h: attention(name="self_attention")(h, h, mask=self_mask))
        if self.decoder:
            cross = attention(name="cross_attention")
            x = sublayer(x, "norm_2", lambda h: cross(h, context, mask=cross_mask, sow_weights=True))
        feed_forward = FlaxFeedForward(self.mlp_features, name="feed_forward")
        return sublayer(x, "norm_3" if self.decoder else "norm_2", feed_forward)


def _block(decoder, pre_ln, **options):
    kind = nn.TransformerDecoderBlock if decoder else nn.TransformerEncoderBlock
    return kind(2, 16, pre_ln=pre_ln, dropout_rate=0.0, **options)


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    x, context = (jnp.asarray(rng.standard_normal(shape).astype(np.float32)) for shape in ((2, 5, 8), (2, 4, 8)))
    self_mask = nn.combine_masks(nn.causal_mask(5), nn.padding_mask(jnp.array([5, 3]), key_length=5))
    return x, context, self_mask, nn.padding_mask(jnp.array([4, 2]), key_length=4)


def test_feed_forward_matches_flax(randn, random_params, compare_with_flax):
    for activation in ("relu", "gelu"):
        layer = nn.FeedForward(12, activation=activation)
        x = randn((2, 3, 5), 0)
        params = random_params(layer, x, seed=1, scale=0.5)
        assert jax.tree.map(jnp.shape, params) == {"hidden": {"w": (5, 12), "b": (12,)},
                                                   "output": {"w": (12, 5), "b": (5,)}}
        module = FlaxFeedForward(12, activation)
        compare_with_flax(lambda p, v: layer.apply(p, {}, v)[0],
                          lambda p, v: module.apply({"params": _to_flax(p)}, v), params, x)
    assert nn.FeedForward(4, out_features=3).init(jax.random.key(0), x)[0]["output"]["w"].shape == (4, 3)


@pytest.mark.parametrize("pre_ln", [False, True])
@pytest.mark.parametrize("decoder", [False, True])
def test_blocks_match_flax(decoder, pre_ln, inputs, random_params, compare_with_flax):
    x, context, self_mask, cross_mask = inputs
    block, module = _block(decoder, pre_ln), FlaxBlock(2, 16, pre_ln, decoder)
    params = {"block": random_params(block, x, seed=3, scale=0.5), "context": context}
    expected_keys = ["feed_forward", "norm_1", "norm_2", "self_attention"] + (
        ["cross_attention", "norm_3"] if decoder else [])
    assert sorted(params["block"]) == sorted(expected_keys)

    def jdl_fn(p, v):
        if decoder:
            return block.apply(p["block"], {}, v, context=p["context"], self_mask=self_mask, cross_mask=cross_mask)[0]
        return block.apply(p["block"], {}, v, mask=self_mask)[0]

    def flax_fn(p, v):
        return module.apply({"params": _to_flax(p["block"])}, v, p["context"], self_mask, cross_mask)

    compare_with_flax(jdl_fn, flax_fn, params, x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_cross_attention_weights_match_flax(pre_ln, inputs, random_params):
    x, context, self_mask, cross_mask = inputs
    block, module = _block(True, pre_ln), FlaxBlock(2, 16, pre_ln, True)
    params = random_params(block, x, seed=4, scale=0.5)
    weights = jax.jit(block.cross_attention_weights)(params, x, context=context, self_mask=self_mask,
                                                     cross_mask=cross_mask)
    _, sown = jax.jit(lambda p: module.apply({"params": p}, x, context, self_mask, cross_mask,
                                             mutable=["intermediates"]))(_to_flax(params))
    expected = sown["intermediates"]["cross_attention"]["attention_weights"][0]
    assert weights.shape == (2, 2, 5, 4)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(weights)[1, :, :, 2:], 0.0)


@pytest.mark.parametrize("pre_ln", [False, True])
def test_decode_step_matches_the_full_causal_pass(pre_ln, inputs, random_params):
    x, context, _, cross_mask = inputs
    block = _block(True, pre_ln)
    params = random_params(block, x, seed=5, scale=0.5)
    full, _ = jax.jit(block.apply)(params, {}, x, context=context, self_mask=nn.causal_mask(5), cross_mask=cross_mask)

    @jax.jit
    def decode(params, x, context):
        def step(cache, x_t):
            y_t, cache = block.decode_step(params, x_t[:, None], cache, context=context, cross_mask=cross_mask)
            return cache, y_t[:, 0]

        cache = block.self_attention.init_cache(params["self_attention"], (2,), 7)
        cache, ys = jax.lax.scan(step, cache, jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(ys, 0, 1), cache

    ys, cache = decode(params, x, context)
    np.testing.assert_allclose(ys, full, rtol=1e-5, atol=1e-5)
    assert int(cache.index) == 5


def test_dropout_needs_a_key_and_is_keyed(inputs, random_params):
    x, context, self_mask, cross_mask = inputs
    block = nn.TransformerDecoderBlock(2, 16, dropout_rate=0.3, attention_dropout_rate=0.2)
    params = random_params(block, x, seed=6, scale=0.5)

    def run(key, train=True):
        return block.apply(params, {}, x, context=context, self_mask=self_mask, cross_mask=cross_mask, key=key,
                           train=train)[0]

    with pytest.raises(ValueError, match=r"train=True needs a PRNG key"):
        run(None)
    keyed = jax.jit(run)  # one program for the three keys, not one per op
    a, b, c = keyed(jax.random.key(1)), keyed(jax.random.key(1)), keyed(jax.random.key(2))
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(np.asarray(a - c))) > 1e-2
    evaluation = run(None, train=False)
    no_dropout = _block(True, False).apply(params, {}, x, context=context, self_mask=self_mask, cross_mask=cross_mask)
    np.testing.assert_array_equal(evaluation, no_dropout[0])


def test_block_errors(inputs, random_params):
    x, context, _, _ = inputs
    with pytest.raises(ValueError, match=r"TransformerEncoderBlock\(.*\): expected num_heads to be a positive int"):
        nn.TransformerEncoderBlock(0, 8)
    with pytest.raises(ValueError, match=r"TransformerDecoderBlock\(.*\): expected context"):
        block = nn.TransformerDecoderBlock(2, 8)
        x = jnp.ones((1, 3, 4))
        block.apply(block.init(jax.random.key(0), x)[0], {}, x, context=None)
    block = nn.TransformerEncoderBlock(2, 16)
    params = random_params(block, inputs[0])
    with pytest.raises(ValueError, match=r"TransformerEncoderBlock\(num_heads=2, mlp_features=16, dropout_rate=0.1\): "
                                         r"expected params\['feed_forward'\]\['hidden'\]\['w'\] of shape \(8, 16\), "
                                         r"got \(8, 12\)"):
        bad = {**params, "feed_forward": {**params["feed_forward"], "hidden": {"w": jnp.zeros((8, 12)),
                                                                               "b": jnp.zeros(16)}}}
        block.apply(bad, {}, inputs[0])
    with pytest.raises(TypeError, match=r"TransformerEncoderBlock\(.*\): expected a floating-point input"):
        block.apply(params, {}, jnp.ones((2, 5, 8), jnp.int32))
    with pytest.raises(ValueError, match=r"FeedForward\(.*\): expected activation in \('gelu', 'relu'\), got 'tanh'"):
        nn.FeedForward(8, activation="tanh")
    with pytest.raises(ValueError, match=r"FeedForward\(mlp_features=16, activation='relu'\): expected input with "
                                         r"last axis 8 \(the params' in_features\), got input of shape \(2, 5, 7\)"):
        block.feed_forward.apply(params["feed_forward"], {}, inputs[0][..., :7])


def test_repr_and_exports():
    assert repr(nn.TransformerEncoderBlock(1, 64, dropout_rate=0.0, pre_ln=True)) == (
        "TransformerEncoderBlock(num_heads=1, mlp_features=64, dropout_rate=0.0, pre_ln=True)")
    assert nn.TransformerDecoderBlock(2, 8) == nn.TransformerDecoderBlock(2, 8)
    for name in ("FeedForward", "TransformerEncoderBlock", "TransformerDecoderBlock"):
        assert getattr(nn, name) is getattr(transformer_module, name)
