"""jdl.embeddings.word2vec: the losses against direct transcriptions, their gradients against
jax.grad and finite differences, a step against word2vec's C update rules and against jax.grad of
the batch's loss, and training that is reproducible and learns which words go together."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jdl.embeddings import Vocabulary, Word2Vec, WordVectors, huffman_tree
from jdl.embeddings import word2vec as w2v

V, D = 12, 6
COUNTS = np.array([40, 30, 22, 15, 12, 9, 7, 5, 4, 3, 2, 1])


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def test_losses_equal_their_transcriptions():
    rng = np.random.default_rng(0)
    s_o, s_k, w = rng.normal(size=3), rng.normal(size=(3, 4)), rng.random((3, 4))
    expected = -np.log(sigmoid(s_o)) - (w * np.log(sigmoid(-s_k))).sum(-1)
    np.testing.assert_allclose(w2v.negative_sampling_loss(s_o, s_k, w), expected, rtol=1e-6)
    codes, mask = rng.integers(0, 2, (3, 4)), np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    expected = -np.where(mask, np.log(sigmoid((1 - 2 * codes) * s_k)), 0).sum(-1)
    np.testing.assert_allclose(w2v.hierarchical_softmax_loss(s_k, codes, mask), expected, rtol=1e-6)
    # seed 002: J = -u_cute . v_cat + log sum_w exp(u_w . v_cat)
    v_cat, U, cute = rng.normal(size=D), rng.normal(size=(V, D)), 3
    expected = -U[cute] @ v_cat + np.log(np.exp(U @ v_cat).sum())
    np.testing.assert_allclose(w2v.softmax_loss(jnp.asarray(v_cat), jnp.asarray(U), jnp.array(cute)), expected,
                               rtol=1e-5)


def test_closed_form_gradients_equal_jax_grad():
    key1, key2 = jax.random.split(jax.random.key(0))
    s_o, s_k = jax.random.normal(key1, (5,)), 3 * jax.random.normal(key2, (5, 7))
    w = jnp.linspace(0, 1, 7)
    ours = w2v.negative_sampling_grad(s_o, s_k, w)
    theirs = jax.grad(lambda a, b: w2v.negative_sampling_loss(a, b, w).sum(), argnums=(0, 1))(s_o, s_k)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    codes, mask = (jnp.arange(35).reshape(5, 7) % 3 == 0), jnp.arange(7) < jnp.array([[2], [7], [1], [4], [5]])
    np.testing.assert_allclose(w2v.hierarchical_softmax_grad(s_k, codes, mask),
                               jax.grad(lambda s: w2v.hierarchical_softmax_loss(s, codes, mask).sum())(s_k),
                               rtol=1e-5, atol=1e-7)
    check_grads(lambda s: w2v.hierarchical_softmax_loss(s, codes, mask), (s_k,), order=1, modes="rev",
                atol=1e-2, rtol=1e-2)
    check_grads(lambda a, b: w2v.negative_sampling_loss(a, b, w), (s_o, s_k), order=1, modes="rev",
                atol=1e-2, rtol=1e-2)


def random_params(output="negative-sampling"):
    k1, k2 = jax.random.split(jax.random.key(3))
    rows = V - 1 if output == "hierarchical-softmax" else V
    return w2v.Word2VecParams(0.3 * jax.random.normal(k1, (V, D)), 0.3 * jax.random.normal(k2, (rows, D)))


def batch_of(model, rng, size):
    """A batch of ``size`` examples (one padding example at the end) as ``_batches`` makes them."""
    if model.model == "skip-gram":
        inputs, input_mask = rng.integers(0, V, size), np.ones(size, bool)
    else:
        inputs, input_mask = rng.integers(0, V, (size, 4)), rng.random((size, 4)) < 0.7
        input_mask[:, 0] = True
    if model.output != "negative-sampling":
        noise = np.zeros((0,), np.int32)
    elif model.shared_noise:
        noise = rng.integers(0, V, (size // (model.noise_group or size), model.shared_noise))
    else:
        noise = rng.integers(0, V, (size, model.negative))
    weight = np.ones(size, np.float32)
    weight[-1] = 0.0
    targets = rng.integers(0, V, size)
    return w2v._Batch(*map(jnp.asarray, (inputs, input_mask, targets, noise, weight)), jnp.float32(0.05))


def direct_loss(model, params, batch, tree):
    """The batch's summed loss written from the tables, with nothing shared: what jax.grad differentiates."""
    if model.model == "skip-gram":
        h = params.input[batch.inputs]
    else:
        m = batch.input_mask.astype(jnp.float32)
        h = (params.input[batch.inputs] * m[..., None]).sum(1) / m.sum(1, keepdims=True)
    if model.output == "softmax":
        losses = w2v.softmax_loss(h, params.output, batch.targets)
    elif model.output == "hierarchical-softmax":
        points, codes, mask = (jnp.asarray(a)[batch.targets] for a in (tree.points, tree.codes, tree.mask))
        losses = w2v.hierarchical_softmax_loss(jnp.einsum("bd,bld->bl", h, params.output[points]), codes, mask)
    else:
        noise = (jnp.repeat(batch.noise, len(h) // batch.noise.shape[0], axis=0) if model.shared_noise
                 else batch.noise)
        weight = model.negative / noise.shape[1]
        noise_scores = jnp.einsum("bd,bkd->bk", h, params.output[noise])
        losses = w2v.negative_sampling_loss(jnp.sum(h * params.output[batch.targets], -1), noise_scores,
                                            weight * (noise != batch.targets[:, None]))
    return jnp.sum(batch.weight * losses)


CONFIGS = [
    dict(model="skip-gram", output="negative-sampling", shared_noise=None),
    dict(model="skip-gram", output="negative-sampling", shared_noise=4, noise_group=4),
    dict(model="skip-gram", output="hierarchical-softmax"),
    dict(model="skip-gram", output="softmax"),
    dict(model="cbow", output="negative-sampling", shared_noise=4),
    dict(model="cbow", output="hierarchical-softmax"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['model']}-{c['output']}-{c.get('shared_noise')}")
def test_a_step_is_minus_lr_times_jax_grad_of_the_batch_loss(config):
    """Skip-gram: every table moves by -lr dJ/dtable. CBOW: the output table too; each context vector
    moves by -lr dJ/dh (word2vec's rule), so with one example it is -lr count dJ/dv_context."""
    model = Word2Vec(dim=D, batch_size=8, max_score=None, **config)
    tree = huffman_tree(COUNTS)
    params = random_params(model.output)
    if model.model == "cbow":  # one example with three contexts and one padding example
        batch = batch_of(model, np.random.default_rng(1), 8)
        keep = jnp.arange(8) == 0
        batch = batch._replace(weight=keep.astype(jnp.float32),
                               input_mask=batch.input_mask.at[0].set(jnp.array([True, True, False, True])),
                               inputs=batch.inputs.at[0].set(jnp.array([1, 5, 0, 7])))
    else:
        batch = batch_of(model, np.random.default_rng(1), 8)
    new, _ = jax.jit(model._step)(params, batch, w2v._device_tree(tree))
    grads = jax.jit(jax.grad(lambda p: direct_loss(model, p, batch, tree)))(params)
    np.testing.assert_allclose(new.output, params.output - 0.05 * grads.output, rtol=1e-5, atol=1e-6)
    scale = 3.0 if model.model == "cbow" else 1.0
    np.testing.assert_allclose(new.input, params.input - 0.05 * scale * grads.input, rtol=1e-5, atol=1e-6)


def test_one_pair_follows_word2vecs_c_code():
    """skip-gram + negative sampling, one (centre, context) pair, word2vec.c's loop transcribed:
    g = (label - sigma(l1 . syn1neg[target])) alpha; neu1e += g syn1neg[target]; syn1neg[target] += g l1."""
    model = Word2Vec(dim=D, batch_size=1, shared_noise=None, negative=3)
    params = random_params()
    syn0, syn1neg = np.array(params.input, np.float64), np.array(params.output, np.float64)
    centre, context, negatives, alpha = 4, 9, [2, 7, 9], 0.05  # the third noise word is the context: skipped
    l1, neu1e = syn0[centre].copy(), np.zeros(D)
    for target, label in [(context, 1)] + [(n, 0) for n in negatives]:
        if label == 0 and target == context:
            continue
        g = (label - sigmoid(l1 @ syn1neg[target])) * alpha
        neu1e += g * syn1neg[target]
        syn1neg[target] += g * l1
    syn0[centre] += neu1e
    batch = w2v._Batch(jnp.array([centre]), jnp.array([True]), jnp.array([context]), jnp.array([negatives]),
                       jnp.array([1.0]), jnp.float32(alpha))
    new, _ = model._step(params, batch, None)
    np.testing.assert_allclose(new.input, syn0, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(new.output, syn1neg, rtol=1e-5, atol=1e-7)


def test_max_score_skips_saturated_tree_nodes():
    model = Word2Vec(dim=D, batch_size=2, output="hierarchical-softmax")
    params = w2v.Word2VecParams(jnp.ones((V, D)), jnp.full((V - 1, D), 5.0))  # every score 30: saturated
    batch = w2v._Batch(jnp.array([0, 1]), jnp.ones(2, bool), jnp.array([3, 11]), jnp.zeros((0,), jnp.int32),
                       jnp.ones(2), jnp.float32(0.1))
    new, _ = jax.jit(model._step)(params, batch, w2v._device_tree(huffman_tree(COUNTS)))
    np.testing.assert_array_equal(new.input, params.input)
    np.testing.assert_array_equal(new.output, params.output)


def test_noise_words_follow_the_unigram_distribution_to_the_three_quarters():
    model = Word2Vec(dim=D, batch_size=256, shared_noise=64, steps_per_call=64)
    p = w2v.noise_distribution(COUNTS)
    np.testing.assert_allclose(p, COUNTS**0.75 / (COUNTS**0.75).sum())
    examples = (np.zeros(256 * 64, np.int32), np.ones(256 * 64, bool), np.zeros(256 * 64, np.int32), np.ones(256 * 64))
    batches = next(model._batches(examples, p, np.random.default_rng(0), 0.0, 1e-9))
    frequencies = np.bincount(batches.noise.ravel(), minlength=V) / batches.noise.size
    assert np.all(np.abs(frequencies - p) < 4 * np.sqrt(p * (1 - p) / batches.noise.size)), (frequencies, p)


def toy_corpus(seed=0, sentences=300):
    """Two topics that never share a sentence: animals and tools, with common glue words."""
    rng = np.random.default_rng(seed)
    topics = [["cat", "dog", "horse", "cow"], ["hammer", "saw", "drill", "wrench"]]
    glue = ["the", "a", "and"]
    corpus = []
    for _ in range(sentences):
        topic = topics[rng.integers(2)]
        corpus.append([rng.choice(topic) if rng.random() < 0.6 else rng.choice(glue) for _ in range(12)])
    return corpus


@pytest.fixture(scope="module")
def toy():
    sentences = toy_corpus()
    vocab = Vocabulary.from_sentences(sentences)
    return vocab, [vocab.encode(s) for s in sentences]


@pytest.mark.parametrize("config", [dict(), dict(model="cbow", output="hierarchical-softmax")],
                         ids=["sgns", "cbow-hs"])
def test_training_is_reproducible_and_groups_words_by_topic(toy, config):
    vocab, ids = toy
    model = Word2Vec(dim=16, window=3, epochs=8, batch_size=64, shared_noise=8, sample=0.0, compute_loss=True,
                     learning_rate=0.05, **config)
    params, losses = model.fit(ids, vocab, seed=0)
    again, _ = model.fit(ids, vocab, seed=0)
    np.testing.assert_array_equal(params.input, again.input)
    assert losses[-1] < losses[0]
    vectors = WordVectors(vocab.words, np.asarray(params.input))
    for word, friend, stranger in [("cat", "dog", "hammer"), ("saw", "drill", "horse")]:
        assert vectors.similarity(word, friend) > vectors.similarity(word, stranger) + 0.2


def test_defaults_order_and_batch_by_variant():
    """CBOW with hierarchical softmax reads the corpus in order, 64 examples per step (interleaved
    slices cost it ~0.04 WordSim353 on the experiment's corpus: see ``Word2Vec._examples``);
    the other variants read streams. A resolved default equals the same value given."""
    cbow_hs = Word2Vec(model="cbow", output="hierarchical-softmax")
    assert (cbow_hs.order, cbow_hs.batch_size, cbow_hs.steps_per_call) == ("corpus", 64, 1024)
    for model, output, batch in [("skip-gram", "negative-sampling", 1024), ("cbow", "negative-sampling", 1024),
                                 ("skip-gram", "hierarchical-softmax", 256), ("skip-gram", "softmax", 256)]:
        config = Word2Vec(model=model, output=output)
        assert (config.order, config.batch_size) == ("streams", batch), (model, output)
    assert Word2Vec() == Word2Vec(order="streams", batch_size=1024)
    assert hash(Word2Vec()) == hash(Word2Vec(order="streams", batch_size=1024))
    assert Word2Vec(model="cbow", output="hierarchical-softmax", order="streams").order == "streams"
    with pytest.raises(ValueError, match="expected order in"):
        Word2Vec(order="random")


def test_bad_configurations_and_corpora():
    with pytest.raises(ValueError, match="model in"):
        Word2Vec(model="glove")
    with pytest.raises(ValueError, match="batch_size divisible by noise_group=100"):
        Word2Vec(batch_size=1024, noise_group=100)
    with pytest.raises(ValueError, match="min_learning_rate"):
        Word2Vec(learning_rate=0.01, min_learning_rate=0.1)
    with pytest.raises(ValueError, match="at least two words"):
        Word2Vec(dim=4).fit([np.array([0, 0])], Vocabulary(("a",), np.array([2])))
