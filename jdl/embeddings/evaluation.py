"""Judging word vectors: cosine similarity, neighbours, word-similarity sets and analogies.

- :func:`cosine_similarity`: ``a . b / (|a| |b|)``.
- :class:`WordVectors`: words with one vector each; :meth:`~WordVectors.most_similar`
  ranks the vocabulary by cosine similarity.
- :func:`spearman`: Spearman's rank correlation, the Pearson correlation of the ranks
  (ties get their average rank), as ``scipy.stats.spearmanr``.
- :meth:`WordVectors.evaluate_word_pairs`: Spearman between human similarity judgements
  (WordSim353, SimLex-999) and the vectors' cosine similarities, over the pairs whose two
  words are both in the vocabulary, with that coverage reported.
- :meth:`WordVectors.evaluate_analogies`: "``a`` is to ``a*`` as ``b`` is to ?" (the Google
  analogy set, ``questions-words.txt``), answered among the vocabulary's words other than
  the three question words by 3CosAdd, ``argmax_x cos(x, a* - a + b)`` on unit vectors
  (Mikolov et al. 2013), or 3CosMul, ``argmax_x cos'(x, a*) cos'(x, b) / (cos'(x, a) + eps)``
  with ``cos' = (cos + 1) / 2`` and ``eps = 0.001`` (Levy and Goldberg 2014). Questions
  with a word outside the (restricted) vocabulary are skipped and counted in the coverage.

Example:
    >>> import numpy as np
    >>> vectors = WordVectors(("king", "queen", "man", "woman"),
    ...                       np.array([[1.0, 1.0], [1.0, -1.0], [0.2, 1.0], [0.2, -1.0]]))
    >>> vectors.evaluate_analogies([("man", "woman", "king", "queen")]).accuracy
    1.0
    >>> [w for w, _ in vectors.most_similar("king", 2)]
    ['man', 'queen']
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

import numpy as np

from jdl._checks import PositiveInt, check_that, checks_arguments

__all__ = ["cosine_similarity", "spearman", "WordVectors", "PairsResult", "AnalogyResult",
           "read_word_pairs", "read_analogies"]


def cosine_similarity(a, b) -> np.ndarray:
    """``a . b / (|a| |b|)`` along the last axis; a zero vector has no direction, so it is an error."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    check_that(np.all(norms > 0), "cosine_similarity", "non-zero vectors", "a zero vector")
    return np.sum(a * b, -1) / norms


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    average = (starts + ends + 1) / 2.0  # mean of the 1-based positions start+1..end
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(average, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman's rho: the Pearson correlation of the (tie-averaged) ranks of ``x`` and ``y``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    check_that(x.ndim == 1 and x.shape == y.shape and len(x) >= 2, "spearman",
               "two 1-D arrays of the same length (at least 2)", f"shapes {x.shape} and {y.shape}")
    check_that(np.isfinite(x).all() and np.isfinite(y).all(), "spearman", "finite values", "NaN or inf")
    rx, ry = _ranks(x) - (len(x) + 1) / 2, _ranks(y) - (len(y) + 1) / 2
    denominator = np.sqrt((rx**2).sum() * (ry**2).sum())
    check_that(denominator > 0, "spearman", "values that are not all equal", "a constant array")
    return float((rx * ry).sum() / denominator)


class PairsResult(NamedTuple):
    """Spearman's rho over the ``covered`` of ``total`` pairs in the vocabulary."""

    spearman: float
    covered: int
    total: int

    @property
    def coverage(self) -> float:
        return self.covered / self.total


class AnalogyResult(NamedTuple):
    """``correct`` answers among the ``covered`` of ``total`` questions in the vocabulary."""

    correct: int
    covered: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.covered if self.covered else float("nan")

    @property
    def coverage(self) -> float:
        return self.covered / self.total


def read_word_pairs(path) -> list[tuple[str, str, float]]:
    """``word1 <tab> word2 <tab> score`` lines (``#`` starts a comment), as gensim's test data."""
    pairs = []
    for line in open(path, encoding="utf8"):
        if line.strip() and not line.startswith("#"):
            a, b, score = line.strip().split("\t")[:3]
            pairs.append((a, b, float(score)))
    return pairs


def read_analogies(path) -> dict[str, list[tuple[str, str, str, str]]]:
    """The Google analogy file: ``: section`` headers, then ``a a* b b*`` lines."""
    sections: dict[str, list] = {}
    current = None
    for line in open(path, encoding="utf8"):
        if line.startswith(":"):
            current = sections.setdefault(line[1:].strip(), [])
        elif line.strip():
            check_that(current is not None, "read_analogies", "a ': section' line first", line.strip())
            current.append(tuple(line.split()))
    return sections


