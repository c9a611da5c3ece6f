"""jdl.metrics.corpus_bleu / sentence_bleu against sacrebleu (tokenize="none"), the seeds'
worked example, and bad input."""
from __future__ import annotations

import math

import numpy as np
import pytest

sacrebleu = pytest.importorskip("sacrebleu")

from jdl import metrics  # noqa: E402

TOL = 1e-6
SMOOTHS = ["exp", "floor", "add-k", "none"]


def _streams(references):
    """Our references[i] (the refs of hypothesis i) as sacrebleu's reference streams.

    sacrebleu wants one stream per reference index; a hypothesis with fewer references
    gets None in the streams it lacks, which sacrebleu skips.
    """
    num_streams = max(len(refs) for refs in references)
    return [[refs[j] if j < len(refs) else None for refs in references] for j in range(num_streams)]


def _sacre_corpus(hyps, refs, max_order=4, smooth="exp", effective_order=False):
    bleu = sacrebleu.metrics.BLEU(
        tokenize="none",
        smooth_method=smooth,
        effective_order=effective_order,
        max_ngram_order=max_order,
    )
    return bleu.corpus_score(hyps, _streams(refs))


def _sacre_sentence(hyp, refs, max_order=4, smooth="exp", effective_order=True):
    bleu = sacrebleu.metrics.BLEU(
        tokenize="none",
        smooth_method=smooth,
        effective_order=effective_order,
        max_ngram_order=max_order,
    )
    return bleu.sentence_score(hyp, refs)


def _assert_same(got, expected, smooth="exp"):
    assert isinstance(got.score, float)
    assert got.score == pytest.approx(expected.score, abs=TOL, rel=TOL)
    np.testing.assert_allclose(got.precisions, expected.precisions, rtol=TOL, atol=TOL)
    assert got.brevity_penalty == pytest.approx(expected.bp, abs=TOL, rel=TOL)
    assert (got.sys_len, got.ref_len) == (expected.sys_len, expected.ref_len)
    if smooth != "add-k":  # sacrebleu reports add-k's smoothed counts; ours are the raw ones
        assert list(got.counts) == list(expected.counts)
        assert list(got.totals) == list(expected.totals)


# Words drawn from a small vocabulary, so n-grams repeat and match often enough that the
# scores spread between 0 and 100.
WORDS = ["the", "a", "cat", "dog", "sat", "on", "mat", "red", "café", "日本"]


def _random_corpus(seed, size=12, max_refs=3, max_len=9, p_empty=0.1):
    rng = np.random.default_rng(seed)

    def sentence(low=0):
        return " ".join(rng.choice(WORDS, size=rng.integers(low, max_len + 1)))

    hyps, refs = [], []
    for _ in range(size):
        ref_list = [sentence(low=1) for _ in range(rng.integers(1, max_refs + 1))]
        if rng.random() < p_empty:
            hyp = ""
        elif rng.random() < 0.5:  # a noisy copy of a reference: high n-gram overlap
            words = rng.choice(ref_list).split()
            keep = [w for w in words if rng.random() > 0.2]
            hyp = " ".join(keep + list(rng.choice(WORDS, size=rng.integers(0, 3))))
        else:
            hyp = sentence()
        hyps.append(hyp)
        refs.append(ref_list)
    return hyps, refs


CASES = {
    "seeds_pair": (["The ball is blue"], [["The ball has a blue color"]]),
    "seeds_repeated_words": (["The ball the ball"], [["The ball has a blue color"]]),
    "perfect_match": (["the cat sat on the mat", "a dog"], [["the cat sat on the mat"], ["a dog"]]),
    "repeated_words_clipped": (
        ["the the the the the the the"],
        [["the cat is on the mat", "there is a cat on the mat"]],
    ),
    "several_references": (
        [
            "it is a guide to action which ensures that the military always obeys the commands "
            "of the party",
            "he read the book because he was interested in world history",
        ],
        [
            [
                "it is a guide to action that ensures that the military will forever heed party "
                "commands",
                "it is the guiding principle which guarantees the military forces always being "
                "under the command of the party",
                "it is the practical guide for the army always to heed the directions of the party",
            ],
            ["he was interested in world history because he read the book"],
        ],
    ),
    "variable_number_of_references": (
        ["a b c d e", "x y z", "p q"],
        [["a b c d e f"], ["x y", "x y z w", "z y x"], ["p q r", "q p"]],
    ),
    "empty_hypotheses": (["", "the cat sat", ""], [["the cat"], ["the cat sat on"], ["a dog"]]),
    "all_hypotheses_empty": (["", ""], [["the cat"], ["a dog"]]),
    "no_4gram_match": (["a b c d x e f g h"], [["a b c d y e f g h"]]),
    "no_match_at_all": (["x y z"], [["a b c"]]),
    "hypotheses_shorter_than_4_tokens": (["a b", "c d e"], [["a b"], ["c d e"]]),
    "hypothesis_longer_than_references": (["a b c d e f g h i j k l"], [["a b c d e f", "a b c"]]),
    "hypothesis_shorter_than_references": (["a b c"], [["a b c d e f g h", "a b c d e f"]]),
    "closest_length_tie_takes_shorter": (["a b c d e"], [["a b c d e f g", "a b c"]]),
    "empty_reference": (["a b c d"], [["", "a b c d e f g h i"]]),
    "whitespace_and_unicode": (
        ["  café \t au  lait\n", "日本 語"],
        [["café au lait"], ["日本 語 です"]],
    ),
}


