"""Sequence models: shapes and padding, the language model's losses against hand-written loops
over the cells, free running and scheduled sampling, generation under jit against a Python
loop, temperature, training on small synthetic tasks, and the bad-input errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import decoding, losses, metrics, models, nn, optim
from jdl.models.sequence import _generate

VOCAB, H = 7, 8


def _ids(shape, seed, vocab=VOCAB):
    # Cast in NumPy and device_put: jnp.asarray(int64, int32) compiles a convert per shape.
    return jax.device_put(np.random.default_rng(seed).integers(0, vocab, shape).astype(np.int32))


def _pad(ids, lengths, value):
    """Overwrite every step past each length with ``value``: loud padding."""
    valid = jnp.arange(ids.shape[1])[None, :] < jnp.asarray(lengths)[:, None]
    if ids.ndim == 3:
        valid = valid[..., None]
    return jnp.where(valid, ids, value)


def _train(loss_fn, params, batches, learning_rate=0.02):
    """Adam steps over ``batches`` (stacked on axis 0) inside one jitted scan; returns the params."""
    optimizer = optim.chain(optim.clip_by_global_norm(1.0), optim.adam(learning_rate))

    def step(carry, batch):
        p, s = carry
        grads = jax.grad(loss_fn)(p, *batch)
        updates, s = optimizer.update(grads, s, p)
        return (optim.apply_updates(p, updates), s), None

    return jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), batches)[0][0])(params)


# ----------------------------------------------------------------------------- classifier


@pytest.mark.parametrize("readout, bidirectional, cells", [
    ("final", True, [nn.LSTMCell(H), nn.GRUCell(H)]),
    ("mean", False, [nn.LSTMCell(H)]),
], ids=["final-bidirectional-stacked", "mean"])
def test_classifier_padding_does_not_change_a_sequence(readout, bidirectional, cells):
    model = models.SequenceClassifier(3, cells, vocab_size=VOCAB, readout=readout, bidirectional=bidirectional)
    lengths = np.array([6, 2, 4], np.int32)
    ids = _pad(_ids((3, 6), seed=1), lengths, VOCAB - 1)
    params, state = model.init(jax.random.key(0), ids)
    apply = jax.jit(lambda p, x, n: model.apply(p, state, x, lengths=n)[0])
    logits = apply(params, ids, jnp.asarray(lengths))
    assert logits.shape == (3, 3)
    np.testing.assert_allclose(apply(params, _pad(ids, lengths, 0), jnp.asarray(lengths)), logits, rtol=1e-5, atol=1e-6)
    apply_alone = jax.jit(lambda p, x: model.apply(p, state, x)[0])  # no lengths: nothing to mask
    for b in (1, 2):  # the padded ones
        alone = apply_alone(params, ids[b:b + 1, :lengths[b]])
        np.testing.assert_allclose(logits[b], alone[0], rtol=1e-5, atol=1e-6)


def test_classifier_readouts_match_the_layers_by_hand():
    model = models.SequenceClassifier(4, nn.LSTMCell(H), readout="final")
    mean_model = models.SequenceClassifier(4, nn.LSTMCell(H), readout="mean")
    x = jax.random.normal(jax.random.key(1), (3, 5, 2))
    lengths = jnp.array([5, 3, 1])
    params, state = model.init(jax.random.key(2), x)
    assert set(params) == {"rnn", "head"} and set(params["rnn"]) == {"layer_0"}
    # One compilation for the layer and both classifiers (eager would compile op by op).
    run = jax.jit(lambda p: (nn.LSTM(H).apply(p["rnn"]["layer_0"], {}, x, lengths=lengths)[0],
                             model.apply(p, state, x, lengths=lengths)[0],
                             mean_model.apply(p, state, x, lengths=lengths)[0]))
    (outputs, (c, h)), final_logits, mean_logits = run(params)
    # The readouts by hand, in a jitted program of their own (eagerly, every slice and mean compiles).
    by_hand = jax.jit(lambda head, outputs, h: (
        h @ head["w"] + head["b"],
        jnp.stack([outputs[i, :n].mean(axis=0) for i, n in enumerate([5, 3, 1])]) @ head["w"] + head["b"]))
    want_final, want_mean = by_hand(params["head"], outputs, h)
    np.testing.assert_allclose(final_logits, want_final, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(mean_logits, want_mean, rtol=1e-5, atol=1e-6)
    # Both directions: [h_forward after the last real step, h_backward after step 0].
    both = models.SequenceClassifier(4, nn.GRUCell(H), bidirectional=True)
    params, state = both.init(jax.random.key(3), x)
    run = jax.jit(lambda p: (nn.Bidirectional(nn.GRUCell(H)).apply(p["rnn"]["layer_0"], {}, x, lengths=lengths)[0],
                             both.apply(p, state, x, lengths=lengths)[0]))
    (_, (h_forward, h_backward)), both_logits = run(params)
    want = jnp.concatenate([h_forward, h_backward], axis=-1) @ params["head"]["w"] + params["head"]["b"]
    np.testing.assert_allclose(both_logits, want, rtol=1e-5, atol=1e-6)


def test_classifier_learns_the_first_token_of_variable_length_sequences():
    """The label is the first token, the sequences 3 to 10 long: the final carry has to remember it."""
    model = models.SequenceClassifier(3, nn.GRUCell(16), vocab_size=5, embed_features=8)
    rng = np.random.default_rng(0)
    steps, batch, time = 150, 32, 10
    ids = rng.integers(0, 5, (steps, batch, time)).astype(np.int32)
    ids[..., 0] = rng.integers(0, 3, (steps, batch))
    lengths = rng.integers(3, time + 1, (steps, batch)).astype(np.int32)
    labels = ids[..., 0].copy()
    params, state = model.init(jax.random.key(0), jnp.asarray(ids[0]))

    def loss(p, x, y, n):
        logits, _ = model.apply(p, state, x, lengths=n)
        return jnp.mean(losses.masked_cross_entropy(logits, y))

    params = _train(loss, params, (jnp.asarray(ids), jnp.asarray(labels), jnp.asarray(lengths)))
    test_ids = _pad(jnp.asarray(ids[-1]), lengths[-1], 4)
    # One compilation for the model and the metric.
    accuracy = jax.jit(lambda p, x, y, n: metrics.masked_accuracy(model.apply(p, state, x, lengths=n)[0], y))(
        params, test_ids, jnp.asarray(labels[-1]), jnp.asarray(lengths[-1]))
    assert float(accuracy) > 0.9


# --------------------------------------------------------------------------------- tagger


def test_tagger_padding_and_masked_loss():
    tagger = models.SequenceTagger(4, nn.GRUCell(H), bidirectional=True)
    lengths = np.array([5, 3], np.int32)
    x = _pad(jax.random.normal(jax.random.key(3), (2, 5, 3)), lengths, 1e3)
    params, state = tagger.init(jax.random.key(4), x)
    # One compilation for the padded batch and the unpadded sequence alone.
    logits, alone = jax.jit(lambda p: (tagger.apply(p, state, x, lengths=jnp.asarray(lengths))[0],
                                       tagger.apply(p, state, x[1:, :3])[0]))(params)
    assert logits.shape == (2, 5, 4)
    np.testing.assert_allclose(logits[1, :3], alone[0], rtol=1e-5, atol=1e-6)

    labels = jnp.array([[0, 1, 2, 3, 0], [1, 2, 3, -1, 99]])  # junk labels at the padded steps
    mask = losses.sequence_mask(jnp.asarray(lengths), 5)
    loss, grad = jax.value_and_grad(losses.masked_cross_entropy)(logits, labels, mask)  # eager: labels checked
    log_probs = np.asarray(jax.nn.log_softmax(logits))
    expected = -np.mean([log_probs[b, t, labels[b, t]] for b in range(2) for t in range(lengths[b])])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert np.all(np.asarray(grad)[1, 3:] == 0.0) and np.all(np.isfinite(np.asarray(grad)))
    with pytest.raises(ValueError, match=r"labels in \[0, 4\)"):  # no mask: the junk label 99 is loud
        losses.masked_cross_entropy(logits, labels)
    assert np.isnan(float(jax.jit(losses.masked_cross_entropy)(logits, labels)))  # under jit, NaN
    accuracy = jax.jit(lambda z, m: metrics.masked_accuracy(z, jnp.argmax(z, -1), m))(logits, mask)
    np.testing.assert_allclose(accuracy, 1.0)


def test_tagger_learns_to_tag_each_token_with_the_next_one():
    """Tag t is token t + 1 (the last real step: tag 0): only the backward direction can know it."""
    tagger = models.SequenceTagger(5, nn.LSTMCell(16), vocab_size=5, bidirectional=True)
    rng = np.random.default_rng(1)
    steps, batch, time = 120, 32, 8
    ids = rng.integers(0, 5, (steps, batch, time)).astype(np.int32)
    lengths = rng.integers(2, time + 1, (steps, batch)).astype(np.int32)
    tags = np.concatenate([ids[..., 1:], np.zeros((steps, batch, 1), np.int32)], axis=-1)
    tags = np.where(np.arange(time) == lengths[..., None] - 1, 0, tags)
    params, state = tagger.init(jax.random.key(0), jnp.asarray(ids[0]))

    def loss(p, x, y, n):
        logits, _ = tagger.apply(p, state, x, lengths=n)
        return losses.masked_cross_entropy(logits, y, losses.sequence_mask(n, time))

    params = _train(loss, params, (jnp.asarray(ids), jnp.asarray(tags), jnp.asarray(lengths)), learning_rate=0.03)
    # One compilation for the model, the mask and the metric.
    accuracy = jax.jit(lambda p, x, y, n: metrics.masked_accuracy(
        tagger.apply(p, state, x, lengths=n)[0], y, losses.sequence_mask(n, time)))(
        params, jnp.asarray(ids[-1]), jnp.asarray(tags[-1]), jnp.asarray(lengths[-1]))
    assert float(accuracy) > 0.9


# ------------------------------------------------------------------------- language model


@functools.lru_cache(maxsize=None)
def _jitted_cell(cell):
    """The cell's public step ``cell(params, carry, x_t)``, jitted: one compilation per cell, not per op."""
    return jax.jit(lambda params, carry, x: cell(params, carry, x))