@dataclasses.dataclass(frozen=True)
class WordVectors:
    """Words and their vectors (row ``i`` is ``words[i]``'s), kept in float32 or float64 as given."""

    words: tuple[str, ...]
    vectors: np.ndarray
    index: dict = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        vectors = np.asarray(self.vectors)
        if vectors.dtype not in (np.float32, np.float64):
            vectors = vectors.astype(np.float64)
        check_that(vectors.ndim == 2 and len(vectors) == len(self.words), "WordVectors",
                   f"one vector per word ({len(self.words)} words)", f"vectors of shape {vectors.shape}")
        check_that(np.isfinite(vectors).all(), "WordVectors", "finite vectors", "NaN or inf")
        object.__setattr__(self, "words", tuple(self.words))
        object.__setattr__(self, "vectors", vectors)
        object.__setattr__(self, "index", {w: i for i, w in enumerate(self.words)})

    def _unit(self, limit: int | None = None) -> np.ndarray:
        vectors = self.vectors[:limit]
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.where(norms > 0, norms, 1.0)  # a zero vector stays zero: similarity 0 to all

    def __getitem__(self, word: str) -> np.ndarray:
        return self.vectors[self.index[word]]

    def similarity(self, a: str, b: str) -> float:
        return float(cosine_similarity(self[a], self[b]))

    @checks_arguments
    def most_similar(self, word: str, n: PositiveInt = 10) -> list[tuple[str, float]]:
        """The ``n`` words nearest to ``word`` by cosine similarity (itself excluded)."""
        check_that(word in self.index, "WordVectors.most_similar", "a word in the vocabulary", repr(word), KeyError)
        unit = self._unit()
        similarity = unit @ unit[self.index[word]]
        similarity[self.index[word]] = -np.inf
        best = np.argsort(-similarity, kind="stable")[:n]
        return [(self.words[i], float(similarity[i])) for i in best]

    def evaluate_word_pairs(self, pairs: Iterable[tuple[str, str, float]], lowercase: bool = True) -> PairsResult:
        """Spearman between the pairs' scores and the cosine similarities, over the covered pairs
        (``lowercase``: the pairs' words lowercased first, as gensim's ``case_insensitive``)."""
        pairs = [(a.lower(), b.lower(), s) if lowercase else (a, b, s) for a, b, s in pairs]
        covered = [(a, b, s) for a, b, s in pairs if a in self.index and b in self.index]
        check_that(len(covered) >= 2, "WordVectors.evaluate_word_pairs", "at least two pairs in the vocabulary",
                   f"{len(covered)} of {len(pairs)}")
        human = [s for _, _, s in covered]
        model = [self.similarity(a, b) for a, b, _ in covered]
        return PairsResult(spearman(human, model), len(covered), len(pairs))

    def evaluate_analogies(self, questions: Sequence[tuple[str, str, str, str]],
                           method: Literal["add", "mul"] = "add", restrict_vocab: int | None = None,
                           lowercase: bool = True, epsilon: float = 1e-3) -> AnalogyResult:
        """Accuracy on ``a a* b b*`` questions among the first ``restrict_vocab`` words (the most
        frequent, when the words are in frequency order, as gensim restricts them).

        ``epsilon`` is 3CosMul's guard against division by zero: Levy and Goldberg's ``0.001``
        by default; gensim's ``most_similar_cosmul`` uses ``1e-6``.
        """
        check_that(method in ("add", "mul"), "WordVectors.evaluate_analogies", "method in ('add', 'mul')", method)
        unit = self._unit(restrict_vocab)
        index = {w: i for i, w in enumerate(self.words[:len(unit)])}
        questions = [tuple(w.lower() for w in q) if lowercase else tuple(q) for q in questions]
        covered = [q for q in questions if all(w in index for w in q)]
        correct = 0
        for start in range(0, len(covered), 512):  # a block of questions at a time: one matrix product
            block = np.array([[index[w] for w in q] for q in covered[start:start + 512]])
            a, a_star, b = (unit[block[:, k]] for k in range(3))
            if method == "add":
                scores = (a_star - a + b) @ unit.T
            else:
                def shifted(v):
                    return (v @ unit.T + 1) / 2

                scores = shifted(a_star) * shifted(b) / (shifted(a) + epsilon)
            np.put_along_axis(scores, block[:, :3], -np.inf, axis=1)  # the question words are not answers
            correct += int((scores.argmax(1) == block[:, 3]).sum())
        return AnalogyResult(correct, len(covered), len(questions))
