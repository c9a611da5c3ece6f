"""Run the benchmarks: jdl against flax + optax, side by side, in one process.

    python -m benchmarks.run --quick --json /tmp/bench.json
    python -m benchmarks.run --only cnn_train_step --dtype bfloat16 --json /tmp/bf16.json
    python -m benchmarks.run --json benchmarks/results/cpu.json --markdown benchmarks/results/cpu.md
    python -m benchmarks.run --quick --only optimizer_updates --json /tmp/optbench.json
    python -m benchmarks.run --suite gpu --json benchmarks/results/gpu_h200.json   (benchmarks/gpu_suite.py)

Prints a markdown table (case, backend, dtype, jdl ms, flax+optax ms, ratio) and writes
the records as a JSON list (see benchmarks/README.md). Times are per train step (per
optimizer step for the optimizer cases, which also get bytes per second against a
memory-bandwidth baseline); the ratio is jdl / reference, so below 1 means jdl is faster.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import flax
import jax
import optax

from benchmarks.cases import CASES as TRAIN_CASES, Config
from benchmarks.cnn_cases import CNN_CASES
from benchmarks.harness import compare
from benchmarks.optim_cases import OPTIMIZER_CASES, SkipCase
from benchmarks.recurrent_cases import RECURRENT_CASES
from benchmarks.report import cell, device_description, markdown_table, provenance
from benchmarks.transformer_cases import TRANSFORMER_CASES
from jdl.io import atomic_write_text

CASES = {**TRAIN_CASES, **CNN_CASES, **TRANSFORMER_CASES, **OPTIMIZER_CASES, **RECURRENT_CASES}
# Names --only accepts for a whole group of cases.
GROUPS = {"train_steps": list(TRAIN_CASES) + list(CNN_CASES) + list(TRANSFORMER_CASES), "cnn": list(CNN_CASES),
          "optimizer_updates": list(OPTIMIZER_CASES), "recurrent": list(RECURRENT_CASES),
          "lstm": [n for n in RECURRENT_CASES if n.startswith("lstm")],
          "gru": [n for n in RECURRENT_CASES if n.startswith("gru")]}


def run_case(name: str, config: Config, case=None) -> dict:
    """Build, check and time one case (``CASES[name]`` unless given); raises :class:`SkipCase`
    where it cannot run here."""
    case = CASES[name] if case is None else case
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
        "dtype": config.dtype,
        "jdl_s": timing.jdl_s,
        "ref_s": timing.ref_s,
        "ratio": timing.ratio,
        "repeats": timing.rounds,
        "steps_per_call": timing.steps_per_call,
        "flax_version": flax.__version__,
        "optax_version": optax.__version__,
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
        **provenance(),
    }


# The columns every table starts with, then each kind of case's own.
WHERE = {"case": cell("case"), "backend": cell("backend"), "dtype": cell("dtype")}
TRAIN_COLUMNS = {**WHERE, "jdl ms": cell("jdl_s", ".3f", 1e3), "flax+optax ms": cell("ref_s", ".3f", 1e3),
                 "ratio": cell("ratio", ".2f")}
OPTIMIZER_COLUMNS = {
    **WHERE, "jdl ms": cell("jdl_s", ".3f", 1e3), "optax ms": cell("ref_s", ".3f", 1e3), "ratio": cell("ratio", ".2f"),
    "MB/step": cell("bytes_per_step", ".0f", 1e-6), "jdl GB/s": cell("jdl_bytes_per_s", ".1f", 1e-9),
    "optax GB/s": cell("ref_bytes_per_s", ".1f", 1e-9), "baseline GB/s": cell("baseline_bytes_per_s", ".1f", 1e-9),
    "jdl fraction": cell("jdl_bandwidth_fraction", ".2f"), "optax fraction": cell("ref_bandwidth_fraction", ".2f"),
    "same program": lambda r: "yes" if r["same_compiled_program"] else "no",
}
RECURRENT_COLUMNS = {
    **WHERE, "time steps": cell("time"), "jdl ms": cell("jdl_s", ".2f", 1e3), "flax ms": cell("ref_s", ".2f", 1e3),
    "ratio": cell("ratio", ".2f"), "jdl ms / step": lambda r: f"{1e3 * r['jdl_s'] / r['time']:.3f}",
    "jdl compile s": cell("jdl_compile_only_s", ".2f"), "flax compile s": cell("ref_compile_only_s", ".2f"),
}


def train_table(records: list[dict]) -> str:
    return markdown_table(TRAIN_COLUMNS, records, text_columns=len(WHERE))


def optimizer_table(records: list[dict]) -> str:
    return markdown_table(OPTIMIZER_COLUMNS, records, text_columns=len(WHERE))


def recurrent_table(records: list[dict]) -> str:
    return markdown_table(RECURRENT_COLUMNS, records, text_columns=len(WHERE))


def _is_optimizer(record: dict) -> bool:
    return record.get("kind") == "optimizer_update"


def _is_recurrent(record: dict) -> bool:
    return record.get("kind") == "recurrent_fwd_bwd"


def _optimizer_details(r: dict) -> str:
    def megabytes(value):
        return "?" if value is None else f"{value / 1e6:.0f}"

    return (f"; state {megabytes(r['jdl_state_bytes'])} / {megabytes(r['ref_state_bytes'])} MB, bytes accessed per "
            f"step as XLA counts them {megabytes(r['jdl_compiled_bytes_per_step'])} / "
            f"{megabytes(r['ref_compiled_bytes_per_step'])} MB (ideal {megabytes(r['bytes_per_step'])})")


def results_tables(records: list[dict]) -> str:
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
    parser.add_argument("--suite", choices=("default", "gpu"), default="default",
                        help="gpu: the accelerator suite of benchmarks/gpu_suite.py (LM MFU, ResNet-50, LSTM "
                             "against cuDNN, optimizer bandwidth) instead of the side-by-side cases")
    parser.add_argument("--toy", action="store_true", help="with --suite gpu: toy sizes (runs on a CPU in a minute)")
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
    if args.suite == "gpu":
        return run_gpu_suite(args)
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
        print(results_tables(records))
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


def run_gpu_suite(args: argparse.Namespace) -> list[dict]:
    from benchmarks import gpu_suite

    def write(records):  # after every case: a run stopped by a time limit keeps what it measured
        atomic_write_text(args.json, json.dumps(records, indent=2) + "\n")

    records = gpu_suite.run(toy=args.toy, on_record=write if args.json else None)
    print(gpu_suite.summary(records))
    return records


if __name__ == "__main__":
    main()
