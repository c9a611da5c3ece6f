"""Attention: dot-product attention against softmax(QK^T/sqrt d)V written here, masks against
flax's helpers, MultiHeadAttention against flax.linen.MultiHeadDotProductAttention (same
weights), causality, cached decoding against the full causal pass, additive (Bahdanau)
attention against a NumPy transcription of the seeds' formula, finite differences, errors."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn
from jdl.nn import attention as attention_module

# ------------------------------------------------------------------ references written here


def _np_attention(q, k, v, mask=None, bias=None):
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


def _to_flax(params):
    return {proj: {("kernel" if name == "w" else "bias"): value for name, value in params[proj].items()}
            for proj in params}


def _valid(lengths, length):
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]


# ------------------------------------------------------------------ dot_product_attention


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
    expected, weights = _np_attention(q, k, v, mask, bias)
    assert out.shape == q_shape and out.dtype == jnp.float32
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    if implementation == "plain":
        out, got_weights = nn.dot_product_attention(q, k, v, mask=mask, bias=bias, return_weights=True)
        np.testing.assert_allclose(got_weights, weights, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


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


def test_dot_product_attention_finite_differences(randn, finite_differences):
    mask = _mask_with_an_empty_row()[:, :, :3]
    args = (randn((2, 3, 2, 4), 0), randn((2, 5, 2, 4), 1), randn((2, 5, 2, 4), 2), randn((2, 2, 3, 5), 3))
    finite_differences(lambda q, k, v, b: nn.dot_product_attention(q, k, v, mask=mask, bias=b), args)


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
    nn.dot_product_attention(q, q, q, return_weights=True)  # weights: only the plain path has them
    nn.dot_product_attention(q, q, q, dropout_rate=0.5, dropout_key=jax.random.key(0))
    assert len(calls) == 1
    with pytest.raises(ValueError, match=r"dot_product_attention: implementation='jax' computes neither "
                                         r"attention weights nor dropout"):
        nn.dot_product_attention(q, q, q, return_weights=True, implementation="jax")


def test_attention_dropout_drops_weights():
    # With one-hot values the output row of query i is the dropped weights of row i.
    rng = np.random.default_rng(0)
    q, k = (jnp.asarray(rng.standard_normal((1, 32, 1, 4)).astype(np.float32)) for _ in range(2))
    v = jnp.eye(32)[None, :, None, :]
    rate = 0.25
    out, weights = nn.dot_product_attention(q, k, v, dropout_rate=rate, dropout_key=jax.random.key(1),
                                            return_weights=True)
    dropped, weights = np.asarray(out[0, :, 0, :]), np.asarray(weights[0, 0])
    kept = dropped != 0
    np.testing.assert_allclose(dropped[kept], weights[kept] / (1 - rate), rtol=1e-6)
    assert abs((~kept).mean() - rate) < 0.05
    no_key = nn.dot_product_attention(q, k, v, dropout_rate=rate)  # no key: no dropout
    np.testing.assert_allclose(no_key[0, :, 0, :], weights, rtol=1e-6, atol=1e-7)


# ------------------------------------------------------------------ masks


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


# ------------------------------------------------------------------ MultiHeadAttention against flax


def _flax_apply(module, mask, cross, valid_rows=None):
    def apply(params, x):
        if cross:
            y = module.apply({"params": _to_flax(params["attention"])}, x, params["context"], mask=mask)
        else:
            y = module.apply({"params": _to_flax(params)}, x, mask=mask)
        return y if valid_rows is None else y * valid_rows
    return apply


def _jdl_apply(layer, mask, cross, valid_rows=None):
    def apply(params, x):
        if cross:
            y, _ = layer.apply(params["attention"], {}, x, context=params["context"], mask=mask)
        else:
            y, _ = layer.apply(params, {}, x, mask=mask)
        return y if valid_rows is None else y * valid_rows
    return apply


MHA_CASES = {
    # name: (jdl/flax constructor kwargs, x shape, context shape or None, mask maker)
    "self": (dict(num_heads=2), (2, 5, 8), None, lambda: None),
    "self, causal + padding, no bias": (
        dict(num_heads=3, qkv_features=12, out_features=6, use_bias=False), (2, 5, 8), None,
        lambda: nn.combine_masks(nn.causal_mask(5), nn.padding_mask(jnp.array([5, 3]), key_length=5))),
    "self, 2 batch axes, a mask per head": (
        dict(num_heads=2), (2, 2, 3, 4), None,
        lambda: jnp.asarray(np.random.default_rng(5).random((2, 2, 2, 3, 3)) > 0.4) | jnp.eye(3, dtype=bool)),
    "cross, key padding": (dict(num_heads=2, qkv_features=4), (2, 5, 8), (2, 4, 6),
                           lambda: nn.padding_mask(jnp.array([4, 2]), key_length=4)),
}


@pytest.mark.parametrize("case", list(MHA_CASES))
def test_multi_head_attention_matches_flax(case, randn, random_params, compare_with_flax):
    kwargs, x_shape, context_shape, make_mask = MHA_CASES[case]
    cross = context_shape is not None
    layer = nn.MultiHeadAttention(**kwargs, context_features=context_shape[-1] if cross else None)
    module = fnn.MultiHeadDotProductAttention(**kwargs)
    x, mask = randn(x_shape, 0), make_mask()
    params = random_params(layer, x, seed=1, scale=0.5)
    if cross:
        params = {"attention": params, "context": randn(context_shape, 2)}
    y = compare_with_flax(_jdl_apply(layer, mask, cross), _flax_apply(module, mask, cross), params, x)
    assert y.shape == x_shape[:-1] + (kwargs.get("out_features", x_shape[-1]),)


def test_multi_head_attention_with_empty_rows_matches_flax_on_the_other_rows(randn, random_params, compare_with_flax):
    # Padded queries see no key: flax spreads them evenly over the keys, jdl gives zeros.
    layer, module = nn.MultiHeadAttention(2, context_features=6), fnn.MultiHeadDotProductAttention(2)
    x, context = randn((2, 5, 8), 0), randn((2, 4, 6), 1)
    mask = nn.padding_mask(jnp.array([4, 2]), query_valid=jnp.array([5, 3]), key_length=4, query_length=5)
    rows = jnp.asarray(_valid([5, 3], 5)[..., None], jnp.float32)
    params = {"attention": random_params(layer, x, seed=2, scale=0.5), "context": context}
    compare_with_flax(_jdl_apply(layer, mask, True, rows), _flax_apply(module, mask, True, rows), params, x)
    y, _ = layer.apply(params["attention"], {}, x, context=context, mask=mask)
    np.testing.assert_array_equal(y[1, 3:], np.broadcast_to(params["attention"]["out"]["b"], (2, 8)))


def test_multi_head_attention_init():
    x = jax.ShapeDtypeStruct((2, 3, 256), jnp.float32)
    layer = nn.MultiHeadAttention(4, out_features=32, context_features=64)
    params, state = layer.init(jax.random.key(0), x)
    assert state == {}
    shapes = jax.tree.map(lambda p: p.shape, params)
    assert shapes == {"query": {"w": (256, 4, 64), "b": (4, 64)}, "key": {"w": (64, 4, 64), "b": (4, 64)},
                      "value": {"w": (64, 4, 64), "b": (4, 64)}, "out": {"w": (4, 64, 32), "b": (32,)}}
    flax_params = jax.eval_shape(fnn.MultiHeadDotProductAttention(4, out_features=32).init, jax.random.key(0),
                                 jnp.zeros((2, 3, 256)), jnp.zeros((2, 5, 64)))["params"]
    assert jax.tree.map(lambda p: p.shape, _to_flax(params)) == jax.tree.map(lambda p: p.shape, flax_params)
    # LeCun normal over the flat (in, heads * head_dim) kernel, as flax's DenseGeneral: std 1/sqrt(in).
    np.testing.assert_allclose(np.std(params["query"]["w"]), 1 / 16, rtol=0.05)
    np.testing.assert_allclose(np.std(params["key"]["w"]), 1 / 8, rtol=0.05)
    np.testing.assert_allclose(np.std(params["out"]["w"]), 1 / 16, rtol=0.05)
    assert not np.allclose(params["key"]["w"], params["value"]["w"])
    np.testing.assert_array_equal(params["out"]["b"], 0.0)


def test_multi_head_attention_finite_differences(randn, random_params, finite_differences):
    layer = nn.MultiHeadAttention(2, context_features=3)
    x, context = randn((2, 3, 4), 0), randn((2, 2, 3), 1)
    mask = nn.padding_mask(jnp.array([2, 1]), key_length=2)
    params = {"attention": random_params(layer, x, seed=2, scale=0.5), "context": context}
    finite_differences(_jdl_apply(layer, mask, True), (params, x))


def test_multi_head_attention_transforms(randn, random_params, check_transforms):
    layer = nn.MultiHeadAttention(2)
    x = randn((3, 4, 6))
    params = random_params(layer, x, scale=0.5)
    y = check_transforms(layer, params, {}, x, grads=True)
    expected, _ = _np_attention(*(np.einsum("bti,ihd->bthd", x, params[p]["w"]) + params[p]["b"]
                                  for p in ("query", "key", "value")))
    np.testing.assert_allclose(y, np.einsum("bthd,hdo->bto", expected, params["out"]["w"]) + params["out"]["b"],
                               rtol=1e-5, atol=1e-5)


def test_causality(randn, random_params):
    # The output at t does not move when the inputs after t change.
    layer = nn.MultiHeadAttention(2)
    x = randn((2, 6, 4), 0)
    params = random_params(layer, x, seed=1)
    apply = jax.jit(lambda v: layer.apply(params, {}, v, mask=nn.causal_mask(6))[0])
    y = apply(x)
    for t in range(6):
        changed = x.at[:, t + 1:].set(randn((2, 5 - t, 4), 10 + t) * 3.0)
        y_changed = apply(changed)
        np.testing.assert_allclose(y_changed[:, :t + 1], y[:, :t + 1], rtol=1e-6, atol=1e-6)
        if t < 5:
            assert np.max(np.abs(np.asarray(y_changed[:, t + 1:] - y[:, t + 1:]))) > 1e-3


def test_dropout_on_attention_weights(randn, random_params):
    layer = nn.MultiHeadAttention(2, dropout_rate=0.5)
    x = randn((1, 4, 4))
    params = random_params(layer, x, scale=0.5)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=2, dropout_rate=0.5\): train=True needs a "
                                         r"PRNG key"):
        layer.apply(params, {}, x, train=True)
    evaluation, _ = layer.apply(params, {}, x)
    no_dropout, _ = nn.MultiHeadAttention(2).apply(params, {}, x)
    np.testing.assert_array_equal(evaluation, no_dropout)
    run = jax.jit(jax.vmap(lambda key: layer.apply(params, {}, x, key=key, train=True)[0]))
    samples = run(jax.random.split(jax.random.key(0), 4000))
    assert np.max(np.abs(np.asarray(samples[0] - evaluation))) > 1e-2
    np.testing.assert_array_equal(samples[0], run(jax.random.split(jax.random.key(0), 4000))[0])
    # The output is linear in the dropped weights, whose expectation is the weights.
    np.testing.assert_allclose(samples.mean(0), evaluation, atol=0.05)


def test_return_weights(randn, random_params):
    layer = nn.MultiHeadAttention(2)
    x = randn((2, 3, 4))
    params = random_params(layer, x)
    mask = nn.causal_mask(3)
    (y, weights), _ = layer.apply(params, {}, x, mask=mask, return_weights=True)
    np.testing.assert_array_equal(y, layer.apply(params, {}, x, mask=mask)[0])
    assert weights.shape == (2, 2, 3, 3)
    np.testing.assert_allclose(weights.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(np.asarray(weights)[..., ~np.tril(np.ones((3, 3), bool))], 0.0)


# ------------------------------------------------------------------ the key/value cache


def _decode_with_cache(layer, params, x, max_length, mask=None):
    """Step-by-step cached decoding under jit + lax.scan; outputs [batch, time, out]."""

    @jax.jit
    def decode(params, x, mask):
        def step(cache, x_t):
            (y_t, cache), _ = layer.apply(params, {}, x_t[:, None], cache=cache, mask=mask)
            return cache, y_t[:, 0]

        cache = nn.init_kv_cache(params, x.shape[:1], max_length)
        cache, ys = jax.lax.scan(step, cache, jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(ys, 0, 1), cache

    return decode(params, x, mask)


def test_cached_decoding_matches_the_causal_forward_pass(randn, random_params):
    layer = nn.MultiHeadAttention(2)
    x = randn((2, 6, 8), 0)
    params = random_params(layer, x, seed=1, scale=0.5)
    valid = np.ones((2, 8), bool)
    valid[1, 2] = False  # a pad inside example 1's prefix
    full, _ = layer.apply(params, {}, x, mask=nn.combine_masks(nn.causal_mask(6), nn.padding_mask(valid[:, :6])))
    ys, cache = _decode_with_cache(layer, params, x, max_length=8, mask=nn.padding_mask(jnp.asarray(valid)))
    np.testing.assert_allclose(ys, full, rtol=1e-5, atol=1e-5)
    assert int(cache.index) == 6
    keys = np.einsum("bti,ihd->bthd", x, params["key"]["w"]) + params["key"]["b"]
    np.testing.assert_allclose(cache.key[:, :6], keys, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(cache.key[:, 6:], 0.0)

    # A prompt of 3 in one call, then one position per call (eager: the index is concrete).
    cache = nn.init_kv_cache(params, (2,), max_length=6)
    (first, cache), _ = layer.apply(params, {}, x[:, :3], cache=cache)
    outputs = [first]
    for t in range(3, 6):
        (y_t, cache), _ = layer.apply(params, {}, x[:, t:t + 1], cache=cache)
        outputs.append(y_t)
    causal_only, _ = layer.apply(params, {}, x, mask=nn.causal_mask(6))
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), causal_only, rtol=1e-5, atol=1e-5)


def test_writing_past_the_cache(randn, random_params):
    layer = nn.MultiHeadAttention(2)
    x = randn((1, 3, 4))
    params = random_params(layer, x)
    cache = nn.init_kv_cache(params, (1,), max_length=2)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=2\): the cache holds max_length=2 "
                                         r"positions, got a write of 3 position\(s\) at index 0"):
        layer.apply(params, {}, x, cache=cache)
    (_, cache), _ = layer.apply(params, {}, x[:, :2], cache=cache)
    with pytest.raises(ValueError, match=r"the cache holds max_length=2 positions, got a write of 1 position\(s\) "
                                         r"at index 2"):
        layer.apply(params, {}, x[:, 2:], cache=cache)
    # Under jit the index is traced and cannot raise: the step's output is NaN instead.
    (y, _), _ = jax.jit(lambda c: layer.apply(params, {}, x[:, 2:], cache=c))(cache)
    assert np.all(np.isnan(np.asarray(y)))
    (y, _), _ = jax.jit(lambda c: layer.apply(params, {}, x[:, 2:], cache=c))(cache._replace(index=jnp.int32(1)))
    assert np.all(np.isfinite(np.asarray(y)))


def test_cache_errors(randn, random_params):
    layer = nn.MultiHeadAttention(2)
    x = randn((2, 1, 4))
    params = random_params(layer, x)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=2\): expected a cache with key shape .* for "
                                         r"an input with batch axes \(2,\), got cache.key of shape \(3, 5, 2, 2\)"):
        layer.apply(params, {}, x, cache=nn.init_kv_cache(params, (3,), 5))
    with pytest.raises(TypeError, match=r"expected a cache of dtype float32 .* got bfloat16"):
        layer.apply(params, {}, x, cache=nn.init_kv_cache(params, (2,), 5, dtype=jnp.bfloat16))
    with pytest.raises(ValueError, match=r"the cache is for self-attention decoding, got a context too"):
        layer.apply(params, {}, x, context=x, cache=nn.init_kv_cache(params, (2,), 5))
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=2\): expected a mask of shape .* that "
                                         r"broadcasts to \(2, 2, 1, 5\) .* got shape \(1, 1, 1, 4\)"):
        layer.apply(params, {}, x, cache=nn.init_kv_cache(params, (2,), 5), mask=jnp.ones((1, 1, 1, 4), bool))
    with pytest.raises(TypeError, match=r"expected cache to be a KVCache"):
        layer.apply(params, {}, x, cache={"key": 0})


# ------------------------------------------------------------------ errors


def test_multi_head_attention_errors(randn, random_params):
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=3, qkv_features=8\): expected qkv_features "
                                         r"divisible by num_heads=3, got 8"):
        nn.MultiHeadAttention(3, qkv_features=8)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=3\): expected features divisible by "
                                         r"num_heads=3 .* got 8 from input of shape \(2, 5, 8\)"):
        nn.MultiHeadAttention(3).init(jax.random.key(0), jnp.zeros((2, 5, 8)))

    layer = nn.MultiHeadAttention(2, context_features=6)
    x, context = randn((2, 5, 8), 0), randn((2, 4, 6), 1)
    params = random_params(layer, x)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=2, context_features=6\): expected a mask of "
                                         r"shape \[batch..., heads or 1, q_len or 1, kv_len or 1\] that broadcasts to "
                                         r"\(2, 2, 5, 4\) .* got shape \(2, 1, 5, 5\)"):
        layer.apply(params, {}, x, context=context, mask=jnp.ones((2, 1, 5, 5), bool))
    with pytest.raises(ValueError, match=r"expected a mask .* got shape \(2, 4\); build it with padding_mask"):
        layer.apply(params, {}, x, context=context, mask=jnp.ones((2, 4), bool))
    with pytest.raises(TypeError, match=r"expected a boolean mask \(True = attend\), got float32"):
        layer.apply(params, {}, x, context=context, mask=jnp.ones((2, 1, 5, 4)))
    with pytest.raises(ValueError, match=r"expected context with last axis 6 \(the key and value params' "
                                         r"in_features\), got context of shape \(2, 4, 8\)"):
        layer.apply(params, {}, x, context=x[:, :4])
    with pytest.raises(ValueError, match=r"expected a context with last axis 6 .* got context=None"):
        layer.apply(params, {}, x)
    with pytest.raises(ValueError, match=r"expected context with the input's batch axes \(2,\)"):
        layer.apply(params, {}, x, context=context[:1])
    with pytest.raises(ValueError, match=r"expected input with last axis 8 \(the params' in_features\), got input "
                                         r"of shape \(2, 5, 7\)"):
        layer.apply(params, {}, x[..., :7], context=context)
    with pytest.raises(ValueError, match=r"expected params\['query'\]\['w'\] of shape \(in_features, 2, head_dim\), "
                                         r"got \(8, 8\); are these params from another model"):
        layer.apply({**params, "query": {"w": jnp.zeros((8, 8)), "b": jnp.zeros(8)}}, {}, x, context=context)
    with pytest.raises(ValueError, match=r"expected params\['value'\]\['w'\] of shape \(6, 2, 4\), got \(6, 2, 3\)"):
        layer.apply({**params, "value": {"w": jnp.zeros((6, 2, 3)), "b": jnp.zeros((2, 4))}}, {}, x, context=context)
    # Under jit the same messages come at trace time.
    with pytest.raises(ValueError, match=r"expected context with last axis 6"):
        jax.jit(lambda p, v, c: layer.apply(p, {}, v, context=c))(params, x, x)


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


# ------------------------------------------------------------------ additive (Bahdanau) attention


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
    with pytest.raises(ValueError, match=where + r"expected a boolean mask of shape \(2, 5\) .* got bool of shape "
                                                 r"\(2, 4\)"):
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


def test_exports():
    for name in ("dot_product_attention", "padding_mask", "causal_mask", "combine_masks", "MultiHeadAttention",
                 "KVCache", "init_kv_cache", "AdditiveAttention", "additive_attention_keys"):
        assert getattr(nn, name) is getattr(attention_module, name)
