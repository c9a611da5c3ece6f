"""Scaled dot-product attention against softmax(QK^T/sqrt d)V written here in float64 NumPy (both
implementations, weights included), empty rows, finite differences, dispatch, dropout, errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn
from jdl.nn import scaled_dot_product as sdp_module


def numpy_attention(q, k, v, mask=None, bias=None):
    """softmax(Q K^T / sqrt(d) + bias) V per head, in float64; rows with no key give zeros."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    logits = np.einsum("...qhd,...khd->...hqk", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    if mask is not None:
        mask = np.broadcast_to(np.asarray(mask), logits.shape)
        logits = np.where(mask, logits, -np.inf)
    top = np.max(logits, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    unnormalised = np.exp(logits - top)
    total = unnormalised.sum(-1, keepdims=True)
    weights = np.divide(unnormalised, total, out=np.zeros_like(unnormalised), where=total > 0)
    return np.einsum("...hqk,...khd->...qhd", weights, v), weights


def _mask_with_an_empty_row():
    mask = np.ones((2, 1, 4, 5), bool)
    mask[0, 0, 1, :] = False  # query 1 of example 0 sees no key
    mask[1, 0, :, 3:] = False
    return jnp.asarray(mask)


CASES = {
    "no mask": ((2, 4, 3, 8), (2, 5, 3, 8), lambda: None, None),
    "mask, an empty row": ((2, 4, 3, 8), (2, 5, 3, 8), _mask_with_an_empty_row, None),
    "bias": ((2, 4, 3, 8), (2, 5, 3, 8), lambda: None, (2, 3, 4, 5)),
    "2 batch axes, mask over heads": (
        (2, 2, 4, 3, 8), (2, 2, 5, 3, 8), lambda: jnp.asarray(np.random.default_rng(3).random((2, 1, 3, 4, 5)) > 0.3),
        None),
    "no batch axes, causal": ((5, 2, 4), (5, 2, 4), lambda: nn.causal_mask(5)[0], None),
}


@pytest.mark.parametrize("implementation", ["plain", "jax"])
@pytest.mark.parametrize("case", list(CASES))
def test_dot_product_attention_matches_softmax_formula(case, implementation, randn):
    q_shape, kv_shape, make_mask, bias_shape = CASES[case]
    q, k, v = randn(q_shape, 0), randn(kv_shape, 1), randn(kv_shape, 2)
    mask, bias = make_mask(), (None if bias_shape is None else randn(bias_shape, 3))
    out = nn.dot_product_attention(q, k, v, mask=mask, bias=bias, implementation=implementation)
    expected, weights = numpy_attention(q, k, v, mask, bias)
    assert out.shape == q_shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    if implementation == "plain":
        got_weights = nn.dot_product_attention_weights(q, k, mask=mask, bias=bias)
        assert got_weights.dtype == jnp.float32
        np.testing.assert_allclose(got_weights, weights, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("implementation", ["plain", "jax"])
def test_fully_masked_query_gives_zeros_and_finite_gradients(implementation, randn):
    q, k, v = randn((2, 4, 3, 8), 0), randn((2, 5, 3, 8), 1), randn((2, 5, 3, 8), 2)
    mask = _mask_with_an_empty_row()
    r = randn((2, 4, 3, 8), 4)

    def loss(q, k, v):
        return jnp.sum(nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation) * r)

    out = nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
    np.testing.assert_array_equal(out[0, 1], 0.0)
    assert np.all(np.abs(np.asarray(out[0, 0])) > 0)
    grads = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(q, k, v)
    assert all(np.all(np.isfinite(g)) for g in grads)
    np.testing.assert_array_equal(grads[0][0, 1], 0.0)  # the empty row's query has no influence
    everything_masked = jnp.zeros((1, 1, 4, 5), bool)
    out = nn.dot_product_attention(q, k, v, mask=everything_masked, implementation=implementation)
    np.testing.assert_array_equal(out, 0.0)
    np.testing.assert_array_equal(nn.dot_product_attention_weights(q, k, mask=everything_masked), 0.0)


def test_dot_product_attention_finite_differences(randn, finite_differences):
    mask = _mask_with_an_empty_row()[:, :, :3]
    args = (randn((2, 3, 2, 4), 0), randn((2, 5, 2, 4), 1), randn((2, 5, 2, 4), 2), randn((2, 2, 3, 5), 3))
    finite_differences(lambda q, k, v, b: nn.dot_product_attention(q, k, v, mask=mask, bias=b), args)
    finite_differences(lambda q, k, b: nn.dot_product_attention_weights(q, k, mask=mask, bias=b),
                       (args[0], args[1], args[3]))


def test_auto_uses_jax_nn_off_cpu_and_plain_on_cpu(monkeypatch, randn):
    calls = []
    fused = jax.nn.dot_product_attention
    monkeypatch.setattr(jax.nn, "dot_product_attention", lambda *a, **kw: calls.append(kw) or fused(*a, **kw))
    q = randn((1, 3, 2, 4))
    nn.dot_product_attention(q, q, q)
    assert calls == []  # CPU: the plain path measured faster
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    nn.dot_product_attention(q, q, q, mask=nn.causal_mask(3))
    assert len(calls) == 1 and calls[0]["implementation"] is None
    nn.dot_product_attention_weights(q, q)  # weights: only the plain path has them
    nn.dot_product_attention(q, q, q, dropout_rate=0.5, dropout_key=jax.random.key(0))
    assert len(calls) == 1
    with pytest.raises(ValueError, match=r"dot_product_attention: implementation='jax' applies no dropout to the "
                                         r"attention weights"):
        nn.dot_product_attention(q, q, q, dropout_rate=0.5, dropout_key=jax.random.key(0), implementation="jax")


def test_attention_dropout_drops_weights():
    # With one-hot values the output row of query i is the dropped weights of row i.
    rng = np.random.default_rng(0)
    q, k = (jnp.asarray(rng.standard_normal((1, 32, 1, 4)).astype(np.float32)) for _ in range(2))
    v = jnp.eye(32)[None, :, None, :]
    rate = 0.25
    out = nn.dot_product_attention(q, k, v, dropout_rate=rate, dropout_key=jax.random.key(1))
    weights = nn.dot_product_attention_weights(q, k)
    dropped, weights = np.asarray(out[0, :, 0, :]), np.asarray(weights[0, 0])
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], weights[kept] / (1 - rate), rtol=1e-6)
    assert abs((~kept).mean() - rate) < 0.05
    no_key = nn.dot_product_attention(q, k, v, dropout_rate=rate)  # no key: no dropout
    np.testing.assert_allclose(no_key[0, :, 0, :], weights, rtol=1e-6, atol=1e-7)


