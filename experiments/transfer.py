"""Transfer learning on handwritten digits: what a network learnt on 0-4 is worth for 5-9.

LeNet-5 is pretrained on the digits 0 to 4 (scikit-learn's real scans, resized to 32 x 32;
the training split's 0-4 images). The task is then to tell 5 to 9 apart from only
``--shots`` examples of each (drawn anew for every seed from the training split's 5-9
images), tested on every 5-9 image of the test split. Three ways, the seeds' chapter on
transfer learning:

* ``scratch``: a fresh LeNet-5, every layer trained;
* ``frozen``: the pretrained trunk (``c1`` to ``f6``) kept as it is, a new output layer
  trained (``jdl.optim.multi_transform`` with ``set_to_zero`` on the trunk);
* ``fine_tune``: the pretrained trunk and a new output layer, the whole network trained at
  a small learning rate.

Each way takes the same number of full-batch Adam steps. Every seed pretrains its own
network and draws its own examples; the seeds run at once (``jax.vmap``), the steps inside
``lax.scan``. The table gives the test accuracy's mean and spread (the standard deviation
over the seeds, NumPy's default ``ddof=0``, as every table of the experiments).

    python experiments/transfer.py
    python experiments/transfer.py --shots 5 --num-seeds 3 --out /tmp/transfer

Writes ``OUT/transfer.json`` and ``OUT/transfer.png``.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jdl
from experiments.common import digits_dataset, finish_figure, plot_mean_and_spread, require_positive, train_ensemble
from jdl import io, models, optim

WAYS = ("scratch", "frozen", "fine_tune")
HEAD = "output"  # LeNet-5's last layer; the rest is the trunk


def split_by_digit(data: dict) -> tuple[dict, dict]:
    """``(first, second)``: the images of digits 0-4, and those of 5-9 relabelled 0-4."""
    halves = []
    for low in (0, 5):
        half = {}
        for part in ("train", "test"):
            keep = (data[f"y_{part}"] >= low) & (data[f"y_{part}"] < low + 5)
            half[f"x_{part}"], half[f"y_{part}"] = data[f"x_{part}"][keep], data[f"y_{part}"][keep] - low
        halves.append(half)
    return halves[0], halves[1]


def draw_shots(key: jax.Array, labels: jax.Array, shots: int, num_classes: int = 5) -> jax.Array:
    """Indices of ``shots`` examples of each class, drawn without replacement."""
    def of_class(class_key, label):
        order = jax.random.permutation(class_key, labels.shape[0])
        ranked = jnp.argsort(labels[order] != label, stable=True)  # the class's examples first, shuffled
        return order[ranked[:shots]]
    return jax.vmap(of_class)(jax.random.split(key, num_classes), jnp.arange(num_classes)).reshape(-1)


def head_labels(params: dict) -> dict:
    """``"head"`` for the output layer's params, ``"trunk"`` for the rest."""
    return {name: jax.tree.map(lambda _: "head" if name == HEAD else "trunk", layer) for name, layer in params.items()}


def optimizer_for(way: str, learning_rate: float, fine_tune_rate: float) -> optim.GradientTransformation:
    if way == "frozen":
        return optim.multi_transform({"head": optim.adam(learning_rate), "trunk": optim.set_to_zero()}, head_labels)
    return optim.adam(fine_tune_rate if way == "fine_tune" else learning_rate)


def with_pretrained_trunk(fresh: jdl.train.TrainState, pretrained_params: dict, pretrained_state: dict,
                          optimizer) -> jdl.train.TrainState:
    """``fresh`` with the pretrained params and state everywhere but the output layer, which keeps
    its fresh initialisation; the optimizer state starts anew for those params."""
    params = {name: fresh.params[name] if name == HEAD else layer for name, layer in pretrained_params.items()}
    return fresh._replace(params=params, state=pretrained_state, opt_state=optimizer.init(params))


