"""Tokenisation for small sequence-to-sequence tasks: a character or word vocabulary.

A :class:`Vocab` maps tokens to integer ids. Ids ``0, 1, 2`` are always the reserved
``<pad>``, ``<bos>`` (start) and ``<eos>`` (end) tokens, and ``3`` is ``<unk>`` when the
vocabulary has one; the corpus's tokens follow in sorted order, so the same corpus always
gives the same ids. ``level="char"`` splits a text into its characters (spaces included);
``level="word"`` splits it on whitespace (``str.split()``), so a word-level decode joins
the words with single spaces.

:meth:`Vocab.encode` turns a list of texts into a padded ``int32`` array and the lengths;
:meth:`Vocab.decode` turns ids back into text, stopping at the first ``<eos>``. Both run
in NumPy on the host, outside ``jit``. Nothing is truncated or replaced silently: a token
outside the vocabulary is an error (unless the vocabulary has ``<unk>``), and so is a text
longer than ``max_length``.

Example (a target for teacher forcing: the decoder reads ``ids[:, :-1]`` and predicts
``ids[:, 1:]``):
    >>> from jdl import text
    >>> vocab = text.Vocab.from_corpus(["2026-11-21", "1999-01-05"])
    >>> vocab.tokens
    ('<pad>', '<bos>', '<eos>', '-', '0', '1', '2', '5', '6', '9')
    >>> ids, lengths = vocab.encode(["2026-11-21", "1-9"], add_bos=True, add_eos=True)
    >>> ids
    array([[1, 6, 4, 6, 8, 3, 5, 5, 3, 6, 5, 2],
           [1, 5, 3, 9, 2, 0, 0, 0, 0, 0, 0, 0]], dtype=int32)
    >>> lengths
    array([12,  5], dtype=int32)
    >>> vocab.decode(ids)
    ['2026-11-21', '1-9']
"""
from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np

from jdl._checks import PositiveInt, check_declared, check_int_at_least, check_that, checks_arguments

__all__ = ["PAD_ID", "BOS_ID", "EOS_ID", "UNK_ID", "Vocab"]

PAD_ID, BOS_ID, EOS_ID, UNK_ID = 0, 1, 2, 3
_SPECIALS = ("<pad>", "<bos>", "<eos>")
_UNK = "<unk>"
Level = Literal["char", "word"]


def _texts_list(where: str, texts: Any) -> list[str]:
    if isinstance(texts, str) or not isinstance(texts, Iterable) or isinstance(texts, Mapping):
        hint = f"; wrap a single text in a list: [{texts!r}]" if isinstance(texts, str) else ""
        raise TypeError(f"{where}: expected a list of str, got {type(texts).__name__}{hint}")
    texts = list(texts)
    for i, text in enumerate(texts):
        check_that(isinstance(text, str), where, f"texts[{i}] to be a str", type(text).__name__, TypeError)
    return texts


def _split(text: str, level: str) -> list[str]:
    return list(text) if level == "char" else text.split()