def _loop_loss(lm, params, ids, lengths=None):
    """Teacher forcing written out: embed, each layer's cell step by step, the head, log-softmax."""
    table, w, b = (np.asarray(a) for a in (params["embedding"]["embedding"], params["head"]["w"], params["head"]["b"]))
    ids = np.asarray(ids)
    batch, time = ids.shape
    lengths = np.full(batch, time) if lengths is None else np.asarray(lengths)
    carry = [cell.initial_carry((batch,)) for cell in lm.cells]
    total, count = 0.0, 0
    for t in range(time - 1):
        x = table[ids[:, t]]
        for i, cell in enumerate(lm.cells):
            carry[i], x = _jitted_cell(cell)(params["rnn"][f"layer_{i}"], carry[i], x)
        z = np.asarray(x) @ w + b
        log_probs = z - z.max(axis=-1, keepdims=True)
        log_probs = log_probs - np.log(np.exp(log_probs).sum(axis=-1, keepdims=True))
        for row in range(batch):
            if t + 1 < lengths[row]:
                total -= log_probs[row, int(ids[row, t + 1])]
                count += 1
    return total / count


@pytest.mark.parametrize("cells", [[nn.LSTMCell(H), nn.LSTMCell(H)], [nn.GRUCell(H)]], ids=["lstm2", "gru"])
def test_teacher_forcing_loss_matches_a_loop_over_the_cells(cells):
    lm = models.CharLM(VOCAB, cells, embed_features=5, dropout_rate=0.3)
    ids = _ids((3, 6), seed=5)
    params, _ = lm.init(jax.random.key(6), ids)
    lengths = jnp.array([6, 2, 4])
    padded = _pad(ids, lengths, 0)
    # One compilation: no lengths, lengths, and training mode (dropout on, keyed).
    loss, got, train_loss = jax.jit(lambda p, x, n, key: (
        lm.teacher_forcing_loss(p, ids), lm.teacher_forcing_loss(p, x, lengths=n),
        lm.teacher_forcing_loss(p, ids, key=key, train=True)))(params, padded, lengths, jax.random.key(0))
    np.testing.assert_allclose(loss, _loop_loss(lm, params, ids), rtol=1e-5)
    np.testing.assert_allclose(got, _loop_loss(lm, params, padded, lengths), rtol=1e-5)
    # Dropout is on only in training, and then needs a key.
    assert abs(float(train_loss) - float(loss)) > 1e-4


