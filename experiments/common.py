"""Pieces the experiments share: MNIST-1D built locally, a scan-based trainer, safe output.

Nothing here is part of the library: `jdl/` is the toolkit, `experiments/` uses it.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import io
import sys
import time
import types
from typing import Any, Callable, NamedTuple

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
    dataset's), never downloaded: no network and no pickle from the web.
    """
    data_module = mnist1d_package().data
    args = data_module.get_dataset_args()
    args.seed = seed
    data = data_module.make_dataset(args)
    return {
        "x_train": np.asarray(data["x"], np.float32),
        "y_train": np.asarray(data["y"], np.int32),
        "x_test": np.asarray(data["x_test"], np.float32),
        "y_test": np.asarray(data["y_test"], np.int32),
    }


# ---------------------------------------------------------------------------------------
# Training: many seeds at once (vmap), many steps per call (scan), one compilation.


class TrainState(NamedTuple):
    params: Any
    state: Any
    opt_state: Any


def make_trainer(
    model: jdl.nn.Layer,
    optimizer: jdl.optim.GradientTransformation,
    x_train: jax.Array,
    y_train: jax.Array,
    batch_size: int,
    loss_fn: Callable = jdl.losses.softmax_cross_entropy_with_integer_labels,
    augment: Callable | None = None,
):
    """Build ``init(keys)``, ``run_epochs(train_state, epoch_keys)`` and ``evaluate``.

    Every function works on a stack of models, one per seed, with ``jax.vmap``: the
    ensemble is trained in one program. ``run_epochs`` runs whole epochs inside
    ``lax.scan`` (a shuffled pass over the training set per epoch, the last partial
    batch dropped), so the host is visited once per call, not once per step.
    """
    num_train = x_train.shape[0]
    steps_per_epoch = num_train // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"make_trainer: batch_size {batch_size} exceeds the {num_train} training examples")

    def init_one(key):
        example = jax.ShapeDtypeStruct((batch_size,) + x_train.shape[1:], x_train.dtype)
        params, state = model.init(key, example)
        return TrainState(params, state, optimizer.init(params))

    def loss_of(params, state, x, y, key):
        logits, new_state = model.apply(params, state, x, key=key, train=True)
        return jnp.mean(loss_fn(logits, y)), new_state

    def train_step(train_state, batch):
        x, y, key = batch
        if augment is not None:
            augment_key, key = jax.random.split(key)
            x = augment(augment_key, x)
        (loss, new_state), grads = jax.value_and_grad(loss_of, has_aux=True)(
            train_state.params, train_state.state, x, y, key
        )
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params)
        params = jdl.optim.apply_updates(train_state.params, updates)
        return TrainState(params, new_state, opt_state), loss

    def one_epoch(train_state, epoch_key):
        order_key, dropout_key = jax.random.split(epoch_key)
        order = jax.random.permutation(order_key, num_train)[: steps_per_epoch * batch_size]
        order = order.reshape(steps_per_epoch, batch_size)
        step_keys = jax.random.split(dropout_key, steps_per_epoch)
        batches = (x_train[order], y_train[order], step_keys)
        train_state, losses = jax.lax.scan(train_step, train_state, batches)
        return train_state, jnp.mean(losses)

    def run_one(train_state, epoch_keys):
        return jax.lax.scan(one_epoch, train_state, epoch_keys)

    def evaluate_one(train_state, x, y):
        logits, _ = model.apply(train_state.params, train_state.state, x, train=False)
        return jdl.metrics.accuracy(logits, y), jnp.mean(loss_fn(logits, y))

    init = jax.jit(jax.vmap(init_one))
    # Donating the train state lets XLA update params and optimizer state in place.
    run_epochs = jax.jit(jax.vmap(run_one), donate_argnums=0)
    evaluate = jax.jit(jax.vmap(evaluate_one, in_axes=(0, None, None)))
    return init, run_epochs, evaluate, steps_per_epoch


class EnsembleRun(NamedTuple):
    """What :func:`train_ensemble` returns; every per-seed array has the seeds on axis 0."""

    train_state: TrainState
    evaluate: Callable  # evaluate(train_state, x, y) -> (accuracy, mean loss), per seed
    steps: list  # the step count at each evaluation
    train_loss: list  # per evaluation: the mean training loss of the epochs since the last, (seeds,)
    test_accuracy: list  # per evaluation: (seeds,)
    seconds: float


def train_ensemble(model: jdl.nn.Layer, optimizer, data: dict, seeds: list[int], epochs: int, batch_size: int,
                   evals: int = 20, augment: Callable | None = None, label: str = "",
                   progress: bool = False) -> EnsembleRun:
    """Train one model per seed, all at once, evaluating on the test set ``evals`` times.

    Seed ``s`` initialises with one half of ``jax.random.split(key(s))`` and draws its
    batch orders and dropout keys from the other. Epochs run in equal chunks between
    evaluations (the last may be shorter), so ``run_epochs`` compiles at most twice.
    """
    from tqdm.auto import tqdm

    x_train, y_train = jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])
    x_test, y_test = jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"])
    init, run_epochs, evaluate, steps_per_epoch = make_trainer(model, optimizer, x_train, y_train, batch_size,
                                                               augment=augment)
    chunk = -(-epochs // max(1, min(evals, epochs)))
    start = time.perf_counter()
    seed_keys = jax.vmap(jax.random.split)(jnp.stack([jax.random.key(s) for s in seeds]))
    train_state = init(seed_keys[:, 0])
    epoch_keys = jax.vmap(lambda k: jax.random.split(k, epochs))(seed_keys[:, 1])  # (seeds, epochs)
    steps, train_losses, test_accuracies = [], [], []
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"{label:>8}", unit="step", disable=not progress)
    for first in range(0, epochs, chunk):
        last = min(first + chunk, epochs)
        train_state, losses = run_epochs(train_state, epoch_keys[:, first:last])
        accuracy, _ = evaluate(train_state, x_test, y_test)
        train_losses.append(np.asarray(losses).mean(axis=1))
        test_accuracies.append(np.asarray(accuracy))
        steps.append(last * steps_per_epoch)
        bar.update((last - first) * steps_per_epoch)
        bar.set_postfix(test_acc=f"{float(np.mean(accuracy)):.3f}")
    bar.close()
    return EnsembleRun(train_state, evaluate, steps, train_losses, test_accuracies, time.perf_counter() - start)


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
