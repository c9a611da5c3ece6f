"""jdl.decoding: greedy and beam search against Python references on a toy model.

The toy model's next-token distribution is a fixed random table indexed by the whole
history of tokens it was fed (start token included), which it keeps in its state: an
exact n-th order Markov chain over a vocabulary of 5. Its scores are therefore right only
if the state of every hypothesis follows that hypothesis' own parents: a state gathered
from the wrong beam reads another history and gives other log-probabilities. The state
also has a scalar counter (like a key/value cache's index) that must be left alone by the
beam reordering and equal ``step`` at every call; if not, the model returns NaN.

References are plain Python over float64: a loop of argmax, the exhaustive enumeration of
every sequence, and a beam search written without any early exit.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import decoding

VOCAB = 5
PAD, START, EOS = 0, 1, 2


# ------------------------------------------------------------------------- toy model


def make_table(seed, max_length, eos_bias=0.0, scale=2.0, suppress_eos=False):
    """log_softmax of random logits, one row per possible history of ``max_length`` tokens."""
    logits = scale * np.random.default_rng(seed).standard_normal((VOCAB ** max_length, VOCAB))
    logits[:, EOS] += eos_bias
    if suppress_eos:  # eos only where it is the most likely token, else (almost) impossible
        not_best = logits.argmax(-1) != EOS
        logits[not_best, EOS] = -30.0
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    return log_probs.astype(np.float32)


def make_model(table, batch, max_length):
    """``(step_fn, initial state)`` of the history-indexed toy model."""
    table_j = jnp.asarray(table)
    powers = jnp.asarray(VOCAB ** np.arange(max_length), jnp.int32)

    def step_fn(state, tokens, step):
        history = jnp.where(jnp.arange(max_length) == step, tokens[:, None], state["history"])
        log_probs = table_j[(history * powers).sum(-1)]
        log_probs = jnp.where(state["count"] == step, log_probs, jnp.nan)
        return log_probs, {"history": history, "count": state["count"] + 1}

    state = {"history": jnp.zeros((batch, max_length), jnp.int32), "count": jnp.array(0, jnp.int32)}
    return step_fn, state


def ref_log_probs(table, fed):
    """The toy model's next-token log-probabilities after feeding ``fed`` (float64)."""
    return table[sum(int(f) * VOCAB ** i for i, f in enumerate(fed))].astype(np.float64)


def penalty(length, alpha):
    return ((5.0 + length) / 6.0) ** alpha


def python_greedy(table, start, max_length, pad=PAD):
    seq, score = [], 0.0
    for _ in range(max_length):
        lp = ref_log_probs(table, [start] + seq)
        token = int(np.argmax(lp))
        seq.append(token)
        score += lp[token]
        if token == EOS:
            break
    return seq + [pad] * (max_length - len(seq)), len(seq), score


def all_sequences(table, start, max_length, alpha):
    """Every complete sequence (ended by EOS or of max_length) with its penalised score."""
    out = []

    def extend(seq, logp):
        lp = ref_log_probs(table, [start] + seq)
        for v in range(VOCAB):
            s, l = seq + [v], logp + lp[v]
            if v == EOS or len(s) == max_length:
                out.append((l / penalty(len(s), alpha), tuple(s)))
            else:
                extend(s, l)

    extend([], 0.0)
    return sorted(out, key=lambda c: -c[0])


def python_beam(table, start, beam_size, max_length, alpha):
    """Alive/finished beam search in plain Python, always ``max_length`` steps."""
    alive, finished = [((), 0.0)], []
    for t in range(max_length):
        candidates = []
        for seq, logp in alive:
            lp = ref_log_probs(table, [start] + list(seq))
            candidates += [(seq + (v,), logp + lp[v]) for v in range(VOCAB)]
        finished += [(l / penalty(t + 1, alpha), s) for s, l in candidates if s[-1] == EOS]
        alive = sorted([c for c in candidates if c[0][-1] != EOS], key=lambda c: -c[1])[:beam_size]
        if t + 1 == max_length:
            finished += [(l / penalty(max_length, alpha), s) for s, l in alive]
        finished = sorted(finished, key=lambda c: -c[0])[:beam_size]
    return finished


def sequence_score(table, start, seq, alpha):
    fed, logp = [start], 0.0
    for v in seq:
        logp += ref_log_probs(table, fed)[v]
        fed.append(v)
    return logp / penalty(len(seq), alpha)


