"""A corpus for word vectors: tokens, a counted vocabulary, subsampling, context windows, one-hot.

Everything here runs in NumPy on the host: it turns text into the integer examples that
the jitted training steps (:mod:`jdl.embeddings.word2vec`) and the count matrices
(:mod:`jdl.embeddings.counts`) consume.

- :func:`tokenize`: lowercase words of letters (``"Don't"`` -> ``["don't"]``).
- :class:`Vocabulary`: the words seen at least ``min_count`` times, most frequent first
  (word2vec's order: id 0 is the most frequent word), with their counts.
- :func:`keep_probabilities` and :func:`subsample`: frequent words are dropped at random.
  Seed 000 (Mikolov et al. 2013, eq. 5) discards ``w`` with probability
  ``p(w) = 1 - sqrt(t / f(w))``, ``f(w)`` its relative frequency and ``t`` about ``1e-5``;
  the released word2vec code (and gensim) keeps it with probability
  ``(sqrt(f(w) / t) + 1) t / f(w)``. Both are clipped to ``[0, 1]``.
- :func:`context_pairs` (skip-gram's ``(centre, context)`` pairs) and
  :func:`context_windows` (CBOW's ``(contexts, centre)`` examples): every word within
  ``window`` positions of the centre, in the same sentence. With a ``rng`` each centre
  draws its own window ``b`` uniformly from ``1..window`` (word2vec's dynamic window,
  which weights a context at distance ``k`` by ``(window - k + 1) / window`` on average).
- :func:`one_hot`: the ``i``-th word as the ``i``-th standard basis vector; multiplying it
  by a matrix ``W`` picks ``W``'s row ``i``, which is why an embedding is a lookup.

Example (seed 002's sentence, a window of two words either side):
    >>> from jdl.embeddings import corpus
    >>> words = corpus.tokenize("I saw a cute grey cat playing in the garden.")
    >>> vocab = corpus.Vocabulary.from_sentences([words])
    >>> centres, contexts = corpus.context_pairs([vocab.encode(words)], window=2)
    >>> cat = vocab.index["cat"]
    >>> sorted(vocab.words[c] for c in contexts[centres == cat])
    ['cute', 'grey', 'in', 'playing']
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jdl._checks import PositiveInt, check_integer, check_that, check_token_ids, checks_arguments

__all__ = ["tokenize", "Vocabulary", "keep_probabilities", "subsample", "context_pairs", "context_windows", "one_hot"]

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)*")  # letters, with inner apostrophes ("don't")


def tokenize(text: str) -> list[str]:
    """The lowercase words of ``text``: runs of letters (any script), inner apostrophes kept.

    Digits, punctuation and markup are separators, so ``"x2, y_3"`` gives ``["x", "y"]``.

    Example:
        >>> tokenize("The cat's toy -- 3 balls!")
        ['the', "cat's", 'toy', 'balls']
    """
    check_that(isinstance(text, str), "tokenize", "a str", type(text).__name__, TypeError)
    return _WORD.findall(text.lower())


def _sentences(where: str, sentences) -> list:
    check_that(isinstance(sentences, Iterable) and not isinstance(sentences, (str, bytes)), where,
               "a list of sentences (each a list of words or an array of ids)", type(sentences).__name__, TypeError)
    sentences = list(sentences)
    for i, s in enumerate(sentences):
        check_that(not isinstance(s, str), where, f"sentences[{i}] to be a list of words, not one str",
                   repr(s[:40]), TypeError)
    return sentences


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """Words and their corpus counts, most frequent first (equal counts as gensim orders them:
    the word seen first comes last).

    The order of equally frequent words decides the shape of the Huffman tree among them
    (:func:`~jdl.embeddings.huffman.huffman_tree`), and that mattered more than expected:
    on the word-vectors experiment's corpus, CBOW with hierarchical softmax scored 0.242 and
    0.305 on WordSim353 (seeds 0, 1) with ties in first-seen order, 0.314 and 0.338 with
    gensim's order.

    Attributes:
        words: the words, id ``i`` is ``words[i]``.
        counts: ``int64`` counts, non-increasing.
        index: word -> id.

    Example:
        >>> vocab = Vocabulary.from_sentences([["a", "b", "a"], ["c", "a", "b"]], min_count=2)
        >>> vocab.words, vocab.counts.tolist(), vocab.total
        (('a', 'b'), [3, 2], 5)
        >>> vocab.encode(["a", "c", "b"], drop_unknown=True).tolist()
        [0, 1]
    """

    words: tuple[str, ...]
    counts: np.ndarray
    index: dict = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        words, counts = tuple(self.words), np.asarray(self.counts, np.int64)
        check_that(len(words) == len(set(words)), "Vocabulary", "distinct words", f"{len(words) - len(set(words))} repeated")
        check_that(counts.shape == (len(words),) and (counts > 0).all(), "Vocabulary",
                   f"one positive count per word ({len(words)})", f"counts of shape {counts.shape}")
        object.__setattr__(self, "words", words)
        object.__setattr__(self, "counts", counts)
        object.__setattr__(self, "index", {w: i for i, w in enumerate(words)})

    @classmethod
    @checks_arguments
    def from_sentences(cls, sentences: Iterable[Sequence[str]], min_count: PositiveInt = 1,
                       max_size: PositiveInt | None = None) -> Vocabulary:
        """Count every word; keep those seen ``min_count`` times or more (the ``max_size`` most frequent)."""
        counter = Counter(w for s in _sentences("Vocabulary.from_sentences", sentences) for w in s)
        # Most frequent first; equal counts in gensim's order (the word seen first comes last), so
        # that the vocabulary, and the Huffman tree built from it, are gensim's.
        seen = list(counter.items())
        order = sorted(range(len(seen)), key=lambda i: (-seen[i][1], -i))
        kept = [seen[i] for i in order[:max_size] if seen[i][1] >= min_count]
        check_that(kept, "Vocabulary.from_sentences", f"some word seen at least min_count={min_count} times",
                   f"{len(counter)} distinct words, the most frequent seen {max(counter.values(), default=0)} times")
        return cls(tuple(w for w, _ in kept), np.array([c for _, c in kept], np.int64))

    def __len__(self) -> int:
        return len(self.words)

    @property
    def total(self) -> int:
        """The number of corpus tokens the vocabulary covers (the sum of the counts)."""
        return int(self.counts.sum())

    def encode(self, words: Sequence[str], *, drop_unknown: bool = False) -> np.ndarray:
        """The ids of ``words`` (``int32``). A word outside the vocabulary is an error, unless
        ``drop_unknown``: word2vec skips the words below its minimum count."""
        if drop_unknown:
            return np.array([self.index[w] for w in words if w in self.index], np.int32)
        missing = [w for w in words if w not in self.index]
        check_that(not missing, "Vocabulary.encode", "words in the vocabulary (or drop_unknown=True)",
                   f"{len(missing)} unknown, e.g. {missing[:3]}", KeyError)
        return np.array([self.index[w] for w in words], np.int32)


@checks_arguments
def keep_probabilities(counts: np.ndarray, sample: float,
                       rule: Literal["word2vec", "mikolov2013"] = "word2vec") -> np.ndarray:
    """The probability of keeping each occurrence of a word, from its count.

    With ``f(w) = count(w) / total`` and threshold ``t = sample``:

        rule="mikolov2013" (seed 000):  keep(w) = sqrt(t / f(w))              (discard 1 - sqrt(t / f))
        rule="word2vec" (released code):  keep(w) = (sqrt(f(w) / t) + 1) t / f(w)

    both clipped to ``[0, 1]``: words rarer than about ``t`` are always kept. ``sample = 0``
    keeps everything.

    Example:
        >>> keep_probabilities(np.array([900, 90, 10]), 1e-2, rule="mikolov2013").round(4).tolist()
        [0.1054, 0.3333, 1.0]
    """
    counts = np.asarray(counts, np.float64)
    check_that(counts.ndim == 1 and (counts > 0).all(), "keep_probabilities", "positive counts, one per word",
               f"shape {counts.shape}, min {counts.min() if counts.size else None}")
    check_that(sample >= 0, "keep_probabilities", "sample >= 0", sample)
    if sample == 0:
        return np.ones_like(counts)
    ratio = sample / (counts / counts.sum())  # t / f(w)
    keep = np.sqrt(ratio) if rule == "mikolov2013" else (np.sqrt(1 / ratio) + 1) * ratio
    return np.minimum(keep, 1.0)


def subsample(sentences: Sequence[np.ndarray], keep: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Each token kept with probability ``keep[id]``, independently (an emptied sentence stays, empty)."""
    return [s[rng.random(len(s)) < keep[s]] for s in _sentences("subsample", sentences)]


