"""The benchmark cases: one full train step of a classifier, in jdl and in flax + optax.

A train step is forward, softmax cross-entropy, backward and an Adam(1e-3) update,
jitted with the train state donated. Both sides run the very same step function
(:func:`make_train_steps`); the model, loss and optimizer differ:

* jdl: ``jdl.nn`` layers, ``jdl.losses.softmax_cross_entropy_with_integer_labels`` and
  ``jdl.optim.adam``;
* reference: ``flax.linen`` modules, ``optax.losses.softmax_cross_entropy_with_integer_labels``
  and ``optax.adam``.

The reference starts from the jdl weights, copied in (``kernel = w``, ``bias = b``), so
that both sides train the same network on the same batches; :func:`check_losses` asserts
that their losses agree before anything is timed.

Cases (batch 256):

* ``mlp_train_step``: the MNIST-1D MLP of ``experiments/mnist1d.py``, 40-100-100-10.
* ``cnn_train_step``: the MNIST-1D CNN of ``experiments/mnist1d.py``: three ``Conv1D``
  (25 channels, kernels 5/3/3, stride 2, padding 1) with ReLU, flatten, ``Dense(10)``.
* ``cnn2d_train_step``: a LeNet-style CNN on 28x28x1 images: ``Conv2D(32, 3x3, SAME)``,
  ReLU, 2x2 max pool, ``Conv2D(64, 3x3, SAME)``, ReLU, 2x2 max pool, ``Dense(128)``,
  ReLU, ``Dense(10)``.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import flax
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jdl
from jdl import nn

NUM_CLASSES = 10
LEARNING_RATE = 1e-3
# Loss agreement before timing: |jdl - ref| <= tol * (1 + |ref|) on the first two steps.
LOSS_TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}


@dataclasses.dataclass(frozen=True)
class Config:
    """What the command line chooses for every case."""

    dtype: str = "float32"  # inputs, params and compute on both sides
    quick: bool = False
    conv_implementation: str = "auto"  # jdl's Conv(implementation=...)
    steps_per_call: int | None = None  # None: the case's default
    rounds: int | None = None


# --------------------------------------------------------------------------- the models
# The jdl models are those of experiments/mnist1d.py (make_model), with a param dtype and
# a conv implementation to choose; the flax twins name their layers like the jdl dict keys.


def jdl_mlp(param_dtype, conv_implementation) -> nn.Layer:
    del conv_implementation
    he = jdl.init.he_normal()
    return nn.Sequential({
        "hidden_1": nn.Dense(100, kernel_init=he, param_dtype=param_dtype),
        "relu_1": nn.ReLU(),
        "hidden_2": nn.Dense(100, kernel_init=he, param_dtype=param_dtype),
        "relu_2": nn.ReLU(),
        "output": nn.Dense(NUM_CLASSES, param_dtype=param_dtype),
    })


class FlaxMLP(fnn.Module):
    dtype: Any
    param_dtype: Any

    @fnn.compact
    def __call__(self, x):
        dense = functools.partial(fnn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        x = fnn.relu(dense(100, name="hidden_1")(x))
        x = fnn.relu(dense(100, name="hidden_2")(x))
        return dense(NUM_CLASSES, name="output")(x)


def jdl_cnn(param_dtype, conv_implementation) -> nn.Layer:
    he = jdl.init.he_normal()
    conv = functools.partial(nn.Conv1D, strides=2, padding=1, kernel_init=he, param_dtype=param_dtype,
                             implementation=conv_implementation)
    return nn.Sequential({
        "channels": nn.Reshape((40, 1)),
        "conv_1": conv(25, 5),
        "relu_1": nn.ReLU(),
        "conv_2": conv(25, 3),
        "relu_2": nn.ReLU(),
        "conv_3": conv(25, 3),
        "relu_3": nn.ReLU(),
        "flatten": nn.Flatten(),
        "output": nn.Dense(NUM_CLASSES, param_dtype=param_dtype),
    })


class FlaxCNN(fnn.Module):
    dtype: Any
    param_dtype: Any

    @fnn.compact
    def __call__(self, x):
        conv = functools.partial(fnn.Conv, strides=(2,), padding=((1, 1),), dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        x = x.reshape(x.shape[0], 40, 1)
        x = fnn.relu(conv(25, (5,), name="conv_1")(x))
        x = fnn.relu(conv(25, (3,), name="conv_2")(x))
        x = fnn.relu(conv(25, (3,), name="conv_3")(x))
        x = x.reshape(x.shape[0], -1)
        return fnn.Dense(NUM_CLASSES, dtype=self.dtype, param_dtype=self.param_dtype, name="output")(x)


def jdl_cnn2d(param_dtype, conv_implementation) -> nn.Layer:
    conv = functools.partial(nn.Conv2D, kernel_size=3, padding="SAME", param_dtype=param_dtype,
                             implementation=conv_implementation)
    return nn.Sequential({
        "conv_1": conv(32),
        "relu_1": nn.ReLU(),
        "pool_1": nn.MaxPool2D(2),
        "conv_2": conv(64),
        "relu_2": nn.ReLU(),
        "pool_2": nn.MaxPool2D(2),
        "flatten": nn.Flatten(),
        "hidden": nn.Dense(128, param_dtype=param_dtype),
        "relu_3": nn.ReLU(),
        "output": nn.Dense(NUM_CLASSES, param_dtype=param_dtype),
    })


class FlaxCNN2D(fnn.Module):
    dtype: Any
    param_dtype: Any

    @fnn.compact
    def __call__(self, x):
        conv = functools.partial(fnn.Conv, kernel_size=(3, 3), padding="SAME", dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        dense = functools.partial(fnn.Dense, dtype=self.dtype, param_dtype=self.param_dtype)
        x = fnn.max_pool(fnn.relu(conv(32, name="conv_1")(x)), (2, 2), strides=(2, 2))
        x = fnn.max_pool(fnn.relu(conv(64, name="conv_2")(x)), (2, 2), strides=(2, 2))
        x = x.reshape(x.shape[0], -1)
        x = fnn.relu(dense(128, name="hidden")(x))
        return dense(NUM_CLASSES, name="output")(x)


# --------------------------------------------------------------------------- the train step


def make_train_steps(loss_of: Callable, optimizer, apply_updates: Callable) -> Callable:
    """``run(train_state, xs, ys) -> (train_state, losses)``: one step per batch, in a scan.

    ``train_state`` is ``(params, state, opt_state)``; ``loss_of(params, state, x, y)``
    returns ``(mean loss, new state)``. Both sides of every case use this function.
    """

    def step(train_state, batch):
        params, state, opt_state = train_state
        x, y = batch
        (loss, state), grads = jax.value_and_grad(loss_of, has_aux=True)(params, state, x, y)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (apply_updates(params, updates), state, opt_state), loss

    def run(train_state, xs, ys):
        return jax.lax.scan(step, train_state, (xs, ys))

    return run


class TrainLoop:
    """A zero-argument callable: each call runs ``len(xs)`` train steps on device-resident batches.

    The train state is donated to each call (XLA updates params and optimizer state in
    place) and replaced by the call's result, so the loop keeps training.
    """

    def __init__(self, loss_of: Callable, optimizer, apply_updates: Callable, train_state, xs, ys):
        self.run = jax.jit(make_train_steps(loss_of, optimizer, apply_updates), donate_argnums=0)
        self.train_state, self.xs, self.ys = train_state, xs, ys
        self.donated: bool | None = None  # known after the first call

    def __call__(self):
        old_leaf = jax.tree.leaves(self.train_state)[0] if self.donated is None else None
        self.train_state, losses = self.run(self.train_state, self.xs, self.ys)
        if old_leaf is not None:
            self.donated = old_leaf.is_deleted()
        return self.train_state, losses

    def compilations(self) -> int:
        """How many programs ``run`` has compiled (1 unless something retraced)."""
        return self.run._cache_size()


def jdl_loss_of(model: nn.Layer) -> Callable:
    def loss_of(params, state, x, y):
        logits, state = model.apply(params, state, x, train=True)
        return jdl.losses.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state

    return loss_of


def flax_loss_of(module: fnn.Module) -> Callable:
    def loss_of(params, state, x, y):
        logits = module.apply({"params": params}, x)
        return optax.losses.softmax_cross_entropy_with_integer_labels(logits, y).mean(), state

    return loss_of


def flax_params_from_jdl(jdl_params: dict) -> dict:
    """The jdl weights as flax params: ``{layer: {"kernel": w, "bias": b}}``, copied.

    Copies, not views: each side donates its own train state, which would delete buffers
    the other side still holds.
    """
    converted = {}
    for layer_name, layer_params in jdl_params.items():
        if not layer_params:
            continue  # ReLU, Flatten, ...: no params
        if set(layer_params) != {"w", "b"}:
            raise ValueError(f"flax_params_from_jdl: expected {{'w', 'b'}} in {layer_name!r}, got {sorted(layer_params)}")
        converted[layer_name] = {"kernel": jnp.array(layer_params["w"], copy=True),
                                 "bias": jnp.array(layer_params["b"], copy=True)}
    return converted


def _shapes(tree) -> Any:
    return jax.tree.map(lambda a: (tuple(a.shape), jnp.dtype(a.dtype).name), flax.core.unfreeze(tree))


def check_losses(jdl_out, ref_out, dtype: str) -> dict:
    """Assert the two sides' losses agree on the first two steps of the first call.

    The first loss is the forward pass from the shared initial weights; the second comes
    after one backward pass and Adam update on each side, so it checks those too.
    """
    jdl_losses = np.asarray(jnp.asarray(jdl_out[1], jnp.float32))
    ref_losses = np.asarray(jnp.asarray(ref_out[1], jnp.float32))
    tolerance = LOSS_TOLERANCE[dtype]
    first = slice(0, 2)
    differences = np.abs(jdl_losses[first] - ref_losses[first])
    if not (np.all(np.isfinite(jdl_losses)) and np.all(np.isfinite(ref_losses))
            and np.all(differences <= tolerance * (1 + np.abs(ref_losses[first])))):
        raise AssertionError(
            f"jdl and flax+optax disagree, so they are not timing the same computation: losses of the first "
            f"steps {jdl_losses[first].tolist()} (jdl) vs {ref_losses[first].tolist()} (flax+optax), "
            f"tolerance {tolerance} ({dtype})"
        )
    return {
        "jdl_losses": jdl_losses[first].tolist(),
        "ref_losses": ref_losses[first].tolist(),
        "max_abs_loss_diff": float(differences.max()),
        # Over the whole first call the two trajectories drift apart only by rounding.
        "max_abs_loss_diff_first_call": float(np.abs(jdl_losses - ref_losses).max()),
    }


# --------------------------------------------------------------------------- the cases


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much to time: ``steps_per_call`` train steps per call (a ``lax.scan``), ``rounds`` calls per side."""

    steps_per_call: int = 50
    rounds: int = 31
    quick_steps_per_call: int = 20
    quick_rounds: int = 11