def check_beam_output(out, table, starts, max_length, alpha, expected, pad=PAD):
    """Shapes, order, padding and every returned score against the references."""
    tokens, lengths, scores = map(np.asarray, out)
    batch, beam_size = len(starts), len(expected[0])
    assert tokens.shape == (batch, beam_size, max_length) and tokens.dtype == np.int32
    assert lengths.shape == scores.shape == (batch, beam_size)
    assert np.all(np.diff(scores, axis=1) <= 0), "scores must be sorted best first"
    for b, start in enumerate(starts):
        seqs = []
        for k in range(beam_size):
            n = lengths[b, k]
            assert 1 <= n <= max_length
            assert np.all(tokens[b, k, n:] == pad)
            seq = tuple(tokens[b, k, :n].tolist())
            assert EOS not in seq[:-1] and (seq[-1] == EOS or n == max_length)
            np.testing.assert_allclose(
                scores[b, k], sequence_score(table, start, seq, alpha), rtol=1e-5, atol=1e-5)
            seqs.append(seq)
        assert len(set(seqs)) == beam_size, "hypotheses must be distinct"
        np.testing.assert_allclose(
            scores[b], [s for s, _ in expected[b]], rtol=1e-5, atol=1e-5)
        assert seqs[0] == expected[b][0][1]


# ----------------------------------------------------------------------------- greedy


def test_greedy_matches_python_argmax_loop():
    max_length, pad = 6, 4
    table = make_table(4, max_length)
    starts = [1, 3, 0, 4, 2]
    step_fn, state = make_model(table, len(starts), max_length)
    search = jax.jit(functools.partial(
        decoding.greedy_search, step_fn, max_length=max_length, eos_id=EOS, pad_id=pad))
    tokens, lengths, scores = search(state, jnp.array(starts))
    assert tokens.shape == (len(starts), max_length) and tokens.dtype == jnp.int32
    refs = [python_greedy(table, s, max_length, pad) for s in starts]
    np.testing.assert_array_equal(tokens, [r[0] for r in refs])
    np.testing.assert_array_equal(lengths, [r[1] for r in refs])
    np.testing.assert_allclose(scores, [r[2] for r in refs], rtol=1e-6, atol=1e-6)
    # sequences end at once, in the middle and never: [3, 6, 1, 4, 6]
    assert {1, max_length} < {r[1] for r in refs}


def test_greedy_pad_after_eos_and_frozen_score():
    """Once a sequence has ended it emits pad and its score stops changing."""
    table = np.log(np.array([[0.2, 0.2, 0.6], [0.1, 0.8, 0.1], [0.3, 0.3, 0.4]], np.float32))
    step_fn = lambda state, tokens, step: (jnp.asarray(table)[tokens], state)  # noqa: E731
    out = decoding.greedy_search(step_fn, None, jnp.array([0, 1, 2]), max_length=3, eos_id=2,
                                 pad_id=1)
    np.testing.assert_array_equal(out.tokens, [[2, 1, 1], [1, 1, 1], [2, 1, 1]])
    np.testing.assert_array_equal(out.lengths, [1, 3, 1])
    np.testing.assert_allclose(np.exp(out.scores), [0.6, 0.8 ** 3, 0.4], rtol=1e-6)


# ------------------------------------------------------------------------------- beam


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_equals_exhaustive_enumeration(alpha):
    """A beam as wide as every prefix keeps everything: the exact top-k of all sequences."""
    max_length = 4
    beam_size = (VOCAB - 1) ** (max_length - 1)  # every unfinished prefix stays alive
    table = make_table(1, max_length, eos_bias=0.5)
    starts = [1, 3]
    step_fn, state = make_model(table, len(starts), max_length)
    search = jax.jit(functools.partial(
        decoding.beam_search, step_fn, beam_size=beam_size, max_length=max_length,
        eos_id=EOS, length_penalty=alpha))
    out = search(state, jnp.array(starts))
    expected = [all_sequences(table, s, max_length, alpha)[:beam_size] for s in starts]
    # the best sequence is well separated, so comparing it is meaningful
    for e in expected:
        assert e[0][0] - e[1][0] > 1e-3
    check_beam_output(out, table, starts, max_length, alpha, expected)
    # the references agree with each other too
    for s, e in zip(starts, expected):
        ref = python_beam(table, s, beam_size, max_length, alpha)
        assert [q for _, q in ref] == [q for _, q in e]


