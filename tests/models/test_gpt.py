"""The decoder-only Transformer LM: GPT-2's parameter count, causality, cached decoding equal to the
full pass, scan over layers equal to the unrolled stack, generation equal to repeated full passes."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdl
from jdl import models
from jdl.nn.repeat import stack

CONFIG = models.GPTConfig(vocab_size=23, d_model=16, num_heads=2, num_layers=2, max_length=10)
IDS = jnp.asarray(np.random.default_rng(0).integers(0, 23, (2, 7)), jnp.int32)


@pytest.fixture(scope="module")
def model_and_params():
    model = models.GPT(CONFIG)
    return model, model.init(jax.random.key(0), IDS)[0]


def test_gpt2_small_has_its_published_parameter_count():
    """GPT-2 small (12 layers, d 768, 12 heads, context 1024, vocabulary 50,257, tied output): 124,439,808."""
    model = models.GPT(models.GPTConfig(50257))
    params, _ = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), jnp.int32))
    assert jdl.count_params(params) == 124_439_808
    scanned = models.GPT(models.GPTConfig(50257, scan_layers=True))
    params, _ = jax.eval_shape(scanned.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8), jnp.int32))
    assert jdl.count_params(params) == 124_439_808


def test_causal_a_later_token_never_changes_earlier_logits(model_and_params):
    model, params = model_and_params
    apply = jax.jit(lambda p, ids: model.apply(p, {}, ids)[0])
    changed = IDS.at[:, 4].set((IDS[:, 4] + 1) % 23)
    before, after = apply(params, IDS), apply(params, changed)
    np.testing.assert_array_equal(np.asarray(before[:, :4]), np.asarray(after[:, :4]))
    assert not np.allclose(before[:, 4:], after[:, 4:])


@pytest.mark.parametrize("scan_layers", [False, True])
def test_cached_decoding_equals_the_full_pass_and_scan_equals_unrolled(model_and_params, scan_layers):
    model, params = model_and_params
    full = jax.jit(lambda p, ids: model.apply(p, {}, ids)[0])(params, IDS)
    if scan_layers:
        model = models.GPT(dataclasses.replace(CONFIG, scan_layers=True))
        params = dict(params, blocks=stack([params["blocks"][f"block_{i}"] for i in range(CONFIG.num_layers)]))
        np.testing.assert_allclose(jax.jit(lambda p, ids: model.apply(p, {}, ids)[0])(params, IDS), full,
                                   rtol=1e-5, atol=1e-5)

    @jax.jit
    def decode(p):
        caches = model.init_cache(p, IDS.shape[0])
        logits, caches = model.decode_step(p, caches, IDS[:, :3], 0)  # a prompt of 3 in one step
        steps = [logits]
        for t in range(3, IDS.shape[1]):  # then one position at a time
            logits, caches = model.decode_step(p, caches, IDS[:, t:t + 1], t)
            steps.append(logits)
        return jnp.concatenate(steps, axis=1)

    np.testing.assert_allclose(decode(params), full, rtol=1e-5, atol=1e-5)


def test_generate_is_repeated_greedy_full_passes(model_and_params):
    model, params = model_and_params
    out = jax.jit(lambda p, ids: model.generate(p, ids, 3))(params, IDS[:, :4])
    ids = IDS[:, :4]
    full_pass = jax.jit(lambda p, ids: model.apply(p, {}, ids)[0])  # one compilation per length, not per op
    for _ in range(3):
        logits = full_pass(params, ids)
        ids = jnp.concatenate([ids, jnp.argmax(logits[:, -1], -1)[:, None].astype(jnp.int32)], axis=1)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(ids))
    sampled = jax.jit(lambda p, ids, key: model.generate(p, ids, 3, temperature=1.0, key=key))(
        params, IDS[:, :4], jax.random.key(1))
    assert sampled.shape == (2, 7) and np.array_equal(sampled[:, :4], IDS[:, :4])


def test_loss_is_next_token_cross_entropy(model_and_params):
    model, params = model_and_params
    logits, _ = model.apply(params, {}, IDS)
    log_probs = jax.nn.log_softmax(logits[:, :-1])
    expected = -jnp.mean(jnp.take_along_axis(log_probs, IDS[:, 1:, None], axis=-1))
    np.testing.assert_allclose(model.loss(params, IDS), expected, rtol=1e-6)


def test_refusals_name_the_model(model_and_params):
    model, params = model_and_params
    with pytest.raises(ValueError, match=r"GPT\(vocab=23.*at most max_length=10"):
        model.apply(params, {}, jnp.zeros((1, 11), jnp.int32))
    with pytest.raises(ValueError, match=r"prompt \+ new tokens <= 10"):
        model.generate(params, IDS, 4)
    with pytest.raises(ValueError, match="d_model divisible by num_heads"):
        models.GPT(models.GPTConfig(10, d_model=10, num_heads=3))
