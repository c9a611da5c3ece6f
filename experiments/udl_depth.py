"""UDL figure 20.2, measured: deeper networks of the same size fit random labels in fewer epochs.

Prince, *Understanding Deep Learning*, figure 20.2: four fully connected ReLU networks of
about 15,200 parameters each, with 1, 2, 3 and 4 hidden layers of 298, 100, 75 and 63
units (40 inputs, 10 outputs), are fit to the 4000 MNIST-1D training signals with *random*
labels (uniform over the 10 classes, drawn from the seed), by full-batch gradient descent
without momentum or regularisation, from He initialisation (``jdl.init.he_normal``:
``N(0, 2 / fan_in)`` for every weight matrix, output layer included; biases zero). The
loss is the course's sum over the examples, and one epoch is one step::

    L(phi) = sum_{i=1}^{I} -log softmax(f(x_i, phi))_{y_i},        phi <- phi - alpha dL/dphi.

Parameter counts (asserted below against ``jdl.count_params`` of the initialised params):
``40 D + D + (K - 1)(D^2 + D) + 10 D + 10`` for ``K`` layers of ``D`` units, that is
15,208 / 15,210 / 15,235 / 15,319. The book prints 15,139 for the 4-layer network, a slip
(2,583 + 3 x 4,032 + 640 = 15,319).

The learning rate. The book's ``alpha = 0.0025`` on the summed loss (a mean-loss rate of
``0.0025 x 4000 = 10``) diverges here from the first step for every depth (measured: the
loss goes 2.9 -> 65 -> 425 -> ... -> NaN for 1, 3 and 4 layers; 2 layers blow up to 2e5
and stall at chance), while 0.0025 on the *mean* loss is a step 400 times smaller than the
one used here, out of reach of any budget of this experiment. So the default is the rate,
of those tried, at which all four depths fit (or nearly fit) within the budget:
``alpha = 0.00025`` on the sum (mean-loss rate 1). In trial runs (other keys), at 0.0005
(mean 2) the 4-layer network fell behind (97% and 76% training accuracy after 2000 epochs)
and at 0.001 (mean 4) the 1-layer network stalled at chance and the 3- and 4-layer ones
diverged. Even at 0.00025 full-batch descent is at the edge of stability: the loss
oscillates (the jagged curves) until it drops once the labels are nearly fitted, and the
accuracy can dip again after it first reaches 100%. ``--learning-rate`` sets it.

Each seed draws its own initialisation and its own labels (the same labels for every
depth); the seeds train together (``jax.vmap`` over the train states and labels) and the
epochs run inside ``lax.scan`` (``jdl.train.gradient_step``): one compilation per depth.
Recorded: the training loss (``L / I``, per example) and accuracy after every epoch, and
the first epoch at which every training label is fitted (100% training accuracy; ``None``
if not within the budget), and at which 99% are.

What it shows (default budget: seeds 0 and 1, 2000 epochs; 2.4 minutes on 2 busy CPU cores):
the book's claim, mostly. First epoch at 100% training accuracy, per seed: 1 layer never
(99% at epochs 1834 and 1793; one seed's loss then spiked, ending at 70%), 2 layers 1426
and never (99% at 981 and 979), 3 layers 987 and 883 (99%: 697, 768), 4 layers 888 and
1062 (99%: 861, 964). So 2 to 4 layers fit the random labels about twice as fast as 1
layer, and 3 layers faster than 2; 4 layers are not faster than 3 here (975 +- 87 against
935 +- 52 epochs), though they end at the lowest loss (0.0011 and 0.0013 per example,
against 0.0021-0.0027, 0.010-0.012 and 0.14-1.15).

    python experiments/udl_depth.py --out experiments/results
    python experiments/udl_depth.py --num-train 256 --learning-rate 0.004 --epochs 20 --out /tmp/depth

Writes ``OUT/udl_depth.json`` and ``OUT/udl_depth.png``.
"""
from __future__ import annotations