@dataclasses.dataclass(frozen=True)
class Vocab:
    """A vocabulary: ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, [``<unk>`` = 3], then ``symbols``.

    Usually built with :meth:`from_corpus`; ``Vocab(symbols, level, unk)`` rebuilds the
    same vocabulary from its fields (e.g. saved as JSON next to a checkpoint).

    Attributes:
        symbols: the corpus tokens, in id order, without the reserved tokens.
        level: ``"char"`` (a token is a character) or ``"word"`` (whitespace-separated).
        unk: whether there is an ``<unk>`` token (id 3) for tokens outside the vocabulary.

    Example:
        >>> from jdl.text import Vocab
        >>> vocab = Vocab.from_corpus(["the cat sat", "the dog"], level="word", unk=True)
        >>> vocab.tokens
        ('<pad>', '<bos>', '<eos>', '<unk>', 'cat', 'dog', 'sat', 'the')
        >>> ids, lengths = vocab.encode(["the cow sat"], add_eos=True)
        >>> ids, lengths
        (array([[7, 3, 6, 2]], dtype=int32), array([4], dtype=int32))
        >>> vocab.decode(ids[0])
        'the <unk> sat'
    """

    symbols: tuple[str, ...]
    level: Level = "char"
    unk: bool = False
    _index: dict = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        where = "Vocab"
        check_declared(where, Vocab, self)
        symbols = tuple(self.symbols) if not isinstance(self.symbols, str) else None
        if symbols is None or not all(isinstance(s, str) for s in symbols):
            raise TypeError(f"{where}: expected symbols to be a sequence of str, got {self.symbols!r}")
        for s in symbols:
            if s in _SPECIALS + (_UNK,):
                raise ValueError(f"{where}: the symbol {s!r} is a reserved token; it has its own id")
            if _split(s, self.level) != [s]:  # a symbol is one token
                kind = "single characters" if self.level == "char" else "words without whitespace"
                raise ValueError(f"{where}: expected {kind} for level={self.level!r}, got {s!r}")
        if len(set(symbols)) != len(symbols):
            duplicates = sorted(s for s, c in Counter(symbols).items() if c > 1)
            raise ValueError(f"{where}: expected distinct symbols, got duplicates {duplicates}")
        object.__setattr__(self, "symbols", symbols)
        offset = len(self.tokens) - len(symbols)
        object.__setattr__(self, "_index", {s: offset + i for i, s in enumerate(symbols)})

    @classmethod
    @checks_arguments
    def from_corpus(
        cls, texts: Iterable[str], *, level: Level = "char", unk: bool = False, min_count: PositiveInt = 1
    ) -> Vocab:
        """The vocabulary of every token occurring at least ``min_count`` times in ``texts``.

        The tokens are sorted (Unicode code point order), so the ids do not depend on the
        order of the corpus. With ``min_count > 1`` the rarer tokens are left out, which is
        only useful together with ``unk=True``.

        Example:
            >>> from jdl.text import Vocab
            >>> Vocab.from_corpus(["abba", "cab"]).tokens
            ('<pad>', '<bos>', '<eos>', 'a', 'b', 'c')
        """
        where = "Vocab.from_corpus"
        counts = Counter(tok for t in _texts_list(where, texts) for tok in _split(t, level))
        reserved = sorted(set(counts) & {*_SPECIALS, _UNK})
        if reserved:
            raise ValueError(f"{where}: the corpus contains the reserved token(s) {reserved}, whose ids are special")
        return cls(tuple(sorted(t for t, c in counts.items() if c >= min_count)), level, unk)

    @property
    def tokens(self) -> tuple[str, ...]:
        """Every token, indexed by id: the reserved ones, then :attr:`symbols`."""
        return _SPECIALS + ((_UNK,) if self.unk else ()) + self.symbols

    @property
    def pad_id(self) -> int:
        return PAD_ID

    @property
    def bos_id(self) -> int:
        return BOS_ID

    @property
    def eos_id(self) -> int:
        return EOS_ID

    @property
    def unk_id(self) -> int | None:
        """3 when the vocabulary has ``<unk>``, else None."""
        return UNK_ID if self.unk else None

    def __len__(self) -> int:
        """The number of ids (the embedding table's and the output layer's size)."""
        return len(self.tokens)

    def tokenize(self, text: str) -> list[str]:
        """The tokens of one text: its characters, or its whitespace-separated words."""
        check_that(isinstance(text, str), "Vocab.tokenize", "a str", type(text).__name__, TypeError)
        return _split(text, self.level)

    def encode(
        self,
        texts: Iterable[str],
        *,
        max_length: int | None = None,
        add_bos: bool = False,
        add_eos: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Token ids of each text, padded with ``<pad>`` = 0: ``(ids, lengths)``.

        ``ids`` is ``int32 (len(texts), max_length)``; row ``i`` holds ``[<bos>]`` (with
        ``add_bos``), the ids of ``texts[i]``'s tokens, ``[<eos>]`` (with ``add_eos``),
        then padding. ``lengths[i]`` (``int32``) counts the non-pad ids, ``<bos>`` and
        ``<eos>`` included. ``max_length=None`` uses the longest row; a row longer than
        ``max_length`` is an error, never truncated. A token outside the vocabulary is an
        error naming it, unless the vocabulary has ``<unk>``.

        Example:
            >>> from jdl.text import Vocab
            >>> vocab = Vocab.from_corpus(["ab"])
            >>> vocab.encode(["ab", "b", ""], max_length=3, add_eos=True)
            (array([[3, 4, 2],
                   [4, 2, 0],
                   [2, 0, 0]], dtype=int32), array([3, 2, 1], dtype=int32))
        """
        where = "Vocab.encode"
        texts = _texts_list(where, texts)
        check_int_at_least(where, "max_length", max_length, 0, none_ok=True)
        bos, eos = [BOS_ID] if add_bos else [], [EOS_ID] if add_eos else []
        rows = [bos + self._ids(where, i, text) + eos for i, text in enumerate(texts)]
        per_text = "tokens per text (with <bos>/<eos>)" if add_bos or add_eos else "tokens per text"
        for i, row in enumerate(rows):
            check_that(max_length is None or len(row) <= max_length, where, f"at most max_length = {max_length} "
                       f"{per_text}", f"{len(row)} for texts[{i}] = {texts[i]!r}; raise max_length (nothing is truncated)")
        lengths = np.array([len(r) for r in rows], dtype=np.int32)
        width = max_length if max_length is not None else int(lengths.max(initial=0))
        ids = np.full((len(rows), width), PAD_ID, dtype=np.int32)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        return ids, lengths

    def _ids(self, where: str, i: int, text: str) -> list[int]:
        """The ids of ``texts[i]``'s tokens; an unknown token is ``<unk>``, or an error without one."""
        tokens = _split(text, self.level)
        unknown = [token for token in tokens if token not in self._index]
        if unknown and not self.unk:
            raise ValueError(f"{where}: the token {unknown[0]!r} in texts[{i}] = {text!r} is not in the vocabulary of "
                             f"{len(self)} tokens; build the Vocab from a corpus with it, or with unk=True (<unk>)")
        return [self._index.get(token, UNK_ID) for token in tokens]

    def decode(self, ids: Any) -> str | list[str]:
        """The text of a row of ids, or the list of texts of a 2-D array of ids.

        Reading stops at the first ``<eos>``; ``<pad>`` and ``<bos>`` are dropped anywhere
        before it (so a decoder's output with or without its start token decodes the same).
        ``<unk>`` decodes as the string ``"<unk>"``. Characters are joined with ``""``, words
        with ``" "``. Accepts NumPy or JAX integer arrays and lists.

        Example:
            >>> from jdl.text import Vocab
            >>> vocab = Vocab.from_corpus(["ab"])
            >>> vocab.decode([1, 3, 4, 3, 2, 4, 4])
            'aba'
        """
        where = "Vocab.decode"
        arr = np.asarray(ids)
        if arr.size == 0 and arr.dtype != np.int32:
            arr = arr.astype(np.int32)  # np.asarray([]) is float64
        check_that(np.issubdtype(arr.dtype, np.integer), where, "integer ids", f"dtype {arr.dtype}", TypeError)
        check_that(arr.ndim in (1, 2), where, "ids of rank 1 (one text) or 2 (batch, length)", f"shape {arr.shape}")
        bad = arr[(arr < 0) | (arr >= len(self))]
        if bad.size:
            raise ValueError(f"{where}: expected ids in [0, {len(self)}) (the vocabulary size), got {int(bad[0])}")
        if arr.ndim == 2:
            return [self._decode_row(row) for row in arr.tolist()]
        return self._decode_row(arr.tolist())

    def _decode_row(self, row: list[int]) -> str:
        tokens = self.tokens
        out = []
        for i in row:
            if i == EOS_ID:
                break
            if i not in (PAD_ID, BOS_ID):
                out.append(tokens[i])
        return ("" if self.level == "char" else " ").join(out)
