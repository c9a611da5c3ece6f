"""MultiHeadAttention against flax.linen.MultiHeadDotProductAttention (same weights), its weights
against the NumPy formula, causality, dropout, cached decoding (decode_step) against the full
causal pass, finite differences, and bad input."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn
from jdl.nn import multi_head as multi_head_module
from tests.nn.test_scaled_dot_product import numpy_attention


def _to_flax(params):
    return {proj: {("kernel" if name == "w" else "bias"): value for name, value in params[proj].items()}
            for proj in params}


def _valid(lengths, length):
    return np.arange(length)[None, :] < np.asarray(lengths)[:, None]


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
    expected, _ = numpy_attention(*(np.einsum("bti,ihd->bthd", x, params[p]["w"]) + params[p]["b"]
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


def test_attention_weights(randn, random_params):
    layer = nn.MultiHeadAttention(2, context_features=3)
    x, context = randn((2, 3, 4), 0), randn((2, 5, 3), 1)
    params = random_params(layer, x)
    mask = nn.padding_mask(jnp.array([5, 2]), key_length=5)
    weights = layer.attention_weights(params, x, context=context, mask=mask)
    project = {p: np.einsum("bti,ihd->bthd", x if p == "query" else context, params[p]["w"]) + params[p]["b"]
               for p in ("query", "key", "value")}
    expected_heads, expected = numpy_attention(project["query"], project["key"], project["value"], mask)
    assert weights.shape == (2, 2, 3, 5)
    np.testing.assert_allclose(weights, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(weights)[1, :, :, 2:], 0.0)
    y, _ = layer.apply(params, {}, x, context=context, mask=mask)
    np.testing.assert_allclose(y, np.einsum("bthd,hdo->bto", expected_heads, params["out"]["w"]) + params["out"]["b"],
                               rtol=1e-5, atol=1e-5)
    causal = layer.attention_weights(params, x, context=x[..., :3], mask=nn.causal_mask(3))
    np.testing.assert_array_equal(np.asarray(causal)[..., ~np.tril(np.ones((3, 3), bool))], 0.0)


# ------------------------------------------------------------------ the key/value cache


def _decode_with_cache(layer, params, x, max_length, mask=None):
    """Step-by-step cached decoding under jit + lax.scan; outputs [batch, time, out]."""

    @jax.jit
    def decode(params, x, mask):
        def step(cache, x_t):
            y_t, cache = layer.decode_step(params, x_t[:, None], cache, mask=mask)
            return cache, y_t[:, 0]

        cache = layer.init_cache(params, x.shape[:1], max_length)
        cache, ys = jax.lax.scan(step, cache, jnp.swapaxes(x, 0, 1))
        return jnp.swapaxes(ys, 0, 1), cache

    return decode(params, x, mask)


def test_cached_decoding_matches_the_causal_forward_pass(randn, random_params):
    layer = nn.MultiHeadAttention(2)
    x = randn((2, 6, 8), 0)
    params = random_params(layer, x, seed=1, scale=0.5)
    valid = np.ones((2, 8), bool)
    valid[1, 2] = False  # a pad inside example 1's prefix
    apply = jax.jit(layer.apply)  # one program per mask shape, not one per op
    full, _ = apply(params, {}, x, mask=nn.combine_masks(nn.causal_mask(6), nn.padding_mask(valid[:, :6])))
    ys, cache = _decode_with_cache(layer, params, x, max_length=8, mask=nn.padding_mask(jnp.asarray(valid)))
    np.testing.assert_allclose(ys, full, rtol=1e-5, atol=1e-5)
    assert int(cache.index) == 6
    keys = np.einsum("bti,ihd->bhtd", x, params["key"]["w"]) + params["key"]["b"][:, None]
    np.testing.assert_allclose(cache.key[:, :, :6], keys, rtol=1e-5, atol=1e-5)  # heads first
    np.testing.assert_array_equal(cache.key[:, :, 6:], 0.0)

    # A prompt of 3 in one call, then one position per call (eager: the index is concrete).
    cache = nn.init_kv_cache(params, (2,), max_length=6)
    first, cache = layer.decode_step(params, x[:, :3], cache)
    outputs = [first]
    for t in range(3, 6):
        y_t, cache = layer.decode_step(params, x[:, t:t + 1], cache)
        outputs.append(y_t)
    causal_only, _ = apply(params, {}, x, mask=nn.causal_mask(6))
    np.testing.assert_allclose(jnp.concatenate(outputs, axis=1), causal_only, rtol=1e-5, atol=1e-5)


def test_init_cache(random_params):
    layer = nn.MultiHeadAttention(2, dtype=jnp.bfloat16)
    params = random_params(layer, jnp.zeros((1, 1, 8)))
    cache = layer.init_cache(params, (3,), 5)
    assert isinstance(cache, nn.KVCache) and cache.key.dtype == jnp.bfloat16
    assert jax.tree.map(jnp.shape, tuple(cache)) == jax.tree.map(jnp.shape, tuple(nn.init_kv_cache(params, (3,), 5)))
    assert nn.init_kv_cache(params, (3,), 5).key.dtype == jnp.float32  # the params' dtype


def test_writing_past_the_cache(randn, random_params):
    layer = nn.MultiHeadAttention(2)
    x = randn((1, 3, 4))
    params = random_params(layer, x)
    cache = nn.init_kv_cache(params, (1,), max_length=2)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=2\): the cache holds max_length=2 "
                                         r"positions, got a write of 3 position\(s\) at index 0"):
        layer.decode_step(params, x, cache)
    _, cache = layer.decode_step(params, x[:, :2], cache)
    with pytest.raises(ValueError, match=r"the cache holds max_length=2 positions, got a write of 1 position\(s\) "
                                         r"at index 2"):
        layer.decode_step(params, x[:, 2:], cache)
    # Under jit the index is traced and cannot raise: the step's output is NaN instead.
    y, _ = jax.jit(lambda c: layer.decode_step(params, x[:, 2:], c))(cache)
    assert np.all(np.isnan(np.asarray(y)))
    y, _ = jax.jit(lambda c: layer.decode_step(params, x[:, 2:], c))(cache._replace(index=jnp.int32(1)))
    assert np.all(np.isfinite(np.asarray(y)))


def test_cache_errors(randn, random_params):
    layer = nn.MultiHeadAttention(2)
    x = randn((2, 1, 4))
    params = random_params(layer, x)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=2\): expected a cache with key shape .* for "
                                         r"an input with batch axes \(2,\), got cache.key of shape \(3, 2, 5, 2\)"):
        layer.decode_step(params, x, nn.init_kv_cache(params, (3,), 5))
    with pytest.raises(TypeError, match=r"expected a cache of dtype float32 .* got bfloat16"):
        layer.decode_step(params, x, nn.init_kv_cache(params, (2,), 5, dtype=jnp.bfloat16))
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=2\): expected a mask of shape .* that "
                                         r"broadcasts to \(2, 2, 1, 5\) .* got shape \(1, 1, 1, 4\)"):
        layer.decode_step(params, x, nn.init_kv_cache(params, (2,), 5), mask=jnp.ones((1, 1, 1, 4), bool))
    with pytest.raises(TypeError, match=r"expected cache to be a KVCache"):
        layer.decode_step(params, x, {"key": 0})
    cross = nn.MultiHeadAttention(2, context_features=6)  # decoding is self-attention
    with pytest.raises(ValueError, match=r"expected a context with last axis 6 .* got context=None"):
        cross.decode_step(random_params(cross, x), x, nn.init_kv_cache(params, (2,), 5))


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
    with pytest.raises(ValueError, match=r"expected params\['query'\]\['w'\] of shape \(8, 2, 4\), got \(8, 8\); "
                                         r"are these params from another model"):
        layer.apply({**params, "query": {"w": jnp.zeros((8, 8)), "b": params["query"]["b"]}}, {}, x, context=context)
    with pytest.raises(ValueError, match=r"expected params\['value'\]\['w'\] of shape \(6, 2, 4\), got \(6, 2, 3\)"):
        layer.apply({**params, "value": {"w": jnp.zeros((6, 2, 3)), "b": jnp.zeros((2, 4))}}, {}, x, context=context)
    with pytest.raises(ValueError, match=r"expected params\['query'\]\['w'\] of shape \(8, 2, 4\), got \(8, 8\)"):
        layer.attention_weights({**params, "query": {"w": jnp.zeros((8, 8)), "b": params["query"]["b"]}}, x,
                                context=context)
    # Under jit the same messages come at trace time.
    with pytest.raises(ValueError, match=r"expected context with last axis 6"):
        jax.jit(lambda p, v, c: layer.apply(p, {}, v, context=c))(params, x, x)


def test_repr_and_exports():
    assert repr(nn.MultiHeadAttention(2, dropout_rate=0.5)) == "MultiHeadAttention(num_heads=2, dropout_rate=0.5)"
    assert nn.MultiHeadAttention(2) == nn.MultiHeadAttention(2) and hash(nn.MultiHeadAttention(2))
    for name in ("MultiHeadAttention", "KVCache", "init_kv_cache"):
        assert getattr(nn, name) is getattr(multi_head_module, name)


def test_a_nan_at_a_padded_position_reaches_no_other_output_nor_gradient():
    layer = nn.MultiHeadAttention(2)
    x = jax.random.normal(jax.random.key(0), (2, 4, 8))
    params, state = layer.init(jax.random.key(1), x)
    valid = jnp.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
    x = x.at[1, 3].set(jnp.nan)
    # A key-only mask: the padded key no longer spreads NaN to the queries that skip it.
    y, _ = jax.jit(layer.apply)(params, state, x, mask=nn.padding_mask(valid))
    assert bool(jnp.all(jnp.isfinite(y[0]))) and bool(jnp.all(jnp.isfinite(y[1, :3])))
    # With the queries' padding too, the padded position reaches no gradient either.
    mask = nn.padding_mask(valid, query_valid=valid)

    def loss(p):
        out, _ = layer.apply(p, state, x, mask=mask)
        return jnp.sum(jnp.where(valid[..., None], out, 0.0))

    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(jax.jit(jax.grad(loss))(params)))


def test_attending_to_a_context_cache_equals_cross_attention_on_the_context(randn, random_params):
    layer = nn.MultiHeadAttention(2, context_features=6)
    x, context = randn((2, 3, 8), 0), randn((2, 5, 6), 1)
    params = random_params(layer, x, seed=2, scale=0.5)
    mask = nn.padding_mask(jnp.array([[1, 1, 1, 1, 1], [1, 1, 0, 1, 0]], bool))
    full, _ = jax.jit(layer.apply)(params, {}, x, context=context, mask=mask)
    cache = jax.jit(layer.context_cache)(params, context)
    assert cache.key.shape == (2, 2, 5, 4) and int(cache.index) == 5  # heads first, every slot written
    np.testing.assert_allclose(jax.jit(layer.attend_cache)(params, x, cache, mask=mask), full, rtol=1e-5, atol=1e-5)
    # The decoder block takes either as its context, with the same result.
    block = nn.TransformerDecoderBlock(num_heads=2, mlp_features=16)
    memory = randn((2, 5, 8), 3)
    block_params, _ = jax.jit(block.init)(jax.random.key(4), x)
    self_cache = block.self_attention.init_cache(block_params["self_attention"], (2,), 3)
    step = jax.jit(lambda c: block.decode_step(block_params, x[:, :1], self_cache, context=c, cross_mask=mask)[0])
    steps = [step(c) for c in (memory, block.context_cache(block_params, memory))]
    np.testing.assert_allclose(steps[1], steps[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match=r"MultiHeadAttention\(num_heads=2, context_features=6\): expected a cache "
                                         r"with key shape \(2, 2, 5, 4\)"):
        layer.attend_cache(params, x, nn.init_kv_cache(params, (3,), 5), mask=mask)