import argparse
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

import jdl
from experiments.common import (
    epochs_per_chunk,
    finish_figure,
    mnist1d_dataset,
    plot_mean_and_spread,
    require_positive,
    write_results,
)
from jdl import init, losses, nn, optim

WIDTHS = {1: 298, 2: 100, 3: 75, 4: 63}  # hidden layers -> units per hidden layer
PARAM_COUNTS = {1: 15_208, 2: 15_210, 3: 15_235, 4: 15_319}  # the book prints 15,139 for 4 layers: a slip
INPUTS, CLASSES = 40, 10
BOOK_LEARNING_RATE = 0.0025  # diverges on the summed loss: see the module docstring
LEARNING_RATE = 0.00025


def param_count(depth: int, width: int, inputs: int = INPUTS, outputs: int = CLASSES) -> int:
    """``inputs D + D + (depth - 1)(D^2 + D) + D outputs + outputs``: weights and biases of every layer."""
    return inputs * width + width + (depth - 1) * (width * width + width) + width * outputs + outputs


for _depth, _width in WIDTHS.items():  # the table above is the formula's, not copied from the book
    assert param_count(_depth, _width) == PARAM_COUNTS[_depth], (_depth, param_count(_depth, _width))
del _depth, _width


def make_model(depth: int, width: int) -> nn.Layer:
    """``depth`` hidden ``Dense(width)`` + ReLU layers and a ``Dense(10)``, all He normal, biases zero."""
    layers = {}
    for k in range(1, depth + 1):
        layers[f"hidden_{k}"] = nn.Dense(width, kernel_init=init.he_normal())
        layers[f"relu_{k}"] = nn.ReLU()
    layers["output"] = nn.Dense(CLASSES, kernel_init=init.he_normal())
    return nn.Sequential(layers)


def objective(model: nn.Layer):
    """The summed cross-entropy ``L = sum_i l_i`` of a full batch, with the count of correct labels."""

    def fn(params, state, batch, key):
        del key  # no dropout, no augmentation: nothing random in a step
        x, y = batch
        logits, new_state = model.apply(params, state, x)
        total = jnp.sum(losses.softmax_cross_entropy_with_integer_labels(logits, y))
        correct = jnp.sum(jnp.argmax(logits, axis=-1) == y)  # an integer: 100% is exact
        return total, (new_state, {"correct": correct})

    return fn


@functools.lru_cache(maxsize=None)
def trainer(depth: int, width: int, learning_rate: float, chunk: int):
    """``(init_fn, run_fn, evaluate_fn)``, jitted and vmapped over seeds; cached, so a second run with
    the same sizes recompiles nothing.

    ``init_fn(keys, x) -> train states``; ``run_fn(train_states, x, labels) -> (train_states,
    metrics)`` takes ``chunk`` full-batch gradient steps (``lax.scan``), ``metrics`` holding each
    step's summed loss and count of correct labels, measured before its update;
    ``evaluate_fn(train_states, x, labels) -> (loss, correct)`` measures the params as they are.
    """
    model = make_model(depth, width)
    optimizer = optim.sgd(learning_rate)  # no momentum: phi <- phi - alpha dL/dphi
    step = jdl.train.gradient_step(objective(model), optimizer)

    def run(train_state, x, labels):
        return jax.lax.scan(lambda ts, _: step(ts, (x, labels)), train_state, None, length=chunk)

    init_fn = jax.jit(jax.vmap(lambda key, x: jdl.train.init(model, optimizer, key, x), in_axes=(0, None)))
    run_fn = jax.jit(jax.vmap(run, in_axes=(0, None, 0)), donate_argnums=0)

    def evaluate(train_state, x, labels):
        total, (_, metrics) = objective(model)(train_state.params, train_state.state, (x, labels), None)
        return total, metrics["correct"]

    evaluate_fn = jax.jit(jax.vmap(evaluate, in_axes=(0, None, 0)))
    return init_fn, run_fn, evaluate_fn


