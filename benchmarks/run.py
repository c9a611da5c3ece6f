"""Run the benchmarks: jdl against flax + optax, side by side, in one process.

    python -m benchmarks.run --quick --json /tmp/bench.json
    python -m benchmarks.run --only cnn_train_step --dtype bfloat16 --json /tmp/bf16.json
    python -m benchmarks.run --json benchmarks/results/cpu.json --markdown benchmarks/results/cpu.md
    python -m benchmarks.run --quick --only optimizer_updates --json /tmp/optbench.json

Prints a markdown table (case, backend, dtype, jdl ms, flax+optax ms, ratio) and writes
the records as a JSON list (see benchmarks/README.md). Times are per train step (per
optimizer step for the optimizer cases, which also get bytes per second against a
memory-bandwidth baseline); the ratio is jdl / reference, so below 1 means jdl is faster.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import flax
import jax
import optax

import jdl
from jdl.io import atomic_write_text
from benchmarks.cases import CASES as TRAIN_CASES, Config
from benchmarks.harness import compare
from benchmarks.optim_cases import OPTIMIZER_CASES, SkipCase
from benchmarks.recurrent_cases import RECURRENT_CASES
from benchmarks.transformer_cases import TRANSFORMER_CASES

CASES = {**TRAIN_CASES, **TRANSFORMER_CASES, **OPTIMIZER_CASES, **RECURRENT_CASES}
# Names --only accepts for a whole group of cases.
GROUPS = {"train_steps": list(TRAIN_CASES) + list(TRANSFORMER_CASES), "optimizer_updates": list(OPTIMIZER_CASES),
          "recurrent": list(RECURRENT_CASES), "lstm": [n for n in RECURRENT_CASES if n.startswith("lstm")],
          "gru": [n for n in RECURRENT_CASES if n.startswith("gru")]}


def device_description() -> str:
    device = jax.devices()[0]
    if device.platform != "cpu":
        return device.device_kind
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} cores)"


def git_commit() -> str | None:
    """The checked-out commit (read only; uncommitted changes are not reflected)."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def run_case(name: str, config: Config) -> dict:
    """Build, check and time one case; raises :class:`SkipCase` where it cannot run here."""
    case = CASES[name]
    built = case.build(config)
    timing = compare(built["jdl_call"], built["ref_call"], rounds=built["rounds"],
                     steps_per_call=built["steps_per_call"], warmup=1 if config.quick else 2,
                     check=built["check"], baseline=built.get("baseline"))
    jdl_loop, ref_loop = built["jdl_call"], built["ref_call"]
    for side, loop in (("jdl", jdl_loop), (built.get("ref_name", "flax+optax"), ref_loop)):
        # Either would make the timing unfair: a retrace times compilation, a lost donation copies the state.
        if loop.compilations() != 1 or loop.donated is False:
            print(f"warning: {name} ({side}): {loop.compilations()} compilations, train state donated: "
                  f"{loop.donated}", file=sys.stderr)
    finish = built.get("finish")
    return {
        "case": name,
        "kind": case.kind,
        "backend": jax.default_backend(),
        "device": device_description(),
        "dtype": config.dtype,
        "jdl_s": timing.jdl_s,
        "ref_s": timing.ref_s,
        "ratio": timing.ratio,
        "repeats": timing.rounds,
        "steps_per_call": timing.steps_per_call,
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "optax_version": optax.__version__,
        "jdl_version": jdl.__version__,
        "description": case.description,
        "num_params": built["num_params"],
        "jdl_min_s": timing.jdl_min_s,
        "ref_min_s": timing.ref_min_s,
        "jdl_iqr_s": timing.jdl_iqr_s,
        "ref_iqr_s": timing.ref_iqr_s,
        "jdl_compile_s": timing.jdl_compile_s,
        "ref_compile_s": timing.ref_compile_s,
        "jdl_compilations": jdl_loop.compilations(),
        "ref_compilations": ref_loop.compilations(),
        "jdl_donated": jdl_loop.donated,
        "ref_donated": ref_loop.donated,
        built.get("check_key", "loss_check"): timing.check,
        **built.get("record", {}),
        **(finish(timing) if finish is not None else {}),
        "quick": config.quick,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "python_version": platform.python_version(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def train_table(records: list[dict]) -> str:
    lines = ["| case | backend | dtype | jdl ms | flax+optax ms | ratio |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    for r in records:
        lines.append(f"| {r['case']} | {r['backend']} | {r['dtype']} | {1e3 * r['jdl_s']:.3f} | "
                     f"{1e3 * r['ref_s']:.3f} | {r['ratio']:.2f} |")
    return "\n".join(lines)


def optimizer_table(records: list[dict]) -> str:
    lines = ["| case | backend | dtype | jdl ms | optax ms | ratio | MB/step | jdl GB/s | optax GB/s | "
             "baseline GB/s | jdl fraction | optax fraction | same program |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in records:
        lines.append(f"| {r['case']} | {r['backend']} | {r['dtype']} | {1e3 * r['jdl_s']:.3f} | "
                     f"{1e3 * r['ref_s']:.3f} | {r['ratio']:.2f} | {r['bytes_per_step'] / 1e6:.0f} | "
                     f"{r['jdl_bytes_per_s'] / 1e9:.1f} | {r['ref_bytes_per_s'] / 1e9:.1f} | "
                     f"{r['baseline_bytes_per_s'] / 1e9:.1f} | {r['jdl_bandwidth_fraction']:.2f} | "
                     f"{r['ref_bandwidth_fraction']:.2f} | {'yes' if r['same_compiled_program'] else 'no'} |")
    return "\n".join(lines)


def _is_optimizer(record: dict) -> bool:
    return record.get("kind") == "optimizer_update"


def _is_recurrent(record: dict) -> bool:
    return record.get("kind") == "recurrent_fwd_bwd"


def recurrent_table(records: list[dict]) -> str:
    lines = ["| case | backend | dtype | time steps | jdl ms | flax ms | ratio | jdl ms / step | "
             "jdl compile s | flax compile s |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in records:
        lines.append(f"| {r['case']} | {r['backend']} | {r['dtype']} | {r['time']} | {1e3 * r['jdl_s']:.2f} | "
                     f"{1e3 * r['ref_s']:.2f} | {r['ratio']:.2f} | {1e3 * r['jdl_s'] / r['time']:.3f} | "
                     f"{r['jdl_compile_only_s']:.2f} | {r['ref_compile_only_s']:.2f} |")
    return "\n".join(lines)


def _optimizer_details(r: dict) -> str:
    def megabytes(value):
        return "?" if value is None else f"{value / 1e6:.0f}"

    return (f"; state {megabytes(r['jdl_state_bytes'])} / {megabytes(r['ref_state_bytes'])} MB, bytes accessed per "
            f"step as XLA counts them {megabytes(r['jdl_compiled_bytes_per_step'])} / "
            f"{megabytes(r['ref_compiled_bytes_per_step'])} MB (ideal {megabytes(r['bytes_per_step'])})")


def markdown_table(records: list[dict]) -> str:
    """One table for the train-step cases, another for the optimizer cases (those present)."""
    train = [r for r in records if not _is_optimizer(r) and not _is_recurrent(r)]
    optim = [r for r in records if _is_optimizer(r)]
    recurrent = [r for r in records if _is_recurrent(r)]
    return "\n\n".join(table for table in (train and train_table(train), optim and optimizer_table(optim),
                                             recurrent and recurrent_table(recurrent)) if table)


def markdown_report(records: list[dict], command: str, skipped: dict[str, str] | None = None) -> str:
    first = records[0]
    train = [r for r in records if not _is_optimizer(r) and not _is_recurrent(r)]
    optim = [r for r in records if _is_optimizer(r)]
    recurrent = [r for r in records if _is_recurrent(r)]
    details = "\n".join(
        f"- `{r['case']}` ({r['dtype']}): {r['description']}; {r['num_params']} params; median of "
        f"{r['repeats']} rounds of {r['steps_per_call']} steps; min {1e3 * r['jdl_min_s']:.3f} / "
        f"{1e3 * r['ref_min_s']:.3f} ms, IQR {1e3 * r['jdl_iqr_s']:.3f} / {1e3 * r['ref_iqr_s']:.3f} ms (jdl / ref)"
        + (_optimizer_details(r) if _is_optimizer(r) else "")
        for r in records
    )
    sections = []
    if train:
        sections.append(
            f"Per train step (forward, softmax cross-entropy, backward, Adam), batch {train[0]['batch']}; "
            f"ratio = jdl / flax+optax (below 1: jdl is faster).\n\n{train_table(train)}")
    if optim:
        sections.append(
            f"Per optimizer step (update and apply_updates) on {optim[0]['num_params']} params in "
            f"{optim[0]['num_leaves']} leaves; ratio = jdl / optax. MB/step: the bytes an ideal update moves "
            f"(params, gradients and state read, params and state written); GB/s: those bytes over the step "
            f"time; fraction: that over the bandwidth of a jitted `x * a + b` moving as many bytes; same "
            f"program: jdl and optax compile to the same optimized HLO (names and metadata aside).\n\n"
            f"{optimizer_table(optim)}")
    if recurrent:
        sections.append(
            f"Forward + backward (params and input) of one recurrent layer, batch {recurrent[0]['batch']}, input "
            f"{recurrent[0]['input_features']}, hidden {recurrent[0]['hidden']}; ratio = jdl / flax (nn.RNN with "
            f"OptimizedLSTMCell or GRUCell). Compile s: tracing and compiling ahead of time (nothing run).\n\n"
            f"{recurrent_table(recurrent)}")
    if skipped:
        sections.append("Skipped: " + "; ".join(f"`{name}` ({why})" for name, why in skipped.items()) + ".")
    sections_text = "\n\n".join(sections)
    return (
        f"# Benchmarks: jdl vs flax + optax ({first['backend']})\n\n"
        f"{sections_text}\n\n"
        f"Device: {first['device']}; jax {first['jax_version']}, flax {first['flax_version']}, "
        f"optax {first['optax_version']}, jdl {first['jdl_version']}; commit {first['git_commit']}; "
        f"{first['timestamp']}.\n\n"
        f"Command: `{command}`\n\n{details}\n"
    )


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and steps per call (about two minutes on CPU for all cases)")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES) + sorted(GROUPS), metavar="NAME",
                        help=f"run only these cases (of {', '.join(CASES)}) or groups ({', '.join(GROUPS)})")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32",
                        help="inputs, params and compute on both sides")
    parser.add_argument("--json", metavar="PATH", help="write the records here (a JSON list, written atomically)")
    parser.add_argument("--markdown", metavar="PATH", help="also write the table and details as markdown")
    parser.add_argument("--conv-implementation", choices=("auto", "xla", "matmul"), default="auto",
                        help="jdl's Conv(implementation=...); 'auto' is the library default")
    parser.add_argument("--steps-per-call", type=int, help="train steps per timed call (default: per case)")
    parser.add_argument("--repeats", type=int, help="timed rounds per case (default: per case)")
    args = parser.parse_args(argv)
    if (args.steps_per_call is not None and args.steps_per_call < 2) or (args.repeats is not None and args.repeats < 1):
        parser.error("--steps-per-call must be >= 2 and --repeats >= 1")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    config = Config(dtype=args.dtype, quick=args.quick, conv_implementation=args.conv_implementation,
                    steps_per_call=args.steps_per_call, rounds=args.repeats)
    names = list(dict.fromkeys(case for name in (args.only or list(CASES)) for case in GROUPS.get(name, [name])))
    start = time.perf_counter()
    records, skipped = [], {}
    for name in names:
        case_start = time.perf_counter()
        try:
            records.append(run_case(name, config))
        except SkipCase as reason:
            skipped[name] = str(reason)
            print(f"{name}: skipped: {reason}", file=sys.stderr, flush=True)
            continue
        print(f"{name}: {time.perf_counter() - case_start:.1f} s", file=sys.stderr, flush=True)
    if records:
        print(markdown_table(records))
    else:
        print("no case ran", file=sys.stderr)
    if skipped:
        print(f"\nskipped: {', '.join(skipped)}", file=sys.stderr)
    print(f"\n{device_description()}; jax {jax.__version__}, flax {flax.__version__}, optax {optax.__version__}; "
          f"{time.perf_counter() - start:.1f} s in all", file=sys.stderr)
    if args.json:
        atomic_write_text(args.json, json.dumps(records, indent=2) + "\n")
    if args.markdown and records:
        command = "python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv)
        atomic_write_text(args.markdown, markdown_report(records, command, skipped))
    return records


if __name__ == "__main__":
    main()