def _flatten(where: str, sentences) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All ids in one array, with each token's sentence start and end."""
    sentences = [np.asarray(s) for s in _sentences(where, sentences)]
    for i, s in enumerate(sentences):
        check_that(s.ndim == 1 and (s.size == 0 or np.issubdtype(s.dtype, np.integer)), where,
                   f"sentences[{i}] to be a 1-D array of integer ids", f"{s.dtype} of shape {s.shape}", TypeError)
    lengths = np.array([len(s) for s in sentences], np.int64)
    ends = np.cumsum(lengths)
    starts = np.repeat(ends - lengths, lengths)
    ids = np.concatenate(sentences).astype(np.int32) if sentences else np.zeros(0, np.int32)
    return ids, starts, np.repeat(ends, lengths)


def _offsets(window: int) -> np.ndarray:
    return np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])


def _window_table(where: str, sentences, window: int, rng: np.random.Generator | None):
    """``(ids, contexts, valid)``: for each position, the ids at offsets ``-window..window``
    (not 0) and whether each is inside the sentence and the position's window."""
    ids, starts, ends = _flatten(where, sentences)
    offsets = _offsets(window)
    positions = np.arange(len(ids))[:, None] + offsets
    reach = np.full(len(ids), window) if rng is None else rng.integers(1, window + 1, len(ids))
    valid = (positions >= starts[:, None]) & (positions < ends[:, None]) & (np.abs(offsets) <= reach[:, None])
    contexts = ids[np.clip(positions, 0, max(len(ids) - 1, 0))] if len(ids) else np.zeros((0, 2 * window), np.int32)
    return ids, contexts, valid