def test_free_running_equals_teacher_forcing_at_probability_one_and_replays_its_inputs():
    lm = models.CharLM(VOCAB, [nn.LSTMCell(H), nn.GRUCell(H)])
    ids = _ids((32, 10), seed=7)
    params, _ = lm.init(jax.random.key(8), ids)
    loss_and_grad = jax.jit(jax.value_and_grad(
        lambda p, key, prob: lm.free_running_loss(p, ids, key, teacher_forcing_prob=prob, temperature=0.0)))
    forced, forced_grad = jax.jit(jax.value_and_grad(lm.teacher_forcing_loss))(params, ids)
    value, grad = loss_and_grad(params, jax.random.key(0), 1.0)
    np.testing.assert_allclose(value, forced, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grad), jax.tree.leaves(forced_grad)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    # The same compiled function with p = 0.5 (traced): a different, finite loss and gradient.
    mixed, mixed_grad = loss_and_grad(params, jax.random.key(0), 0.5)
    assert abs(float(mixed) - float(forced)) > 1e-4
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(mixed_grad))

    # Whatever was fed, apply (teacher forcing) on the fed inputs gives the same logits.
    @jax.jit
    def run_and_replay(p, key):
        logits, inputs = lm.free_running(p, ids, key, teacher_forcing_prob=0.5, temperature=0.0)
        (replayed, _), _ = lm.apply(p, {}, inputs)
        return logits, inputs, replayed

    logits, inputs, replayed = run_and_replay(params, jax.random.key(1))
    np.testing.assert_allclose(logits, replayed, rtol=1e-5, atol=1e-5)
    # Step 0 reads the true token; later steps the true one or the previous argmax, each about half the time.
    truth, own = np.asarray(ids[:, 1:-1]), np.asarray(jnp.argmax(logits[:, :-1], -1))
    fed = np.asarray(inputs)
    np.testing.assert_array_equal(fed[:, 0], np.asarray(ids[:, 0]))
    assert np.all((fed[:, 1:] == truth) | (fed[:, 1:] == own))
    differ = truth != own
    assert 0.4 < np.mean(fed[:, 1:][differ] == truth[differ]) < 0.6


