"""Metrics: classification metrics of logits and labels, and BLEU for translation.

``logits`` have shape ``(..., num_classes)`` and ``labels`` the integer shape
``logits.shape[:-1]``; each metric is a scalar averaged over every leading axis. Inputs
are checked at trace time, and concrete labels for range, like the losses in :mod:`jdl.losses`.

:func:`corpus_bleu` and :func:`sentence_bleu` score whitespace-tokenised strings in pure
Python (decode the model's ids to text first, e.g. with :mod:`jdl.text`); they equal
sacrebleu's scores with ``tokenize="none"``.

Example:
    >>> import jax.numpy as jnp, jdl
    >>> logits = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    >>> jdl.metrics.accuracy(logits, jnp.array([1, 1, 1]))
    Array(0.6666667, dtype=float32)
"""
from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jdl._checks import check_int_at_least, check_that
from jdl.losses import check_integer_labels, masked_mean

__all__ = ["BleuScore", "accuracy", "masked_accuracy", "corpus_bleu", "sentence_bleu", "top_k_accuracy",
           "dead_unit_fraction"]


def _check_inputs(where: str, logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> None:
    """Integer labels of ``logits.shape[:-1]`` (concrete ones in range), at least one class, and
    without a mask at least one example: a mean over none is undefined."""
    check_integer_labels(where, logits, labels, mask=mask)


def _correct(hit: jax.Array, logits: jax.Array, labels: jax.Array) -> jax.Array:
    """``hit`` (one bool per example) as float32; NaN where the example's logits hold a NaN or its
    label is outside ``[0, num_classes)``.

    A prediction from a row holding NaN is no prediction (``argmax`` would pick the NaN's
    class), and an out-of-range label (unchecked under ``jit``) no answer: either makes the
    metric NaN, as it makes the cross-entropy NaN, instead of an ordinary number.
    """
    num_classes = logits.shape[-1]
    defined = ~jnp.any(jnp.isnan(logits), axis=-1) & (labels >= 0) & (labels < num_classes)
    return jnp.where(defined, hit.astype(jnp.float32), jnp.nan)


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The fraction of examples with ``argmax(logits) == label``: ``mean([argmax_c z_c = y])``.

    Ties go to the lowest class index, as ``jnp.argmax``. Returns a float32 scalar, NaN if
    any example's logits hold a NaN (or, under ``jit``, its label is out of range).

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
        >>> jdl.metrics.accuracy(logits, jnp.array([0, 1]))
        Array(0.5, dtype=float32)
    """
    _check_inputs("accuracy", logits, labels)
    return jnp.mean(_correct(jnp.argmax(logits, axis=-1) == labels, logits, labels))


def masked_accuracy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The fraction of real steps with ``argmax(z_{bt}) == y_{bt}`` (a float32 scalar).

    ``mask`` (bool, the labels' shape; ``jdl.losses.sequence_mask(lengths, time)``) marks
    the real steps of a padded batch; ``None`` means every step, i.e. :func:`accuracy`. A real
    step whose logits hold a NaN makes it NaN; a masked-out step counts for nothing, whatever
    it holds.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> logits = jnp.array([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
        >>> jdl.metrics.masked_accuracy(logits, jnp.array([[1, 1, 0]]), jnp.array([[True, True, False]]))
        Array(0.5, dtype=float32)
    """
    _check_inputs("masked_accuracy", logits, labels, mask)
    return masked_mean(_correct(jnp.argmax(logits, axis=-1) == labels, logits, labels), mask)


def top_k_accuracy(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """The fraction of examples whose label is among the ``k`` largest logits.

    ``k = 1`` is :func:`accuracy`. Among tied logits the lower class index ranks first,
    as ``jax.lax.top_k`` and ``jnp.argmax``. Returns a float32 scalar, NaN if any example's
    logits hold a NaN (or, under ``jit``, its label is out of range).

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> logits = jnp.array([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
        >>> jdl.metrics.top_k_accuracy(logits, jnp.array([1, 3]), k=2)
        Array(0.5, dtype=float32)
    """
    where = "top_k_accuracy"
    _check_inputs(where, logits, labels)
    num_classes = logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= num_classes:
        raise ValueError(f"{where}: expected k to be an int in [1, num_classes = {num_classes}], got {k!r}")
    _, top_classes = jax.lax.top_k(logits, int(k))
    hit = jnp.any(top_classes == labels[..., None], axis=-1)
    return jnp.mean(_correct(hit, logits, labels))


def dead_unit_fraction(activations: jax.Array, batch_axes: int | Sequence[int] = 0) -> jax.Array:
    """The fraction of ReLU units that are dead on a batch: ``h <= 0`` for every example.

    A dead unit passes no gradient (``relu'(z) = 0`` for ``z <= 0``), so on this batch its
    incoming weights do not learn; the course's advice is to "keep count of dead
    activations". ``activations`` are a layer's ReLU outputs or its pre-activations (both
    are ``<= 0`` exactly where the unit is off: :func:`jdl.capture_intermediates` gives
    either). ``batch_axes`` are the example axes (``(0, 1)`` for ``(batch, time, units)``);
    every other axis indexes a unit. A float32 scalar; NaN if any activation is NaN.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> h = jnp.array([[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]])  # unit 0 is off for both examples
        >>> jdl.metrics.dead_unit_fraction(h)
        Array(0.33333334, dtype=float32)
    """
    where = "dead_unit_fraction"
    check_that(hasattr(activations, "shape") and jnp.issubdtype(activations.dtype, jnp.floating), where,
               "floating-point activations", getattr(activations, "dtype", type(activations).__name__), TypeError)
    axes = (batch_axes,) if isinstance(batch_axes, int) else tuple(batch_axes)
    ndim = activations.ndim
    check_that(all(isinstance(a, int) and -ndim <= a < ndim for a in axes) and len({a % ndim for a in axes}) == len(axes)
               and len(axes) < ndim, where, f"distinct batch_axes of an array of rank {ndim}, leaving a unit axis",
               repr(batch_axes))
    dead = jnp.all(activations <= 0, axis=axes)
    fraction = jnp.mean(dead.astype(jnp.float32))
    return jnp.where(jnp.any(jnp.isnan(activations)), jnp.nan, fraction)


# --------------------------------------------------------------------------------------
# BLEU (pure Python: a metric of strings, computed outside any jitted code)
# --------------------------------------------------------------------------------------

_SMOOTH_DEFAULTS = {"exp": None, "floor": 0.1, "add-k": 1, "none": None}


class BleuScore(NamedTuple):
    """A BLEU score with the statistics behind it; ``.score`` is the number to report.

    ``score`` is on sacrebleu's 0-100 scale, ``precisions`` are the (smoothed) n-gram
    precisions ``p_1..p_N`` on the same scale, ``counts[n-1]`` and ``totals[n-1]`` the
    clipped matches and the hypothesis n-grams of order ``n`` summed over the corpus
    (before any smoothing), ``sys_len`` and ``ref_len`` the summed hypothesis and
    closest-reference lengths in tokens. ``float(bleu)`` is ``bleu.score``. A BleuScore
    is a tuple: write ``bleu.score``, not ``bleu``, into JSON.
    """

    score: float
    precisions: tuple[float, ...]
    brevity_penalty: float
    sys_len: int
    ref_len: int
    counts: tuple[int, ...]
    totals: tuple[int, ...]

    def __float__(self) -> float:
        return float(self.score)


def corpus_bleu(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    max_order: int = 4,
    smooth: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = False,
) -> BleuScore:
    """Corpus BLEU of ``hypotheses[i]`` against the references ``references[i]``, 0 to 100.

    Every string is split on whitespace (``str.split()``); nothing is lowercased or
    re-tokenised. For each hypothesis, an n-gram's count is clipped by its largest count in
    any one of that hypothesis's references, and the clipped matches ``c_n`` and the
    hypothesis n-grams ``t_n`` are summed over the corpus (n = 1..``max_order``). Then
    (Papineni et al. 2002; the seeds' "clipped n-gram precision, geometric mean, brevity
    penalty")::

        p_n  = c_n / t_n
        BP   = 1 if c >= r else exp(1 - r / c)   (BP = 0 if c = 0)
        BLEU = 100 * BP * exp(sum_n log(p_n) / N)          (N = max_order)

    where ``c`` is the total hypothesis length and ``r`` the sum over hypotheses of the
    reference length closest to the hypothesis's (on a tie, the shorter reference).

    This equals ``sacrebleu.corpus_bleu(hypotheses, ref_streams, tokenize="none")`` with
    the same ``smooth``/``smooth_value``/``effective_order``, where sacrebleu's
    ``ref_streams`` is the transpose of ``references`` (one stream per reference index,
    padded with ``None`` where a hypothesis has fewer references). Its conventions, kept
    here, are:

    - no clipped match of any order gives 0;
    - ``smooth="exp"`` (the default, NIST's "method 3"): the k-th order with no match gets
      ``p_n = 1 / (2^k t_n)``; ``"floor"``: ``p_n = smooth_value / t_n`` (default 0.1);
      ``"add-k"``: ``p_n = (c_n + k) / (t_n + k)`` for n >= 2 (default k = 1); ``"none"``:
      a zero precision makes BLEU 0;
    - an order with no hypothesis n-gram at all (every hypothesis shorter than n tokens)
      gives BLEU 0, unless ``effective_order=True``, which averages over the orders
      1..n-1 before it only.

    Returns a :class:`BleuScore`; the score is ``corpus_bleu(...).score``.

    Example (the seeds' pair; unigrams match 3/4, bigrams 1/3, and BP = exp(1 - 6/4)):
        >>> import math, jdl
        >>> hyp, ref = "The ball is blue", "The ball has a blue color"
        >>> bleu = jdl.metrics.corpus_bleu([hyp], [[ref]], max_order=2)
        >>> bleu.precisions
        (75.0, 33.333333333333336)
        >>> round(bleu.score, 4), round(100 * math.sqrt(3 / 4 * 1 / 3) * math.exp(-0.5), 4)
        (30.3265, 30.3265)
        >>> round(jdl.metrics.corpus_bleu([hyp], [[ref]]).score, 4)  # p_3, p_4 smoothed
        21.4441
    """
    where = "corpus_bleu"
    hyps = _check_strings(where, hypotheses, "hypotheses", "a list of str", "at least one hypothesis",
                          "; for one sentence use sentence_bleu")
    refs = _check_references_list(where, references, len(hyps))
    smooth_value = _check_bleu_options(where, max_order, smooth, smooth_value)
    stats = [_bleu_segment_stats(h, r, max_order) for h, r in zip(hyps, refs)]
    return _bleu_from_stats(stats, max_order, smooth, smooth_value, effective_order)


def sentence_bleu(
    hypothesis: str,
    references: Sequence[str],
    *,
    max_order: int = 4,
    smooth: str = "exp",
    smooth_value: float | None = None,
    effective_order: bool = True,
) -> BleuScore:
    """BLEU of one hypothesis against its references, 0 to 100.

    :func:`corpus_bleu` of a corpus of one sentence, except that ``effective_order``
    defaults to True: a hypothesis shorter than ``max_order`` tokens is scored on the
    orders it has, instead of getting 0. This equals
    ``sacrebleu.sentence_bleu(hypothesis, references, tokenize="none")`` (whose defaults
    are ``smooth_method="exp"``, ``use_effective_order=True``). BLEU is a corpus metric:
    the mean of sentence BLEUs is not the corpus BLEU.

    Example:
        >>> import jdl
        >>> round(jdl.metrics.sentence_bleu("a cat sat", ["a cat sat"]).score, 6)  # orders 1..3
        100.0
        >>> bleu = jdl.metrics.sentence_bleu("the the the the", ["the cat", "the the"])
        >>> bleu.counts, bleu.totals  # "the" is clipped to 2, "the the" to 1
        ((2, 1, 0, 0), (4, 3, 2, 1))
        >>> round(bleu.score, 4)
        31.9472
    """
    where = "sentence_bleu"
    check_that(isinstance(hypothesis, str), where, "the hypothesis to be a str", type(hypothesis).__name__ + (
        "; for a list of hypotheses use corpus_bleu" if _is_sequence(hypothesis) else ""), TypeError)
    refs = _check_references(where, references, "references")
    smooth_value = _check_bleu_options(where, max_order, smooth, smooth_value)
    stats = [_bleu_segment_stats(hypothesis, refs, max_order)]
    return _bleu_from_stats(stats, max_order, smooth, smooth_value, effective_order)


def _is_sequence(x: Any) -> bool:
    return isinstance(x, Iterable) and not isinstance(x, (str, bytes, Mapping))


def _check_strings(where: str, values: Any, what: str, expected: str, empty: str, hint: str) -> list[str]:
    """``values`` as a non-empty list of str; ``hint`` is added when a lone str was given instead."""
    check_that(_is_sequence(values), where, f"{what} to be {expected}",
               f"{type(values).__name__}{hint if isinstance(values, str) else ''}", TypeError)
    values = list(values)
    check_that(values, where, f"{empty}", "an empty list")
    for i, value in enumerate(values):
        check_that(isinstance(value, str), where, f"{what}[{i}] to be a str", type(value).__name__, TypeError)
    return values


def _check_references(where: str, references: Any, what: str) -> list[str]:
    return _check_strings(where, references, what, "a list of one or more reference str", f"{what} to hold at least "
                          f"one reference", f"; wrap a single reference in a list: [{references!r}]")


def _check_references_list(where: str, references: Any, num_hypotheses: int) -> list[list[str]]:
    layout = ("references[i] is the list of reference strings for hypotheses[i], the transpose of sacrebleu's "
              "reference streams")
    check_that(_is_sequence(references), where, f"references to be a list of lists of str ({layout})",
               type(references).__name__, TypeError)
    references = list(references)
    check_that(len(references) == num_hypotheses, where, f"one list of references per hypothesis ({layout})",
               f"{num_hypotheses} hypotheses and {len(references)} lists of references")
    return [_check_references(where, r, f"references[{i}]") for i, r in enumerate(references)]


def _check_bleu_options(where: str, max_order: Any, smooth: Any, smooth_value: Any) -> float | None:
    check_int_at_least(where, "max_order", max_order, 1)
    check_that(smooth in _SMOOTH_DEFAULTS, where, f"smooth to be one of {sorted(_SMOOTH_DEFAULTS)}", repr(smooth))
    if smooth_value is None:
        return _SMOOTH_DEFAULTS[smooth]
    if _SMOOTH_DEFAULTS[smooth] is None:
        raise ValueError(f"{where}: smooth={smooth!r} takes no smooth_value, got smooth_value={smooth_value!r}")
    if isinstance(smooth_value, bool) or not isinstance(smooth_value, numbers.Real) or smooth_value <= 0:
        raise ValueError(f"{where}: expected smooth_value to be a number > 0, got {smooth_value!r}")
    return smooth_value


def _ngram_counts(tokens: list[str], max_order: int) -> Counter:
    """Counts of every n-gram of ``tokens`` (as tuples) with 1 <= n <= max_order."""
    return Counter(
        tuple(tokens[i : i + n]) for n in range(1, max_order + 1) for i in range(len(tokens) - n + 1)
    )


def _bleu_segment_stats(hypothesis: str, references: list[str], max_order: int):
    """``(hyp_len, closest_ref_len, clipped matches per order, hyp n-grams per order)``."""
    hyp_tokens = hypothesis.split()
    hyp_len = len(hyp_tokens)
    max_ref_counts: Counter = Counter()
    ref_lens = []
    for ref in references:
        ref_tokens = ref.split()
        ref_lens.append(len(ref_tokens))
        for ngram, count in _ngram_counts(ref_tokens, max_order).items():
            if count > max_ref_counts[ngram]:
                max_ref_counts[ngram] = count
    # Closest reference length; on a tie the shorter reference.
    closest_ref_len = min(ref_lens, key=lambda r: (abs(r - hyp_len), r))
    matches = [0] * max_order
    totals = [0] * max_order
    for ngram, count in _ngram_counts(hyp_tokens, max_order).items():
        n = len(ngram)
        totals[n - 1] += count
        matches[n - 1] += min(count, max_ref_counts.get(ngram, 0))
    return hyp_len, closest_ref_len, matches, totals


def _bleu_from_stats(stats, max_order, smooth, smooth_value, effective_order) -> BleuScore:
    sys_len = sum(s[0] for s in stats)
    ref_len = sum(s[1] for s in stats)
    counts = tuple(sum(s[2][n] for s in stats) for n in range(max_order))
    totals = tuple(sum(s[3][n] for s in stats) for n in range(max_order))

    if sys_len >= ref_len:
        brevity_penalty = 1.0
    else:
        brevity_penalty = math.exp(1.0 - ref_len / sys_len) if sys_len > 0 else 0.0

    precisions = [0.0] * max_order
    if not any(counts):  # no clipped match of any order
        return BleuScore(0.0, tuple(precisions), brevity_penalty, sys_len, ref_len, counts, totals)

    orders = max_order  # the orders averaged in the geometric mean
    unmatched_orders = 0
    for n in range(1, max_order + 1):
        matched, total = counts[n - 1], totals[n - 1]
        if smooth == "add-k" and n > 1:
            matched, total = matched + smooth_value, total + smooth_value
        if total == 0:  # no hypothesis is n tokens long: this and higher orders are empty
            if effective_order:
                orders = n - 1
            break
        if matched > 0:
            precisions[n - 1] = 100.0 * matched / total
        elif smooth == "exp":
            unmatched_orders += 1
            precisions[n - 1] = 100.0 / (2**unmatched_orders * total)
        elif smooth == "floor":
            precisions[n - 1] = 100.0 * smooth_value / total

    used = precisions[:orders]
    if min(used) <= 0.0:  # log 0: the geometric mean is 0
        score = 0.0
    else:
        score = brevity_penalty * math.exp(sum(math.log(p) for p in used) / orders)
    return BleuScore(score, tuple(precisions), brevity_penalty, sys_len, ref_len, counts, totals)