@dataclasses.dataclass(frozen=True)
class Case:
    """A classifier train step; ``build(config)`` returns everything the harness needs."""

    name: str
    description: str
    input_shape: tuple[int, ...]  # one example
    jdl_model: Callable[[Any, str], nn.Layer]  # (param_dtype, conv_implementation) -> layer
    flax_module: type
    batch: int = 256
    budget: Budget = Budget()
    # Per backend ("cpu", "gpu"): where a step takes seconds, fewer steps suffice.
    backend_budgets: dict = dataclasses.field(default_factory=dict)
    kind: str = "train_step"  # the records' "kind"; benchmarks/optim_cases.py has "optimizer_update"

    def settings(self, config: Config) -> tuple[int, int]:
        budget = self.backend_budgets.get(jax.default_backend(), self.budget)
        steps = config.steps_per_call or (budget.quick_steps_per_call if config.quick else budget.steps_per_call)
        rounds = config.rounds or (budget.quick_rounds if config.quick else budget.rounds)
        return max(steps, 2), rounds  # two steps at least: the loss check compares two

    def build(self, config: Config) -> dict:
        dtype = jnp.dtype(config.dtype)
        steps, rounds = self.settings(config)
        data_key, init_key = jax.random.split(jax.random.key(0))
        x_key, y_key = jax.random.split(data_key)
        # K different batches on the device, the same for both sides (never donated).
        xs = jax.random.normal(x_key, (steps, self.batch) + self.input_shape, jnp.float32).astype(dtype)
        ys = jax.random.randint(y_key, (steps, self.batch), 0, NUM_CLASSES, jnp.int32)
        example = jax.ShapeDtypeStruct((self.batch,) + self.input_shape, dtype)
        model = self.jdl_model(dtype, config.conv_implementation)
        params, state = model.init(init_key, example)
        jdl_optimizer = jdl.optim.adam(LEARNING_RATE)
        jdl_loop = TrainLoop(jdl_loss_of(model), jdl_optimizer, jdl.optim.apply_updates,
                             (params, state, jdl_optimizer.init(params)), xs, ys)

        module = self.flax_module(dtype=dtype, param_dtype=dtype)
        ref_params = flax_params_from_jdl(params)
        expected = jax.eval_shape(module.init, init_key, example)["params"]
        if _shapes(expected) != _shapes(ref_params):
            raise AssertionError(f"{self.name}: the flax twin's params {_shapes(expected)} differ from the jdl "
                                 f"model's {_shapes(ref_params)}")
        optimizer = optax.adam(LEARNING_RATE)
        ref_loop = TrainLoop(flax_loss_of(module), optimizer, optax.apply_updates,
                             (ref_params, {}, optimizer.init(ref_params)), xs, ys)

        return {
            "jdl_call": jdl_loop,
            "ref_call": ref_loop,
            "check": functools.partial(check_losses, dtype=config.dtype),
            "steps_per_call": steps,
            "rounds": rounds,
            "num_params": int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params))),
            "record": {"batch": self.batch, "jdl_conv_implementation": config.conv_implementation},
        }


CASES = {
    case.name: case
    for case in (
        Case("mlp_train_step", "MNIST-1D MLP 40-100-100-10", (40,), jdl_mlp, FlaxMLP),
        Case("cnn_train_step", "MNIST-1D CNN: 3x Conv1D(25; k 5/3/3, stride 2, pad 1), Dense(10)", (40,),
             jdl_cnn, FlaxCNN),
        Case("cnn2d_train_step", "28x28x1 CNN: Conv2D 32, pool, Conv2D 64, pool, Dense 128, Dense 10",
             (28, 28, 1), jdl_cnn2d, FlaxCNN2D,
             # flax's step takes seconds on CPU (XLA's CPU convolutions; jdl uses im2col there).
             backend_budgets={"cpu": Budget(steps_per_call=2, rounds=11, quick_steps_per_call=2, quick_rounds=3)}),
    )
}
