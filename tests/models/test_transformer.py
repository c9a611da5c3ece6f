"""The Transformer encoder-decoder: against a flax.linen twin with copied weights, causality,
cached decoding against the full forward pass, padding, the base model's size, gradients
against finite differences, and bad input."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from benchmarks.transformer_cases import FlaxTransformer, flax_params_from_jdl, token_batches
from jdl import models

VOCAB, LENGTH = 20, 7


def tiny_config(**overrides):
    options = dict(d_model=16, num_heads=2, num_encoder_layers=2, num_decoder_layers=2, mlp_features=32,
                   max_length=LENGTH, dropout_rate=0.0)
    options.update(overrides)
    return models.TransformerConfig(VOCAB, VOCAB, **options)


@pytest.fixture(scope="module")
def batch():
    sources, targets = token_batches(1, 3, LENGTH, VOCAB)
    return sources[0], targets[0]


@pytest.fixture(scope="module")
def tiny(batch):
    model = models.Transformer(tiny_config(share_embeddings=True))
    params, _ = model.init(jax.random.key(0), batch)
    return model, params


def test_matches_flax_twin_outputs_and_gradients(tiny, batch):
    model, params = tiny
    source, target = batch
    module = FlaxTransformer(tiny_config(share_embeddings=True))
    decoder_inputs = model.shift_right(target)
    r = jax.random.normal(jax.random.key(3), (3, LENGTH, VOCAB))

    def jdl_fn(p):
        return jnp.sum(model.apply(p, {}, (source, decoder_inputs))[0] * r)

    def flax_fn(p):
        return jnp.sum(module.apply({"params": flax_params_from_jdl(p)}, source, decoder_inputs) * r)

    value, grads = jax.jit(jax.value_and_grad(jdl_fn))(params)
    value_ref, grads_ref = jax.jit(jax.value_and_grad(flax_fn))(params)
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_decoder_is_causal(tiny, batch):
    model, params = tiny
    source, target = batch
    decoder_inputs = model.shift_right(target)
    changed = decoder_inputs.at[:, 4:].set(5)
    apply = jax.jit(lambda p, inputs: model.apply(p, {}, (source, inputs))[0])  # one compilation, not one per op
    logits, logits_changed = apply(params, decoder_inputs), apply(params, changed)
    np.testing.assert_allclose(logits[:, :4], logits_changed[:, :4], rtol=1e-5, atol=1e-6)
    assert not np.allclose(logits[:, 4:], logits_changed[:, 4:])


@pytest.mark.parametrize("pre_ln, positional", [(False, "sinusoidal"), (True, "learned")])
def test_cached_decoding_equals_full_forward_pass(pre_ln, positional, batch):
    model = models.Transformer(tiny_config(pre_ln=pre_ln, positional=positional, tie_output=not pre_ln))
    source, target = batch
    params, _ = model.init(jax.random.key(1), batch)
    decoder_inputs = model.shift_right(target)
    full = jax.nn.log_softmax(jax.jit(model.apply)(params, {}, (source, decoder_inputs))[0])

    def run(params, source, decoder_inputs):
        state = model.init_decode_state(params, source, LENGTH)

        def step(state, inputs):
            tokens, index = inputs
            log_probs, state = model.decode_step(params, state, tokens, index)
            return state, log_probs

        _, steps = jax.lax.scan(step, state, (decoder_inputs.T, jnp.arange(LENGTH)))
        return jnp.swapaxes(steps, 0, 1)

    np.testing.assert_allclose(jax.jit(run)(params, source, decoder_inputs), full, rtol=1e-4, atol=1e-5)


def test_source_padding_changes_nothing(tiny, batch):
    model, params = tiny
    target = batch[1][:1]
    short, padded = jnp.array([[5, 6, 7]]), jnp.array([[5, 6, 7, 0, 0]])
    apply = jax.jit(model.apply)  # a compilation per shape, not one per op and shape
    logits_short = apply(params, {}, (short, target))[0]
    logits_padded = apply(params, {}, (padded, target))[0]
    np.testing.assert_allclose(logits_short, logits_padded, rtol=1e-5, atol=1e-5)


def test_base_configuration_and_param_count():
    config = models.transformer_base(37000)
    assert (config.d_model, config.num_heads, config.num_encoder_layers, config.mlp_features) == (512, 8, 6, 2048)
    model = models.Transformer(config)
    example = (jnp.zeros((1, 5), jnp.int32), jnp.zeros((1, 5), jnp.int32))
    params, _ = jax.eval_shape(model.init, jax.random.key(0), example)
    d, ff, vocab = 512, 2048, 37000
    attention, feed_forward, norm = 4 * (d * d + d), 2 * d * ff + ff + d, 2 * d
    expected = vocab * d + 6 * (attention + feed_forward + 2 * norm) + 6 * (2 * attention + feed_forward + 3 * norm)
    assert model.num_params(params) == expected == 63_082_496  # the paper's Table 3 says 65M
    separate = models.Transformer(models.TransformerConfig(100, 120, d_model=16, num_heads=2, num_encoder_layers=1,
                                                           num_decoder_layers=1, mlp_features=8, tie_output=False))
    params, _ = jax.eval_shape(separate.init, jax.random.key(0), example)
    assert {"source_embedding", "target_embedding", "output"} <= set(params)
    assert params["output"]["w"].shape == (16, 120)


def test_finite_differences(batch):
    model = models.Transformer(tiny_config(num_encoder_layers=1, num_decoder_layers=1, d_model=8, mlp_features=8,
                                           pre_ln=True))
    source, target = batch
    with jax.enable_x64(True):
        params, _ = model.init(jax.random.key(2), batch)
        # NumPy arrays: check_grads's perturbations then run in NumPy, not as XLA ops compiled per leaf shape.
        params = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
        loss = jax.jit(lambda p: model.loss(p, source, target, label_smoothing=0.1))  # one compilation, many calls
        check_grads(loss, (params,), order=1, modes=["rev"], atol=1e-5, rtol=1e-5)


def test_training_with_dropout_needs_a_key_and_is_keyed(batch):
    model = models.Transformer(tiny_config(dropout_rate=0.3))
    params, _ = model.init(jax.random.key(0), batch)
    source, target = batch
    with pytest.raises(ValueError, match="needs a PRNG key"):
        model.loss(params, source, target, train=True)
    loss = jax.jit(lambda p, key: model.loss(p, source, target, key=key, train=True))
    a, b, c = (loss(params, jax.random.key(seed)) for seed in (1, 1, 2))
    assert float(a) == float(b) and float(a) != float(c)


def test_bad_input(tiny, batch):
    model, params = tiny
    source, target = batch
    with pytest.raises(ValueError, match=r"Transformer\(.*\)\.apply: expected source_ids in \[0, 20\)"):
        model.apply(params, {}, (source.at[0, 0].set(20), target))
    with pytest.raises(ValueError, match=r"\.apply: expected decoder_inputs of at most max_length=7 tokens"):
        model.apply(params, {}, (source, jnp.ones((3, 8), jnp.int32)))
    with pytest.raises(ValueError, match=r"init_decode_state: expected max_length in \[1, 7\]"):
        model.init_decode_state(params, source, 9)
    with pytest.raises(ValueError, match=r"expected x to be a pair \(source_ids, decoder_inputs\)"):
        model.apply(params, {}, source)
    with pytest.raises(ValueError, match=r"TransformerConfig: expected d_model divisible by num_heads"):
        models.TransformerConfig(10, 10, d_model=10, num_heads=3)
    with pytest.raises(ValueError, match=r"share_embeddings needs one vocabulary"):
        models.TransformerConfig(10, 12, share_embeddings=True)


def test_scan_layers_is_the_same_function_with_stacked_params(batch):
    """``scan_layers=True``: the same init numbers stacked, and the same loss, gradients (dropout
    included: block i keeps its key) and cached decoding as the unrolled stacks."""
    from jdl.nn.repeat import stack

    config = tiny_config(num_encoder_layers=3, dropout_rate=0.2, pre_ln=True)
    unrolled, scanned = models.Transformer(config), models.Transformer(config.__class__(
        **{**config.__dict__, "scan_layers": True}))
    params, _ = unrolled.init(jax.random.key(2), batch)
    stacked, _ = scanned.init(jax.random.key(2), batch)
    for side, layers in (("encoder", 3), ("decoder", 2)):
        assert jax.tree.structure(stacked[side]["blocks"]) == jax.tree.structure(params[side]["block_0"])
        want = stack([params[side][f"block_{i}"] for i in range(layers)])
        for got, expected in zip(jax.tree.leaves(stacked[side]["blocks"]), jax.tree.leaves(want)):
            np.testing.assert_array_equal(got, expected)
        np.testing.assert_array_equal(stacked[side]["norm"]["gamma"], params[side]["norm"]["gamma"])
    source, target = batch

    def loss(model):
        return jax.jit(jax.value_and_grad(lambda p: model.loss(p, source, target, key=jax.random.key(3), train=True)))

    (value, grads), (value_scanned, grads_scanned) = loss(unrolled)(params), loss(scanned)(stacked)
    np.testing.assert_allclose(value_scanned, value, rtol=1e-6)
    for side, layers in (("encoder", 3), ("decoder", 2)):
        want = stack([grads[side][f"block_{i}"] for i in range(layers)])
        for got, expected in zip(jax.tree.leaves(grads_scanned[side]["blocks"]), jax.tree.leaves(want)):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    tokens = jnp.full(source.shape[:1], config.bos_id, jnp.int32)
    steps = [jax.jit(lambda p, m=model: m.decode_step(p, m.init_decode_state(p, source, LENGTH), tokens, 0)[0])
             for model in (unrolled, scanned)]
    np.testing.assert_allclose(steps[1](stacked), steps[0](params), rtol=1e-5, atol=1e-6)
