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
the timed calls (timed by :func:`benchmarks.harness.time_alternating`, as every benchmark:
each call followed by ``jax.block_until_ready``, the two decoders alternating). Compile
time is the first call: trace, compile and one run. Beam search (beam 4, GNMT length
penalty 0.6, with the cache: ``model.beam_decode``'s search, :func:`cached_beam`) is
timed the same way, with ``eos`` masked so that it runs all ``max_length`` steps; its
tokens per second count ``batch * max_length`` (the best hypotheses),
``beam_hypothesis_tokens_per_s`` all ``batch * beam * max_length``.

A random model's greedy output is repetitive (one or two distinct tokens per sequence
here), so the token check is only a check that the two loops agree on these inputs; the
model's own tests check ``decode_step`` against ``decode`` position by position.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.harness import CallTimes, time_alternating
from benchmarks.report import cell, markdown_table, provenance
from benchmarks.transformer_cases import MODEL, token_batches
from jdl import decoding, models
from jdl.io import atomic_write_json, atomic_write_text


@dataclasses.dataclass(frozen=True)
class DecodingCase:
    """The sizes of one run (defaults: the full run)."""

    model: models.TransformerConfig = MODEL  # its max_length is set by the lengths below
    batch: int = 32
    source_length: int = 64
    lengths: tuple[int, ...] = (64, 128)  # decode max_length, each timed
    beam_size: int = 4
    length_penalty: float = 0.6
    repeats: int = 5  # timed calls per length of the cached greedy and the beam search
    warmup: int = 1  # their untimed calls after the compiling one
    uncached_repeats: int = 3  # the same for the uncached greedy, whose calls are long
    uncached_warmup: int = 0


FULL = DecodingCase()
QUICK = DecodingCase(batch=4, lengths=(8, 16), repeats=3, warmup=0, uncached_repeats=3)


def model_config(case: DecodingCase, dtype: Any = jnp.float32, eos_id: int = 2) -> models.TransformerConfig:
    """The case's model, with positions for the longest source or decode and ``eos_id``."""
    longest = max(case.source_length, *case.lengths)
    return dataclasses.replace(case.model, param_dtype=jnp.dtype(dtype), max_length=longest, eos_id=eos_id)


def make_source(case: DecodingCase) -> jax.Array:
    """``[batch, source_length]`` random tokens (ids 3 and up), padded at the end to random lengths."""
    sources, _ = token_batches(1, case.batch, case.source_length, case.model.source_vocab_size)
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


def as_record(side: str, times: CallTimes) -> dict:
    """One decoder's times as record keys: ``{side}_compile_s``, ``{side}_s`` (the median), ``_min_s``, ...."""
    return {f"{side}_compile_s": times.compile_s, f"{side}_s": times.median_s, f"{side}_min_s": times.min_s,
            f"{side}_iqr_s": times.iqr_s, f"{side}_repeats": times.rounds}


def check_full_length(beams, length: int) -> None:
    """Raise unless every beam hypothesis ran ``length`` steps (``eos`` is masked, so none may end early)."""
    lengths = np.asarray(beams[1])
    if not np.all(lengths == length):
        raise AssertionError(f"decoding benchmark: beam hypotheses shorter than max_length={length}: the beam loop "
                             f"stopped early (lengths {np.unique(lengths).tolist()})")


