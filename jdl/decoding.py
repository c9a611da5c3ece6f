"""Decoding: greedy and beam search over a model's step function, as one loop under ``jit``;
and :func:`sample_tokens`, one temperature-sampled token per row of logits.

A model is decoded through its **step function**::

    step_fn(state, tokens, step) -> (log_probs, new_state)

- ``tokens``: ``int32 [N]``, the previous token of each of the ``N`` hypotheses (the start
  tokens at the first call);
- ``step``: an ``int32`` scalar, ``0`` at the first call, ``t`` at the call that predicts
  the ``t``-th generated token (counting from 0);
- ``log_probs``: ``[N, vocab]`` floating, the normalised log-probabilities
  ``log p(y_t | y_<t, x)`` of the next token (``jax.nn.log_softmax`` of the logits);
- ``state``: any pytree the model needs (a Transformer's key/value cache, a GRU carry and
  the encoder outputs, ...). Every leaf has the hypotheses on its leading axis ``N``,
  **except scalar (rank-0) leaves**, which are shared by all hypotheses and left alone
  (a cache's write ``index``). ``new_state`` has the same structure, shapes and dtypes.

:func:`greedy_search` calls it with ``N = batch``; :func:`beam_search` with
``N = batch * beam_size``, hypothesis ``n = b * beam_size + k`` being beam ``k`` of batch
entry ``b`` (the state is repeated ``beam_size`` times per entry by
:func:`expand_to_beams`, and reordered after every step by :func:`gather_beams`).

A sequence's log-probability is the sum ``sum_t log p(y_t | y_<t, x)`` over its tokens,
the end token included (the seeds' ``p(y) = prod_t p(y_t | y_1 .. y_{t-1}, c)``). Its
length counts the tokens up to and including the end token (``max_length`` for a sequence
that never ends). Positions after the end are filled with ``pad_id``.

Both searches are one ``jax.lax.while_loop`` of at most ``max_length`` steps: no Python
loop over steps, no host round trip, so they compile once under ``jax.jit`` (pass
``step_fn`` and the keyword arguments as static, e.g. with ``functools.partial``) and
work under ``jax.vmap``. The loop exits early only when the result can no longer change
(greedy: every sequence has ended; beam: see :func:`beam_search`). Inputs are checked at
trace time: the step function is traced once with :func:`jax.eval_shape` before the loop,
so a wrong ``log_probs`` shape or a state it changes fails with a message naming the
search, not an XLA error.

Example (a Markov chain: the next token depends only on the previous one; ids 0 pad,
1 start, 2 end, 3 and 4 words):
    >>> import functools, jax, jax.numpy as jnp
    >>> from jdl import decoding
    >>> table = jnp.log(jnp.array([           # row: previous token, column: next token
    ...     [0.0, 0.0, 1.0, 0.0, 0.0],        # after <pad>
    ...     [0.0, 0.0, 0.1, 0.5, 0.4],        # after <start>: 3 is likelier than 4 ...
    ...     [0.0, 0.0, 1.0, 0.0, 0.0],        # after <end>
    ...     [0.0, 0.0, 0.3, 0.4, 0.3],        # after 3
    ...     [0.0, 0.0, 0.9, 0.05, 0.05]]))    # ... but 4 is surely followed by <end>
    >>> def step_fn(state, tokens, step):
    ...     return table[tokens], state
    >>> start = jnp.array([1])
    >>> greedy = decoding.greedy_search(step_fn, {}, start, max_length=3, eos_id=2)
    >>> greedy.tokens, greedy.lengths
    (Array([[3, 3, 3]], dtype=int32), Array([3], dtype=int32))
    >>> search = jax.jit(functools.partial(
    ...     decoding.beam_search, step_fn, beam_size=2, max_length=3, eos_id=2))
    >>> beams = search({}, start)
    >>> beams.tokens                              # best first: p = 0.4 * 0.9, then 0.5 * 0.3
    Array([[[4, 2, 0],
            [3, 2, 0]]], dtype=int32)
    >>> beams.lengths
    Array([[2, 2]], dtype=int32)
    >>> [round(float(p), 4) for p in jnp.exp(beams.scores[0])]
    [0.36, 0.15]
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdl._checks import (
    NonNegativeInt, PositiveInt, check_floating_min_rank, check_integer, check_rank, check_temperature, check_that,
    check_token_ids, checks_arguments, is_concrete,
)

__all__ = [
    "DecodeOutput",
    "greedy_search",
    "beam_search",
    "gnmt_length_penalty",
    "expand_to_beams",
    "gather_beams",
    "sample_tokens",
]

StepFn = Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, Any]]


class DecodeOutput(NamedTuple):
    """The result of a search.

    Attributes:
        tokens: ``int32``, the generated tokens (the start token not included), ``pad_id``
            after each sequence's end: ``[batch, max_length]`` for :func:`greedy_search`,
            ``[batch, beam_size, max_length]`` for :func:`beam_search`.
        lengths: ``int32`` ``[batch]`` or ``[batch, beam_size]``: the number of tokens up
            to and including the end token; ``max_length`` for a sequence that did not end.
        scores: ``[batch]`` or ``[batch, beam_size]``, at least float32: the sum of the
            tokens' log-probabilities (divided by the length penalty in
            :func:`beam_search`).
    """

    tokens: jax.Array
    lengths: jax.Array
    scores: jax.Array


# --------------------------------------------------------------------------- checks


def _check_search(where: str, step_fn: Any, state: Any, start_tokens: Any, max_length: Any, eos_id: Any,
                  pad_id: Any, beam_size: Any = 1) -> tuple[Any, int, Any]:
    """Every input of a search, checked once: returns ``(state, vocab, score dtype)``.

    ``state``'s Python and NumPy scalars become arrays; ``step_fn`` is traced once on shapes
    (:func:`jax.eval_shape`) with ``N = batch * beam_size`` hypotheses (:func:`_probe_step`).
    """
    check_that(callable(step_fn), where, "step_fn to be a function step_fn(state, tokens, step) -> (log_probs, "
               "new_state)", type(step_fn).__name__, TypeError)
    check_integer(where, start_tokens, "start_tokens")
    check_rank(where, start_tokens, 1, "batch: one start token per sequence", "start_tokens")
    batch = start_tokens.shape[0]
    state = _as_state(where, state, batch)
    hypotheses = f"batch = {batch}" if beam_size == 1 else f"batch * beam_size = {batch} * {beam_size}"
    vocab, log_probs_dtype = _probe_step(where, step_fn, state, batch * beam_size, hypotheses)
    for name, token in (("eos_id", eos_id), ("pad_id", pad_id)):
        check_that(token < vocab, where, f"{name} in [0, {vocab}) (the vocabulary of the log_probs returned by "
                   f"step_fn)", f"{name}={token}")
    check_token_ids(where, start_tokens, vocab, "start_tokens")  # where they are concrete
    return state, vocab, jnp.promote_types(log_probs_dtype, jnp.float32)


def _as_state(where: str, state: Any, batch: int) -> Any:
    """Python and NumPy scalars become arrays; every other leaf has leading axis ``batch``."""

    def convert(path, leaf):
        leaf = jnp.asarray(leaf) if isinstance(leaf, (numbers.Number, np.generic)) else leaf
        at = f"state{jax.tree_util.keystr(path)}"
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            raise TypeError(f"{where}: expected every leaf of state to be an array, got {type(leaf).__name__} at {at}")
        check_that(leaf.ndim == 0 or leaf.shape[0] == batch, where, f"every leaf of state to be a scalar (shared, "
                   f"left alone) or to have leading axis {batch} (the batch of start_tokens)",
                   f"shape {tuple(leaf.shape)} at {at}")
        return leaf

    return jax.tree_util.tree_map_with_path(convert, state)


def _probe_step(where: str, step_fn: StepFn, state: Any, n: int, hypotheses: str) -> tuple[int, Any]:
    """Trace ``step_fn`` once on shapes, with ``n`` hypotheses; return ``(vocab, log_probs dtype)``.

    It must return ``(log_probs [n, vocab], new_state)``, the log-probabilities floating and
    ``new_state`` of the same structure, shapes and dtypes as ``state`` (whose non-scalar
    leaves get leading axis ``n``).
    """
    state = jax.tree.map(lambda x: jax.ShapeDtypeStruct((n,) + x.shape[1:] if x.ndim else (), x.dtype), state)
    out = jax.eval_shape(step_fn, state, jax.ShapeDtypeStruct((n,), jnp.int32), jax.ShapeDtypeStruct((), jnp.int32))
    if not isinstance(out, tuple) or len(out) != 2:
        length = f" of length {len(out)}" if isinstance(out, tuple) else ""
        raise TypeError(f"{where}: expected step_fn to return a pair (log_probs, new_state), got "
                        f"{type(out).__name__}{length}")
    log_probs, new_state = out
    if not hasattr(log_probs, "dtype") or not jnp.issubdtype(log_probs.dtype, jnp.floating):
        got = (f"{jnp.dtype(log_probs.dtype).name} log_probs of shape {tuple(log_probs.shape)}"
               if hasattr(log_probs, "dtype") else type(log_probs).__name__)
        raise TypeError(f"{where}: expected step_fn to return floating-point log_probs, got {got}")
    check_that(log_probs.ndim == 2 and log_probs.shape[0] == n and log_probs.shape[1] >= 1, where, f"step_fn to "
               f"return log_probs of shape ({n}, vocab) ({hypotheses} hypotheses, one row each)",
               f"shape {tuple(log_probs.shape)}")
    expected, got = jax.tree_util.tree_structure(state), jax.tree_util.tree_structure(new_state)
    check_that(got == expected, where, "step_fn to return a new_state of the same structure as state",
               f"{got} for state {expected}")
    for (path, old), new in zip(jax.tree_util.tree_leaves_with_path(state), jax.tree_util.tree_leaves(new_state)):
        check_that((old.shape, old.dtype) == (new.shape, jnp.dtype(new.dtype)), where, "step_fn to keep the shape "
                   "and dtype of every state leaf", f"{jnp.dtype(new.dtype).name}{list(new.shape)} for "
                   f"{old.dtype.name}{list(old.shape)} at state{jax.tree_util.keystr(path)}")
    return int(log_probs.shape[1]), jnp.dtype(log_probs.dtype)


def _write(buffer: jax.Array, t: jax.Array, values: jax.Array) -> jax.Array:
    """``buffer[..., t] = values`` for a traced ``t`` (a select, no scatter)."""
    positions = jnp.arange(buffer.shape[-1], dtype=jnp.int32)
    return jnp.where(positions == t, values[..., None], buffer)


# ---------------------------------------------------------------------- beam helpers


def gnmt_length_penalty(lengths: Any, alpha: float) -> jax.Array:
    """GNMT's length penalty ``lp(|Y|) = ((5 + |Y|) / 6) ** alpha`` (Wu et al., 2016).

    :func:`beam_search` ranks hypotheses by ``log p(Y) / lp(|Y|)``. ``alpha = 0`` gives
    ``lp = 1`` (plain log-probabilities, which favour short sequences); a larger ``alpha``
    divides the (negative) log-probability of a long sequence by more, favouring it.

    Example:
        >>> from jdl import decoding
        >>> decoding.gnmt_length_penalty(jnp.array([1, 7]), 0.6)
        Array([1.       , 1.5157166], dtype=float32)
    """
    lengths = jnp.asarray(lengths)
    dtype = jnp.promote_types(lengths.dtype, jnp.float32)
    return ((5.0 + lengths.astype(dtype)) / 6.0) ** alpha


@checks_arguments
def expand_to_beams(tree: Any, beam_size: PositiveInt) -> Any:
    """Repeat each batch entry ``beam_size`` times: leaves ``[batch, ...] -> [batch * beam_size, ...]``.

    Row ``b * beam_size + k`` of the result is row ``b`` of the input (beam ``k`` of entry
    ``b``). Scalar (rank-0) leaves are shared by every hypothesis and returned unchanged.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import decoding
        >>> decoding.expand_to_beams({"h": jnp.array([10, 20]), "index": jnp.array(3)}, 2)
        {'h': Array([10, 10, 20, 20], dtype=int32), 'index': Array(3, dtype=int32, weak_type=True)}
    """
    return jax.tree.map(lambda x: x if jnp.ndim(x) == 0 else jnp.repeat(x, beam_size, axis=0), tree)


def gather_beams(tree: Any, parents: jax.Array) -> Any:
    """Reorder hypotheses by parent beam: new beam ``k`` of entry ``b`` is old beam ``parents[b, k]``.

    ``parents`` is an integer ``[batch, new_beams]`` array of indices into the old beams;
    every non-scalar leaf is ``[batch * old_beams, ...]`` (flat, beam ``k`` of entry ``b`` at
    row ``b * old_beams + k``, as the step function sees them) and becomes
    ``[batch * new_beams, ...]``. Scalar (rank-0) leaves are returned unchanged. This is how
    :func:`beam_search` makes the model's state follow the hypotheses it keeps.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import decoding
        >>> cache = jnp.array([[0.0], [1.0], [2.0], [3.0]])   # batch 2, 2 beams each
        >>> decoding.gather_beams(cache, jnp.array([[1, 1], [1, 0]]))
        Array([[1.],
               [1.],
               [3.],
               [2.]], dtype=float32)
    """
    where = "gather_beams"
    check_integer(where, parents, "parents")
    check_rank(where, parents, 2, "batch, beams", "parents")
    batch, new_beams = parents.shape

    def gather(path, leaf):
        if jnp.ndim(leaf) == 0:
            return leaf
        rows = leaf.shape[0]
        check_that(batch > 0 and rows % batch == 0, where, f"every non-scalar leaf to have a leading axis of batch *"
                   f" beams rows (batch {batch} from parents)", f"shape {tuple(leaf.shape)} at tree{jax.tree_util.keystr(path)}")
        old_beams = rows // batch
        flat = (jnp.arange(batch, dtype=jnp.int32)[:, None] * old_beams
                + parents.astype(jnp.int32)).reshape(batch * new_beams)
        return jnp.take(leaf, flat, axis=0)

    return jax.tree_util.tree_map_with_path(gather, tree)


# ---------------------------------------------------------------------------- greedy


class _GreedyLoop(NamedTuple):
    """The greedy search's loop carry (``[batch]`` arrays: one entry per sequence)."""

    step: jax.Array  # t, int32: the number of tokens generated so far
    model_state: Any
    last: jax.Array  # int32 [batch]: each sequence's last token, fed to step_fn next
    tokens: jax.Array  # int32 [batch, max_length]
    scores: jax.Array  # [batch]: the sum of the chosen tokens' log-probabilities
    lengths: jax.Array  # int32 [batch]
    finished: jax.Array  # bool [batch]: the sequence has emitted eos_id


