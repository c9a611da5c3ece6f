"""jdl.text.Vocab: ids, encode/decode round trips, padding, <bos>/<eos>/<unk>, and errors."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jdl import text
from jdl.text import Vocab

DATES = ["samedi 21 novembre 2026", "21. November 2026", "November 21, 2026", "2026-11-21"]


def test_reserved_ids_and_sorted_tokens():
    vocab = Vocab.from_corpus(["cab", "bad"])
    assert vocab.tokens == ("<pad>", "<bos>", "<eos>", "a", "b", "c", "d")
    assert (vocab.pad_id, vocab.bos_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2, None)
    assert (text.PAD_ID, text.BOS_ID, text.EOS_ID, text.UNK_ID) == (0, 1, 2, 3)
    assert len(vocab) == 7
    with_unk = Vocab.from_corpus(["cab", "bad"], unk=True)
    assert with_unk.tokens[:4] == ("<pad>", "<bos>", "<eos>", "<unk>") and with_unk.unk_id == 3
    assert with_unk.tokens[4:] == vocab.tokens[3:] and len(with_unk) == 8
    # The ids depend on the corpus's tokens, not on its order.
    assert Vocab.from_corpus(["bad", "cab"]) == vocab
    # The fields rebuild the same vocabulary (e.g. from JSON).
    assert Vocab(vocab.symbols, vocab.level, vocab.unk) == vocab


@pytest.mark.parametrize("level", ["char", "word"])
def test_round_trip(level):
    vocab = Vocab.from_corpus(DATES, level=level)
    for add_bos in (False, True):
        for add_eos in (False, True):
            ids, lengths = vocab.encode(DATES, add_bos=add_bos, add_eos=add_eos)
            assert ids.dtype == np.int32 and lengths.dtype == np.int32
            assert ids.shape == (len(DATES), int(lengths.max()))
            expected = DATES if level == "char" else [" ".join(d.split()) for d in DATES]
            assert vocab.decode(ids) == expected
            assert [vocab.decode(row) for row in ids] == expected
            assert vocab.decode(jnp.asarray(ids)) == expected  # JAX arrays too


def test_encode_ids_padding_and_lengths():
    vocab = Vocab.from_corpus(["ab c"])  # ' ' = 3, a = 4, b = 5, c = 6
    ids, lengths = vocab.encode(["ab c", "c", ""], max_length=7, add_bos=True, add_eos=True)
    np.testing.assert_array_equal(
        ids,
        [[1, 4, 5, 3, 6, 2, 0],
         [1, 6, 2, 0, 0, 0, 0],
         [1, 2, 0, 0, 0, 0, 0]],
    )
    np.testing.assert_array_equal(lengths, [6, 3, 2])
    # The lengths count exactly the non-pad ids, and the padding is all at the end.
    np.testing.assert_array_equal(lengths, (ids != vocab.pad_id).sum(axis=1))
    assert np.all((ids != 0) == (np.arange(7) < lengths[:, None]))
    # Without <bos>/<eos>, and with the width of the longest text.
    ids, lengths = vocab.encode(["ab c", "c"])
    np.testing.assert_array_equal(ids, [[4, 5, 3, 6], [6, 0, 0, 0]])
    np.testing.assert_array_equal(lengths, [4, 1])
    # A text exactly max_length long fits.
    ids, _ = vocab.encode(["abc"], max_length=3)
    assert ids.shape == (1, 3)
    # No texts at all.
    ids, lengths = vocab.encode([], max_length=5)
    assert ids.shape == (0, 5) and lengths.shape == (0,)


def test_word_level_and_unknown_tokens():
    vocab = Vocab.from_corpus(["the cat sat", "the  dog\tsat"], level="word", unk=True)
    assert vocab.symbols == ("cat", "dog", "sat", "the")
    ids, lengths = vocab.encode(["the cow sat on the mat"], add_eos=True)
    np.testing.assert_array_equal(ids, [[7, 3, 6, 3, 7, 3, 2]])
    assert vocab.decode(ids[0]) == "the <unk> sat <unk> the <unk>"
    assert vocab.tokenize("  the  cat ") == ["the", "cat"]
    # A reserved token's spelling in a text is an ordinary (here: unknown) word, never a special id.
    ids, _ = vocab.encode(["<eos> the"])
    np.testing.assert_array_equal(ids, [[3, 7]])


def test_min_count_leaves_out_rare_tokens():
    vocab = Vocab.from_corpus(["aab", "ac"], min_count=2, unk=True)
    assert vocab.symbols == ("a",)
    np.testing.assert_array_equal(vocab.encode(["abc"])[0], [[4, 3, 3]])


def test_decode_stops_at_eos_and_drops_pad_and_bos():
    vocab = Vocab.from_corpus(["abc"])  # a = 3, b = 4, c = 5
    assert vocab.decode([1, 3, 4, 2, 5, 5]) == "ab"  # everything after <eos> is ignored
    assert vocab.decode([3, 0, 4, 1, 5]) == "abc"  # no <eos>: read to the end, pad/bos dropped
    assert vocab.decode([2, 3]) == ""
    assert vocab.decode(np.array([], np.int32)) == ""
    assert vocab.decode([]) == ""
    assert vocab.decode(np.array([[1, 5, 2], [4, 4, 0]])) == ["c", "bb"]
    assert vocab.decode(np.zeros((0, 4), np.int32)) == []


def test_token_outside_the_vocabulary_is_an_error_naming_it():
    vocab = Vocab.from_corpus(["abc"])
    with pytest.raises(
        ValueError,
        match=r"Vocab.encode: the token 'z' in texts\[1\] = 'az' is not in the vocabulary of 6 tokens",
    ):
        vocab.encode(["ab", "az"])
    words = Vocab.from_corpus(["the cat"], level="word")
    with pytest.raises(ValueError, match=r"the token 'dog' in texts\[0\] = 'the dog'.*unk=True"):
        words.encode(["the dog"])


def test_text_longer_than_max_length_is_an_error_not_a_truncation():
    vocab = Vocab.from_corpus(["abc"])
    with pytest.raises(
        ValueError,
        match=r"Vocab.encode: expected at most max_length = 4 tokens per text \(with <bos>/<eos>\), "
        r"got 5 for texts\[1\] = 'abc'",
    ):
        vocab.encode(["a", "abc"], max_length=4, add_bos=True, add_eos=True)
    with pytest.raises(ValueError, match=r"max_length = 2 tokens per text, got 3"):
        vocab.encode(["abc"], max_length=2)
    with pytest.raises(ValueError, match=r"expected max_length to be an int >= 0 or None, got -1"):
        vocab.encode(["abc"], max_length=-1)


def test_decode_errors():
    vocab = Vocab.from_corpus(["abc"])
    with pytest.raises(ValueError, match=r"Vocab.decode: expected ids in \[0, 6\) \(the vocabulary size\), got 6"):
        vocab.decode([3, 6])
    with pytest.raises(ValueError, match=r"got -1"):
        vocab.decode([[3, -1]])
    with pytest.raises(TypeError, match=r"Vocab.decode: expected integer ids, got dtype float32"):
        vocab.decode(np.array([3.0], np.float32))
    with pytest.raises(
        ValueError, match=r"expected ids of rank 1 \(one text\) or 2 \(batch, length\), got shape \(1, 1, 1\)"
    ):
        vocab.decode(np.zeros((1, 1, 1), np.int32))


def test_construction_errors():
    with pytest.raises(TypeError, match=r"Vocab.encode: expected a list of str, got str; wrap a single text in a list"):
        Vocab.from_corpus(["abc"]).encode("abc")
    with pytest.raises(TypeError, match=r"Vocab.from_corpus: expected texts\[1\] to be a str, got int"):
        Vocab.from_corpus(["abc", 3])
    with pytest.raises(ValueError, match=r"Vocab.from_corpus: expected level in \('char', 'word'\), got 'bpe'"):
        Vocab.from_corpus(["abc"], level="bpe")
    with pytest.raises(ValueError, match=r"Vocab.from_corpus: the corpus contains the reserved token\(s\) \['<eos>'\]"):
        Vocab.from_corpus(["a <eos>"], level="word")
    with pytest.raises(ValueError, match=r"Vocab: expected distinct symbols, got duplicates \['a'\]"):
        Vocab(("a", "b", "a"))
    with pytest.raises(ValueError, match=r"Vocab: expected single characters for level='char', got 'ab'"):
        Vocab(("ab",))
    with pytest.raises(ValueError, match=r"Vocab: the symbol '<pad>' is a reserved token"):
        Vocab(("<pad>",), level="word")
    with pytest.raises(ValueError, match=r"Vocab: expected words without whitespace for level='word', got 'a b'"):
        Vocab(("a b",), level="word")