def random_labels(seed: int, num_train: int) -> jax.Array:
    """Uniform over the 10 classes: the seed's second key (its first initialises the networks)."""
    return jax.random.randint(jax.random.split(jax.random.key(seed))[1], (num_train,), 0, CLASSES)


def first_epoch(accuracy: np.ndarray, level: float) -> list:
    """Per seed (rows), the first epoch (column) with accuracy at least ``level``; ``None`` if none."""
    return [int(np.argmax(row >= level)) if np.any(row >= level) else None for row in accuracy]


def finite_or_none(values: np.ndarray) -> list:
    """Floats as a (nested) list with NaN and infinities as ``None`` (a diverged run): JSON has no NaN."""
    return [finite_or_none(v) if np.ndim(v) else (float(v) if np.isfinite(v) else None) for v in values]


def train_depth(depth: int, x: jax.Array, labels: jax.Array, seeds: list[int], epochs: int, learning_rate: float,
                evals: int) -> dict:
    """Train one depth for every seed at once; the loss and accuracy after every epoch 0 .. ``epochs``."""
    width = WIDTHS[depth]
    chunk = epochs_per_chunk(epochs, evals)
    init_fn, run_fn, evaluate_fn = trainer(depth, width, learning_rate, chunk)
    num_train = x.shape[0]
    start = time.perf_counter()
    train_state = init_fn(jnp.stack([jax.random.split(jax.random.key(s))[0] for s in seeds]), x)
    num_params = jdl.count_params(jax.tree.map(lambda leaf: leaf[0], train_state.params))
    assert num_params == param_count(depth, width), (depth, num_params)
    totals, correct = [], []
    for done in range(chunk, epochs + 1, chunk):
        train_state, metrics = run_fn(train_state, x, labels)
        totals.append(np.asarray(metrics["loss"]))  # (seeds, chunk)
        correct.append(np.asarray(metrics["correct"]))
        print(f"  {depth} layer(s): epoch {done:>5}/{epochs}, loss {totals[-1][:, -1].mean() / num_train:.4f}, "
              f"accuracy {correct[-1][:, -1].mean() / num_train:.4f} ({time.perf_counter() - start:.0f} s)",
              flush=True)
    # The metrics of step t are those of the params after t epochs; one more evaluation gives the last.
    total, last_correct = evaluate_fn(train_state, x, labels)
    loss = np.concatenate(totals + [np.asarray(total)[:, None]], axis=1) / num_train  # (seeds, epochs + 1)
    accuracy = np.concatenate(correct + [np.asarray(last_correct)[:, None]], axis=1) / num_train
    return {"width": width, "num_params": num_params, "loss": loss, "accuracy": accuracy,
            "seconds": time.perf_counter() - start}