@checks_arguments
def greedy_search(step_fn: StepFn, state: Any, start_tokens: jax.Array, *, max_length: PositiveInt,
                  eos_id: NonNegativeInt, pad_id: NonNegativeInt = 0) -> DecodeOutput:
    """Greedy decoding: ``y_t = argmax_v log p(v | y_<t, x)`` for each sequence, until ``eos_id``.

    Runs ``step_fn`` (see the module docstring) for at most ``max_length`` steps with
    ``N = batch``; the loop ends as soon as every sequence has emitted ``eos_id``. After a
    sequence's end token it emits ``pad_id`` (which is what it feeds the model from then
    on), and its score and length stop changing. Ties go to the lowest token id, as
    ``jnp.argmax``.

    Args:
        step_fn: ``step_fn(state, tokens, step) -> (log_probs [batch, vocab], new_state)``.
        state: the model's initial state; every leaf has leading axis ``batch`` or is a
            scalar (shared, left alone).
        start_tokens: integer ``[batch]``, the first input token of each sequence.
        max_length: the most tokens generated per sequence (a static int >= 1).
        eos_id: the end token.
        pad_id: the token written (and fed to the model) after a sequence's end.

    Returns:
        ``DecodeOutput(tokens [batch, max_length], lengths [batch], scores [batch])``;
        ``scores`` is the sum of the chosen tokens' log-probabilities, end token included.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import decoding
        >>> table = jnp.log(jnp.array([[0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]))
        >>> step_fn = lambda state, tokens, step: (table[tokens], state)
        >>> out = decoding.greedy_search(step_fn, {}, jnp.array([1, 0]), max_length=4, eos_id=2)
        >>> out.tokens, out.lengths                    # 1 -> 1 -> ... never ends; 0 -> 2 ends
        (Array([[1, 1, 1, 1],
               [2, 0, 0, 0]], dtype=int32), Array([4, 1], dtype=int32))
        >>> [round(float(p), 4) for p in jnp.exp(out.scores)]   # 0.8 ** 4 and 0.6
        [0.4096, 0.6]
    """
    state, _, score_dtype = _check_search("greedy_search", step_fn, state, start_tokens, max_length, eos_id, pad_id)
    batch = start_tokens.shape[0]

    def body(loop: _GreedyLoop) -> _GreedyLoop:
        log_probs, model_state = step_fn(loop.model_state, loop.last, loop.step)
        best = jnp.argmax(log_probs, axis=-1).astype(jnp.int32)
        best_log_prob = jnp.take_along_axis(log_probs, best[:, None], axis=-1)[:, 0].astype(score_dtype)
        token = jnp.where(loop.finished, jnp.int32(pad_id), best)  # after the end: pad, and nothing changes
        return _GreedyLoop(
            step=loop.step + 1, model_state=model_state, last=token, tokens=_write(loop.tokens, loop.step, token),
            scores=loop.scores + jnp.where(loop.finished, 0, best_log_prob),
            lengths=jnp.where(loop.finished, loop.lengths, loop.step + 1), finished=loop.finished | (token == eos_id))

    init = _GreedyLoop(step=jnp.array(0, jnp.int32), model_state=state, last=start_tokens.astype(jnp.int32),
                       tokens=jnp.full((batch, max_length), pad_id, jnp.int32), scores=jnp.zeros((batch,), score_dtype),
                       lengths=jnp.zeros((batch,), jnp.int32), finished=jnp.zeros((batch,), bool))
    out = jax.lax.while_loop(lambda loop: (loop.step < max_length) & ~jnp.all(loop.finished), body, init)
    return DecodeOutput(out.tokens, out.lengths, out.scores)