@checks_arguments
def context_pairs(sentences: Sequence[np.ndarray], window: PositiveInt,
                  rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Skip-gram's examples: ``(centres, contexts)``, one pair per word within the centre's window.

    Pairs come in corpus order, each centre's contexts from left to right. With ``rng``
    each centre's window is ``b ~ U{1..window}`` (word2vec's dynamic window); without it,
    the full ``window``.
    """
    centres, contexts, _ = _pairs("context_pairs", sentences, window, rng)
    return centres, contexts


def _pairs(where: str, sentences, window: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centres, contexts, offsets)``: the skip-gram pairs and each context's signed distance."""
    ids, contexts, valid = _window_table(where, sentences, window, rng)
    centres = np.broadcast_to(ids[:, None], valid.shape)[valid].astype(np.int32)
    return centres, contexts[valid].astype(np.int32), np.broadcast_to(_offsets(window), valid.shape)[valid]


@checks_arguments
def context_windows(sentences: Sequence[np.ndarray], window: PositiveInt,
                    rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CBOW's examples: ``(centres, contexts, mask)`` with ``contexts`` and ``mask`` of shape
    ``(n, 2 window)``, left context first; ``mask`` says which slots hold a word. Positions
    with no context at all (one-word sentences) are left out, as word2vec does.

    Example (seed 000: "a context window of size 2" there means one word either side):
        >>> vocab = Vocabulary.from_sentences([("the quick brown fox jumps over the lazy dog").split()])
        >>> sentence = vocab.encode("the quick brown fox jumps over the lazy dog".split())
        >>> centres, contexts, mask = context_windows([sentence], window=1)
        >>> [([vocab.words[c] for c in row[m]], vocab.words[w]) for w, row, m in zip(centres, contexts, mask)][1:3]
        [(['the', 'brown'], 'quick'), (['quick', 'fox'], 'brown')]
    """
    ids, contexts, valid = _window_table("context_windows", sentences, window, rng)
    some = valid.any(axis=1)
    return ids[some], np.where(valid[some], contexts[some], 0).astype(np.int32), valid[some]


@checks_arguments
def one_hot(ids, vocab_size: PositiveInt, dtype=jnp.float32) -> jax.Array:
    """``ids`` as one-hot rows: ``one_hot(ids, V) @ W == W[ids]`` for any ``W`` with ``V`` rows.

    Example (seed 000: the input ``[0 1 0]`` times a ``3 x 4`` matrix is its second row):
        >>> W = jnp.arange(12.0).reshape(3, 4)
        >>> (one_hot(jnp.array([1]), 3) @ W).tolist()
        [[4.0, 5.0, 6.0, 7.0]]
    """
    ids = jnp.asarray(ids)
    check_integer("one_hot", ids, "ids")
    check_token_ids("one_hot", ids, vocab_size)
    return jax.nn.one_hot(ids, vocab_size, dtype=dtype)