def test_free_running_at_probability_zero_feeds_the_models_own_greedy_predictions():
    lm = models.CharLM(VOCAB, nn.GRUCell(H))
    ids = _ids((2, 6), seed=9)
    params, _ = lm.init(jax.random.key(10), ids)
    loss = jax.jit(lambda p: lm.free_running_loss(p, ids, None, teacher_forcing_prob=0.0, temperature=0.0))(params)
    step = jax.jit(lambda c, token: lm.step(params, c, token))  # one compilation for the five steps
    nll = jax.jit(lambda logits, target: jnp.sum(-jax.nn.log_softmax(logits)[jnp.arange(2), target]))
    argmax = jax.jit(lambda logits: jnp.argmax(logits, axis=-1))
    columns = np.asarray(ids)  # sliced in NumPy: eager slicing compiles per index
    carry, token, total = lm.initial_carry((2,)), jax.device_put(columns[:, 0]), 0.0
    for t in range(5):
        carry, logits = step(carry, token)
        total += float(nll(logits, columns[:, t + 1]))
        token = argmax(logits)
    np.testing.assert_allclose(loss, total / 10, rtol=1e-5)


def test_generate_under_jit_equals_a_python_loop_with_the_same_keys():
    lm = models.CharLM(VOCAB, [nn.LSTMCell(H), nn.LSTMCell(H)])
    params, _ = lm.init(jax.random.key(11), jnp.zeros((1, 3), jnp.int32))
    prompt, key, length = _ids((2, 3), seed=12), jax.random.key(13), 8
    (logits, carry), _ = jax.jit(lambda p, x: lm.apply(p, {}, x))(params, prompt)

    @jax.jit  # one compilation for the eight steps of the loop
    def sample_and_step(carry, logits, step_key):
        token = decoding.sample_tokens(step_key, logits, 0.7)
        carry, logits = lm.step(params, carry, token)
        return carry, logits, token

    logits, expected = logits[:, -1], []
    for step_key in jax.random.split(key, length):
        carry, logits, token = sample_and_step(carry, logits, step_key)
        expected.append(token)
    before = _generate._cache_size()
    generated = lm.generate(params, key, prompt, length, temperature=0.7)
    np.testing.assert_array_equal(generated, jnp.stack(expected, axis=1))
    # Another temperature reuses the compiled scan; a 1-D prompt is one sequence.
    hotter = lm.generate(params, key, prompt, length, temperature=1.5)
    assert _generate._cache_size() == before + 1 and hotter.shape == (2, length)
    np.testing.assert_array_equal(lm.generate(params, key, prompt[0], length, temperature=0.7), generated[0])
    # Greedy: each token is the argmax given the tokens before; a tiny temperature is greedy too.
    greedy = lm.generate(params, key, prompt, length, temperature=0.0)
    (logits, _), _ = jax.jit(lambda p, x: lm.apply(p, {}, x))(params, jnp.concatenate([prompt, greedy], axis=1))
    np.testing.assert_array_equal(greedy, jnp.argmax(logits[:, 2:-1], axis=-1))
    np.testing.assert_array_equal(lm.generate(params, jax.random.key(99), prompt, length, temperature=1e-4), greedy)