def transfer_run(model, pretrained_params, pretrained_state, way: str, optimizer, test: tuple, steps: int,
                 evals: int):
    """One seed's run (vmapped over the seeds by the caller): ``(test accuracy per evaluation,
    training loss per evaluation)``, full-batch steps on the few examples."""
    loss_fn = jdl.losses.softmax_cross_entropy_with_integer_labels
    step = jdl.train.train_step(model, loss_fn, optimizer)
    evaluate = jdl.train.eval_step(model, loss_fn, metrics={"accuracy": jdl.metrics.accuracy})

    def run(key, x_few, y_few):
        fresh = jdl.train.init(model, optimizer, key, x_few)
        start = fresh if way == "scratch" else with_pretrained_trunk(fresh, pretrained_params, pretrained_state,
                                                                     optimizer)

        def chunk(train_state, _):
            train_state, metrics = jax.lax.scan(lambda ts, _: step(ts, (x_few, y_few)), train_state, None,
                                                length=steps // evals)
            return train_state, (evaluate(train_state, test)["accuracy"], metrics["loss"].mean())

        return jax.lax.scan(chunk, start, None, length=evals)[1]

    return run


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    first, second = split_by_digit(digits_dataset())
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    fewest = int(np.bincount(second["y_train"]).min())
    if args.shots > fewest:
        raise SystemExit(f"--shots {args.shots}: the training split has only {fewest} images of some digit of 5-9")
    print(f"backend: {jax.default_backend()}; pretraining on {len(first['x_train'])} images of 0-4, "
          f"then {args.shots} per class of 5-9, tested on {len(second['x_test'])}; seeds {seeds}")

    model = models.lenet5(5)
    pretraining = train_ensemble(model, optim.adam(1e-3), first, seeds, args.pretrain_epochs, 64, evals=1,
                                 label="pretrain", progress=not args.no_progress)
    pretrained = pretraining.train_state
    pretrain_accuracy = np.asarray(pretraining.test_accuracy[-1])

    # Per seed: one key draws the examples, another initialises the new layer (and any dropout).
    draw_keys, keys = jnp.stack([jax.random.split(jax.random.key(1000 + s)) for s in seeds], axis=1)
    x_pool, y_pool = jnp.asarray(second["x_train"]), jnp.asarray(second["y_train"])
    picks = jax.vmap(lambda key: draw_shots(key, y_pool, args.shots))(draw_keys)  # (seeds, 5 * shots)
    test = (jnp.asarray(second["x_test"]), jnp.asarray(second["y_test"]))
    results = {}
    for way in WAYS:
        optimizer = optimizer_for(way, args.learning_rate, args.fine_tune_rate)
        run_start = time.perf_counter()
        runs = jax.vmap(lambda p, s, key, pick: transfer_run(model, p, s, way, optimizer, test, args.steps,
                                                             args.evals)(key, x_pool[pick], y_pool[pick]))
        accuracy, loss = jax.jit(runs)(pretrained.params, pretrained.state, keys, picks)
        accuracy, loss = np.asarray(accuracy), np.asarray(loss)  # (seeds, evals)
        results[way] = {"test_accuracy": float(accuracy[:, -1].mean()),
                        "test_accuracy_std": float(accuracy[:, -1].std()),
                        "test_accuracy_per_seed": accuracy[:, -1].tolist(),
                        # the mean training loss over the last chunk of steps, averaged over the seeds
                        "last_chunk_train_loss": float(loss[:, -1].mean()),
                        "curves": {"step": [(i + 1) * (args.steps // args.evals) for i in range(args.evals)],
                                   "test_accuracy": accuracy.T.tolist(), "train_loss": loss.T.tolist()},
                        "seconds": time.perf_counter() - run_start}
        if not args.no_progress:
            print(f"  {way}: {100 * results[way]['test_accuracy']:.1f}%", flush=True)

    output = {"ways": results, "pretrain_test_accuracy": float(pretrain_accuracy.mean()),
              "pretrain_test_accuracy_std": float(pretrain_accuracy.std()), "shots": args.shots, "steps": args.steps,
              "learning_rate": args.learning_rate, "fine_tune_rate": args.fine_tune_rate, "seeds": seeds,
              "num_test": int(len(second["x_test"])), "backend": jax.default_backend(),
              "seconds": time.perf_counter() - start}
    os.makedirs(args.out, exist_ok=True)
    json_path, png_path = os.path.join(args.out, "transfer.json"), os.path.join(args.out, "transfer.png")
    io.atomic_write_json(json_path, output)
    plot(output, png_path)
    print("\n" + format_table(output))
    print(f"\n{output['seconds']:.1f} s on {jax.default_backend()}; wrote {json_path} and {png_path}")
    return output


def format_table(output: dict) -> str:
    lines = [f"LeNet-5 pretrained on 0-4: {100 * output['pretrain_test_accuracy']:.1f}% +- "
             f"{100 * output['pretrain_test_accuracy_std']:.1f} on their test images.", "",
             f"| 5-9 from {output['shots']} examples per class | test accuracy (mean +- std over "
             f"{len(output['seeds'])} seeds) |", "| --- | ---: |"]
    labels = {"scratch": "from scratch", "frozen": "frozen trunk, new head", "fine_tune": "fine-tuned, new head"}
    for way, r in output["ways"].items():
        lines.append(f"| {labels[way]} | {100 * r['test_accuracy']:.1f}% +- {100 * r['test_accuracy_std']:.1f} |")
    return "\n".join(lines)


def plot(output: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 4))
    for way, r in output["ways"].items():
        plot_mean_and_spread(axes, r["curves"]["step"], r["curves"]["test_accuracy"], way)
    axes.set(xlabel="full-batch step", ylabel="test accuracy on 5-9",
             title=f"Digits 5-9 from {output['shots']} examples per class")
    finish_figure(figure, (axes,), path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shots", type=int, default=10, help="examples per class of 5-9")
    parser.add_argument("--pretrain-epochs", type=int, default=20)
    parser.add_argument("--steps", type=int, default=300, help="full-batch steps on the few examples")
    parser.add_argument("--evals", type=int, default=15)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam's, from scratch and for a new head")
    parser.add_argument("--fine-tune-rate", type=float, default=1e-4, help="Adam's, fine-tuning the whole network")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--num-seeds", type=int, default=5)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    require_positive(parser, args, ("shots", "pretrain_epochs", "steps", "evals", "num_seeds"))
    if args.steps % args.evals:
        parser.error(f"--steps ({args.steps}) must be a multiple of --evals ({args.evals})")
    return args


if __name__ == "__main__":
    main()