def summarise(depth: int, run: dict, record_every: int) -> dict:
    """The JSON entry of one depth: epochs to fit, final figures, and the curves every ``record_every`` epochs."""
    loss, accuracy = run["loss"], run["accuracy"]
    epochs = loss.shape[1] - 1
    recorded = sorted(set(range(0, epochs + 1, record_every)) | {epochs})
    fit, fit_99 = first_epoch(accuracy, 1.0), first_epoch(accuracy, 0.99)
    reached = [e for e in fit if e is not None]
    return {
        "hidden_layers": depth,
        "width": run["width"],
        "num_params": run["num_params"],
        "epochs_to_fit": fit,  # per seed: first epoch at 100% training accuracy, None if not reached
        "epochs_to_fit_mean": float(np.mean(reached)) if len(reached) == len(fit) else None,
        "epochs_to_fit_std": float(np.std(reached)) if len(reached) == len(fit) else None,
        "seeds_fitted": len(reached),
        "epochs_to_99": fit_99,
        "final_loss": finite_or_none(loss[:, -1]),
        "final_accuracy": accuracy[:, -1].tolist(),
        "seconds": run["seconds"],
        "curves": {
            "epoch": recorded,
            "train_loss": finite_or_none(loss[:, recorded].T),  # (records, seeds)
            "train_accuracy": accuracy[:, recorded].T.tolist(),
        },
    }


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    for depth, entry in results["depths"].items():
        curves = entry["curves"]
        label = f"{depth} layer{'s' if int(depth) > 1 else ''} x {entry['width']} ({entry['num_params']:,} params)"
        loss = np.asarray([[np.nan if v is None else v for v in row] for row in curves["train_loss"]], float)
        plot_mean_and_spread(loss_axes, curves["epoch"], loss, label)
        plot_mean_and_spread(accuracy_axes, curves["epoch"], curves["train_accuracy"], label)
    loss_axes.set(xlabel="epoch (= full-batch step)", ylabel="training loss L / I", yscale="log",
                  title=f"MNIST-1D, random labels, {results['num_train']} examples, "
                        f"alpha = {results['learning_rate']:g}")
    accuracy_axes.set(xlabel="epoch (= full-batch step)", ylabel="training accuracy",
                      title=f"mean +- std over {len(results['seeds'])} seeds")
    finish_figure(figure, (loss_axes, accuracy_axes), path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed (initialisation and labels)")
    parser.add_argument("--num-seeds", type=int, default=2, help="seeds trained together with vmap")
    parser.add_argument("--epochs", type=int, default=2000, help="full-batch gradient steps per network")
    parser.add_argument("--learning-rate", type=float, default=LEARNING_RATE,
                        help=f"alpha on the summed loss (the book's {BOOK_LEARNING_RATE} diverges)")
    parser.add_argument("--num-train", type=int, default=4000, help="the first N MNIST-1D training signals")
    parser.add_argument("--depths", type=int, nargs="+", default=list(WIDTHS), choices=list(WIDTHS))
    parser.add_argument("--evals", type=int, default=20, help="progress lines per depth (compiled chunks)")
    parser.add_argument("--record-every", type=int, default=10, help="epochs between the curves' points in the JSON")
    parser.add_argument("--data-seed", type=int, default=42, help="seed of the generated dataset")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="output folder (default: experiments/results/)")
    args = parser.parse_args(argv)
    require_positive(parser, args, ("num_seeds", "epochs", "num_train", "evals", "record_every"))
    if not args.learning_rate > 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    data = mnist1d_dataset(args.data_seed)
    if args.num_train > data["x_train"].shape[0]:
        raise SystemExit(f"--num-train {args.num_train}: MNIST-1D has {data['x_train'].shape[0]} training signals")
    x = jnp.asarray(data["x_train"][:args.num_train])
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    labels = jnp.stack([random_labels(s, args.num_train) for s in seeds])
    results = {"num_train": args.num_train, "epochs": args.epochs, "learning_rate": args.learning_rate,
               "book_learning_rate": BOOK_LEARNING_RATE, "loss": "sum over examples (curves: per example)",
               "seeds": seeds, "backend": jax.default_backend(), "depths": {}}
    print(f"MNIST-1D, {args.num_train} signals with random labels; full-batch GD, alpha = {args.learning_rate:g} "
          f"on the summed loss; seeds {seeds}; backend {results['backend']}")
    for depth in args.depths:
        entry = summarise(depth, train_depth(depth, x, labels, seeds, args.epochs, args.learning_rate, args.evals),
                          args.record_every)
        results["depths"][str(depth)] = entry
        print(f"{depth} layer(s) x {entry['width']} ({entry['num_params']} params): epochs to 100% "
              f"{entry['epochs_to_fit']}, to 99% {entry['epochs_to_99']}; final loss "
              f"{[None if v is None else round(v, 4) for v in entry['final_loss']]} ({entry['seconds']:.0f} s)")
    results["seconds"] = time.perf_counter() - start
    write_results(args.out, "udl_depth", results, plot)
    return results


if __name__ == "__main__":
    main()
