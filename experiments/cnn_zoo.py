"""The CNN chapter's networks side by side, then three of them trained on real handwritten digits.

Part 1, the zoo: every network of ``jdl.models`` at its native input size, with its params
(counted with ``jax.eval_shape``: nothing allocated) beside the published figure, its
forward multiply-adds (``jdl.summary``'s FLOPs / 2: the convolutions' and matmuls'; batch
norm, pooling and activations are not counted) and, unless ``--no-timing``, the time to
compile one train step (softmax cross-entropy, SGD with momentum) and to run it, at
``--timing-batch`` images, on this machine.

Part 2, the digits: LeNet-5, a CIFAR ResNet-20 and a small VGG with batch norm, trained on
scikit-learn's handwritten digits (1,797 real 8 x 8 scans from UCI, bilinearly resized to
32 x 32, a fixed stratified split of 1,437 train and 360 test images) for several seeds at
once (``jax.vmap`` over the seeds, whole epochs inside ``lax.scan``); the test accuracy's
mean and spread over the seeds, and its curves as a PNG.

    python experiments/cnn_zoo.py                          # the whole table and the digits
    python experiments/cnn_zoo.py --zoo lenet5 resnet20 --no-timing --epochs 2

Writes ``OUT/cnn_zoo.json`` (``{"zoo": [...], "digits": {...}}``) and ``OUT/cnn_zoo_digits.png``.
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jdl
from experiments.common import digits_dataset, finish_figure, plot_mean_and_spread, require_positive, train_ensemble
from jdl import io, models


class Network(NamedTuple):
    make: Callable[[], jdl.nn.Layer]
    size: int  # the native input: size x size x channels
    channels: int
    published: int | None  # params
    source: str  # where the published figure comes from (or why there is none)


def _vgg_bn(constructor):
    return lambda: constructor(batch_norm=True)


# The published figures are the papers' where they give an exact count, torchvision's otherwise
# (its models reproduce the papers' layouts), and for the CIFAR ResNets the exact count behind He
# et al.'s rounded one; tests/experiments/test_cnn_zoo.py checks each against the network's own.
ZOO = {
    "lenet5": Network(models.lenet5, 32, 1, None, "LeCun et al. (1998) say about 60,000 (C3 partly connected)"),
    "alexnet": Network(models.alexnet, 227, 3, 62_378_344, "seed 003's table"),
    "zfnet": Network(models.zfnet, 224, 3, None, "the paper gives no total"),
    "vgg11": Network(models.vgg11, 224, 3, 132_863_336, "torchvision"),
    "vgg13": Network(models.vgg13, 224, 3, 133_047_848, "torchvision"),
    "vgg16": Network(models.vgg16, 224, 3, 138_357_544, "Simonyan and Zisserman: 138M; torchvision"),
    "vgg19": Network(models.vgg19, 224, 3, 143_667_240, "Simonyan and Zisserman: 144M; torchvision"),
    "vgg16_bn": Network(_vgg_bn(models.vgg16), 224, 3, 138_365_992, "torchvision"),
    "googlenet": Network(models.googlenet, 224, 3, None, "Table 1 sums to about 6.8M without biases"),
    "resnet18": Network(models.resnet18, 224, 3, 11_689_512, "torchvision"),
    "resnet34": Network(models.resnet34, 224, 3, 21_797_672, "torchvision"),
    "resnet50": Network(models.resnet50, 224, 3, 25_557_032, "torchvision"),
    "resnet101": Network(models.resnet101, 224, 3, 44_549_160, "torchvision"),
    "resnet152": Network(models.resnet152, 224, 3, 60_192_808, "torchvision"),
    "resnet20": Network(models.resnet20, 32, 3, 269_722, "He et al.: 0.27M"),
    "resnet32": Network(models.resnet32, 32, 3, 464_154, "He et al.: 0.46M"),
    "resnet44": Network(models.resnet44, 32, 3, 658_586, "He et al.: 0.66M"),
    "resnet56": Network(models.resnet56, 32, 3, 853_018, "He et al.: 0.85M"),
    "resnet110": Network(models.resnet110, 32, 3, 1_727_962, "He et al.: 1.7M"),
}


# ---------------------------------------------------------------------------------------
# Part 1: the zoo


def _loss(logits, labels):
    return jdl.losses.softmax_cross_entropy_with_integer_labels(logits, labels)


def time_train_step(model: jdl.nn.Layer, example: jax.ShapeDtypeStruct, repeats: int = 3) -> tuple[float, float]:
    """``(compile seconds, median step milliseconds)`` of one jitted train step on ``example``."""
    optimizer = optax.sgd(0.01, momentum=0.9)
    step = jax.jit(jdl.train.train_step(model, _loss, optimizer), donate_argnums=0)
    images = jax.random.normal(jax.random.key(0), example.shape, example.dtype)
    labels = jnp.zeros(example.shape[:1], jnp.int32)
    train_state = jax.jit(lambda key: jdl.train.init(model, optimizer, key, example))(jax.random.key(0))
    start = time.perf_counter()
    compiled = step.lower(train_state, (images, labels)).compile()
    compile_seconds = time.perf_counter() - start
    times = []
    for _ in range(repeats + 1):  # the first call pays for the transfers: not timed
        start = time.perf_counter()
        train_state, metrics = compiled(train_state, (images, labels))
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    return compile_seconds, 1e3 * float(np.median(times[1:]))


def zoo_row(name: str, timing: bool, batch: int) -> dict:
    network = ZOO[name]
    model = network.make()
    example = jax.ShapeDtypeStruct((1, network.size, network.size, network.channels), jnp.float32)
    table = jdl.summary(model, example, depth=0)
    params, state = jax.eval_shape(model.init, jax.random.key(0), example)
    row = {"name": name, "input": f"{network.size}x{network.size}x{network.channels}",
           "params": jdl.count_params(params), "state": jdl.count_params(state),
           "published_params": network.published, "source": network.source,
           "multiply_adds": table.total_flops // 2}
    if timing:
        batched = jax.ShapeDtypeStruct((batch,) + example.shape[1:], example.dtype)
        row["compile_seconds"], row["step_ms"] = time_train_step(model, batched)
        row["timing_batch"] = batch
    return row


def format_zoo(rows: list[dict]) -> str:
    lines = ["| network | input | params | published | multiply-adds | compile (s) | train step (ms) |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        published = f"{row['published_params']:,}" if row["published_params"] else "-"
        timing = (f"{row['compile_seconds']:.1f} | {row['step_ms']:.0f}" if "step_ms" in row else "- | -")
        lines.append(f"| {row['name']} | {row['input']} | {row['params']:,} | {published} | "
                     f"{row['multiply_adds'] / 1e6:,.1f}M | {timing} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Part 2: the digits


def small_vgg(num_classes: int = 10) -> models.VGG:
    """VGG's recipe at digit scale: 3 x 3 convolutions with batch norm, 16-32-64-64 filters in
    three stages, a 128-128 classifier with dropout 0.5."""
    return models.VGG(((16,), (32,), (64, 64)), num_classes, batch_norm=True, hidden_features=128)


DIGIT_MODELS = {
    # name: (model, Adam's learning rate)
    "lenet5": (lambda: models.lenet5(10), 1e-3),
    "resnet20": (lambda: models.resnet20(10), 1e-3),
    "small_vgg": (small_vgg, 1e-3),
}


def train_digits(name: str, data: dict, seeds: list[int], epochs: int, batch_size: int, evals: int,
                 progress: bool) -> dict:
    make, learning_rate = DIGIT_MODELS[name]
    model = make()
    steps_per_epoch = data["x_train"].shape[0] // batch_size
    schedule = optax.cosine_decay_schedule(learning_rate, epochs * steps_per_epoch)
    run = train_ensemble(model, optax.adam(schedule), data, seeds, epochs, batch_size, evals=evals, label=name,
                         progress=progress)
    final = np.asarray(run.test_accuracy[-1])
    train_metrics = run.evaluate(run.train_state, (jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])))
    example = jax.ShapeDtypeStruct((1,) + data["x_train"].shape[1:], jnp.float32)
    return {
        "params": jdl.count_params(jax.eval_shape(model.init, jax.random.key(0), example)[0]),
        "test_accuracy": float(final.mean()), "test_accuracy_std": float(final.std()),
        "test_accuracy_per_seed": final.tolist(),
        "train_accuracy": float(np.mean(train_metrics["accuracy"])),
        "seconds": run.seconds, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
        "seeds": seeds,
        "curves": {"step": run.steps, "train_loss": [np.asarray(v).tolist() for v in run.train_loss],
                   "test_accuracy": [np.asarray(v).tolist() for v in run.test_accuracy]},
    }


def format_digits(results: dict) -> str:
    lines = ["| network | params | test accuracy (mean +- std over seeds) | train accuracy | time (s) |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['params']:,} | {100 * r['test_accuracy']:.1f}% +- "
                     f"{100 * r['test_accuracy_std']:.1f} ({len(r['seeds'])} seeds) | "
                     f"{100 * r['train_accuracy']:.1f}% | {r['seconds']:.1f} |")
    return "\n".join(lines)


def plot_digits(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    for name, r in results.items():
        for axes, key in ((loss_axes, "train_loss"), (accuracy_axes, "test_accuracy")):
            plot_mean_and_spread(axes, r["curves"]["step"], r["curves"][key], name)
    loss_axes.set(xlabel="step", ylabel="training loss", yscale="log", title="Digits 32 x 32: training loss")
    accuracy_axes.set(xlabel="step", ylabel="test accuracy", title="test accuracy (mean +- std over seeds)")
    finish_figure(figure, (loss_axes, accuracy_axes), path)


# ---------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--zoo", nargs="*", choices=sorted(ZOO), default=list(ZOO),
                        help="networks of the table (none: skip the table)")
    parser.add_argument("--no-timing", action="store_true", help="leave out the train-step timings")
    parser.add_argument("--timing-batch", type=int, default=2, help="images per timed train step")
    parser.add_argument("--digits", nargs="*", choices=sorted(DIGIT_MODELS), default=list(DIGIT_MODELS),
                        help="networks trained on the digits (none: skip the training)")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--evals", type=int, default=8, help="test evaluations during training")
    parser.add_argument("--seed", type=int, default=0, help="the first seed")
    parser.add_argument("--num-seeds", type=int, default=3)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    args = parser.parse_args(argv)
    require_positive(parser, args, ("timing_batch", "epochs", "batch_size", "evals", "num_seeds"))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    print(f"backend: {jax.default_backend()}")
    zoo = []
    for name in args.zoo:
        zoo.append(zoo_row(name, timing=not args.no_timing, batch=args.timing_batch))
        if not args.no_progress:
            row = zoo[-1]
            print(f"  {name}: {row['params']:,} params, {row['multiply_adds'] / 1e6:,.1f}M multiply-adds"
                  + (f", compile {row['compile_seconds']:.1f} s, step {row['step_ms']:.0f} ms" if "step_ms" in row
                     else ""), flush=True)
    digits = {}
    if args.digits:
        data = digits_dataset()
        seeds = list(range(args.seed, args.seed + args.num_seeds))
        print(f"digits: {len(data['x_train'])} train, {len(data['x_test'])} test images, 32 x 32; seeds {seeds}")
        for name in args.digits:
            digits[name] = train_digits(name, data, seeds, args.epochs, args.batch_size, args.evals,
                                        progress=not args.no_progress)
    results = {"zoo": zoo, "digits": digits, "backend": jax.default_backend(),
               "seconds": time.perf_counter() - start}
    os.makedirs(args.out, exist_ok=True)
    json_path = os.path.join(args.out, "cnn_zoo.json")
    io.atomic_write_json(json_path, results)
    written = [json_path]
    if digits:
        png_path = os.path.join(args.out, "cnn_zoo_digits.png")
        plot_digits(digits, png_path)
        written.append(png_path)
    if zoo:
        print("\n" + format_zoo(zoo))
    if digits:
        print("\n" + format_digits(digits))
    print(f"\n{results['seconds']:.1f} s on {jax.default_backend()}; wrote {' and '.join(written)}")
    return results


if __name__ == "__main__":
    main()
