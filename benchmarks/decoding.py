"""Decoding throughput of the jdl Transformer: greedy with the key/value cache against without.

    python -m benchmarks.decoding --quick       # ~25 s on 2 CPU cores, most of it compiling
    python -m benchmarks.decoding --json benchmarks/results/cpu_decoding.json \\
        --markdown benchmarks/results/cpu_decoding.md

The model is the one of ``transformer_train_step`` (:mod:`benchmarks.transformer_cases`):
4 + 4 layers, ``d_model`` 256, 8 heads, ``d_ff`` 1024, a shared vocabulary of 1000 tokens,
random weights (``init`` with key 0), dropout off; batch 32, a random source of length 64
(padded at the end to random lengths, as the train-step case's batches). Two greedy
decoders, each one jitted call, are timed at ``max_length`` 64 and 128:

* **cached**: ``model.greedy_decode`` (:func:`jdl.decoding.greedy_search`, a
  ``lax.while_loop`` over ``decode_step``): one position per step, attending over each
  decoder layer's key/value cache;
* **uncached**: a ``lax.scan`` over the steps with fixed shapes that, at step ``t``,
  re-runs the whole decoder (``model.decode``) on the decoder inputs ``[bos, y_0, ...,
  y_{t-1}]`` padded to ``max_length``, and takes the argmax at position ``t``: the naive
  way, whose work per step grows with ``max_length`` (O(L^2) decoder positions per
  sequence, O(L^3) attention scores).

Both encode the source once per call and follow greedy_search's rules (argmax of the
float32 log-softmax, ties to the lowest id; after ``eos``, ``pad``). Their tokens must be
equal, or the run stops. So that the cached loop cannot stop early (it ends when every
sequence has emitted ``eos``), the model's ``eos_id`` is a token that the uncached decoder
never emits for this source and these weights at the longest length (chosen by a first,
untimed run with ``eos`` out of reach); the run checks that no sequence ended.

Throughput is ``batch * max_length / t`` generated tokens per second, ``t`` the median of
the timed calls (each followed by ``jax.block_until_ready``; the two decoders alternate,
as in :mod:`benchmarks.harness`). Compile time is the first call: trace, compile and one
run. Beam search (beam 4, GNMT length penalty 0.6, with the cache: ``model.beam_decode``'s
search, :func:`cached_beam`) is timed the same way, with ``eos`` masked so that it runs
all ``max_length`` steps; its tokens per second count ``batch * max_length`` (the best
hypotheses), ``beam_hypothesis_tokens_per_s`` all ``batch * beam * max_length``.

A random model's greedy output is repetitive (one or two distinct tokens per sequence
here), so the token check is only a check that the two loops agree on these inputs; the
model's own tests check ``decode_step`` against ``decode`` position by position.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import gc
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import jdl
from jdl import decoding, models
from jdl.io import atomic_write_json, atomic_write_text
from benchmarks.harness import _iqr, _timed
from benchmarks.transformer_cases import TransformerTrainCase


@dataclasses.dataclass(frozen=True)
class DecodingCase:
    """The sizes of one run (defaults: the full run)."""

    batch: int = 32
    source_length: int = 64
    lengths: tuple[int, ...] = (64, 128)  # decode max_length, each timed
    beam_size: int = 4
    length_penalty: float = 0.6
    repeats: int = 5  # timed calls per length of the cached greedy and the beam search
    warmup: int = 1  # their untimed calls after the compiling one
    uncached_repeats: int = 3  # the same for the uncached greedy, whose calls are long
    uncached_warmup: int = 0
    vocab_size: int = 1000
    d_model: int = 256
    num_heads: int = 8
    num_layers: int = 4
    mlp_features: int = 1024


FULL = DecodingCase()
QUICK = DecodingCase(batch=4, lengths=(8, 16), repeats=3, warmup=0, uncached_repeats=3)


def model_config(case: DecodingCase, dtype: Any = jnp.float32, eos_id: int = 2) -> models.TransformerConfig:
    """The ``transformer_train_step`` model, with positions for the longest decode and ``eos_id``."""
    train_case = TransformerTrainCase(batch=case.batch, length=case.source_length, vocab_size=case.vocab_size,
                                      d_model=case.d_model, num_heads=case.num_heads, num_layers=case.num_layers,
                                      mlp_features=case.mlp_features)
    return dataclasses.replace(train_case.config(jnp.dtype(dtype)),
                               max_length=max(case.source_length, *case.lengths), eos_id=eos_id)


def make_source(case: DecodingCase) -> jax.Array:
    """``[batch, source_length]`` random tokens (ids 3 and up), padded at the end to random lengths."""
    train_case = TransformerTrainCase(batch=case.batch, length=case.source_length, vocab_size=case.vocab_size)
    sources, _ = train_case.batches(1)
    return sources[0]


# ----------------------------------------------------------------------------- decoders


def cached_greedy(model, params, source_ids, max_length: int) -> jax.Array:
    """``[batch, max_length]`` tokens from ``model.greedy_decode`` (key/value cache)."""
    return model.greedy_decode(params, source_ids, max_length).tokens


def uncached_greedy(model, params, source_ids, max_length: int, eos_id: int | None = None) -> jax.Array:
    """Greedy decoding without a cache: each step re-runs ``model.decode`` on the padded prefix.

    The decoder's inputs are a fixed ``[batch, max_length]`` buffer, ``bos`` then the tokens
    chosen so far, then ``pad``; the causal mask keeps the positions after ``t`` from
    changing the logits at ``t``. Same rules as :func:`jdl.decoding.greedy_search`, with
    ``eos_id`` (default: the model's; -1: none) as the end token.
    """
    config = model.config
    eos_id = config.eos_id if eos_id is None else eos_id
    batch = source_ids.shape[0]
    memory = model.encode(params, source_ids)
    inputs = jnp.full((batch, max_length), config.pad_id, jnp.int32).at[:, 0].set(config.bos_id)

    def step(carry, t):
        inputs, finished = carry
        logits = model.decode(params, memory, source_ids, inputs)  # [batch, max_length, vocab]
        log_probs = jax.nn.log_softmax(jax.lax.dynamic_index_in_dim(logits, t, 1, keepdims=False)
                                       .astype(jnp.float32))
        token = jnp.where(finished, jnp.int32(config.pad_id), jnp.argmax(log_probs, axis=-1).astype(jnp.int32))
        # At the last step t + 1 = max_length is clamped to the last position: written, never read.
        inputs = jax.lax.dynamic_update_index_in_dim(inputs, token, t + 1, 1)
        return (inputs, finished | (token == eos_id)), token

    _, tokens = jax.lax.scan(step, (inputs, jnp.zeros((batch,), bool)), jnp.arange(max_length, dtype=jnp.int32))
    return tokens.T


def cached_beam(model, params, source_ids, max_length: int, *, beam_size: int, length_penalty: float):
    """``(tokens [batch, beam, max_length], lengths [batch, beam])``: beam search over ``decode_step``.

    As ``model.beam_decode`` (:func:`jdl.decoding.beam_search` with the cache), except that
    ``eos`` gets log-probability ``-inf``: no hypothesis ends early and the loop runs all
    ``max_length`` steps. (Unmasked, these random weights, whose next-token distributions are
    nearly flat, make ``[eos]`` of length 1 the best hypothesis, and the search stops after a
    few steps, when no live hypothesis can beat it any more: a time that says nothing about
    the cost per token.)
    """
    config = model.config
    state = model.init_decode_state(params, source_ids, max_length)

    def step_fn(state, tokens, step):
        log_probs, state = model.decode_step(params, state, tokens, step)
        return log_probs.at[:, config.eos_id].set(-jnp.inf), state

    start = jnp.full(source_ids.shape[:1], config.bos_id, jnp.int32)
    out = decoding.beam_search(step_fn, state, start, beam_size=beam_size, max_length=max_length,
                               eos_id=config.eos_id, length_penalty=length_penalty, pad_id=config.pad_id)
    return out.tokens, out.lengths


def jitted(fn: Callable, model, params, source_ids, max_length: int, **options) -> Callable[[], Any]:
    """A zero-argument call of ``fn`` under its own ``jax.jit`` (``max_length`` static)."""
    compiled = jax.jit(functools.partial(fn, model, max_length=max_length, **options))
    return lambda: compiled(params, source_ids)


def endless_greedy(model, params, source_ids, max_length: int) -> jax.Array:
    """``[batch, max_length]`` greedy tokens with no end token (the cached loop, one more id that is never chosen).

    :func:`jdl.decoding.greedy_search` over ``decode_step`` with the log-probabilities widened
    by a column of ``-inf`` and that column's id as ``eos_id``: the loop always runs
    ``max_length`` steps, and every token is the model's argmax.
    """
    config = model.config
    never = config.target_vocab_size

    def step_fn(state, tokens, step):
        log_probs, state = model.decode_step(params, state, tokens, step)
        return jnp.pad(log_probs, ((0, 0), (0, 1)), constant_values=-jnp.inf), state

    start = jnp.full(source_ids.shape[:1], config.bos_id, jnp.int32)
    return decoding.greedy_search(step_fn, model.init_decode_state(params, source_ids, max_length), start,
                                  max_length=max_length, eos_id=never, pad_id=config.pad_id).tokens


def unused_token(model, params, source_ids, max_length: int) -> int:
    """A token id (not pad or bos) that greedy decoding never emits here, up to ``max_length``.

    Decodes once with no end token (:func:`endless_greedy`), so every greedy choice up to
    ``max_length`` is seen, and returns the lowest id not among them. With it as ``eos_id``
    no sequence ends before ``max_length``, at this length or any shorter one.
    """
    config = model.config
    tokens = np.asarray(jax.jit(functools.partial(endless_greedy, model, max_length=max_length))(params, source_ids))
    emitted = set(np.unique(tokens).tolist()) | {config.pad_id, config.bos_id}
    unused = [token for token in range(config.target_vocab_size) if token not in emitted]
    if not unused:
        raise RuntimeError("decoding benchmark: greedy emits every token id; no eos_id keeps the loop from "
                           "ending early")
    return unused[0]


def check_same_tokens(cached: jax.Array, uncached: jax.Array, eos_id: int) -> dict:
    """Raise unless the two decoders chose the same tokens and no sequence ended early."""
    cached, uncached = np.asarray(cached), np.asarray(uncached)
    if cached.shape != uncached.shape or not np.array_equal(cached, uncached):
        where = np.argwhere(cached != uncached)[:5].tolist() if cached.shape == uncached.shape else "?"
        raise AssertionError(f"decoding benchmark: cached and uncached greedy tokens differ (shapes {cached.shape}, "
                             f"{uncached.shape}; first differences at [row, position] {where})")
    if np.any(cached == eos_id):
        raise AssertionError(f"decoding benchmark: a sequence emitted eos_id={eos_id}: the cached loop could "
                             "stop early")
    return {"tokens_equal": True, "distinct_tokens": int(np.unique(cached).size)}


# ----------------------------------------------------------------------------- timing


def time_calls(calls: dict[str, Callable[[], Any]], *, repeats: dict[str, int],
               warmup: dict[str, int]) -> tuple[dict, dict]:
    """Compile each call (its first call, timed), warm up, then time ``repeats[name]`` calls of each.

    The timed calls alternate, round by round (a call drops out of the rounds once it has
    its count), so that all see the same machine load in turn. Returns ``(timings,
    first_outputs)``: per name the compile seconds and the median, min and interquartile
    range of its timed calls, and the outputs of its first call.
    """
    compile_s, first = {}, {}
    for name, call in calls.items():
        compile_s[name], first[name] = _timed(call)
    for name, call in calls.items():
        for _ in range(warmup[name]):
            _timed(call)
    times = {name: [] for name in calls}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does
    try:
        for round_index in range(max(repeats[name] for name in calls)):
            for name, call in calls.items():
                if round_index < repeats[name]:
                    times[name].append(_timed(call)[0])
    finally:
        if gc_was_enabled:
            gc.enable()
    return ({name: {"compile_s": compile_s[name], "s": statistics.median(values), "min_s": min(values),
                    "iqr_s": _iqr(values), "repeats": len(values)} for name, values in times.items()}, first)


def run(case: DecodingCase, dtype: str = "float32", log: Callable[[str], None] | None = None) -> list[dict]:
    """Build the model, check the two greedy decoders agree, time them and beam search at each length.

    Returns one record per ``max_length`` (see benchmarks/README.md for the keys).
    """
    log = log or (lambda message: None)
    source = make_source(case)
    model = models.Transformer(model_config(case, dtype))
    params, _ = model.init(jax.random.key(0), (source, source))
    start = time.perf_counter()
    eos_id = unused_token(model, params, source, max(case.lengths))
    log(f"eos_id {eos_id} (a token greedy never emits here; chosen in {time.perf_counter() - start:.1f} s)")
    model = models.Transformer(model_config(case, dtype, eos_id=eos_id))
    records = []
    for length in case.lengths:
        start = time.perf_counter()
        greedy = {"cached": jitted(cached_greedy, model, params, source, length),
                  "uncached": jitted(uncached_greedy, model, params, source, length)}
        timings, first = time_calls(greedy, repeats={"cached": case.repeats, "uncached": case.uncached_repeats},
                                    warmup={"cached": case.warmup, "uncached": case.uncached_warmup})
        check = check_same_tokens(first["cached"], first["uncached"], eos_id)
        beam_call = jitted(cached_beam, model, params, source, length, beam_size=case.beam_size,
                           length_penalty=case.length_penalty)
        beam_timings, beam_first = time_calls({"beam": beam_call}, repeats={"beam": case.repeats},
                                              warmup={"beam": case.warmup})
        beam_lengths = np.asarray(beam_first["beam"][1])
        if not np.all(beam_lengths == length):
            raise AssertionError(f"decoding benchmark: beam hypotheses shorter than max_length={length}: the beam "
                                 f"loop stopped early (lengths {np.unique(beam_lengths).tolist()})")
        tokens = case.batch * length
        cached, uncached, beam = timings["cached"], timings["uncached"], beam_timings["beam"]
        records.append({
            "max_length": length,
            "generated_tokens": tokens,
            "cached_tokens_per_s": tokens / cached["s"],
            "uncached_tokens_per_s": tokens / uncached["s"],
            "speedup": uncached["s"] / cached["s"],
            "beam_tokens_per_s": tokens / beam["s"],
            "beam_hypothesis_tokens_per_s": tokens * case.beam_size / beam["s"],
            **{f"{side}_{key}": value for side, timing in (("cached", cached), ("uncached", uncached), ("beam", beam))
               for key, value in timing.items()},
            "beam_size": case.beam_size,
            "beam_length_penalty": case.length_penalty,
            "eos_id": eos_id,
            "token_check": check,
        })
        log(f"max_length {length}: {time.perf_counter() - start:.1f} s")
    return records


# ----------------------------------------------------------------------------- reports


def table(records: list[dict]) -> str:
    lines = ["| max_length | cached tok/s | uncached tok/s | speed-up | cached compile s | uncached compile s | "
             f"beam {records[0]['beam_size']} tok/s | beam compile s |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in records:
        lines.append(f"| {r['max_length']} | {r['cached_tokens_per_s']:,.0f} | {r['uncached_tokens_per_s']:,.0f} | "
                     f"{r['speedup']:.1f}x | {r['cached_compile_s']:.2f} | {r['uncached_compile_s']:.2f} | "
                     f"{r['beam_tokens_per_s']:,.0f} | {r['beam_compile_s']:.2f} |")
    return "\n".join(lines)


def markdown_report(report: dict, command: str) -> str:
    c = report["config"]
    details = "\n".join(
        f"- max_length {r['max_length']}: medians of {r['cached_repeats']} / {r['uncached_repeats']} / "
        f"{r['beam_repeats']} calls: cached {1e3 * r['cached_s']:.1f} ms (min {1e3 * r['cached_min_s']:.1f}, IQR "
        f"{1e3 * r['cached_iqr_s']:.1f}), uncached "
        f"{1e3 * r['uncached_s']:.1f} ms (min {1e3 * r['uncached_min_s']:.1f}, IQR {1e3 * r['uncached_iqr_s']:.1f}), "
        f"beam {1e3 * r['beam_s']:.1f} ms (min {1e3 * r['beam_min_s']:.1f}, IQR {1e3 * r['beam_iqr_s']:.1f}); "
        f"greedy tokens equal (distinct token ids: {r['token_check']['distinct_tokens']})"
        for r in report["records"])
    return (
        f"# Decoding throughput: jdl Transformer, greedy with and without the cache ({report['backend']})\n\n"
        f"{c['num_layers']}+{c['num_layers']} layers, d_model {c['d_model']}, {c['num_heads']} heads, d_ff "
        f"{c['mlp_features']}, vocab {c['vocab_size']}, random weights, {report['dtype']}; batch {c['batch']}, "
        f"source length {c['source_length']}; {report['num_params']} params. Tokens per second: batch x max_length "
        f"over the median call (one jitted call decodes the batch, encoder included). Speed-up: uncached time over "
        f"cached time. Compile s: the first call (trace, compile, run once). Beam: `jdl.decoding.beam_search` over "
        f"`decode_step` (the cache), beam {c['beam_size']}, length penalty {c['length_penalty']}, `eos` masked so that "
        f"every call runs max_length steps; its tokens per second count the best hypothesis' tokens (x "
        f"{c['beam_size']} for all hypotheses).\n\n"
        f"{table(report['records'])}\n\n"
        f"Device: {report['device']}; jax {report['jax_version']}, jdl {report['jdl_version']}; commit "
        f"{report['git_commit']}; {report['timestamp']}; eos_id {report['eos_id']} (never emitted: no early "
        f"stop).\n\nCommand: `{command}`\n\n{details}\n")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.decoding", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"batch {QUICK.batch}, max_length {QUICK.lengths}, "
                        f"{QUICK.repeats} timed calls: a smoke run, mostly compilation")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="params and compute")
    parser.add_argument("--repeats", type=int, help="timed calls per decoder and length (all three)")
    parser.add_argument("--json", metavar="PATH", help="write the report here (JSON, written atomically)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table and details as markdown")
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    return args


def main(argv=None) -> dict:
    from benchmarks.run import device_description, git_commit

    args = parse_args(argv)
    case = QUICK if args.quick else FULL
    if args.repeats is not None:
        case = dataclasses.replace(case, repeats=args.repeats, uncached_repeats=args.repeats)
    start = time.perf_counter()
    records = run(case, args.dtype, log=lambda message: print(message, file=sys.stderr, flush=True))
    source = make_source(case)
    model = models.Transformer(model_config(case, args.dtype))
    num_params = models.transformer.num_params(jax.eval_shape(model.init, jax.random.key(0), (source, source))[0])
    config = dataclasses.asdict(case)
    report = {
        "benchmark": "decoding",
        "backend": jax.default_backend(),
        "device": device_description(),
        "dtype": args.dtype,
        "config": config,
        "num_params": num_params,
        "eos_id": records[0]["eos_id"] if records else None,
        "records": records,
        "jax_version": jax.__version__,
        "jdl_version": jdl.__version__,
        "python_version": platform.python_version(),
        "quick": args.quick,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    print(table(records))
    print(f"\n{report['device']}; jax {jax.__version__}; {time.perf_counter() - start:.1f} s in all", file=sys.stderr)
    if args.json:
        atomic_write_json(args.json, report)
    if args.markdown:
        command = "python -m benchmarks.decoding " + " ".join(sys.argv[1:] if argv is None else argv)
        atomic_write_text(args.markdown, markdown_report(report, command))
    return report


if __name__ == "__main__":
    main()
