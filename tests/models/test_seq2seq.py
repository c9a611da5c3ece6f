"""The Bahdanau encoder-decoder: teacher forcing against a hand-written loop over the seeds'
equations and against the step interface, source padding, attention weights, the loss,
finite differences, a reversal task trained with jdl.optim.adam, greedy decoding against a
Python loop of argmax steps, and the bad-input errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import models, nn, optim
from jdl.models.seq2seq import _search
from tests.nn.conftest import _finite_differences

SOURCE_VOCAB, TARGET_VOCAB, H = 11, 9, 8
PAD, BOS, EOS = 0, 1, 2


def _ids(shape, seed, vocab, low=3):
    return jnp.asarray(np.random.default_rng(seed).integers(low, vocab, shape), jnp.int32)


def _pad(ids, lengths, value):
    valid = np.arange(ids.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return jnp.where(valid, ids, value)


def _model(**options):
    options.setdefault("embed_features", 6)
    options.setdefault("decoder_hidden_size", 10)
    options.setdefault("attention_features", 7)
    return models.AttentionSeq2Seq(SOURCE_VOCAB, TARGET_VOCAB, H, **options)


def _random_params(model, scale=0.5, seed=0):
    """Params drawn from NumPy (biases too, so nothing is zero by accident), shaped by eval_shape."""
    shapes, _ = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 1), jnp.int32))
    leaves, treedef = jax.tree.flatten(shapes)
    rng = np.random.default_rng(seed)
    # Cast in NumPy (the same rounding) and device_put: jnp.asarray compiles a convert (or a copy) per shape.
    return treedef.unflatten([jax.device_put(np.asarray(rng.standard_normal(l.shape) * scale, l.dtype))
                              for l in leaves])


SOURCE_LENGTHS = np.array([5, 2, 4], np.int32)
TARGET_LENGTHS = np.array([4, 3, 1], np.int32)
SOURCE = _pad(_ids((3, 5), 1, SOURCE_VOCAB), SOURCE_LENGTHS, PAD)
TARGET = _pad(_ids((3, 4), 2, TARGET_VOCAB), TARGET_LENGTHS, PAD)


# ------------------------------------------------------------------- reference: the seeds' equations


def _reference_logits(model, params, source, source_lengths, target):
    """Teacher forcing written out from the seeds' equations with NumPy, one sentence at a time.

    Only the encoder (a jdl Bidirectional GRU with lengths, tested against flax elsewhere) is reused.
    """
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    encoder = nn.Bidirectional(nn.GRUCell(model.hidden_size))
    embedded = jnp.asarray(np.asarray(p["source_embedding"]["embedding"][np.asarray(source)], np.float32))
    run = jax.jit(lambda e, x, n: encoder.apply(e, {}, x, lengths=n)[0])
    annotations, (forwards, backwards) = (jax.tree.map(lambda a: np.asarray(a, np.float64), y)
                                          for y in run(params["encoder"], embedded, jnp.asarray(source_lengths)))
    all_logits, all_weights = [], []
    for b in range(source.shape[0]):
        n = int(source_lengths[b])
        h, forward, backward = annotations[b, :n], forwards[b], backwards[b]
        summary = backward if model.initial_state == "backward" else np.concatenate([forward, backward])
        s = np.tanh(summary @ p["initial_state"]["w"])                           # s_0 = tanh(W_s h<-_1)
        previous = BOS
        logits_b, weights_b = [], []
        for i in range(target.shape[1]):
            e_y = p["target_embedding"]["embedding"][previous]                   # E y_{i-1}
            a = p["attention"]
            e = np.tanh(s @ a["w_s"] + h @ a["w_h"]) @ a["v"]                    # e_ij = v^T tanh(W s + U h_j)
            alpha = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
            c = alpha @ h                                                        # c_i = sum_j alpha_ij h_j
            d = p["decoder"]
            pre = np.concatenate([e_y, c]) @ d["input"]["w"] + d["input"]["b"]
            rec = s @ d["hidden"]["w"]
            k = model.decoder_hidden_size
            r = sigmoid(pre[:k] + rec[:k])
            z = sigmoid(pre[k:2 * k] + rec[k:2 * k])
            cand = np.tanh(pre[2 * k:] + r * (rec[2 * k:] + d["hidden"]["b"]))
            new_s = (1 - z) * cand + z * s
            read = s if model.readout_state == "previous" else new_s
            t = np.concatenate([read, e_y, c]) @ p["readout"]["w"] + p["readout"]["b"]
            if model.readout == "maxout":
                t = t.reshape(-1, 2).max(axis=1)
            logits_b.append(t @ p["output"]["w"] + p["output"]["b"])
            weights_b.append(np.concatenate([alpha, np.zeros(source.shape[1] - n)]))
            s, previous = new_s, int(target[b, i])
        all_logits.append(logits_b)
        all_weights.append(weights_b)
    return np.array(all_logits), np.array(all_weights)


@pytest.mark.parametrize("options", [
    {},
    {"readout": "linear", "readout_state": "current", "initial_state": "both"},
], ids=["paper", "variants"])
def test_teacher_forcing_matches_the_seeds_equations_and_the_step_interface(options):
    model = _model(**options)
    params = _random_params(model)
    logits, weights = jax.jit(model.logits)(params, SOURCE, jnp.asarray(SOURCE_LENGTHS), TARGET)
    assert logits.shape == (3, 4, TARGET_VOCAB) and weights.shape == (3, 4, 5)
    ref_logits, ref_weights = _reference_logits(model, params, SOURCE, SOURCE_LENGTHS, TARGET)
    np.testing.assert_allclose(logits, ref_logits, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(weights, ref_weights, rtol=2e-5, atol=1e-6)

    # The step interface fed the true tokens gives the same log-probabilities and weights.
    # Jitted: eagerly, the encoder's scan would be compiled at every call.
    state = jax.jit(model.init_decode_state)(params, SOURCE, jnp.asarray(SOURCE_LENGTHS))
    assert set(state) == {"carry", "memory", "keys", "mask"}
    assert all(leaf.shape[0] == 3 for leaf in jax.tree.leaves(state))
    step_fn = model.step_fn(params)
    both = jax.jit(lambda st, tokens, i: (step_fn(st, tokens, i), model.step(params, st, tokens)[2]))
    inputs = np.concatenate([np.full((3, 1), BOS), np.asarray(TARGET)[:, :-1]], axis=1).astype(np.int32)
    log_softmax = jax.jit(jax.nn.log_softmax)  # sliced in NumPy: eager slicing compiles per index
    logits, weights = np.asarray(logits), np.asarray(weights)
    for i in range(4):
        (log_probs, state), step_weights = both(state, jnp.asarray(inputs[:, i]), i)
        np.testing.assert_allclose(log_probs, log_softmax(logits[:, i]), rtol=1e-5, atol=2e-5)
        np.testing.assert_allclose(step_weights, weights[:, i], rtol=1e-5, atol=1e-6)


def test_source_padding_and_attention_weights():
    model = _model()
    params = _random_params(model, seed=3)
    fn = jax.jit(model.logits)
    lengths = jnp.asarray(SOURCE_LENGTHS)
    logits, weights = fn(params, SOURCE, lengths, TARGET)
    # Other padding ids, even outside the vocabulary: the same numbers.
    loud = _pad(SOURCE, SOURCE_LENGTHS, -1)
    other_logits, other_weights = fn(params, loud, lengths, TARGET)
    np.testing.assert_allclose(other_logits, logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(other_weights, weights, rtol=1e-5, atol=1e-7)
    # A padded sentence alone, unpadded, gives its row of the batch.
    b, n = 1, int(SOURCE_LENGTHS[1])
    alone, alone_weights = fn(params, SOURCE[b:b + 1, :n], None, TARGET[b:b + 1])
    np.testing.assert_allclose(logits[b], alone[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(weights[b, :, :n], alone_weights[0], rtol=1e-5, atol=1e-6)
    # The weights: a distribution over the real source positions, exactly 0 on padding.
    real = np.arange(5)[None, None, :] < SOURCE_LENGTHS[:, None, None]
    np.testing.assert_allclose(np.sum(np.where(real, weights, 0.0), axis=-1), 1.0, rtol=1e-6)
    assert np.all(np.asarray(weights)[~np.broadcast_to(real, weights.shape)] == 0.0)
    assert np.all(np.asarray(weights) >= 0.0)
    # Not uniform: the weights depend on the decoder state.
    assert np.max(np.abs(np.diff(np.asarray(weights)[0], axis=0))) > 1e-3


def test_loss_is_the_mean_cross_entropy_over_real_target_tokens():
    model = _model()
    params = _random_params(model, seed=4)
    lengths, target_lengths = jnp.asarray(SOURCE_LENGTHS), jnp.asarray(TARGET_LENGTHS)
    logits, _ = jax.jit(model.logits)(params, SOURCE, lengths, TARGET)
    log_p = np.asarray(jax.nn.log_softmax(logits))
    terms = [-log_p[b, i, int(TARGET[b, i])] for b in range(3) for i in range(int(TARGET_LENGTHS[b]))]
    expected = np.mean(terms)  # 8 real tokens out of 12 positions
    value_and_grad = jax.jit(jax.value_and_grad(model.loss))
    loss, grads = value_and_grad(params, SOURCE, lengths, TARGET, target_lengths)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # Whatever sits past a target's end (even ids outside the vocabulary) changes nothing.
    junk = _pad(TARGET, TARGET_LENGTHS, -7)
    junk_loss, junk_grads = value_and_grad(params, SOURCE, lengths, junk, target_lengths)
    np.testing.assert_allclose(junk_loss, loss, rtol=1e-6)
    for got, want in zip(jax.tree.leaves(junk_grads), jax.tree.leaves(grads)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_finite_differences():
    model = models.AttentionSeq2Seq(6, 5, 3, embed_features=2, attention_features=3)
    params = _random_params(model, scale=0.7, seed=5)
    source = jnp.array([[3, 4, 5], [5, 3, 0]], jnp.int32)
    target = jnp.array([[3, 4, 2], [4, 2, 0]], jnp.int32)
    source_lengths, target_lengths = jnp.array([3, 2]), jnp.array([3, 2])
    _finite_differences(lambda p: model.loss(p, source, source_lengths, target, target_lengths), (params,))


# ------------------------------------------------------------------------ training and decoding


DIGITS = 10  # tokens 3..12
MIN_LEN, MAX_LEN = 4, 6


def _reversal_batch(rng, batch):
    lengths = rng.integers(MIN_LEN, MAX_LEN + 1, batch)
    source = np.zeros((batch, MAX_LEN), np.int32)
    target = np.zeros((batch, MAX_LEN + 1), np.int32)
    for b, n in enumerate(lengths):
        digits = rng.integers(3, 3 + DIGITS, n)
        source[b, :n] = digits
        target[b, :n] = digits[::-1]
        target[b, n] = EOS
    return source, lengths.astype(np.int32), target, (lengths + 1).astype(np.int32)


@pytest.fixture(scope="module")
def reversal():
    """A model trained to reverse 4 to 6 digits: 250 Adam steps in one jitted scan."""
    model = models.AttentionSeq2Seq(3 + DIGITS, 3 + DIGITS, 32, embed_features=16)
    params, _ = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, MAX_LEN), jnp.int32))
    rng = np.random.default_rng(0)
    steps, batch = 250, 32
    batches = [np.stack(parts) for parts in zip(*[_reversal_batch(rng, batch) for _ in range(steps)])]
    optimizer = optim.adam(1e-2)

    def train_step(carry, data):
        p, s = carry
        loss, grads = jax.value_and_grad(model.loss)(p, *data)
        updates, s = optimizer.update(grads, s, p)
        return (optim.apply_updates(p, updates), s), loss

    run = jax.jit(lambda p, data: jax.lax.scan(train_step, (p, optimizer.init(p)), data))
    (params, _), losses = run(params, tuple(jnp.asarray(a) for a in batches))
    return model, params, np.asarray(losses), _reversal_batch(np.random.default_rng(1), 100)


def test_reversal_trains_to_high_accuracy(reversal):
    model, params, losses, (source, lengths, target, target_lengths) = reversal
    assert losses[0] > 2.0 and np.mean(losses[-20:]) < 0.1
    tokens = model.greedy_decode(params, jnp.asarray(source), jnp.asarray(lengths), MAX_LEN + 1).tokens
    # Greedy decoding gives <eos> then <pad>, the target's own layout: exact match per sentence.
    exact = np.mean(np.all(np.asarray(tokens) == target, axis=1))
    assert exact >= 0.9, f"exact match {exact:.2f}"
    # The attention learned the reversal: output step i looks at source position n - 1 - i.
    _, weights = jax.jit(model.logits)(params, jnp.asarray(source), jnp.asarray(lengths), jnp.asarray(target))
    n = lengths[:, None]
    i = np.arange(MAX_LEN)[None, :]
    picked = np.argmax(np.asarray(weights)[:, :MAX_LEN], axis=-1)
    real = i < n
    assert np.mean((picked == n - 1 - i)[real]) > 0.9


def test_greedy_decode_is_argmax_step_by_step(reversal):
    model, params, _, (source, lengths, target, _) = reversal
    source, lengths, batch = jnp.asarray(source), jnp.asarray(lengths), source.shape[0]
    max_length = MAX_LEN + 1
    out = model.greedy_decode(params, source, lengths, max_length)
    state = jax.jit(model.init_decode_state)(params, source, lengths)  # (eager: the encoder's scan compiled per call)
    step_fn = jax.jit(model.step_fn(params))
    previous, finished = jnp.full((batch,), BOS, jnp.int32), np.zeros(batch, bool)
    expected, scores, ends = [], np.zeros(batch), np.full(batch, max_length)
    for t in range(max_length):
        log_probs, state = step_fn(state, previous, t)
        choice = np.argmax(np.asarray(log_probs), axis=-1)
        scores += np.where(finished, 0.0, np.max(np.asarray(log_probs), axis=-1))
        choice = np.where(finished, PAD, choice)
        ends = np.where(~finished & (choice == EOS), t + 1, ends)
        finished |= choice == EOS
        expected.append(choice)
        previous = jnp.asarray(choice, jnp.int32)
    np.testing.assert_array_equal(out.tokens, np.stack(expected, axis=1))
    np.testing.assert_array_equal(out.lengths, ends)
    np.testing.assert_allclose(out.scores, scores, rtol=1e-5, atol=1e-6)
    assert np.all(finished)  # every sentence ended, so the <eos> / <pad> path was exercised
    # Other values of the same shapes reuse the compiled decoder.
    compiled = _search._cache_size()
    shifted = jax.jit(lambda p: jax.tree.map(lambda a: a * 1.01, p))(params)  # eager: a compile per leaf shape
    model.greedy_decode(shifted, source, jnp.minimum(lengths, 5), max_length)
    assert _search._cache_size() == compiled


def test_beam_decode_scores_are_the_models_log_probabilities(reversal):
    model, params, _, (source, lengths, target, target_lengths) = reversal
    source, lengths = jnp.asarray(source[:16]), jnp.asarray(lengths[:16])
    beams = model.beam_decode(params, source, lengths, MAX_LEN + 1, beam_size=3)
    assert beams.tokens.shape == (16, 3, MAX_LEN + 1) and beams.scores.shape == (16, 3)
    scores = np.asarray(beams.scores)
    assert np.all(np.diff(scores, axis=1) <= 0)                           # best first
    np.testing.assert_array_equal(beams.tokens[:, 0], target[:16])        # the trained model's best is right
    # Rescore every hypothesis with teacher forcing: log p(Y | x) summed up to and including <eos>.
    hypotheses = np.asarray(beams.tokens).reshape(48, MAX_LEN + 1)
    hyp_lengths = np.asarray(beams.lengths).reshape(48)
    logits, _ = jax.jit(model.logits)(params, jnp.repeat(source, 3, axis=0), jnp.repeat(lengths, 3),
                                      jnp.asarray(hypotheses))
    log_p = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), hypotheses[..., None], -1)[..., 0]
    rescored = np.sum(np.where(np.arange(MAX_LEN + 1) < hyp_lengths[:, None], log_p, 0.0), axis=1)
    np.testing.assert_allclose(scores.reshape(48), rescored, rtol=1e-4, atol=1e-4)
    # The best beam is at least as likely as the greedy sentence, and three distinct hypotheses are kept.
    greedy = model.greedy_decode(params, source, lengths, MAX_LEN + 1)
    assert np.all(scores[:, 0] >= np.asarray(greedy.scores) - 1e-5)
    assert all(len({tuple(h) for h in np.asarray(beams.tokens)[b]}) == 3 for b in range(16))


def test_layer_rule_and_the_papers_shapes():
    model = _model()
    params, state = jax.eval_shape(model.init, jax.random.key(0), SOURCE)
    assert state == {} and sorted(params) == sorted(["source_embedding", "encoder", "initial_state",
                                                     "target_embedding", "attention", "decoder", "readout",
                                                     "output"])
    params = _random_params(model)
    both = jax.jit(lambda p, n: (model.apply(p, {}, SOURCE, target_ids=TARGET, source_lengths=n)[0],
                                 model.logits(p, SOURCE, n, TARGET)))
    (logits, weights), (ref, ref_weights) = both(params, jnp.asarray(SOURCE_LENGTHS))
    np.testing.assert_array_equal(logits, ref)
    np.testing.assert_array_equal(weights, ref_weights)
    # RNNsearch (Bahdanau et al., appendix A.2): 1000 units per direction and in the decoder, 620-d
    # embeddings, a 1000-unit alignment model, 500 maxout units, 30000-word vocabularies.
    paper = models.AttentionSeq2Seq(30000, 30000, 1000, embed_features=620, readout_features=500)
    shapes, _ = jax.eval_shape(paper.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 5), jnp.int32))
    shapes = jax.tree.map(lambda s: s.shape, shapes)
    assert shapes["encoder"]["forward"]["input"]["w"] == (620, 3000)
    assert shapes["initial_state"]["w"] == (1000, 1000)                          # W_s on h<-_1
    assert shapes["attention"] == {"w_s": (1000, 1000), "w_h": (2000, 1000), "v": (1000,)}
    assert shapes["decoder"]["input"]["w"] == (620 + 2000, 3000)                 # [E y, c] -> r, z, n
    assert shapes["readout"]["w"] == (1000 + 620 + 2000, 1000)                   # t~: U_o, V_o, C_o
    assert shapes["output"]["w"] == (500, 30000)                                 # W_o on maxout t


def test_bad_input_errors_name_the_function():
    model = _model()
    params = _random_params(model)
    lengths = jnp.asarray(SOURCE_LENGTHS)
    with pytest.raises(ValueError, match=r"\.loss: expected source_ids in \[0, 11\)"):
        model.loss(params, SOURCE.at[0, 0].set(11), lengths, TARGET)
    with pytest.raises(ValueError, match=r"\.loss: expected target_ids in \[0, 9\)"):
        model.loss(params, SOURCE, lengths, TARGET.at[2, 0].set(9), jnp.asarray(TARGET_LENGTHS))
    # Past the lengths any id is accepted: it is read as <pad>.
    model._check_source("loss", _pad(SOURCE, SOURCE_LENGTHS, -1), lengths)
    model._check_target("loss", SOURCE, _pad(TARGET, TARGET_LENGTHS, 99), jnp.asarray(TARGET_LENGTHS))
    with pytest.raises(ValueError, match=r"\.logits: expected target_ids in \[0, 9\)"):
        model.logits(params, SOURCE, lengths, TARGET.at[1, 0].set(-1))
    with pytest.raises(ValueError, match=r"\.loss: expected lengths of shape \(3,\)"):
        model.loss(params, SOURCE, lengths[:2], TARGET)
    with pytest.raises(ValueError, match=r"\.loss: expected lengths of shape \(3,\)"):
        model.loss(params, SOURCE, lengths, TARGET, jnp.array([[1, 2, 3]]))
    with pytest.raises(ValueError, match=r"\.loss: expected lengths in \[0, 4\]"):
        model.loss(params, SOURCE, lengths, TARGET, jnp.array([1, 5, 2]))
    with pytest.raises(TypeError, match=r"\.init_decode_state: expected an integer lengths"):
        model.init_decode_state(params, SOURCE, lengths.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"\.logits: expected source_ids of rank 2"):
        model.logits(params, SOURCE[0], lengths, TARGET)
    with pytest.raises(ValueError, match=r"\.logits: expected target_ids with the source's batch size 3"):
        model.logits(params, SOURCE, lengths, TARGET[:2])
    with pytest.raises(ValueError, match=r"AttentionSeq2Seq\(.*\): expected params with keys"):
        model.logits({"encoder": params["encoder"]}, SOURCE, lengths, TARGET)
    state = model.init_decode_state(params, SOURCE, lengths)
    with pytest.raises(ValueError, match=r"\.step: expected tokens in \[0, 9\)"):
        model.decode_step(params, state, jnp.array([1, 9, 1]), 0)
    with pytest.raises(ValueError, match=r"\.step: expected state\['carry'\] of shape \(2, 10\)"):
        model.decode_step(params, state, jnp.array([1, 1]), 0)
    with pytest.raises(ValueError, match=r"\.greedy_decode: expected max_length to be a positive int"):
        model.greedy_decode(params, SOURCE, lengths, 0)
    with pytest.raises(ValueError, match=r"\.beam_decode: expected beam_size to be a positive int"):
        model.beam_decode(params, SOURCE, lengths, 4, beam_size=0)
    with pytest.raises(ValueError, match=r"\.beam_decode: expected source_ids in \[0, 11\)"):
        model.beam_decode(params, SOURCE.at[2, 1].set(-1), lengths, 4)
    with pytest.raises(ValueError, match=r"AttentionSeq2Seq\(.*\): expected readout in \('maxout', 'linear'\)"):
        models.AttentionSeq2Seq(5, 5, readout="softmax")
    with pytest.raises(ValueError, match=r"AttentionSeq2Seq: expected eos_id in \[0, 2\)"):
        models.AttentionSeq2Seq(5, 2)
