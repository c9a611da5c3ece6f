"""The benchmark cases: one full train step of a classifier, in jdl and in flax + optax.

A train step is forward, softmax cross-entropy, backward and an Adam(1e-3) update,
jitted with the train state donated, ``K`` steps per call inside a ``lax.scan``:

* jdl: the model as ``jdl.nn`` layers (the MNIST-1D models are the experiment's own,
  imported from ``experiments/mnist1d.py``), ``jdl.losses.softmax_cross_entropy_with_integer_labels``
  and ``jdl.optim.adam``, trained the way a jdl user trains: ``jdl.train.gradient_step``
  in a ``jdl.train.batch_loop``, compiled by ``jdl.train.compile_loop``
  (:class:`JdlTrainLoop`);
* reference: its twin written with ``flax.linen`` modules (the anchor: written here, from
  flax's pieces), ``optax.losses.softmax_cross_entropy_with_integer_labels`` and
  ``optax.adam``, in the hand-written step of flax's examples (:func:`make_train_steps`,
  :class:`TrainLoop`).

The reference starts from the jdl weights, copied in (``kernel = w``, ``bias = b``), so
that both sides train the same network on the same batches; :func:`check_losses` asserts
that their losses agree before anything is timed.

Cases (batch 256):

* ``mlp_train_step``: the MNIST-1D MLP, 40-100-100-10;
* ``cnn_train_step``: the MNIST-1D CNN: three ``Conv1D`` (25 channels, kernels 5/3/3,
  stride 2, padding 1) with ReLU, flatten, ``Dense(10)``;
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
from experiments.mnist1d import make_model
from jdl import nn
from jdl.models import count_params

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
# The jdl side of the MNIST-1D cases is experiments/mnist1d.py's make_model, so the benchmark
# times the experiment's models; the flax twins name their layers like the jdl dict keys.


def lenet(*, param_dtype, conv_implementation) -> nn.Layer:
    """The 28x28x1 CNN of ``cnn2d_train_step`` (no experiment trains it)."""
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


class FlaxTwin(fnn.Module):
    """A flax.linen twin of a jdl model, computing in ``dtype`` with params in ``param_dtype``."""

    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def dense(self, features: int, name: str) -> fnn.Dense:
        return fnn.Dense(features, dtype=self.dtype, param_dtype=self.param_dtype, name=name)


class FlaxMLP(FlaxTwin):
    @fnn.compact
    def __call__(self, x):
        x = fnn.relu(self.dense(100, "hidden_1")(x))
        x = fnn.relu(self.dense(100, "hidden_2")(x))
        return self.dense(NUM_CLASSES, "output")(x)


class FlaxCNN(FlaxTwin):
    @fnn.compact
    def __call__(self, x):
        conv = functools.partial(fnn.Conv, strides=(2,), padding=((1, 1),), dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        x = x.reshape(x.shape[0], 40, 1)
        for index, width in enumerate((5, 3, 3), start=1):
            x = fnn.relu(conv(25, (width,), name=f"conv_{index}")(x))
        return self.dense(NUM_CLASSES, "output")(x.reshape(x.shape[0], -1))


class FlaxLeNet(FlaxTwin):
    @fnn.compact
    def __call__(self, x):
        conv = functools.partial(fnn.Conv, kernel_size=(3, 3), padding="SAME", dtype=self.dtype,
                                 param_dtype=self.param_dtype)
        x = fnn.max_pool(fnn.relu(conv(32, name="conv_1")(x)), (2, 2), strides=(2, 2))
        x = fnn.max_pool(fnn.relu(conv(64, name="conv_2")(x)), (2, 2), strides=(2, 2))
        x = fnn.relu(self.dense(128, "hidden")(x.reshape(x.shape[0], -1)))
        return self.dense(NUM_CLASSES, "output")(x)


# --------------------------------------------------------------------------- the train step


def make_train_steps(loss_of: Callable, optimizer, apply_updates: Callable) -> Callable:
    """The reference's ``run(train_state, xs, ys) -> (train_state, losses)``: one step per batch, in a scan.

    ``train_state`` is ``(params, state, opt_state)``; ``loss_of(params, state, x, y)``
    returns ``(mean loss, new state)``.
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
        self.train_state, self.args = train_state, (xs, ys)
        self.donated: bool | None = None  # known after the first call

    def __call__(self):
        old_leaf = jax.tree.leaves(self.train_state)[0] if self.donated is None else None
        self.train_state, losses = self.run(self.train_state, *self.args)
        if old_leaf is not None:
            self.donated = old_leaf.is_deleted()
        return self.train_state, self.losses(losses)

    def losses(self, out) -> jax.Array:
        return out

    def compilations(self) -> int:
        """How many programs ``run`` has compiled (1 unless something retraced)."""
        return self.run._cache_size()