def run(case: DecodingCase, dtype: str = "float32", log: Callable[[str], None] | None = None) -> list[dict]:
    """Build the model, check the two greedy decoders agree, time them and beam search at each length.

    Every call is timed by :func:`benchmarks.harness.time_alternating`, the two greedy
    decoders alternating. Returns one record per ``max_length`` (see benchmarks/README.md
    for the keys).
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
        times, check = time_alternating(
            greedy, rounds={"cached": case.repeats, "uncached": case.uncached_repeats},
            warmup={"cached": case.warmup, "uncached": case.uncached_warmup},
            check=lambda first: check_same_tokens(first["cached"], first["uncached"], eos_id))
        beam_call = jitted(cached_beam, model, params, source, length, beam_size=case.beam_size,
                           length_penalty=case.length_penalty)
        beam_times, _ = time_alternating({"beam": beam_call}, rounds=case.repeats, warmup=case.warmup,
                                         check=lambda first: check_full_length(first["beam"], length))
        times.update(beam_times)
        tokens = case.batch * length
        records.append({
            "max_length": length,
            "generated_tokens": tokens,
            "cached_tokens_per_s": tokens / times["cached"].median_s,
            "uncached_tokens_per_s": tokens / times["uncached"].median_s,
            "speedup": times["uncached"].median_s / times["cached"].median_s,
            "beam_tokens_per_s": tokens / times["beam"].median_s,
            "beam_hypothesis_tokens_per_s": tokens * case.beam_size / times["beam"].median_s,
            **{key: value for side, side_times in times.items() for key, value in as_record(side, side_times).items()},
            "beam_size": case.beam_size,
            "beam_length_penalty": case.length_penalty,
            "eos_id": eos_id,
            "token_check": check,
        })
        log(f"max_length {length}: {time.perf_counter() - start:.1f} s")
    return records


# ----------------------------------------------------------------------------- reports


def table(records: list[dict]) -> str:
    columns = {
        "max_length": cell("max_length"), "cached tok/s": cell("cached_tokens_per_s", ",.0f"),
        "uncached tok/s": cell("uncached_tokens_per_s", ",.0f"), "speed-up": lambda r: f"{r['speedup']:.1f}x",
        "cached compile s": cell("cached_compile_s", ".2f"), "uncached compile s": cell("uncached_compile_s", ".2f"),
        f"beam {records[0]['beam_size']} tok/s": cell("beam_tokens_per_s", ",.0f"),
        "beam compile s": cell("beam_compile_s", ".2f"),
    }
    return markdown_table(columns, records)


def describe(case: DecodingCase) -> dict:
    """The case as JSON values (the model's ``param_dtype`` by name)."""
    described = dataclasses.asdict(case)
    described["model"]["param_dtype"] = jnp.dtype(case.model.param_dtype).name
    return described


def markdown_report(report: dict, command: str) -> str:
    c, m = report["config"], report["config"]["model"]
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
        f"{m['num_encoder_layers']}+{m['num_decoder_layers']} layers, d_model {m['d_model']}, {m['num_heads']} heads, "
        f"d_ff {m['mlp_features']}, vocab {m['target_vocab_size']}, random weights, {report['dtype']}; batch "
        f"{c['batch']}, source length {c['source_length']}; {report['num_params']} params. Tokens per second: batch "
        f"x max_length over the median call (one jitted call decodes the batch, encoder included). Speed-up: "
        f"uncached time over cached time. Compile s: the first call (trace, compile, run once). Beam: "
        f"`jdl.decoding.beam_search` over `decode_step` (the cache), beam {c['beam_size']}, length penalty "
        f"{c['length_penalty']}, `eos` masked so that every call runs max_length steps; its tokens per second count "
        f"the best hypothesis' tokens (x {c['beam_size']} for all hypotheses).\n\n"
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
    args = parse_args(argv)
    case = QUICK if args.quick else FULL
    if args.repeats is not None:
        case = dataclasses.replace(case, repeats=args.repeats, uncached_repeats=args.repeats)
    start = time.perf_counter()
    records = run(case, args.dtype, log=lambda message: print(message, file=sys.stderr, flush=True))
    source = make_source(case)
    model = models.Transformer(model_config(case, args.dtype))
    report = {
        "benchmark": "decoding",
        "dtype": args.dtype,
        "config": describe(case),
        "num_params": models.count_params(jax.eval_shape(model.init, jax.random.key(0), (source, source))[0]),
        "eos_id": records[0]["eos_id"] if records else None,
        "records": records,
        "quick": args.quick,
        **provenance(),
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
