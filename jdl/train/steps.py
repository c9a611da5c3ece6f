"""One train step and one evaluation step: pure functions ``(train_state, batch) -> (..., metrics)``.

:func:`gradient_step` is the general form: any objective of the params. :func:`train_step`
builds the usual one from a model and a per-example loss, for ``batch = (inputs, targets)``:

.. math::

    L(\\theta) = \\frac{1}{B} \\sum_b \\ell(f_\\theta(x_b), y_b), \\qquad
    \\theta \\leftarrow \\theta + \\mathrm{update}(\\nabla_\\theta L)

Both return a step that jits, runs inside ``lax.scan`` (the compiled loops in
:mod:`jdl.train.loops`) and vmaps over a stack of train states (an ensemble of seeds in one
program), with no change. The step's key is ``fold_in(streams(key).step, step)``, so a
step's randomness depends on nothing but the train state.

Example:
    >>> import jax, jax.numpy as jnp, jdl
    >>> from jdl import nn, optim
    >>> model = nn.Sequential([nn.Dense(8), nn.ReLU(), nn.Dense(3)])
    >>> x, y = jnp.ones((4, 2)), jnp.array([0, 1, 2, 0])
    >>> optimizer = optim.adam(1e-2)
    >>> ts = jdl.train.init(model, optimizer, jax.random.key(0), x)
    >>> step = jax.jit(jdl.train.train_step(model, jdl.losses.softmax_cross_entropy_with_integer_labels,
    ...                                     optimizer, metrics={"accuracy": jdl.metrics.accuracy}))
    >>> ts, metrics = step(ts, (x, y))
    >>> int(ts.step), sorted(metrics)
    (1, ['accuracy', 'loss'])
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from jdl._checks import check_that
from jdl.nn.core import Layer
from jdl.optim.base import GradientTransformation, apply_updates
from jdl.train.state import TrainState, streams

__all__ = ["gradient_step", "train_step", "eval_step", "step_key"]

# objective(params, state, batch, key) -> (scalar loss, (new_state, {name: scalar metric}))
Objective = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, tuple[Any, Mapping[str, jax.Array]]]]
# loss_fn(outputs, targets) -> per-example losses (averaged) or a scalar
LossFn = Callable[[Any, Any], jax.Array]
# augment(key, inputs) -> inputs
Augment = Callable[[jax.Array, Any], Any]


def step_key(train_state: TrainState) -> jax.Array:
    """The key of the step ``train_state`` is about to take: ``fold_in(streams(key).step, step)``."""
    return jax.random.fold_in(streams(train_state.key).step, train_state.step)


def _check_callable(where: str, name: str, value: Any) -> None:
    check_that(callable(value), where, f"{name} to be callable", type(value).__name__, TypeError)


def gradient_step(objective: Objective, optimizer: GradientTransformation) -> Callable:
    """``step(train_state, batch) -> (train_state, metrics)``: one optimizer step on ``objective``.

    ``objective(params, state, batch, key)`` returns ``(loss, (new_state, metrics))``, the
    loss a scalar and ``metrics`` a dict of scalars; ``metrics`` of the step is ``{"loss":
    loss, **metrics}``, measured before the update.
    """
    _check_callable("jdl.train.gradient_step", "objective", objective)
    value_and_grad = jax.value_and_grad(objective, has_aux=True)

    def step(train_state: TrainState, batch: Any) -> tuple[TrainState, dict]:
        (loss, (new_state, metrics)), grads = value_and_grad(train_state.params, train_state.state, batch,
                                                             step_key(train_state))
        updates, opt_state = optimizer.update(grads, train_state.opt_state, train_state.params)
        params = apply_updates(train_state.params, updates)
        return TrainState(params, new_state, opt_state, train_state.step + 1, train_state.key), {"loss": loss,
                                                                                                   **metrics}

    return step


def _mean_loss(loss_fn: LossFn, outputs: Any, targets: Any) -> jax.Array:
    return jnp.mean(loss_fn(outputs, targets))


def _metric_values(metrics: Mapping[str, Callable] | None, outputs: Any, targets: Any) -> dict:
    outputs = jax.lax.stop_gradient(outputs)
    return {name: fn(outputs, targets) for name, fn in (metrics or {}).items()}


def _check_model_step(where: str, model: Any, loss_fn: Any, metrics: Any) -> None:
    check_that(isinstance(model, Layer), where, "a jdl.nn.Layer as model", type(model).__name__, TypeError)
    _check_callable(where, "loss_fn", loss_fn)
    check_that(metrics is None or (isinstance(metrics, Mapping) and all(map(callable, metrics.values()))), where,
               "metrics as a dict of name -> fn(outputs, targets)", repr(metrics), TypeError)


def train_step(model: Layer, loss_fn: LossFn, optimizer: GradientTransformation, *, augment: Augment | None = None,
               metrics: Mapping[str, Callable] | None = None) -> Callable:
    """``step(train_state, (inputs, targets)) -> (train_state, metrics)`` for a model and a loss.

    The loss is ``mean(loss_fn(outputs, targets))`` with ``outputs`` from
    ``model.apply(..., key=key, train=True)``; with ``augment``, the step's key is split
    into ``(augment_key, key)`` and the inputs become ``augment(augment_key, inputs)``
    first. ``metrics`` (``{"accuracy": jdl.metrics.accuracy}``) are computed on the same
    training outputs, without gradient.
    """
    _check_model_step("jdl.train.train_step", model, loss_fn, metrics)

    def objective(params, state, batch, key):
        inputs, targets = batch
        if augment is not None:
            augment_key, key = jax.random.split(key)
            inputs = augment(augment_key, inputs)
        outputs, new_state = model.apply(params, state, inputs, key=key, train=True)
        return _mean_loss(loss_fn, outputs, targets), (new_state, _metric_values(metrics, outputs, targets))

    return gradient_step(objective, optimizer)


def eval_step(model: Layer, loss_fn: LossFn, *, metrics: Mapping[str, Callable] | None = None) -> Callable:
    """``evaluate(train_state, (inputs, targets)) -> metrics``: the loss and ``metrics`` with ``train=False``."""
    _check_model_step("jdl.train.eval_step", model, loss_fn, metrics)

    def evaluate(train_state: TrainState, batch: Any) -> dict:
        inputs, targets = batch
        outputs, _ = model.apply(train_state.params, train_state.state, inputs, train=False)
        return {"loss": _mean_loss(loss_fn, outputs, targets), **_metric_values(metrics, outputs, targets)}

    return evaluate