class JdlTrainLoop(TrainLoop):
    """:class:`TrainLoop` for jdl: ``jdl.train.gradient_step`` of ``loss_of`` in a compiled ``batch_loop``."""

    def __init__(self, loss_of: Callable, optimizer, params, state, xs, ys):
        def objective(p, s, batch, key):
            loss, s = loss_of(p, s, *batch)
            return loss, (s, {})

        step = jdl.train.gradient_step(objective, optimizer)
        self.run = jdl.train.compile_loop(jdl.train.batch_loop(step))
        self.train_state = jdl.train.TrainState(params, state, optimizer.init(params), jnp.zeros((), jnp.int32),
                                                jax.random.key(0))
        self.args, self.donated = ((xs, ys),), None

    def losses(self, metrics) -> jax.Array:
        return metrics["loss"]


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


# jdl's param names -> flax's: Dense/Conv kernel and bias, LayerNorm scale and bias.
FLAX_NAMES = {"w": "kernel", "b": "bias", "gamma": "scale", "beta": "bias"}


def flax_params_from_jdl(tree):
    """The jdl params with flax's names, e.g. ``{layer: {"kernel": w, "bias": b}}``, copied.

    Layers without params (ReLU, Flatten: ``{}``) have no entry in flax, so none here.
    Copies, not views: each side donates its own train state, which would delete buffers
    the other side still holds.
    """
    if isinstance(tree, dict):
        return {FLAX_NAMES.get(name, name): flax_params_from_jdl(value) for name, value in tree.items()
                if jax.tree.leaves(value)}
    return jnp.array(tree, copy=True)


def _shapes(tree) -> Any:
    return jax.tree.map(lambda a: (tuple(a.shape), jnp.dtype(a.dtype).name), flax.core.unfreeze(tree))


