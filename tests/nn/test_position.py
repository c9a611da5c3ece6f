"""Positional encodings: the sinusoidal table against a NumPy transcription of the paper's
formula, the learned table against flax's Embed, offsets and explicit positions for decoding,
jit with a traced offset, finite differences, and sequences longer than the table."""
import re

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn


def _np_sinusoids(length, features, offset=0):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)), entry by entry."""
    table = np.zeros((length, features))
    for row in range(length):
        pos = row + offset
        for j in range(features):
            i = j // 2
            angle = pos / 10000 ** (2 * i / features)
            table[row, j] = np.sin(angle) if j % 2 == 0 else np.cos(angle)
    return table


@pytest.mark.parametrize("features", [6, 7])
def test_sinusoidal_positions_match_the_paper(features):
    table = nn.sinusoidal_positions(50, features)
    assert table.shape == (50, features) and table.dtype == jnp.float32
    np.testing.assert_allclose(table, _np_sinusoids(50, features), rtol=0, atol=1e-5)
    np.testing.assert_array_equal(table[0], [0.0, 1.0] * (features // 2) + [0.0] * (features % 2))
    np.testing.assert_allclose(nn.sinusoidal_positions(4, features, offset=20), _np_sinusoids(4, features, 20),
                               atol=1e-5)


def test_sinusoidal_layer_adds_the_table_at_an_offset(randn):
    layer = nn.SinusoidalPositionalEncoding(max_length=12)
    x = randn((2, 5, 6))
    params, state = layer.init(jax.random.key(0), x)
    assert params == {} and state == {}
    y, _ = layer.apply(params, state, x)
    np.testing.assert_allclose(y, np.asarray(x) + _np_sinusoids(5, 6), atol=1e-5)
    y, _ = layer.apply(params, state, x, offset=7)
    np.testing.assert_allclose(y, np.asarray(x) + _np_sinusoids(5, 6, offset=7), atol=1e-5)
    # A decoder step under jit: the offset is traced and gives the same numbers.
    step = jax.jit(lambda v, t: layer.apply(params, state, v, offset=t)[0])
    np.testing.assert_allclose(step(x[:, :1], jnp.int32(11)), np.asarray(x[:, :1]) + _np_sinusoids(1, 6, 11),
                               atol=1e-5)
    # Explicit positions, one row per example (e.g. left-padded prompts).
    positions = jnp.array([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2]])
    y, _ = layer.apply(params, state, x, positions=positions)
    table = _np_sinusoids(5, 6)
    np.testing.assert_allclose(y, np.asarray(x) + table[np.asarray(positions)], atol=1e-5)


def test_positions_past_the_table_under_jit_give_nan(randn):
    for layer in (nn.SinusoidalPositionalEncoding(max_length=4), nn.LearnedPositionalEmbedding(max_length=4)):
        x = randn((1, 2, 3))
        params, state = layer.init(jax.random.key(0), x)
        y = jax.jit(lambda v, t: layer.apply(params, state, v, offset=t)[0])(x, jnp.int32(3))
        assert np.all(np.isfinite(np.asarray(y[:, 0]))) and np.all(np.isnan(np.asarray(y[:, 1])))
        y, _ = layer.apply(params, state, x, positions=jnp.array([[-1, 0]]))
        assert np.all(np.isnan(np.asarray(y[:, 0]))) and np.all(np.isfinite(np.asarray(y[:, 1])))


@pytest.mark.parametrize("make", [nn.SinusoidalPositionalEncoding, nn.LearnedPositionalEmbedding])
def test_sequence_longer_than_the_table(make, randn):
    layer = make(max_length=4)
    name = re.escape(layer.description)
    with pytest.raises(ValueError, match=name + r": expected a sequence of at most max_length=4 positions \(axis -2\), "
                                                r"got input of shape \(2, 5, 6\) with 5"):
        layer.init(jax.random.key(0), jnp.zeros((2, 5, 6)))
    params, state = layer.init(jax.random.key(0), jnp.zeros((2, 4, 6)))
    with pytest.raises(ValueError, match=name + r": expected a sequence of at most max_length=4"):
        layer.apply(params, state, jnp.zeros((2, 5, 6)))
    with pytest.raises(ValueError, match=name + r": expected a sequence of at most max_length=4"):
        jax.jit(lambda v: layer.apply(params, state, v)[0])(jnp.zeros((2, 5, 6)))
    with pytest.raises(ValueError, match=name + r": expected positions in \[0, 4\), got positions 3..4 "
                                                r"\(offset 3, length 2\)"):
        layer.apply(params, state, jnp.zeros((2, 2, 6)), offset=3)
    with pytest.raises(ValueError, match=name + r": expected either offset or positions, got both"):
        layer.apply(params, state, jnp.zeros((2, 2, 6)), offset=1, positions=jnp.zeros((2, 2), jnp.int32))
    with pytest.raises(ValueError, match=name + r": expected positions of shape \[batch..., 2\]"):
        layer.apply(params, state, jnp.zeros((2, 2, 6)), positions=jnp.zeros((3, 2), jnp.int32))
    with pytest.raises(TypeError, match=name + r": expected a floating-point input, got int32"):
        layer.apply(params, state, jnp.zeros((2, 2, 6), jnp.int32))


def test_learned_positions_match_flax_embed(randn, random_params, compare_with_flax):
    layer = nn.LearnedPositionalEmbedding(max_length=8)
    x = randn((2, 5, 4))
    params = random_params(layer, x, seed=1)
    assert params["embedding"].shape == (8, 4)

    def flax_apply(p, v):  # x + Embed(positions 2..6)
        return v + fnn.Embed(8, 4).apply({"params": {"embedding": p["embedding"]}}, jnp.arange(2, 7))

    compare_with_flax(lambda p, v: layer.apply(p, {}, v, offset=2)[0], flax_apply, params, x)


def test_learned_positions_init_gradients_transforms(randn, random_params, finite_differences, check_transforms):
    layer = nn.LearnedPositionalEmbedding(max_length=512)
    params, state = layer.init(jax.random.key(0), jax.ShapeDtypeStruct((1, 3, 64), jnp.float32))
    assert state == {}
    np.testing.assert_allclose(np.std(params["embedding"]), 0.02, rtol=0.05)

    small = nn.LearnedPositionalEmbedding(max_length=4)
    x = randn((2, 3, 2))
    params = random_params(small, x)
    finite_differences(lambda p, v: small.apply(p, {}, v, offset=1)[0], (params, x))
    y = check_transforms(small, params, {}, x, grads=True)
    np.testing.assert_allclose(y, np.asarray(x) + np.asarray(params["embedding"])[:3], rtol=1e-6)
    with pytest.raises(ValueError, match=r"LearnedPositionalEmbedding\(max_length=4\): expected input with last axis 2 "
                                         r"\(the table's features\), got input of shape \(2, 3, 5\)"):
        small.apply(params, {}, jnp.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r"LearnedPositionalEmbedding\(max_length=4\): expected params\['embedding'\] "
                                         r"of shape \(4, 2\), got \(5, 2\)"):
        small.apply({"embedding": jnp.zeros((5, 2))}, {}, x)


def test_sinusoidal_transforms(randn, check_transforms):
    layer = nn.SinusoidalPositionalEncoding(max_length=8)
    x = randn((2, 3, 4))
    y = check_transforms(layer, {}, {}, x)
    np.testing.assert_allclose(y, np.asarray(x) + _np_sinusoids(3, 4), atol=1e-5)
    with jax.enable_x64(True):  # float64 input: the table is computed in float64 too
        y64, _ = layer.apply({}, {}, jnp.zeros((1, 3, 4), jnp.float64), offset=4)
        assert y64.dtype == jnp.float64
        np.testing.assert_allclose(y64[0], _np_sinusoids(3, 4, 4), rtol=1e-12, atol=1e-12)
