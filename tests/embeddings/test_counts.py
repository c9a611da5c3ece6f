"""jdl.embeddings.counts: co-occurrence, PPMI and TF-IDF against dense NumPy transcriptions of seed
002's formulas, LSA against scikit-learn's TruncatedSVD."""
from __future__ import annotations

import numpy as np
import pytest

from jdl.embeddings import counts

SENTENCES = [np.array([0, 1, 2, 3, 1, 0]), np.array([2, 4, 2, 1]), np.array([3, 3, 0, 4, 1, 2, 2])]
V = 5


def dense_cooccurrence(sentences, window, harmonic=False):
    n = np.zeros((V, V))
    for s in sentences:
        for i, w in enumerate(s):
            for j in range(max(0, i - window), min(len(s), i + window + 1)):
                if j != i:
                    n[w, s[j]] += 1.0 / abs(i - j) if harmonic else 1.0
    return n


@pytest.mark.parametrize("weighting", ["uniform", "harmonic"])
def test_cooccurrence_counts(weighting):
    ours = counts.cooccurrence_matrix(SENTENCES, V, window=2, weighting=weighting).toarray()
    np.testing.assert_allclose(ours, dense_cooccurrence(SENTENCES, 2, weighting == "harmonic"))
    np.testing.assert_allclose(ours, ours.T)


@pytest.mark.parametrize("alpha", [1.0, 0.75])
def test_ppmi_against_the_formula(alpha):
    n = dense_cooccurrence(SENTENCES, 2)
    total = n.sum()
    p_w = n.sum(1, keepdims=True) / total
    p_c = n.sum(0) ** alpha / (n.sum(0) ** alpha).sum()
    with np.errstate(divide="ignore"):
        expected = np.where(n > 0, np.maximum(0, np.log((n / total) / (p_w * p_c))), 0.0)
    if alpha == 1.0:  # seed 002's count form: log N(w,c) |(w,c)| / (N(w) N(c))
        with np.errstate(divide="ignore"):
            seed_form = np.log(n * total / (n.sum(1, keepdims=True) * n.sum(0)))
        np.testing.assert_allclose(expected, np.where(n > 0, np.maximum(seed_form, 0), 0), atol=1e-12)
    np.testing.assert_allclose(counts.ppmi(n, alpha=alpha).toarray(), expected, atol=1e-12)


def test_tfidf_against_the_formula():
    td = counts.term_document_matrix(SENTENCES, V).toarray()
    assert td[:, 0].tolist() == [2, 2, 1, 1, 0]
    df = (td > 0).sum(1)
    np.testing.assert_allclose(counts.tfidf(td).toarray(), td * np.log(len(SENTENCES) / df)[:, None])
    assert (counts.tfidf(td).toarray()[2] == 0).all()  # word 2 is in every document: idf = log 1 = 0


def test_lsa_equals_scikit_learns_truncated_svd():
    sklearn = pytest.importorskip("sklearn.decomposition")
    rng = np.random.default_rng(0)
    matrix = rng.poisson(0.3, (60, 40)).astype(float)
    ours = counts.lsa(counts.ppmi(matrix), rank=5)
    theirs = sklearn.TruncatedSVD(5, algorithm="arpack", random_state=0).fit_transform(counts.ppmi(matrix))
    signs = np.sign((ours * theirs).sum(0))  # each component is defined up to its sign
    np.testing.assert_allclose(ours, theirs * signs, atol=1e-8)
    u, s, vt = counts.truncated_svd(matrix, 5)
    np.testing.assert_allclose(s, np.linalg.svd(matrix, compute_uv=False)[:5], rtol=1e-10)
    np.testing.assert_allclose(u.T @ u, np.eye(5), atol=1e-10)


def test_bad_matrices_are_named():
    with pytest.raises(ValueError, match="ppmi: expected a matrix with some non-zero count"):
        counts.ppmi(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="finite, non-negative"):
        counts.ppmi(np.array([[1.0, np.nan], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="ids in"):
        counts.cooccurrence_matrix([np.array([0, 9])], 5, 2)
