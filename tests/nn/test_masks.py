"""Attention masks against flax's helpers; the masked softmax against a float64 NumPy softmax."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn
from jdl.nn import masks as masks_module


def test_masks_match_flax():
    tokens_q = jnp.array([[5, 3, 0, 0], [7, 0, 0, 0]])
    tokens_k = jnp.array([[1, 2, 3, 0, 0], [4, 5, 0, 0, 0]])
    expected = fnn.make_attention_mask(tokens_q > 0, tokens_k > 0).astype(bool)
    got = nn.padding_mask(tokens_k, query_valid=tokens_q)
    assert got.dtype == jnp.bool_ and got.shape == expected.shape == (2, 1, 4, 5)
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(
        nn.padding_mask(jnp.array([3, 2]), query_valid=jnp.array([2, 1]), key_length=5, query_length=4), expected)
    keys_only = nn.padding_mask(tokens_k > 0)
    np.testing.assert_array_equal(keys_only, fnn.make_attention_mask(jnp.ones((2, 1)), tokens_k > 0).astype(bool))

    causal = nn.causal_mask(4)
    np.testing.assert_array_equal(causal, fnn.make_causal_mask(jnp.ones((1, 4))).astype(bool))
    a = nn.padding_mask(jnp.array([[1, 1, 0, 0], [1, 0, 0, 0]]), query_valid=jnp.ones((2, 4), bool))
    np.testing.assert_array_equal(nn.combine_masks(a, None, causal),
                                  fnn.combine_masks(a, None, jnp.broadcast_to(causal, a.shape)).astype(bool))
    assert nn.combine_masks(None, None) is None


def test_masked_softmax_matches_numpy_and_zeroes_empty_rows(randn):
    logits = randn((3, 2, 5), 0) * 4.0
    mask = np.random.default_rng(1).random((3, 1, 5)) > 0.4
    mask[1, 0] = False  # example 1 keeps no entry at all
    got = nn.masked_softmax(logits, jnp.asarray(mask))
    full = np.broadcast_to(mask, logits.shape)
    z = np.where(full, np.asarray(logits, np.float64), -np.inf)
    top = np.max(z, axis=-1, keepdims=True)
    e = np.exp(z - np.where(np.isfinite(top), top, 0.0))
    total = e.sum(-1, keepdims=True)
    expected = np.divide(e, total, out=np.zeros_like(e), where=total > 0)
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got[1], 0.0)
    np.testing.assert_allclose(nn.masked_softmax(logits), jax.nn.softmax(logits), rtol=1e-6)
    grads = jax.grad(lambda v: jnp.sum(nn.masked_softmax(v, jnp.asarray(mask)) * randn((3, 2, 5), 2)))(logits)
    assert np.all(np.isfinite(grads)) and np.all(np.asarray(grads)[1] == 0.0)


def test_mask_errors():
    with pytest.raises(TypeError, match=r"padding_mask: expected a boolean or integer key token mask"):
        nn.padding_mask(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"padding_mask: expected query and key masks with the same batch axes"):
        nn.padding_mask(jnp.ones((2, 3), bool), query_valid=jnp.ones((3, 3), bool))
    with pytest.raises(TypeError, match=r"combine_masks: expected boolean masks .* got float32"):
        nn.combine_masks(nn.causal_mask(3), jnp.ones((1, 1, 3, 3)))
    with pytest.raises(ValueError, match=r"combine_masks: expected masks that broadcast together, got shapes "
                                         r"\[\(1, 1, 3, 3\), \(1, 1, 4, 4\)\]"):
        nn.combine_masks(nn.causal_mask(3), nn.causal_mask(4))
    with pytest.raises(ValueError, match=r"causal_mask: expected length to be an int >= 0, got -1"):
        nn.causal_mask(-1)


def test_exports():
    for name in ("padding_mask", "causal_mask", "combine_masks", "masked_softmax"):
        assert getattr(nn, name) is getattr(masks_module, name)
