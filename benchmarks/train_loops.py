"""jdl.train's loops against the hand-written loops they replace, on the MNIST-1D MLP and CNN.

Two comparisons, each in one process on the same device, timed with
:func:`benchmarks.harness.time_alternating` (median of the timed calls after compilation):

* **compiled epochs vs a per-step Python loop**: one call of ``jdl.train.compile_loop(
  epoch_loop(step, 100, 1))`` trains one epoch (40 steps of batch 100 on 4000 examples) in
  one program; the baseline calls the same jitted step (train state donated) 40 times from
  Python, each gathering its batch on the device from the epoch's permutation. Reported as
  steps per second for both and their ratio (target: compiled >= 2x).
* **fit's overhead**: ``jdl.train.fit`` over ``chunks`` calls of a 5-epoch compiled loop,
  evaluating on 1000 test examples after each, against a bare Python loop making the same
  calls and reading the same numbers back (target: fit / bare <= 1.05).

The data are random arrays of MNIST-1D's shapes (the benchmark needs no dataset).

    python -m benchmarks.train_loops --json benchmarks/results/cpu_train_loops.json --markdown benchmarks/results/cpu_train_loops.md
"""
from __future__ import annotations

import argparse
import json

import jax

import jdl
from benchmarks.harness import time_alternating
from benchmarks.report import cell, markdown_table, provenance
from experiments.mnist1d import make_model
from jdl.io import atomic_write_text

BATCH, TRAIN, TEST, FEATURES = 100, 4000, 1000, 40
LOSS = jdl.losses.softmax_cross_entropy_with_integer_labels


def make_data(seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 4)
    train = (jax.random.normal(keys[0], (TRAIN, FEATURES)), jax.random.randint(keys[1], (TRAIN,), 0, 10))
    test = (jax.random.normal(keys[2], (TEST, FEATURES)), jax.random.randint(keys[3], (TEST,), 0, 10))
    return train, test


class Runner:
    """A zero-argument callable holding its own train state (each call donates and replaces it)."""

    def __init__(self, train_state, call):
        self.train_state, self.call = train_state, call

    def __call__(self):
        self.train_state, out = self.call(self.train_state)
        return out


def epoch_comparison(name: str, rounds: int) -> dict:
    model, optimizer = make_model(name), jdl.optim.adam(1e-3)
    train, _ = make_data()
    step = jdl.train.train_step(model, LOSS, optimizer)
    new_state = lambda: jdl.train.init(model, optimizer, jax.random.key(0), train[0][:BATCH])  # noqa: E731
    compiled = jdl.train.compile_loop(jdl.train.epoch_loop(step, BATCH, 1))
    jitted_step = jax.jit(lambda ts, data, index: step(ts, jax.tree.map(lambda a: a[index], data)), donate_argnums=0)
    steps = TRAIN // BATCH

    @jax.jit
    def epoch_order(ts):
        epoch = ts.step // steps
        order = jax.random.permutation(jax.random.fold_in(jdl.train.streams(ts.key).order, epoch), TRAIN)
        return order[: steps * BATCH].reshape(steps, BATCH)

    def python_epoch(ts):
        order = epoch_order(ts)
        for i in range(steps):
            ts, metrics = jitted_step(ts, train, order[i])
        return ts, metrics["loss"]

    calls = {"compiled": Runner(new_state(), lambda ts: compiled(ts, train)),
             "python": Runner(new_state(), python_epoch)}
    times, _ = time_alternating(calls, rounds=rounds, warmup=2)
    compiled_rate, python_rate = steps / times["compiled"].median_s, steps / times["python"].median_s
    return {"case": f"{name}_epoch", "comparison": "compiled epoch vs per-step Python loop",
            "compiled_steps_per_s": compiled_rate, "python_steps_per_s": python_rate,
            "speedup": compiled_rate / python_rate, "steps_per_call": steps, "rounds": rounds,
            "compile_s": times["compiled"].compile_s, **provenance()}


def fit_comparison(name: str, rounds: int, chunks: int = 4, epochs_per_chunk: int = 5) -> dict:
    model, optimizer = make_model(name), jdl.optim.adam(1e-3)
    train, test = make_data()
    run = jdl.train.compile_loop(jdl.train.epoch_loop(jdl.train.train_step(model, LOSS, optimizer), BATCH,
                                                      epochs_per_chunk))
    evaluate_step = jax.jit(jdl.train.eval_step(model, LOSS, metrics={"accuracy": jdl.metrics.accuracy}))
    evaluate = lambda ts: evaluate_step(ts, test)  # noqa: E731
    new_state = lambda: jdl.train.init(model, optimizer, jax.random.key(0), train[0][:BATCH])  # noqa: E731

    def with_fit(ts):
        result = jdl.train.fit(ts, run, train, chunks=chunks, evaluate=evaluate, progress=False, resume=False)
        return result.train_state, result.history[-1]["eval/accuracy"]

    def bare(ts):
        history = []
        for _ in range(chunks):
            ts, metrics = run(ts, train)
            scores = evaluate(ts)
            history.append((float(metrics["loss"].mean()), float(scores["loss"]), float(scores["accuracy"])))
        return ts, history[-1][-1]

    calls = {"fit": Runner(new_state(), with_fit), "bare": Runner(new_state(), bare)}
    times, _ = time_alternating(calls, rounds=rounds, warmup=1)
    steps = chunks * epochs_per_chunk * (TRAIN // BATCH)
    return {"case": f"{name}_fit", "comparison": "fit vs a bare loop of the same calls",
            "fit_steps_per_s": steps / times["fit"].median_s, "bare_steps_per_s": steps / times["bare"].median_s,
            "overhead": times["fit"].median_s / times["bare"].median_s, "steps_per_call": steps, "rounds": rounds,
            **provenance()}


COLUMNS = {
    "case": cell("case"), "backend": cell("backend"),
    "compiled or fit (steps/s)": lambda r: f"{r.get('compiled_steps_per_s', r.get('fit_steps_per_s')):,.0f}",
    "Python loop or bare (steps/s)": lambda r: f"{r.get('python_steps_per_s', r.get('bare_steps_per_s')):,.0f}",
    "speedup (compiled / Python)": lambda r: f"{r['speedup']:.2f}x" if "speedup" in r else "-",
    "overhead (fit / bare)": lambda r: f"{r['overhead']:.3f}" if "overhead" in r else "-",
}


def main(argv=None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"])
    parser.add_argument("--chunks", type=int, default=4, help="fit's compiled calls per timed run")
    parser.add_argument("--epochs-per-chunk", type=int, default=5, help="epochs in each of fit's calls")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    records = []
    for name in args.models:
        records.append(epoch_comparison(name, args.rounds))
        records.append(fit_comparison(name, max(3, args.rounds // 3), args.chunks, args.epochs_per_chunk))
        print(json.dumps({k: v for k, v in records[-2].items() if k in ("case", "speedup")}),
              json.dumps({k: v for k, v in records[-1].items() if k in ("case", "overhead")}), flush=True)
    table = markdown_table(COLUMNS, records, text_columns=2)
    print(table)
    if args.json:
        atomic_write_text(args.json, json.dumps(records, indent=2) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, f"# jdl.train loops ({records[0]['device']})\n\n{table}\n")
    return records


if __name__ == "__main__":
    main()