def test_beam_with_pruning_and_early_exit_matches_python_beam():
    """A narrow beam prunes; the loop stops early without changing the result."""
    max_length, beam_size, alpha = 5, 3, 0.6
    table = make_table(11, max_length, eos_bias=1.5)
    starts = [1, 3, 4, 0]
    step_fn, state = make_model(table, len(starts), max_length)
    calls = []

    def counted_step(state, tokens, step):
        jax.debug.callback(lambda s: calls.append(int(s)), step)
        return step_fn(state, tokens, step)

    search = jax.jit(functools.partial(
        decoding.beam_search, counted_step, beam_size=beam_size, max_length=max_length,
        eos_id=EOS, length_penalty=alpha))
    out = search(state, jnp.array(starts))
    expected = [python_beam(table, s, beam_size, max_length, alpha) for s in starts]
    check_beam_output(out, table, starts, max_length, alpha, expected)
    assert [tuple(t[:n]) for t, n in zip(np.asarray(out.tokens[:, 0]), out.lengths[:, 0])] == \
        [e[0][1] for e in expected]
    assert len(calls) < max_length, f"expected an early exit, ran {len(calls)} steps"
    # pruning mattered: for the first entry the beam is not the exhaustive top-k
    exact = all_sequences(table, starts[0], max_length, alpha)[:beam_size]
    assert [q for _, q in expected[0]] != [q for _, q in exact]


def test_beam_size_one_equals_greedy():
    """With alpha = 0 and end tokens likely only where they are the argmax, beam 1 is greedy."""
    max_length = 5
    table = make_table(3, max_length, eos_bias=1.0, suppress_eos=True)
    starts = [1, 3, 4, 0, 2]
    step_fn, state = make_model(table, len(starts), max_length)
    greedy = jax.jit(functools.partial(
        decoding.greedy_search, step_fn, max_length=max_length, eos_id=EOS))(state, jnp.array(starts))
    beam = jax.jit(functools.partial(
        decoding.beam_search, step_fn, beam_size=1, max_length=max_length, eos_id=EOS))(
        state, jnp.array(starts))
    np.testing.assert_array_equal(beam.tokens[:, 0], greedy.tokens)
    np.testing.assert_array_equal(beam.lengths[:, 0], greedy.lengths)
    np.testing.assert_allclose(beam.scores[:, 0], greedy.scores, rtol=1e-6, atol=1e-6)
    assert any(n < max_length for n in np.asarray(greedy.lengths))
    assert any(n == max_length for n in np.asarray(greedy.lengths))


def test_beam_wider_than_possible_sequences():
    """Slots beyond the possible sequences get score -inf, length 0 and pad; pad_id is used."""
    step_fn, state = make_model(make_table(4, 1), 2, 1)
    search = jax.jit(functools.partial(
        decoding.beam_search, step_fn, beam_size=7, max_length=1, eos_id=EOS, pad_id=3))
    out = search(state, jnp.array([1, 2]))
    assert np.all(np.isfinite(out.scores[:, :VOCAB]))
    assert np.all(out.scores[:, VOCAB:] == -np.inf)
    np.testing.assert_array_equal(out.lengths[:, VOCAB:], 0)
    np.testing.assert_array_equal(out.tokens[:, VOCAB:], 3)
    np.testing.assert_array_equal(np.sort(out.tokens[:, :VOCAB, 0], axis=1), [list(range(VOCAB))] * 2)


def test_jit_eager_and_vmap_agree():
    max_length = 3
    table = make_table(5, max_length)
    step_fn, state = make_model(table, 2, max_length)
    starts = jnp.array([1, 4])
    kwargs = dict(beam_size=2, max_length=max_length, eos_id=EOS, length_penalty=0.6)
    eager = decoding.beam_search(step_fn, state, starts, **kwargs)
    jitted = jax.jit(functools.partial(decoding.beam_search, step_fn, **kwargs))(state, starts)
    for a, b in zip(eager, jitted):  # scores may differ in the last bit (XLA's fusion)
        np.testing.assert_allclose(a, b, rtol=1e-6)
    # vmap over independent batches of one entry each
    one_state = jax.tree.map(lambda x: x[:1] if x.ndim else x, state)
    stacked = jax.tree.map(lambda x: jnp.stack([x, x]), one_state)
    mapped = jax.jit(jax.vmap(lambda s, t: decoding.beam_search(step_fn, s, t, **kwargs)))(
        stacked, starts[:, None])
    for a, b in zip(mapped, jitted):
        np.testing.assert_allclose(np.asarray(a)[:, 0], b, rtol=1e-6)


# ---------------------------------------------------------------------------- helpers