# ------------------------------------------------------------------------------ beam


class _BeamLoop(NamedTuple):
    """The beam search's loop carry; ``[batch, beam]`` arrays hold one entry per batch entry and beam."""

    step: jax.Array  # t, int32: the number of tokens generated so far
    model_state: Any  # the step function's state, one row per alive hypothesis
    last: jax.Array  # int32 [batch * beam]: the alive hypotheses' last tokens, fed to step_fn next
    alive_tokens: jax.Array  # int32 [batch, beam, max_length]
    alive_log_probs: jax.Array  # [batch, beam]: log p of each alive hypothesis (-inf: no hypothesis)
    finished_tokens: jax.Array  # int32 [batch, beam, max_length]
    finished_scores: jax.Array  # [batch, beam]: log p / lp(length), best first (-inf: an empty slot)
    finished_lengths: jax.Array  # int32 [batch, beam]
    done: jax.Array  # bool: no alive hypothesis can still enter the finished list


def _best_extensions(candidates: jax.Array, alive_tokens: jax.Array, t: jax.Array, eos_id: int):
    """The ``beam`` best extensions of the alive hypotheses by a token other than ``eos_id``.

    ``candidates[b, k, v]`` is the log-probability of beam ``k`` extended by token ``v``.
    Returns their log-probabilities and tokens ``[batch, beam(, max_length)]``, the beams
    they extend (``parents``) and the tokens they add, both ``[batch, beam]``.
    """
    batch, beams, vocab = candidates.shape
    others = jnp.where(jnp.arange(vocab) == eos_id, -jnp.inf, candidates).reshape(batch, beams * vocab)
    log_probs, best = jax.lax.top_k(others, beams)
    parents, new_tokens = (best // vocab).astype(jnp.int32), (best % vocab).astype(jnp.int32)
    tokens = _write(jnp.take_along_axis(alive_tokens, parents[..., None], axis=1), t, new_tokens)
    return log_probs, tokens, parents, new_tokens


def _best_finished(beams: int, *groups: tuple[jax.Array, jax.Array, jax.Array]):
    """The ``beams`` best ``(scores, tokens, lengths)`` of several groups of finished hypotheses, best first.

    ``top_k`` keeps the lower index among ties, so of two equal scores the earlier group's
    (a hypothesis finished earlier) stays.
    """
    scores, tokens, lengths = (jnp.concatenate(parts, axis=1) for parts in zip(*groups))
    scores, keep = jax.lax.top_k(scores, beams)
    return scores, jnp.take_along_axis(tokens, keep[..., None], axis=1), jnp.take_along_axis(lengths, keep, axis=1)


@checks_arguments
def beam_search(step_fn: StepFn, state: Any, start_tokens: jax.Array, *, beam_size: PositiveInt, max_length: PositiveInt,
                eos_id: NonNegativeInt, length_penalty: float = 0.0, pad_id: NonNegativeInt = 0) -> DecodeOutput:
    """Beam search: the ``beam_size`` best sequences by ``log p(Y) / ((5 + |Y|) / 6) ** alpha``.

    ``alpha = length_penalty`` is GNMT's (:func:`gnmt_length_penalty`; 0, the default,
    ranks by plain log-probability; GNMT used 0.6 to 0.7) and ``|Y|`` counts the tokens up
    to and including ``eos_id``.

    The alive/finished formulation (as flax's and t5x's beam search). Each entry keeps
    ``beam_size`` *alive* hypotheses (not ended) and the ``beam_size`` best *finished* ones
    seen so far. At step ``t`` every alive hypothesis is extended by every token
    (``N = batch * beam_size`` rows in one ``step_fn`` call):

    - its extension by ``eos_id`` is a finished candidate, scored
      ``log p / lp(t + 1)``; all ``beam_size`` of them compete with the finished list
      (flax and t5x consider only the end tokens among the best ``2 * beam_size``
      extensions, so they can drop one that this search keeps);
    - the ``beam_size`` best other extensions by log-probability become the new alive
      hypotheses, and the model's state follows their parents (:func:`gather_beams`);
    - at the last step (``t + 1 = max_length``) those extensions are complete too:
      **hypotheses that reach ``max_length`` without the end token count as finished**
      (length ``max_length``), so every entry returns sequences even when none ended.

    ``beam_size = 1`` is *not* :func:`greedy_search` in general: its alive hypothesis
    follows the best non-end token, and every end token along that path is a finished
    candidate, so an early end of higher probability (or, with ``alpha > 0``, a longer
    sequence) can win over greedy's. Where greedy's argmax is the only likely end token and
    ``alpha = 0``, the two agree (tested).

    At the first step all beams hold the same start token, so only beam 0 is live
    (the others start at log-probability ``-inf``). The loop stops before ``max_length``
    steps only when, for every batch entry, no alive hypothesis can still enter the
    finished list: its log-probability can only fall (``log_probs <= 0``, which
    normalised log-probabilities are), so its best possible score is
    ``log p / max(lp(t + 2), lp(max_length))``; when that is below the worst finished
    score, the result is already final (a step function that returns unnormalised,
    positive scores breaks this assumption).

    Args:
        step_fn: ``step_fn(state, tokens, step) -> (log_probs [N, vocab], new_state)`` with
            ``N = batch * beam_size``, beam ``k`` of entry ``b`` at row ``b * beam_size + k``.
        state: the model's initial state for the ``batch`` entries (leaves with leading axis
            ``batch``, or scalars, which are shared and left alone); it is repeated
            ``beam_size`` times per entry (:func:`expand_to_beams`) before the first step.
        start_tokens: integer ``[batch]``, the first input token of each entry.
        beam_size: the number of hypotheses kept (a static int >= 1).
        max_length: the most tokens generated per hypothesis (a static int >= 1).
        eos_id: the end token.
        length_penalty: GNMT's ``alpha`` (a Python float).
        pad_id: the token written after a hypothesis' end.

    Returns:
        ``DecodeOutput(tokens [batch, beam_size, max_length], lengths [batch, beam_size],
        scores [batch, beam_size])``, sorted best first along the beam axis; ``scores`` are
        the penalised ``log p(Y) / lp(|Y|)``. When fewer than ``beam_size`` sequences are
        possible (``vocab`` and ``max_length`` tiny, or tokens of probability 0), the extra
        slots have score ``-inf``, length 0 and only ``pad_id`` tokens.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import decoding
        >>> table = jnp.log(jnp.array([[0.2, 0.2, 0.6], [0.1, 0.5, 0.4], [0.3, 0.3, 0.4]]))
        >>> step_fn = lambda state, tokens, step: (table[tokens], state)
        >>> out = decoding.beam_search(
        ...     step_fn, {}, jnp.array([1]), beam_size=3, max_length=2, eos_id=2)
        >>> out.tokens                       # 2 (p 0.4), 1 1 (0.5 * 0.5), 1 2 (0.5 * 0.4)
        Array([[[2, 0],
                [1, 1],
                [1, 2]]], dtype=int32)
        >>> out.lengths
        Array([[1, 2, 2]], dtype=int32)
        >>> [round(float(p), 4) for p in jnp.exp(out.scores[0])]
        [0.4, 0.25, 0.2]
    """
    where = "beam_search"
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real):
        raise TypeError(f"{where}: expected length_penalty to be a float (GNMT's alpha), got "
                        f"{type(length_penalty).__name__} {length_penalty!r}")
    check_that(math.isfinite(length_penalty), where, "a finite length_penalty", repr(length_penalty))
    state, vocab, dtype = _check_search(where, step_fn, state, start_tokens, max_length, eos_id, pad_id, beam_size)
    shape = (start_tokens.shape[0], beam_size)  # [batch, beam]

    def penalty(lengths):
        return gnmt_length_penalty(lengths, float(length_penalty)).astype(dtype)

    def body(loop: _BeamLoop) -> _BeamLoop:
        t = loop.step
        log_probs, model_state = step_fn(loop.model_state, loop.last, t)
        candidates = loop.alive_log_probs[..., None] + log_probs.astype(dtype).reshape(*shape, vocab)
        # Every alive hypothesis extended by the end token is a finished candidate ...
        eos_scores = candidates[..., eos_id] / penalty(t + 1)
        eos_tokens = _write(loop.alive_tokens, t, jnp.int32(eos_id))
        # ... and the beam_size best extensions by another token stay alive; at max_length
        # they are complete as well.
        alive_log_probs, alive_tokens, parents, new_tokens = _best_extensions(candidates, loop.alive_tokens, t, eos_id)
        end_scores = jnp.where(t + 1 == max_length, alive_log_probs / penalty(t + 1), -jnp.inf)
        lengths = jnp.full(shape, t + 1, jnp.int32)
        finished_scores, finished_tokens, finished_lengths = _best_finished(
            beam_size, (loop.finished_scores, loop.finished_tokens, loop.finished_lengths),
            (eos_scores, eos_tokens, lengths), (end_scores, alive_tokens, lengths))
        # Stop when no alive hypothesis can still beat the worst finished one: log p can only
        # fall, so the best score it can reach is log p / max(lp(t + 2), lp(max_length)).
        best_alive = alive_log_probs[:, 0]
        best_possible = best_alive / jnp.maximum(penalty(t + 2), penalty(max_length))
        hopeless = (best_alive == -jnp.inf) | (best_possible < finished_scores[:, -1])
        return _BeamLoop(t + 1, gather_beams(model_state, parents), new_tokens.reshape(-1), alive_tokens,
                         alive_log_probs, finished_tokens, finished_scores, finished_lengths, jnp.all(hopeless))

    nothing = jnp.full((*shape, max_length), pad_id, jnp.int32)
    # Every beam holds the same start token: only beam 0 is alive, or the beams would stay copies.
    only_first_beam = jnp.where(jnp.arange(beam_size) == 0, 0.0, -jnp.inf).astype(dtype)
    init = _BeamLoop(step=jnp.array(0, jnp.int32), model_state=expand_to_beams(state, beam_size),
                     last=jnp.repeat(start_tokens.astype(jnp.int32), beam_size), alive_tokens=nothing,
                     alive_log_probs=jnp.broadcast_to(only_first_beam, shape), finished_tokens=nothing,
                     finished_scores=jnp.full(shape, -jnp.inf, dtype), finished_lengths=jnp.zeros(shape, jnp.int32),
                     done=jnp.array(False))
    out = jax.lax.while_loop(lambda loop: (loop.step < max_length) & ~loop.done, body, init)
    found = out.finished_scores > -jnp.inf
    return DecodeOutput(jnp.where(found[..., None], out.finished_tokens, jnp.int32(pad_id)),
                        jnp.where(found, out.finished_lengths, 0), out.finished_scores)