# --------------------------------------------------------------------------------- errors


def test_bad_input_errors():
    lm = models.CharLM(VOCAB, nn.LSTMCell(H))
    ids = _ids((2, 5), seed=15)
    params, _ = lm.init(jax.random.key(16), ids)
    with pytest.raises(ValueError, match=r"CharLM\(.*\)\.teacher_forcing_loss: expected ids in \[0, 7\)"):
        lm.teacher_forcing_loss(params, ids.at[0, 2].set(VOCAB))
    with pytest.raises(ValueError, match=r"\.teacher_forcing_loss: expected ids of rank 2"):
        lm.teacher_forcing_loss(params, ids[0])
    with pytest.raises(ValueError, match=r"\.generate: expected temperature >= 0|\.generate: expected a finite"):
        lm.generate(params, jax.random.key(0), ids, 4, temperature=-0.5)
    with pytest.raises(ValueError, match=r"\.generate: expected prompt_ids in \[0, 7\)"):
        lm.generate(params, jax.random.key(0), ids.at[1, 1].set(-1), 4)
    with pytest.raises(ValueError, match=r"\.generate: expected prompt_ids (of shape .* prompt_len >= 1|with no empty axis)"):
        lm.generate(params, jax.random.key(0), ids[:, :0], 4)
    with pytest.raises(ValueError, match=r"\.free_running: expected teacher_forcing_prob in \[0, 1\]"):
        lm.free_running_loss(params, ids, jax.random.key(0), teacher_forcing_prob=1.5)
    with pytest.raises(ValueError, match=r"\.free_running: expected a PRNG key"):
        lm.free_running_loss(params, ids, None, teacher_forcing_prob=0.5)

    classifier = models.SequenceClassifier(2, nn.GRUCell(H), vocab_size=VOCAB)
    c_params, state = classifier.init(jax.random.key(0), ids)
    with pytest.raises(ValueError, match=r"SequenceClassifier\(num_classes=2, .*\): expected ids in \[0, 7\)"):
        classifier.apply(c_params, state, ids + VOCAB)
    with pytest.raises(ValueError, match=r"SequenceClassifier\(.*\): expected lengths in \[0, 5\]"):
        classifier.apply(c_params, state, ids, lengths=jnp.array([6, 1]))
    with pytest.raises(TypeError, match=r"SequenceTagger\(.*\): expected float features .*give vocab_size="):
        models.SequenceTagger(3, nn.GRUCell(H)).init(jax.random.key(0), ids)
    with pytest.raises(ValueError, match=r"SequenceClassifier\(.*\): expected readout in \('final', 'mean'\)"):
        models.SequenceClassifier(2, nn.GRUCell(H), readout="last")
    with pytest.raises(TypeError, match=r"CharLM: expected a jdl recurrent Cell"):
        models.CharLM(VOCAB, "lstm")