@pytest.mark.parametrize("smooth", SMOOTHS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_corpus_bleu_matches_sacrebleu_on_hand_made_corpora(name, smooth):
    hyps, refs = CASES[name]
    for max_order in (4, 2):
        for effective_order in (False, True):
            got = metrics.corpus_bleu(
                hyps, refs, max_order=max_order, smooth=smooth, effective_order=effective_order
            )
            expected = _sacre_corpus(hyps, refs, max_order, smooth, effective_order)
            _assert_same(got, expected, smooth)


@pytest.mark.parametrize("smooth", SMOOTHS)
@pytest.mark.parametrize("name", sorted(CASES))
def test_sentence_bleu_matches_sacrebleu_on_hand_made_sentences(name, smooth):
    hyps, refs = CASES[name]
    for hyp, ref_list in zip(hyps, refs):
        for effective_order in (True, False):
            got = metrics.sentence_bleu(hyp, ref_list, smooth=smooth, effective_order=effective_order)
            _assert_same(got, _sacre_sentence(hyp, ref_list, 4, smooth, effective_order), smooth)


def test_defaults_match_sacrebleu_top_level_functions():
    """The defaults are sacrebleu's: "exp" smoothing; effective order for sentences only."""
    scores = []
    for seed in range(20):
        hyps, refs = _random_corpus(seed)
        expected = sacrebleu.corpus_bleu(hyps, _streams(refs), tokenize="none")
        got = metrics.corpus_bleu(hyps, refs)
        _assert_same(got, expected)
        scores.append(got.score)
        for hyp, ref_list in zip(hyps, refs):
            expected = sacrebleu.sentence_bleu(hyp, ref_list, tokenize="none")
            _assert_same(metrics.sentence_bleu(hyp, ref_list), expected)
    # The random corpora are neither trivially 0 nor 100: the comparison has teeth.
    assert 0 < min(scores) and max(scores) < 95 and max(scores) - min(scores) > 20


@pytest.mark.parametrize("smooth", SMOOTHS)
def test_matches_sacrebleu_on_random_corpora(smooth):
    for seed in range(25):
        hyps, refs = _random_corpus(100 + seed, size=int(1 + seed % 7), max_len=6 + seed % 5)
        for max_order in (1, 3, 4, 5):
            got = metrics.corpus_bleu(hyps, refs, max_order=max_order, smooth=smooth)
            _assert_same(got, _sacre_corpus(hyps, refs, max_order, smooth), smooth)
        for hyp, ref_list in zip(hyps, refs):
            got = metrics.sentence_bleu(hyp, ref_list, smooth=smooth)
            _assert_same(got, _sacre_sentence(hyp, ref_list, 4, smooth), smooth)


def test_seeds_worked_example():
    """The seeds' pair: "The ball is blue" against "The ball has a blue color"."""
    hyp, ref = "The ball is blue", "The ball has a blue color"
    bleu = metrics.corpus_bleu([hyp], [[ref]], smooth="none")
    # Unigrams: The, ball, blue match (3/4); bigrams: "The ball" (1/3); trigrams: none (0/2).
    assert bleu.counts == (3, 1, 0, 0) and bleu.totals == (4, 3, 2, 1)
    assert bleu.precisions[:2] == pytest.approx((75.0, 100 / 3))
    # BP = exp(1 - r / c) with r = 6 reference words and c = 4 predicted ones.
    assert bleu.brevity_penalty == pytest.approx(math.exp(1 - 6 / 4))
    assert bleu.score == 0.0  # no trigram match: the unsmoothed geometric mean is 0
    # Up to bigrams, BLEU = BP * (p_1 p_2)^(1/2) = exp(-0.5) * (3/4 * 1/3)^(1/2) = exp(-0.5) / 2.
    bigram = metrics.corpus_bleu([hyp], [[ref]], max_order=2, smooth="none")
    assert bigram.score == pytest.approx(100 * math.exp(-0.5) / 2, rel=1e-12)
    # The default "exp" smoothing gives the two unmatched orders 1/(2 * 2) and 1/(4 * 1).
    smoothed = metrics.corpus_bleu([hyp], [[ref]])
    expected = 100 * math.exp(-0.5) * (3 / 4 * 1 / 3 * 1 / 4 * 1 / 4) ** 0.25
    assert smoothed.score == pytest.approx(expected, rel=1e-12)
    assert float(smoothed) == smoothed.score
    # The seeds' failure case: "The ball the ball" has every word in the reference, but
    # clipping counts "The" and "ball" once each, as often as the reference has them.
    clipped = metrics.corpus_bleu(["The ball the ball"], [[ref]])
    assert clipped.counts[0] == 2 and clipped.precisions[0] == 50.0


def test_perfect_match_is_100_and_empty_hypotheses_are_0():
    assert metrics.corpus_bleu(["a b c d e"], [["a b c d e"]]).score == pytest.approx(100.0)
    assert metrics.sentence_bleu("a b", ["a b"]).score == pytest.approx(100.0)
    empty = metrics.corpus_bleu(["", ""], [["a b"], ["c"]])
    assert empty.score == 0.0 and empty.brevity_penalty == 0.0 and empty.sys_len == 0
    assert metrics.sentence_bleu("", ["a b"]).score == 0.0


def test_corpus_bleu_is_not_the_mean_of_sentence_bleus():
    hyps, refs = _random_corpus(7)
    corpus = metrics.corpus_bleu(hyps, refs).score
    mean = np.mean([metrics.sentence_bleu(h, r).score for h, r in zip(hyps, refs)])
    assert abs(corpus - mean) > 1.0


def test_accepts_tuples_and_generators():
    hyps, refs = CASES["several_references"]
    expected = metrics.corpus_bleu(hyps, refs).score
    assert metrics.corpus_bleu(tuple(hyps), tuple(tuple(r) for r in refs)).score == expected
    assert metrics.corpus_bleu((h for h in hyps), (r for r in refs)).score == expected


GOOD = (["a b"], [["a b"]])


@pytest.mark.parametrize(
    "args, kwargs, error, match",
    [
        ((["a b", "c"], [["a b"]]), {}, ValueError,
         r"corpus_bleu: expected one list of references per hypothesis .* got 2 hypotheses and 1"),
        ((["a b"], [["a b"], ["c"]]), {}, ValueError, r"got 1 hypotheses and 2 lists"),
        ((["a b", "c"], [["a b"], []]), {}, ValueError,
         r"corpus_bleu: expected references\[1\] to hold at least one reference"),
        ((["a b"], ["a b"]), {}, TypeError,
         r"corpus_bleu: expected references\[0\] to be a list .* got str; wrap a single reference"),
        ((["a b"], [["a b", 3]]), {}, TypeError,
         r"corpus_bleu: expected references\[0\]\[1\] to be a str, got int"),
        ((["a b", None], [["a b"], ["c"]]), {}, TypeError,
         r"corpus_bleu: expected hypotheses\[1\] to be a str, got NoneType"),
        (("a b", [["a b"]]), {}, TypeError,
         r"corpus_bleu: expected hypotheses to be a list of str, got str; for one sentence use sentence_bleu"),
        (([], []), {}, ValueError, r"corpus_bleu: expected at least one hypothesis"),
        (GOOD, {"max_order": 0}, ValueError, r"corpus_bleu: expected max_order to be an int >= 1, got 0"),
        (GOOD, {"smooth": "add-one"}, ValueError, r"corpus_bleu: expected smooth to be one of .* got 'add-one'"),
        (GOOD, {"smooth_value": 0.5}, ValueError, r"corpus_bleu: smooth='exp' takes no smooth_value"),
        (GOOD, {"smooth": "floor", "smooth_value": -1}, ValueError, r"expected smooth_value to be a number > 0"),
    ],
)
def test_corpus_bleu_bad_input(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        metrics.corpus_bleu(*args, **kwargs)


@pytest.mark.parametrize(
    "args, error, match",
    [
        (("a b", "a b"), TypeError, r"sentence_bleu: expected references to be a list .* got str; wrap"),
        (("a b", []), ValueError, r"sentence_bleu: expected references to hold at least one reference"),
        ((["a b"], ["a b"]), TypeError,
         r"sentence_bleu: expected the hypothesis to be a str, got list; for a list of hypotheses use corpus_bleu"),
        (("a b", [b"a b"]), TypeError, r"sentence_bleu: expected references\[0\] to be a str, got bytes"),
    ],
)
def test_sentence_bleu_bad_input(args, error, match):
    with pytest.raises(error, match=match):
        metrics.sentence_bleu(*args)
