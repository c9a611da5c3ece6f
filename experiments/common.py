"""Pieces the experiments share: MNIST-1D built locally, a scan-based trainer, safe output.

Nothing here is part of the library: `jdl/` is the toolkit, `experiments/` uses it.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
import os
import sys
import time
import types
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import jdl

# ---------------------------------------------------------------------------------------
# Data


def mnist1d_package() -> types.ModuleType:
    """The installed ``mnist1d`` package (Greydanus's generator), imported.

    Run as a file (``python experiments/mnist1d.py``), a script has its own folder first on
    ``sys.path``, where the experiment ``mnist1d.py`` would be found in place of the package
    of that name; so the package is loaded from the files its distribution installed, and
    registered under its name (its own modules import ``mnist1d.utils`` and the like).
    """
    package = sys.modules.get("mnist1d")
    if package is None:
        init_file = importlib.metadata.distribution("mnist1d").locate_file("mnist1d/__init__.py")
        spec = importlib.util.spec_from_file_location("mnist1d", init_file)
        package = importlib.util.module_from_spec(spec)
        sys.modules["mnist1d"] = package
        spec.loader.exec_module(package)
    return package


def mnist1d_dataset(seed: int = 42) -> dict[str, np.ndarray]:
    """MNIST-1D (Greydanus, 2020) generated on this machine: 4000 train and 1000 test signals.

    Built with ``mnist1d.data.make_dataset`` from the default arguments (the published
    dataset's), never downloaded: no network and no pickle from the web. Building takes a few
    seconds, so it is done once per process and seed (each call gets its own copies), and once
    per machine where the environment variable ``JDL_DATA_CACHE`` names a folder (the test
    session sets one for its workers): the arrays are kept there as ``.npz``, written atomically.
    """
    return {name: array.copy() for name, array in _mnist1d_arrays(seed).items()}


@functools.lru_cache(maxsize=4)
def _mnist1d_arrays(seed: int) -> dict[str, np.ndarray]:
    folder = os.environ.get("JDL_DATA_CACHE")
    version = importlib.metadata.version("mnist1d")
    path = os.path.join(folder, f"mnist1d-{version}-seed{seed}.npz") if folder else None
    if path and os.path.exists(path):
        with np.load(path) as stored:
            return {name: stored[name] for name in stored.files}
    data_module = mnist1d_package().data
    args = data_module.get_dataset_args()
    args.seed = seed
    data = data_module.make_dataset(args)
    arrays = {
        "x_train": np.asarray(data["x"], np.float32),
        "y_train": np.asarray(data["y"], np.int32),
        "x_test": np.asarray(data["x_test"], np.float32),
        "y_test": np.asarray(data["y_test"], np.int32),
    }
    if path:
        os.makedirs(folder, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp.npz"  # np.savez keeps a name ending in .npz as given
        np.savez(temporary, **arrays)
        os.replace(temporary, path)
    return arrays


def digits_dataset(size: int = 32, test_fraction: float = 0.2, split_seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's handwritten digits (1,797 real 8 x 8 scans, UCI's, shipped with the wheel: no
    download), bilinearly resized to ``size`` x ``size`` x 1 and standardised with the training
    set's mean and deviation; a fixed stratified split (1,437 train and 360 test images by default)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.asarray(digits.images, np.float32)[..., None] / 16.0  # 0..16 counts of dark pixels
    resized = np.asarray(jax.image.resize(images, (len(images), size, size, 1), "bilinear"))
    x_train, x_test, y_train, y_test = train_test_split(
        resized, digits.target.astype(np.int32), test_size=test_fraction, stratify=digits.target,
        random_state=split_seed)
    mean, std = x_train.mean(), x_train.std()
    return {"x_train": (x_train - mean) / std, "y_train": y_train, "x_test": (x_test - mean) / std, "y_test": y_test}


# ---------------------------------------------------------------------------------------
# Training: many seeds at once (vmap), whole epochs per call (scan), with jdl.train.


class EnsembleRun(NamedTuple):
    """What :func:`train_ensemble` returns; every per-seed array has the seeds on axis 0."""

    train_state: jdl.train.TrainState
    evaluate: Callable  # evaluate(train_state, (x, y)) -> {"loss", "accuracy"}, per seed
    steps: list  # the step count at each evaluation
    train_loss: list  # per evaluation: the mean training loss of the epochs since the last, (seeds,)
    test_accuracy: list  # per evaluation: (seeds,)
    seconds: float


def epochs_per_chunk(epochs: int, evals: int) -> int:
    """The largest divisor of ``epochs`` not above ``ceil(epochs / evals)``: equal chunks, at least ``evals`` of them."""
    most = -(-epochs // max(1, min(evals, epochs)))
    return max(size for size in range(1, most + 1) if epochs % size == 0)


def train_ensemble(model: jdl.nn.Layer, optimizer, data: dict, seeds: list[int], epochs: int, batch_size: int,
                   evals: int = 20, augment: Callable | None = None, label: str = "",
                   progress: bool = False) -> EnsembleRun:
    """Train one model per seed, all at once, evaluating on the test set after every chunk of epochs.

    Seed ``s``'s train state is ``jdl.train.init(model, optimizer, key(s), example)``; the
    members are stacked with ``vmap`` and ``jdl.train.fit`` runs chunks of
    :func:`epochs_per_chunk` epochs, one compiled ``epoch_loop`` call each.
    """
    loss_fn = jdl.losses.softmax_cross_entropy_with_integer_labels
    train_data = (jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"]))
    test_data = (jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"]))
    chunk = epochs_per_chunk(epochs, evals)
    step = jdl.train.train_step(model, loss_fn, optimizer, augment=augment)
    run = jdl.train.compile_loop(jdl.train.epoch_loop(step, batch_size, chunk), ensemble=True)
    evaluate = jax.jit(jax.vmap(jdl.train.eval_step(model, loss_fn, metrics={"accuracy": jdl.metrics.accuracy}),
                                in_axes=(0, None)))
    example = jax.ShapeDtypeStruct((batch_size,) + train_data[0].shape[1:], train_data[0].dtype)
    start = time.perf_counter()
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    train_state = jax.jit(jax.vmap(lambda key: jdl.train.init(model, optimizer, key, example)))(keys)
    result = jdl.train.fit(train_state, run, train_data, chunks=epochs // chunk, ensemble=True,
                           evaluate=lambda ts: evaluate(ts, test_data), progress=progress, desc=f"{label:>8}")
    return EnsembleRun(result.train_state, evaluate, result.series("step").tolist(),
                       list(result.series("train/loss")), list(result.series("eval/accuracy")),
                       time.perf_counter() - start)


def epochs_for(steps: int, num_train: int, batch_size: int) -> int:
    """Whole epochs closest to ``steps`` training steps (at least one)."""
    return max(1, round(steps / (num_train // batch_size)))


def random_shift(max_shift: int) -> Callable:
    """Augmentation: roll each signal by a random integer in ``[-max_shift, max_shift]`` along its last axis."""

    def augment(key, x):
        shifts = jax.random.randint(key, (x.shape[0],), -max_shift, max_shift + 1)
        return jax.vmap(lambda signal, shift: jnp.roll(signal, shift, axis=-1))(x, shifts)

    return augment


# ---------------------------------------------------------------------------------------
# Output: written atomically, so an interrupted run never leaves a half-written file.


def atomic_save_figure(path: str, figure) -> None:
    """Save a matplotlib figure as PNG, atomically."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    jdl.io.atomic_write_bytes(path, buffer.getvalue())


def write_results(out: str, name: str, results: dict, plot: Callable[[dict, str], None]) -> None:
    """``OUT/name.json`` (atomically) and ``OUT/name.png`` drawn by ``plot(results, path)``, then one line saying so."""
    json_path, png_path = os.path.join(out, f"{name}.json"), os.path.join(out, f"{name}.png")
    jdl.io.atomic_write_json(json_path, results)
    plot(results, png_path)
    print(f"{results['seconds']:.1f} s on {results['backend']}; wrote {json_path} and {png_path}")


def plot_mean_and_spread(axes, steps, values, label: str) -> None:
    """``values`` of shape (evaluations, seeds): the mean over the seeds as a line, +- one std shaded."""
    values = np.asarray(values)
    mean, spread = values.mean(axis=1), values.std(axis=1)
    axes.plot(steps, mean, label=label)
    axes.fill_between(steps, mean - spread, mean + spread, alpha=0.2)


def finish_figure(figure, axes_list, path: str) -> None:
    """Legend and grid on every axes, then the PNG written atomically and the figure closed."""
    import matplotlib.pyplot as plt

    for axes in axes_list:
        axes.legend()
        axes.grid(alpha=0.3)
    atomic_save_figure(path, figure)
    plt.close(figure)


def require_positive(parser, args, names: tuple[str, ...]) -> None:
    """``parser.error`` unless every named argument is at least 1."""
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