def test_expand_and_gather_beams():
    tree = {"h": jnp.arange(6.0).reshape(2, 3), "index": jnp.array(7)}
    expanded = decoding.expand_to_beams(tree, 2)
    np.testing.assert_array_equal(expanded["h"], [[0, 1, 2], [0, 1, 2], [3, 4, 5], [3, 4, 5]])
    assert expanded["index"] is tree["index"]
    marked = {"h": jnp.arange(4)[:, None] * jnp.ones((1, 3)), "index": tree["index"]}
    gathered = decoding.gather_beams(marked, jnp.array([[1, 0], [1, 1]]))
    np.testing.assert_array_equal(gathered["h"][:, 0], [1, 0, 3, 3])
    assert gathered["index"] is tree["index"]
    # a different number of new beams: 1 beam -> 3 (the same as expand_to_beams)
    np.testing.assert_array_equal(
        decoding.gather_beams(tree, jnp.zeros((2, 3), jnp.int32))["h"],
        decoding.expand_to_beams(tree, 3)["h"])
    np.testing.assert_allclose(
        decoding.gnmt_length_penalty(jnp.array([1, 4]), 0.6), [1.0, 1.5 ** 0.6], rtol=1e-6)


# ----------------------------------------------------------------------------- errors


def _good_model():
    return make_model(make_table(6, 2), 2, 2)


def _bad_step(kind):
    step_fn, _ = _good_model()

    def bad(state, tokens, step):
        log_probs, new_state = step_fn(state, tokens, step)
        if kind == "log_probs_rank":
            return log_probs[0], new_state
        if kind == "log_probs_rows":
            return log_probs[:1], new_state
        if kind == "log_probs_int":
            return log_probs.astype(jnp.int32), new_state
        if kind == "state_shape":
            return log_probs, {**new_state, "history": new_state["history"][:, :1]}
        if kind == "state_structure":
            return log_probs, {"history": new_state["history"]}
        if kind == "not_pair":
            return log_probs
        raise AssertionError(kind)

    return bad


_STARTS = jnp.array([1, 3])
_ERRORS = [
    # (search kwargs overrides, step kind or None, start_tokens, state override, error, match)
    (dict(max_length=0), None, _STARTS, None, ValueError, r"max_length to be a positive int, got 0"),
    (dict(max_length=2.0), None, _STARTS, None, ValueError, r"max_length to be a positive int"),
    (dict(eos_id=VOCAB), None, _STARTS, None, ValueError, r"eos_id in \[0, 5\).*got eos_id=5"),
    (dict(eos_id=-1), None, _STARTS, None, ValueError, r"eos_id to be an int >= 0, got -1"),
    (dict(pad_id=VOCAB + 2), None, _STARTS, None, ValueError, r"pad_id in \[0, 5\)"),
    ({}, None, jnp.array([[1, 3]]), None, ValueError, r"start_tokens of rank 1.*rank 2"),
    ({}, None, jnp.array([1.0, 3.0]), None, TypeError, r"integer start_tokens"),
    ({}, None, [1, 3], None, TypeError, r"start_tokens to be an array, got list"),
    ({}, "log_probs_rank", _STARTS, None, ValueError, r"log_probs of shape \(\d+, vocab\).*got shape \(5,\)"),
    ({}, "log_probs_rows", _STARTS, None, ValueError, r"log_probs of shape \(\d+, vocab\).*got shape \(1, 5\)"),
    ({}, "log_probs_int", _STARTS, None, TypeError, r"return floating-point log_probs, got int32 log_probs of shape \(\d+, 5\)"),
    ({}, "state_shape", _STARTS, None, ValueError, r"keep the shape and dtype.*\['history'\]"),
    ({}, "state_structure", _STARTS, None, ValueError, r"same structure as state"),
    ({}, "not_pair", _STARTS, None, TypeError, r"return a pair \(log_probs, new_state\)"),
    ({}, None, _STARTS, {"h": jnp.zeros((3, 4))}, ValueError, r"leading axis 2.*shape \(3, 4\) at state\['h'\]"),
    ({}, None, _STARTS, {"h": "text"}, TypeError, r"leaf of state to be an array, got str"),
]


@pytest.mark.parametrize("search", ["greedy_search", "beam_search"])
@pytest.mark.parametrize("overrides, kind, starts, state_override, error, match", _ERRORS)
def test_errors(search, overrides, kind, starts, state_override, error, match):
    step_fn, state = _good_model()
    if kind is not None:
        step_fn = _bad_step(kind)
    if state_override is not None:
        state = state_override
    kwargs = {"max_length": 2, "eos_id": EOS, **overrides}
    if search == "beam_search":
        kwargs["beam_size"] = 2
    with pytest.raises(error, match=f"^{search}: .*{match}"):
        getattr(decoding, search)(step_fn, state, starts, **kwargs)


