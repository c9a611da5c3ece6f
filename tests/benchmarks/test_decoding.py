"""benchmarks/decoding.py on a tiny Transformer: the cached and uncached greedy loops agree.

No timing is asserted (timings live in benchmarks/, not in the test suite); this checks
that the benchmark's two decoders choose the same tokens, with and without an end token
that some sequences emit, and that the core of the run (:func:`benchmarks.decoding.run`) works end to end. Each jitted
decoder compiles in about a second on CPU, hence one length only.
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from benchmarks import decoding as bench
from jdl import models

# The benchmark's model (the paper's base layout, dropout off) at toy sizes.
TINY_MODEL = models.transformer_base(20, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                                     mlp_features=32, dropout_rate=0.0)
TINY = bench.DecodingCase(TINY_MODEL, batch=3, source_length=8, lengths=(6,), repeats=1, warmup=0)


def test_run_records_equal_tokens_and_full_length_beams():
    records = bench.run(TINY)
    assert [r["max_length"] for r in records] == [6]
    for r in records:
        assert r["token_check"]["tokens_equal"]
        assert r["generated_tokens"] == TINY.batch * r["max_length"]
        assert r["cached_tokens_per_s"] > 0 and r["uncached_tokens_per_s"] > 0 and r["beam_tokens_per_s"] > 0
        assert r["speedup"] == r["uncached_s"] / r["cached_s"]
        assert r["eos_id"] not in (0, 1)
    assert "| 6 |" in bench.table(records)


def test_uncached_matches_greedy_decode_when_sequences_end():
    # An eos that greedy emits: the sequences that emit it end (then pad), the others go on.
    source = bench.make_source(TINY)
    model = models.Transformer(bench.model_config(TINY))
    params, _ = model.init(jax.random.key(0), (source, source))
    free = np.asarray(jax.jit(functools.partial(bench.uncached_greedy, model, max_length=7, eos_id=-1))(params, source))
    eos = int(free[0, 2])  # the first sequence ends at its third token at the latest
    model = models.Transformer(dataclasses.replace(model.config, eos_id=eos))
    cached = np.asarray(jax.jit(functools.partial(bench.cached_greedy, model, max_length=7))(params, source))
    uncached = np.asarray(jax.jit(functools.partial(bench.uncached_greedy, model, max_length=7))(params, source))
    np.testing.assert_array_equal(cached, uncached)
    first_end = int(np.argmax(cached[0] == eos))
    assert first_end <= 2 and np.all(cached[0, first_end + 1:] == 0)