def test_dot_product_attention_errors(randn):
    q = randn((2, 5, 2, 4))
    with pytest.raises(ValueError, match=r"dot_product_attention: expected query and key with the same \(heads, "
                                         r"head_dim\), got query \(2, 5, 2, 4\) with \(2, 4\) and key \(2, 6, 2, 3\) "
                                         r"with \(2, 3\)"):
        nn.dot_product_attention(q, randn((2, 6, 2, 3)), randn((2, 6, 2, 3)))
    with pytest.raises(ValueError, match=r"expected query and key with the same batch axes"):
        nn.dot_product_attention(q, q[:1], q[:1])
    with pytest.raises(ValueError, match=r"expected key and value with the same \[batch..., kv_len, heads\]"):
        nn.dot_product_attention(q, q, q[:, :4])
    with pytest.raises(TypeError, match=r"expected query, key and value of one dtype"):
        nn.dot_product_attention(q, q, q.astype(jnp.bfloat16))
    with pytest.raises(ValueError, match=r"expected a bias of shape .* got shape \(2, 2, 5, 6\)"):
        nn.dot_product_attention(q, q, q, bias=jnp.zeros((2, 2, 5, 6)))
    with pytest.raises(TypeError, match=r"dot_product_attention_weights: expected a boolean mask \(True = attend\), "
                                        r"got float32"):
        nn.dot_product_attention_weights(q, q, mask=jnp.ones((1, 1, 5, 5)))


def test_exports():
    for name in ("dot_product_attention", "dot_product_attention_weights"):
        assert getattr(nn, name) is getattr(sdp_module, name)


@pytest.mark.parametrize("implementation", ["plain", "jax"])
def test_a_nan_at_a_masked_out_key_reaches_no_query(implementation, randn):
    q, k, v = randn((1, 4, 2, 8), 0), randn((1, 5, 2, 8), 1), randn((1, 5, 2, 8), 2)
    k, v = k.at[0, 4].set(jnp.nan), v.at[0, 4].set(jnp.nan)
    mask = jnp.broadcast_to(jnp.arange(5) < 4, (1, 1, 4, 5))  # key 4 is padding
    out = nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
    assert bool(jnp.all(jnp.isfinite(out)))  # 0 x NaN in the weighted sum would have spread it
    grads = jax.grad(lambda q, k, v: jnp.sum(nn.dot_product_attention(q, k, v, mask=mask,
                                                                      implementation=implementation)),
                     argnums=(0, 1, 2))(q, k, v)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in grads)