@pytest.mark.parametrize("beam_size, error, match", [
    (0, ValueError, r"beam_size to be a positive int, got 0"),
    (-3, ValueError, r"beam_size to be a positive int, got -3"),
    (True, ValueError, r"beam_size to be a positive int, got True"),
])
def test_beam_size_errors(beam_size, error, match):
    step_fn, state = _good_model()
    with pytest.raises(error, match=f"^beam_search: expected {match}"):
        decoding.beam_search(step_fn, state, _STARTS, beam_size=beam_size, max_length=2, eos_id=EOS)


def test_other_errors():
    step_fn, state = _good_model()
    with pytest.raises(TypeError, match=r"^beam_search: expected length_penalty to be a float"):
        decoding.beam_search(step_fn, state, _STARTS, beam_size=2, max_length=2, eos_id=EOS,
                             length_penalty="0.6")
    with pytest.raises(ValueError, match=r"^beam_search: expected a finite length_penalty"):
        decoding.beam_search(step_fn, state, _STARTS, beam_size=2, max_length=2, eos_id=EOS,
                             length_penalty=float("nan"))
    with pytest.raises(TypeError, match=r"^greedy_search: expected step_fn to be a function"):
        decoding.greedy_search(None, state, _STARTS, max_length=2, eos_id=EOS)
    with pytest.raises(ValueError, match=r"^gather_beams: expected parents of rank 2"):
        decoding.gather_beams(state, jnp.array([0, 1]))
    with pytest.raises(ValueError, match=r"^gather_beams: expected every non-scalar leaf"):
        decoding.gather_beams({"h": jnp.zeros((3, 2))}, jnp.zeros((2, 2), jnp.int32))
    with pytest.raises(ValueError, match=r"^expand_to_beams: expected beam_size to be a positive int"):
        decoding.expand_to_beams(state, 0)


# -------------------------------------------------------------------------- sampling


def test_sample_tokens_draws_from_the_tempered_softmax():
    logits = jnp.array([1.0, 0.0, -1.0, 2.0])
    keys = jax.random.split(jax.random.key(14), 20000)
    for temperature in (0.5, 1.0, 2.0):
        draws = jax.vmap(lambda k, t=temperature: decoding.sample_tokens(k, logits, t))(keys)
        frequencies = np.bincount(np.asarray(draws), minlength=4) / len(keys)
        np.testing.assert_allclose(frequencies, jax.nn.softmax(logits / temperature), atol=0.015)
    assert int(decoding.sample_tokens(jax.random.key(0), logits, 0.0)) == 3
    assert int(decoding.sample_tokens(jax.random.key(0), logits, 1e-6)) == 3
    # Under jit a negative temperature cannot raise: it gives the invalid id -1.
    assert int(jax.jit(decoding.sample_tokens)(jax.random.key(0), logits, -1.0)) == -1


def test_sample_tokens_errors():
    with pytest.raises(ValueError, match=r"^sample_tokens: expected a finite temperature >= 0"):
        decoding.sample_tokens(jax.random.key(0), jnp.zeros(3), -1.0)
    with pytest.raises(TypeError, match=r"^sample_tokens: expected temperature to be a number >= 0, got str"):
        decoding.sample_tokens(jax.random.key(0), jnp.zeros(3), "1")
    with pytest.raises(ValueError, match=r"^sample_tokens: expected a scalar temperature, got shape \(2,\)"):
        decoding.sample_tokens(jax.random.key(0), jnp.zeros(3), jnp.ones(2))
    with pytest.raises(TypeError, match=r"^sample_tokens: expected a floating-point logits, got int32"):
        decoding.sample_tokens(jax.random.key(0), jnp.zeros(3, jnp.int32))


def test_start_tokens_outside_the_vocabulary_are_refused():
    table = np.log(np.full((3, 3), 1 / 3, np.float32))
    step_fn = lambda state, tokens, step: (jnp.asarray(table)[tokens], state)  # noqa: E731
    with pytest.raises(ValueError, match=r"^greedy_search: expected start_tokens in \[0, 3\) \(the vocabulary\), "
                                         r"got start_tokens from 0 to 7"):
        decoding.greedy_search(step_fn, None, jnp.array([0, 7]), max_length=2, eos_id=2)
