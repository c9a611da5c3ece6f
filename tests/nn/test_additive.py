"""Additive (Bahdanau) attention against a NumPy transcription of the seeds' formula, the
precomputed keys, finite differences, transforms, and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn
from jdl.nn import additive as additive_module


def _valid(lengths, length):
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]


def _np_additive(params, s, h, mask):
    """The seeds' e_j = v^T tanh(W_s s + W_h h_j), alpha = softmax(e), c = sum_j alpha_j h_j, loop by loop."""
    p = {name: np.asarray(value, np.float64) for name, value in params.items()}
    s, h = np.asarray(s, np.float64), np.asarray(h, np.float64)
    contexts, alphas = np.zeros((s.shape[0], h.shape[-1])), np.zeros(h.shape[:2])
    for b in range(s.shape[0]):
        e = np.array([p["v"] @ np.tanh(s[b] @ p["w_s"] + h[b, j] @ p["w_h"] + p.get("b", 0.0))
                      for j in range(h.shape[1])])
        valid = np.asarray(mask[b])
        if valid.any():
            alpha = np.where(valid, np.exp(e - e[valid].max()), 0.0)
            alphas[b] = alpha / alpha.sum()
        contexts[b] = alphas[b] @ h[b]
    return contexts, alphas


@pytest.mark.parametrize("use_bias", [False, True])
def test_additive_attention_matches_seed_formula(use_bias, randn, random_params):
    layer = nn.AdditiveAttention(6, context_features=4, use_bias=use_bias)
    s, h = randn((3, 5), 0), randn((3, 7, 4), 1)
    params = random_params(layer, s, seed=2)
    assert sorted(params) == (["b", "v", "w_h", "w_s"] if use_bias else ["v", "w_h", "w_s"])
    assert params["w_s"].shape == (5, 6) and params["w_h"].shape == (4, 6) and params["v"].shape == (6,)
    mask = jnp.asarray(_valid([7, 3, 0], 7))  # example 2 has no encoder position at all
    (c, alpha), _ = layer.apply(params, {}, s, context=h, mask=mask)
    expected_c, expected_alpha = _np_additive(params, s, h, mask)
    np.testing.assert_allclose(alpha, expected_alpha, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, expected_c, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(c[2], 0.0)
    # The encoder-side projection, computed once outside a decoder loop, gives the same.
    keys = nn.additive_attention_keys(params, h)
    (c_keys, alpha_keys), _ = layer.apply(params, {}, s, context=h, mask=mask, keys=keys)
    np.testing.assert_allclose(c_keys, c, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(alpha_keys, alpha, rtol=1e-6, atol=1e-7)


def test_additive_attention_finite_differences_and_transforms(randn, random_params, finite_differences,
                                                             assert_trees_close):
    layer = nn.AdditiveAttention(3, context_features=2)
    s = randn((2, 4), 0)
    params = {"attention": random_params(layer, s, seed=1), "context": randn((2, 5, 2), 2)}
    mask = jnp.asarray(_valid([5, 0], 5))

    def apply(p, v):
        return layer.apply(p["attention"], {}, v, context=p["context"], mask=mask)[0]

    finite_differences(apply, (params, s))
    grads = jax.jit(jax.grad(lambda p, v: jnp.sum(apply(p, v)[0])))(params, s)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))
    eager = apply(params, s)
    assert_trees_close(jax.jit(apply)(params, s), eager)
    one = jax.jit(jax.vmap(lambda v, c, m: layer.apply(params["attention"], {}, v, context=c, mask=m)[0]))
    assert_trees_close(one(s, params["context"], mask), eager)


def test_additive_attention_errors(randn, random_params):
    layer = nn.AdditiveAttention(3, context_features=2)
    s, h = randn((2, 4), 0), randn((2, 5, 2), 1)
    params = random_params(layer, s)
    where = r"AdditiveAttention\(attention_features=3, context_features=2\): "
    with pytest.raises(ValueError, match=where + r"expected mask of shape \(2, 5\) .* got \(2, 4\)"):
        layer.apply(params, {}, s, context=h, mask=jnp.ones((2, 4), bool))
    with pytest.raises(ValueError, match=where + r"expected context with last axis 2 \(the params' context_features\), "
                                                 r"got context of shape \(2, 5, 3\)"):
        layer.apply(params, {}, s, context=randn((2, 5, 3)))
    with pytest.raises(ValueError, match=where + r"expected a query \(decoder state\) with last axis 4"):
        layer.apply(params, {}, s[:, :3], context=h)
    with pytest.raises(ValueError, match=where + r"expected context=\[batch..., kv_len, features\]"):
        layer.apply(params, {}, s)
    with pytest.raises(ValueError, match=where + r"expected keys \(additive_attention_keys\) of shape \(2, 5, 3\)"):
        layer.apply(params, {}, s, context=h, keys=jnp.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match=where + r"expected context with the query's batch axes \(2,\)"):
        layer.apply(params, {}, s, context=h[:1])
    with pytest.raises(ValueError, match=where + r"expected params\['w_h'\] of shape \(2, 3\), got \(3, 3\)"):
        layer.apply({**params, "w_h": jnp.zeros((3, 3))}, {}, s, context=h)
    with pytest.raises(ValueError, match=r"additive_attention_keys: expected context with last axis 2"):
        nn.additive_attention_keys(params, randn((2, 5, 3)))


def test_repr_and_exports():
    assert repr(nn.AdditiveAttention(3)) == "AdditiveAttention(attention_features=3)"
    for name in ("AdditiveAttention", "additive_attention_keys"):
        assert getattr(nn, name) is getattr(additive_module, name)


def test_nan_in_masked_encoder_positions_reaches_no_output_nor_gradient(randn, random_params):
    layer = nn.AdditiveAttention(6, context_features=4)
    s, h = randn((2, 5), 0), randn((2, 7, 4), 1)
    params = random_params(layer, s, seed=2)
    mask = jnp.asarray(_valid([7, 3], 7))
    h = h.at[1, 3:].set(jnp.nan)

    def loss(p):
        (c, _), _ = layer.apply(p, {}, s, context=h, mask=mask)
        return jnp.sum(c)

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert bool(jnp.isfinite(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