def check_losses(jdl_out, ref_out, dtype: str, second_step_tolerance: float | None = None) -> dict:
    """Assert the two sides' losses agree on the first two steps of the first call.

    The first loss is the forward pass from the shared initial weights; the second comes
    after one backward pass and Adam update on each side, so it checks those too.
    ``second_step_tolerance`` (default: the dtype's) loosens the second check only: Adam's
    first update is ``lr * sign(g)`` elementwise, so in a deep network the gradient entries
    that are zero but for rounding move by ``+-lr`` on either side, whichever their sign.
    """
    jdl_losses = np.asarray(jnp.asarray(jdl_out[1], jnp.float32))
    ref_losses = np.asarray(jnp.asarray(ref_out[1], jnp.float32))
    tolerance = LOSS_TOLERANCE[dtype]
    tolerances = np.array([tolerance, second_step_tolerance or tolerance])
    first = slice(0, 2)
    differences = np.abs(jdl_losses[first] - ref_losses[first])
    if not (np.all(np.isfinite(jdl_losses)) and np.all(np.isfinite(ref_losses))
            and np.all(differences <= tolerances * (1 + np.abs(ref_losses[first])))):
        raise AssertionError(
            f"jdl and flax+optax disagree, so they are not timing the same computation: losses of the first "
            f"steps {jdl_losses[first].tolist()} (jdl) vs {ref_losses[first].tolist()} (flax+optax), "
            f"tolerances {tolerances.tolist()} ({dtype})"
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
    """How much to time: train steps per call (one ``lax.scan``) and timed rounds (calls) per side."""

    steps_per_call: int = 50
    rounds: int = 31
    quick_steps_per_call: int = 20  # under --quick
    quick_rounds: int = 11  # under --quick

    def choose(self, config: Config) -> tuple[int, int]:
        """``(steps_per_call, rounds)`` of this run: the command line's where given, else the budget's."""
        steps = config.steps_per_call or (self.quick_steps_per_call if config.quick else self.steps_per_call)
        rounds = config.rounds or (self.quick_rounds if config.quick else self.rounds)
        return steps, rounds


def train_step_case(jdl_loss: Callable, params, state, ref_loss: Callable, ref_params, xs, ys, *, steps: int,
                    rounds: int, dtype: str, record: dict, ref_state=None,
                    second_step_tolerance: float | None = None) -> dict:
    """What the runner needs of a train-step case: each side's loop (:class:`JdlTrainLoop` with
    ``jdl.optim.adam``, :class:`TrainLoop` with ``optax.adam``) on the same batches, the loss check
    (:func:`check_losses`), the budget and the record's extra keys. ``ref_state``: the reference's
    non-trained variables (flax's batch statistics), ``{}`` by default."""
    jdl_optimizer, ref_optimizer = jdl.optim.adam(LEARNING_RATE), optax.adam(LEARNING_RATE)
    ref_state = {} if ref_state is None else ref_state
    return {
        "jdl_call": JdlTrainLoop(jdl_loss, jdl_optimizer, params, state, xs, ys),
        "ref_call": TrainLoop(ref_loss, ref_optimizer, optax.apply_updates,
                              (ref_params, ref_state, ref_optimizer.init(ref_params)), xs, ys),
        "check": functools.partial(check_losses, dtype=dtype, second_step_tolerance=second_step_tolerance),
        "steps_per_call": steps,
        "rounds": rounds,
        "num_params": count_params(params),
        "record": record,
    }


def check_twin(name: str, module: fnn.Module, example_args: tuple, ref_params) -> None:
    """Raise unless the flax twin's own params (shapes and dtypes) are those copied in from jdl."""
    expected = jax.eval_shape(module.init, jax.random.key(0), *example_args)["params"]
    if _shapes(expected) != _shapes(ref_params):
        raise AssertionError(f"{name}: the flax twin's params {_shapes(expected)} differ from the jdl model's "
                             f"{_shapes(ref_params)}")


@dataclasses.dataclass(frozen=True)
class Case:
    """A classifier train step; ``build(config)`` returns everything the harness needs."""

    name: str
    description: str
    input_shape: tuple[int, ...]  # one example
    jdl_model: Callable[..., nn.Layer]  # (*, param_dtype, conv_implementation) -> layer
    flax_module: type
    batch: int = 256
    budget: Budget = Budget()
    # Per backend ("cpu", "gpu"): where a step takes seconds, fewer steps suffice.
    backend_budgets: dict = dataclasses.field(default_factory=dict)
    kind: str = "train_step"  # the records' "kind"; benchmarks/optim_cases.py has "optimizer_update"

    def settings(self, config: Config) -> tuple[int, int]:
        steps, rounds = self.backend_budgets.get(jax.default_backend(), self.budget).choose(config)
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
        model = self.jdl_model(param_dtype=dtype, conv_implementation=config.conv_implementation)
        params, state = model.init(init_key, example)
        module = self.flax_module(dtype=dtype, param_dtype=dtype)
        ref_params = flax_params_from_jdl(params)
        check_twin(self.name, module, (example,), ref_params)
        return train_step_case(jdl_loss_of(model), params, state, flax_loss_of(module), ref_params, xs, ys,
                               steps=steps, rounds=rounds, dtype=config.dtype,
                               record={"batch": self.batch, "jdl_conv_implementation": config.conv_implementation})


CASES = {
    case.name: case
    for case in (
        Case("mlp_train_step", "MNIST-1D MLP 40-100-100-10", (40,), functools.partial(make_model, "mlp"), FlaxMLP),
        Case("cnn_train_step", "MNIST-1D CNN: 3x Conv1D(25; k 5/3/3, stride 2, pad 1), Dense(10)", (40,),
             functools.partial(make_model, "cnn"), FlaxCNN),
        Case("cnn2d_train_step", "28x28x1 CNN: Conv2D 32, pool, Conv2D 64, pool, Dense 128, Dense 10",
             (28, 28, 1), lenet, FlaxLeNet,
             # flax's step takes seconds on CPU (XLA's CPU convolutions; jdl uses im2col there).
             backend_budgets={"cpu": Budget(steps_per_call=2, rounds=11, quick_steps_per_call=2, quick_rounds=3)}),
    )
}
