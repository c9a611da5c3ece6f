"""jdl.embeddings.corpus: the seeds' worked examples, word2vec's windows and subsampling against
their formulas and gensim's keep probabilities, one-hot against a lookup."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn
from jdl.embeddings import corpus

CAT = "I saw a cute grey cat playing in the garden"
FOX = "the quick brown fox jumps over the lazy dog"


def encoded(text):
    words = corpus.tokenize(text)
    vocab = corpus.Vocabulary.from_sentences([words])
    return vocab, vocab.encode(words)


def test_seed_002_context_of_cat_with_window_two():
    vocab, ids = encoded(CAT)
    centres, contexts = corpus.context_pairs([ids], window=2)
    assert sorted(vocab.words[c] for c in contexts[centres == vocab.index["cat"]]) == ["cute", "grey", "in", "playing"]


def test_seed_000_cbow_examples():
    """"A context window of size 2" in seed 000 is one word either side: ([quick, fox], brown)..."""
    vocab, ids = encoded(FOX)
    centres, contexts, mask = corpus.context_windows([ids], window=1)
    examples = [([vocab.words[c] for c in row[m]], vocab.words[w]) for w, row, m in zip(centres, contexts, mask)]
    for example in [(["quick", "fox"], "brown"), (["the", "brown"], "quick"), (["the", "dog"], "lazy")]:
        assert example in examples
    assert examples[0] == (["quick"], "the") and examples[-1] == (["lazy"], "dog")  # the edges have one neighbour


def test_pairs_stay_inside_sentences_and_cover_the_full_window():
    sentences = [np.array([0, 1, 2]), np.array([3, 4]), np.array([5])]
    centres, contexts = corpus.context_pairs(sentences, window=5)
    assert sorted(zip(centres.tolist(), contexts.tolist())) == [
        (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1), (3, 4), (4, 3)]
    centres, contexts, mask = corpus.context_windows(sentences, window=2)
    assert centres.tolist() == [0, 1, 2, 3, 4]  # the one-word sentence has no context: left out
    assert contexts.shape == (5, 4) and mask.sum(1).tolist() == [2, 2, 2, 1, 1]


def test_dynamic_window_weights_distance_k_by_window_minus_k_plus_one():
    """word2vec draws b ~ U{1..W} per centre, so a context at distance k is kept with probability (W - k + 1) / W."""
    window, length = 5, 20_000
    sentence = np.arange(length) % 50
    centres, _, offsets = corpus._pairs("test", [sentence], window, np.random.default_rng(0))
    counts = np.bincount(np.abs(offsets), minlength=window + 1)[1:]
    expected = 2 * length * (window - np.arange(1, window + 1) + 1) / window
    np.testing.assert_allclose(counts, expected, rtol=0.03)


def test_vocabulary_counts_order_and_unknown_words():
    vocab = corpus.Vocabulary.from_sentences([["b", "a", "b", "c"], ["a", "b", "d"]], min_count=2)
    assert vocab.words == ("b", "a") and vocab.counts.tolist() == [3, 2] and vocab.total == 5
    assert vocab.encode(["a", "b"]).tolist() == [1, 0]
    with pytest.raises(KeyError, match="drop_unknown"):
        vocab.encode(["a", "zebra"])
    assert vocab.encode(["zebra", "a"], drop_unknown=True).tolist() == [1]
    with pytest.raises(ValueError, match="min_count=9"):
        corpus.Vocabulary.from_sentences([["a"]], min_count=9)
    with pytest.raises(TypeError, match="not one str"):
        corpus.Vocabulary.from_sentences(["one sentence as a string"])


def test_keep_probabilities_follow_both_formulas():
    counts = np.array([5000, 800, 120, 30, 5])
    t, f = 1e-3, counts / counts.sum()
    np.testing.assert_allclose(corpus.keep_probabilities(counts, t, rule="mikolov2013"),
                               np.minimum(1, np.sqrt(t / f)))  # seed 000: discarded with 1 - sqrt(t / f)
    np.testing.assert_allclose(corpus.keep_probabilities(counts, t), np.minimum(1, (np.sqrt(f / t) + 1) * t / f))
    assert corpus.keep_probabilities(counts, 0.0).tolist() == [1.0] * 5


def test_keep_probabilities_equal_gensims():
    gensim = pytest.importorskip("gensim")
    rng = np.random.default_rng(0)
    counts = np.sort(rng.zipf(1.5, 300).clip(1, 10**5))[::-1]
    words = [f"w{i}" for i in range(len(counts))]
    model = gensim.models.Word2Vec(vector_size=4, min_count=1, sample=1e-3)
    model.build_vocab_from_freq(dict(zip(words, counts.tolist())))
    theirs = np.array([model.wv.get_vecattr(w, "sample_int") / 2**32 for w in words])
    np.testing.assert_allclose(corpus.keep_probabilities(counts, 1e-3), theirs, atol=1e-9)


def test_subsampling_keeps_each_word_at_its_rate():
    sentence = np.repeat(np.arange(3), 20_000)
    keep = np.array([0.1, 0.5, 1.0])
    kept = corpus.subsample([sentence], keep, np.random.default_rng(0))[0]
    np.testing.assert_allclose(np.bincount(kept, minlength=3) / 20_000, keep, atol=0.01)


def test_one_hot_times_a_matrix_is_a_lookup():
    W = jax.random.normal(jax.random.key(0), (7, 3))
    ids = jnp.array([[1, 6], [0, 1]])
    np.testing.assert_allclose(corpus.one_hot(ids, 7) @ W, W[ids], rtol=1e-6)
    embed = nn.Embedding(num_embeddings=7, features=3)
    params, state = embed.init(jax.random.key(1), ids)
    table = jax.tree.leaves(params)[0]
    np.testing.assert_allclose(corpus.one_hot(ids, 7) @ table, embed.apply(params, state, ids)[0], rtol=1e-6)
    with pytest.raises(ValueError, match="one_hot"):
        corpus.one_hot(jnp.array([7]), 7)


def test_tokenize():
    assert corpus.tokenize("Don't stop -- 42 Élan_vital!") == ["don't", "stop", "élan", "vital"]


def test_vocabulary_order_equals_gensims_ties_included():
    gensim = pytest.importorskip("gensim")
    rng = np.random.default_rng(0)
    sentences = [[f"w{i}" for i in rng.zipf(1.6, 30) % 200] for _ in range(40)]
    model = gensim.models.Word2Vec(vector_size=4, min_count=2, workers=1)
    model.build_vocab(sentences)
    vocab = corpus.Vocabulary.from_sentences(sentences, min_count=2)
    assert vocab.words == tuple(model.wv.index_to_key)
    assert vocab.counts.tolist() == [model.wv.get_vecattr(w, "count") for w in vocab.words]
