"""Count-based word vectors (seed 002, section 5.2.2): co-occurrence, PPMI, TF-IDF and LSA.

A word-context matrix counts how often each word ``w`` appears near each context ``c``;
an association measure re-weights it, and a truncated SVD compresses it:

- :func:`cooccurrence_matrix`: ``N(w, c)``, the number of times ``c`` is within ``window``
  words of ``w`` (``weighting="harmonic"`` counts a context at distance ``k`` as ``1/k``).
- :func:`ppmi`: ``PPMI(w, c) = max(0, log P(w, c) / (P(w) P(c)))
  = max(0, log N(w, c) |(w, c)| / (N(w) N(c)))``, where ``|(w, c)|`` is the total count.
  ``alpha < 1`` smooths the context distribution, ``P_alpha(c) = N(c)^alpha / sum N(c')^alpha``
  (Levy, Goldberg and Dagan 2015 take ``alpha = 0.75``, word2vec's noise exponent), which
  lowers the PMI of rare contexts.
- :func:`term_document_matrix` and :func:`tfidf`: ``TF-IDF(w, d, D) = N(w, d) log(|D| / |{d : w in d}|)``.
- :func:`truncated_svd` and :func:`lsa`: the ``rank`` largest singular triplets of a
  (sparse) matrix, and the word vectors ``U_k S_k^power`` (``power=1`` is scikit-learn's
  ``TruncatedSVD.fit_transform``; ``power=0.5`` spreads the weight, as Levy et al. advise).

Matrices are SciPy sparse (CSR, float64): a word-context matrix of a 10,000-word
vocabulary has 10^8 cells, nearly all zero. Only stored entries are ever transformed, so a
zero count stays zero (never ``log 0``).

Example:
    >>> import numpy as np
    >>> from jdl.embeddings import counts
    >>> counts_ = counts.cooccurrence_matrix([np.array([0, 1, 2, 1, 0])], vocab_size=3, window=1)
    >>> counts_.toarray().tolist()
    [[0.0, 2.0, 0.0], [2.0, 0.0, 2.0], [0.0, 2.0, 0.0]]
    >>> counts.ppmi(counts_).toarray().round(3).tolist()
    [[0.0, 0.693, 0.0], [0.693, 0.0, 0.693], [0.0, 0.693, 0.0]]
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from jdl._checks import Positive, PositiveInt, check_that, checks_arguments
from jdl.embeddings.corpus import _flatten, _pairs

__all__ = ["cooccurrence_matrix", "ppmi", "term_document_matrix", "tfidf", "truncated_svd", "lsa"]


def _check_ids_below(where: str, ids: np.ndarray, vocab_size: int) -> None:
    check_that(ids.size == 0 or (ids.min() >= 0 and ids.max() < vocab_size), where,
               f"ids in [0, {vocab_size})", f"ids in [{ids.min()}, {ids.max()}]" if ids.size else "none")


@checks_arguments
def cooccurrence_matrix(sentences: Sequence[np.ndarray], vocab_size: PositiveInt, window: PositiveInt,
                        weighting: Literal["uniform", "harmonic"] = "uniform") -> scipy.sparse.csr_matrix:
    """``N[w, c]``: how often context ``c`` occurs within ``window`` words of ``w`` (same sentence).

    Symmetric by construction (each pair is seen from both ends).
    """
    centres, contexts, offsets = _pairs("cooccurrence_matrix", sentences, window, None)
    _check_ids_below("cooccurrence_matrix", centres, vocab_size)
    weights = np.ones(len(centres)) if weighting == "uniform" else 1.0 / np.abs(offsets)
    return scipy.sparse.coo_matrix((weights, (centres, contexts)), shape=(vocab_size, vocab_size)).tocsr()


def _as_csr(where: str, matrix) -> scipy.sparse.csr_matrix:
    matrix = scipy.sparse.csr_matrix(matrix, dtype=np.float64)
    check_that(matrix.nnz > 0, where, "a matrix with some non-zero count", f"an all-zero {matrix.shape} matrix")
    check_that(np.isfinite(matrix.data).all() and (matrix.data >= 0).all(), where, "finite, non-negative counts",
               f"min {matrix.data.min()}, {np.isnan(matrix.data).sum()} NaN")
    matrix.eliminate_zeros()
    return matrix


@checks_arguments
def ppmi(counts, alpha: Positive = 1.0) -> scipy.sparse.csr_matrix:
    """Positive pointwise mutual information of a word-context count matrix (rows: words).

        PMI(w, c) = log N(w, c) |(w, c)| / (N(w) N(c))       (alpha = 1, seed 002)
        PMI_alpha(w, c) = log P(w, c) / (P(w) P_alpha(c)),  P_alpha(c) = N(c)^alpha / sum_c' N(c')^alpha

    and ``PPMI = max(0, PMI)``, stored only where ``N(w, c) > 0``.
    """
    counts = _as_csr("ppmi", counts)
    total = counts.sum()
    word_totals = np.asarray(counts.sum(axis=1)).ravel()
    context_totals = np.asarray(counts.sum(axis=0)).ravel()
    context_p = context_totals**alpha / (context_totals**alpha).sum()
    rows = np.repeat(np.arange(counts.shape[0]), np.diff(counts.indptr))
    pmi = np.log(counts.data / total) - np.log(word_totals[rows] / total) - np.log(context_p[counts.indices])
    out = scipy.sparse.csr_matrix((np.maximum(pmi, 0.0), counts.indices.copy(), counts.indptr.copy()),
                                  shape=counts.shape)
    out.eliminate_zeros()
    return out


@checks_arguments
def term_document_matrix(documents: Sequence[np.ndarray], vocab_size: PositiveInt) -> scipy.sparse.csr_matrix:
    """``N[w, d]``: how often word ``w`` occurs in document ``d`` (rows: words, columns: documents)."""
    ids, _, _ = _flatten("term_document_matrix", documents)
    _check_ids_below("term_document_matrix", ids, vocab_size)
    doc_of = np.repeat(np.arange(len(documents)), [len(d) for d in documents])
    return scipy.sparse.coo_matrix((np.ones(len(ids)), (ids, doc_of)), shape=(vocab_size, len(documents))).tocsr()


def tfidf(term_document) -> scipy.sparse.csr_matrix:
    """``TF-IDF(w, d, D) = N(w, d) log(|D| / df(w))`` with ``df(w)`` the documents containing ``w``
    (seed 002's unsmoothed form: a word in every document weighs 0)."""
    term_document = _as_csr("tfidf", term_document)
    document_frequency = np.diff(term_document.indptr)  # stored entries per row = documents with w
    idf = np.log(term_document.shape[1] / np.maximum(document_frequency, 1))
    return scipy.sparse.csr_matrix(term_document.multiply(idf[:, None]))


@checks_arguments
def truncated_svd(matrix, rank: PositiveInt) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U, s, Vt)``: the ``rank`` largest singular values, descending, and their vectors.

    Computed by ARPACK (``scipy.sparse.linalg.svds``) with a fixed start vector, so the
    result is deterministic; each singular pair's sign is fixed so that the largest
    entry of ``Vt``'s row is positive (scikit-learn's ``svd_flip`` convention).
    """
    matrix = _as_csr("truncated_svd", matrix)
    check_that(rank < min(matrix.shape), "truncated_svd", f"rank < min(matrix.shape) = {min(matrix.shape)}", rank)
    start = np.ones(min(matrix.shape)) / np.sqrt(min(matrix.shape))
    u, s, vt = scipy.sparse.linalg.svds(matrix, k=rank, v0=start)
    order = np.argsort(-s)
    u, s, vt = u[:, order], s[order], vt[order]
    signs = np.sign(vt[np.arange(rank), np.abs(vt).argmax(axis=1)])
    return u * signs, s, vt * signs[:, None]


@checks_arguments
def lsa(matrix, rank: PositiveInt, power: float = 1.0) -> np.ndarray:
    """Latent semantic analysis: the rows' ``rank``-dimensional vectors ``U_k diag(s_k)^power``."""
    u, s, _ = truncated_svd(matrix, rank)
    return u * s**power
