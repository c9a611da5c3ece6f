"""jdl.embeddings.huffman: seed 000's 8 words take 3 decisions, codes equal gensim's, and the
hierarchical softmax over the tree is a distribution."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl.embeddings import hierarchical_softmax_log_probs, huffman_tree

ZIPF = np.sort(np.random.default_rng(0).zipf(1.4, 200).clip(1, 10**6))[::-1]


def test_eight_equally_frequent_words_take_three_binary_decisions():
    tree = huffman_tree(np.ones(8, int))
    assert tree.lengths.tolist() == [3] * 8
    assert sorted(map(tuple, tree.codes.tolist())) == [tuple(int(b) for b in f"{i:03b}") for i in range(8)]
    assert tree.points[:, 0].tolist() == [6] * 8  # every path starts at the root, inner node V - 2


def test_codes_are_a_complete_prefix_code_that_favours_frequent_words():
    tree = huffman_tree(ZIPF)
    assert np.isclose(np.sum(2.0 ** -tree.lengths), 1.0)  # Kraft's equality: a full binary tree
    for count in np.unique(ZIPF):  # a more frequent word never has a longer code (ties may differ by one)
        assert tree.lengths[ZIPF > count].max(initial=0) <= tree.lengths[ZIPF == count].min()
    codes = {tuple(c[:n]) for c, n in zip(tree.codes.tolist(), tree.lengths)}
    assert len(codes) == len(ZIPF)
    p = ZIPF / ZIPF.sum()
    entropy = -(p * np.log2(p)).sum()
    assert entropy <= (p * tree.lengths).sum() < entropy + 1  # Huffman's optimality bound


def test_codes_and_points_equal_gensims():
    gensim = pytest.importorskip("gensim")
    model = gensim.models.Word2Vec(vector_size=4, min_count=1, hs=1, negative=0)
    model.build_vocab_from_freq({f"w{i}": int(c) for i, c in enumerate(ZIPF)})
    words = model.wv.index_to_key  # gensim's order: by count, its own order among ties
    tree = huffman_tree([model.wv.get_vecattr(w, "count") for w in words])
    assert tree.lengths.tolist() == [len(model.wv.get_vecattr(w, "code")) for w in words]
    for i, w in enumerate(words):
        n = tree.lengths[i]
        assert tree.codes[i, :n].tolist() == model.wv.get_vecattr(w, "code").tolist()
        assert tree.points[i, :n].tolist() == model.wv.get_vecattr(w, "point").tolist()


def test_hierarchical_softmax_probabilities_sum_to_one():
    tree = huffman_tree(ZIPF[:50])
    inner = jax.random.normal(jax.random.key(0), (49, 6))
    h = jax.random.normal(jax.random.key(1), (3, 6))
    log_p = hierarchical_softmax_log_probs(h, inner, tree)
    assert log_p.shape == (3, 50)
    np.testing.assert_allclose(jnp.exp(log_p).sum(-1), 1.0, rtol=1e-5)


def test_bad_counts():
    with pytest.raises(ValueError, match="huffman_tree: expected at least two positive counts"):
        huffman_tree([3])
