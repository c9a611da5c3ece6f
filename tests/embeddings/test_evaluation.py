"""jdl.embeddings.evaluation: Spearman against scipy, word-pair and analogy scores (3CosAdd, 3CosMul)
against gensim's KeyedVectors on the same vectors and gensim's own test files."""
from __future__ import annotations

import numpy as np
import pytest

from jdl.embeddings import WordVectors, cosine_similarity, read_analogies, read_word_pairs, spearman

gensim = pytest.importorskip("gensim")
from gensim.models import KeyedVectors  # noqa: E402
from gensim.test.utils import datapath  # noqa: E402


def test_spearman_equals_scipys_with_ties():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 6, 50).astype(float), rng.normal(size=50)
    y[:10] = y[10:20]  # ties on both sides
    assert np.isclose(spearman(x, y), scipy_stats.spearmanr(x, y).statistic, atol=1e-12)
    with pytest.raises(ValueError, match="not all equal"):
        spearman(np.ones(4), np.arange(4.0))


def test_cosine_similarity():
    assert np.isclose(cosine_similarity([1.0, 0.0], [1.0, 1.0]), 1 / np.sqrt(2))
    with pytest.raises(ValueError, match="non-zero vectors"):
        cosine_similarity([0.0, 0.0], [1.0, 1.0])


@pytest.fixture(scope="module")
def vectors():
    """The 2,000 words most frequent in the analogy and similarity files, with random vectors."""
    words = []
    for path in ("wordsim353.tsv", "simlex999.txt"):
        words += [w for a, b, _ in read_word_pairs(datapath(path)) for w in (a.lower(), b.lower())]
    for questions in read_analogies(datapath("questions-words.txt")).values():
        words += [w.lower() for q in questions for w in q]
    words = list(dict.fromkeys(words))[:2000]
    vectors = np.random.default_rng(0).normal(size=(len(words), 20))
    ours = WordVectors(words, vectors)
    theirs = KeyedVectors(20)
    theirs.add_vectors(words, vectors.astype(np.float32))
    return ours, theirs


@pytest.mark.parametrize("name", ["wordsim353.tsv", "simlex999.txt"])
def test_word_pairs_equal_gensims(vectors, name):
    ours, theirs = vectors
    for lowercase in (True, False):
        result = ours.evaluate_word_pairs(read_word_pairs(datapath(name)), lowercase=lowercase)
        (_, _), (rho, _), oov = theirs.evaluate_word_pairs(datapath(name), case_insensitive=lowercase)
        assert np.isclose(result.spearman, rho, atol=1e-6)
        assert np.isclose(100 * (1 - result.coverage), oov)


def test_most_similar_and_3cosmul_equal_gensims(vectors):
    ours, theirs = vectors
    assert [w for w, _ in ours.most_similar("king", 5)] == [w for w, _ in theirs.most_similar("king", topn=5)]
    for a, a_star, b, _ in read_analogies(datapath("questions-words.txt"))["capital-common-countries"][:20]:
        a, a_star, b = a.lower(), a_star.lower(), b.lower()
        if not all(w in ours.index for w in (a, a_star, b)):
            continue
        expected = theirs.most_similar_cosmul(positive=[a_star, b], negative=[a], topn=1)[0][0]
        found = ours.evaluate_analogies([(a, a_star, b, expected)], method="mul", epsilon=1e-6)
        assert found.correct == 1, (a, a_star, b, expected)


def test_analogy_accuracy_equals_gensims(vectors):
    ours, theirs = vectors
    sections = read_analogies(datapath("questions-words.txt"))
    questions = [q for qs in sections.values() for q in qs]
    result = ours.evaluate_analogies(questions, restrict_vocab=1500)
    accuracy, per_section = theirs.evaluate_word_analogies(datapath("questions-words.txt"), restrict_vocab=1500)
    total = [s for s in per_section if s["section"] == "Total accuracy"][0]
    assert result.correct == len(total["correct"]) and result.covered == len(total["correct"]) + len(
        total["incorrect"])
    assert result.total == len(questions) and 0 < result.coverage < 1