# -------------------------------------------------------------------------- sampling


def sample_tokens(key: jax.Array, logits: jax.Array, temperature: Any = 1.0) -> jax.Array:
    """Draw one id per row from ``softmax(logits / T)``; ``T = 0`` gives ``argmax(logits)``.

    With ``g`` i.i.d. standard Gumbel noise, ``argmax_i(z_i / T + g_i)`` is a draw from
    ``softmax(z / T)`` (the Gumbel-max trick), and for ``T > 0`` it equals
    ``argmax_i(z_i + T g_i)``, the form computed here: no division, so a tiny ``T`` cannot
    overflow, and ``T = 0`` is exactly greedy decoding (ties go to the lowest id). Low
    temperatures sharpen the distribution towards the argmax, high ones flatten it towards
    uniform. ``temperature`` may be traced (one compilation serves every temperature); a
    negative one is an error when concrete, and under ``jit`` gives the invalid id ``-1``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import decoding
        >>> logits = jnp.array([[0.0, 3.0, 1.0]])
        >>> decoding.sample_tokens(jax.random.key(0), logits, temperature=0.0)
        Array([1], dtype=int32)
    """
    where = "sample_tokens"
    check_floating_min_rank(where, logits, 1, "..., vocab_size", "logits")
    check_temperature(where, temperature)
    if is_concrete(temperature) and float(temperature) == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    temperature = jnp.asarray(temperature, logits.dtype)
    noise = jax.random.gumbel(key, logits.shape, logits.dtype)
    tokens = jnp.argmax(logits + temperature * noise, axis=-1).astype(jnp.int32)
    return jnp.where(temperature >= 0, tokens, -1)
