"""Linear units and their learning rules: the perceptron, the delta rule, logistic regression.

One unit computes the net input ``z = w . x + b`` and an output ``y = g(z)``; its rule moves
``w`` and ``b`` against the error. The rules, as the course writes them (targets ``t`` in
{0, 1}, learning rate ``eta``, sums over the examples given):

* **Perceptron** (Rosenblatt, 1957): ``y = [z > 0]``, ``w <- w + eta (t - y) x``. It changes
  the weights only on a mistake; on linearly separable data it stops after at most
  ``(R / gamma)^2`` mistakes (Novikoff, 1962: ``R`` the largest ``|(x, 1)|``, ``gamma`` the
  margin of a unit-norm separating ``(w*, b*)``), and on XOR it never stops.
* **Delta rule** (Widrow and Hoff, 1960), a linear unit ``y = z`` on ``E = 1/2 sum (t - y)^2``:
  ``Delta w = eta sum (t - y) x``, gradient descent on ``E``.
* **Delta rule with a sigmoid**, ``f = sigmoid(z)`` on ``E = 1/2 sum (f - t)^2``:
  ``Delta w = -eta sum (f - t) f (1 - f) x``. (Seed 002 writes the gradient
  ``(f - t) f (1 - f) x`` itself as ``Delta w``, and the sigmoid once as
  ``1 / (1 + e^{-wx+b})``; the update is minus ``eta`` times that gradient, of
  ``sigmoid(wx + b)``.)
* **Logistic regression**, ``f = sigmoid(z)`` on the binary cross-entropy
  ``E = -sum t log f + (1 - t) log (1 - f)``: ``Delta w = eta sum (t - f) x``, the delta rule's
  form with the sigmoid's derivative cancelled by the loss.

Each is a :class:`LearningRule`: the unit's ``output``, its ``update`` and the ``loss`` it
descends (for the perceptron, the perceptron criterion ``sum max(0, -(2t - 1) z)``, whose
gradient step is Rosenblatt's rule off the decision boundary). :func:`fit` runs a rule
online (one example at a time, in order or shuffled per epoch) or in batch (all examples,
one update per epoch) inside ``lax.scan``, so training jits and ``vmap`` s over seeds or
data sets. :func:`least_squares` solves the linear unit's normal equations.

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import linear_units as lu
    >>> x = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    >>> params, history = lu.fit(lu.perceptron, lu.init(2), x, jnp.array([0.0, 0.0, 0.0, 1.0]),
    ...                          learning_rate=1.0, epochs=10)  # AND is linearly separable
    >>> lu.perceptron.output(params, x)
    Array([0., 0., 0., 1.], dtype=float32)
    >>> params, mse = lu.least_squares(x, jnp.array([0.0, 1.0, 1.0, 0.0]))  # XOR: w = 0, b = 1/2, J = 1/4
    >>> [round(float(v), 5) for v in (*params["w"], params["b"], mse)]
    [0.0, 0.0, 0.5, 0.25]
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from jdl import activations, losses
from jdl._checks import check_floating, check_int_at_least, check_rank, check_same_shape, check_that

__all__ = ["LearningRule", "FitHistory", "init", "net_input", "perceptron", "delta_rule", "sigmoid_delta_rule",
           "logistic_regression", "fit", "least_squares", "novikoff_bound"]

Params = dict  # {"w": (num_inputs,), "b": ()}


def init(num_inputs: int, dtype=jnp.float32) -> Params:
    """Zero weights and bias, the perceptron's classic start (its mistake bound assumes it)."""
    check_int_at_least("linear_units.init", "num_inputs", num_inputs, 1)
    return {"w": jnp.zeros((num_inputs,), dtype), "b": jnp.zeros((), dtype)}


def net_input(params: Params, x: jax.Array) -> jax.Array:
    """``z = x . w + b`` for inputs ``x`` of shape ``(..., num_inputs)``."""
    return x @ params["w"] + params["b"]


def _step(params: Params, x, delta):
    """``w + sum_i delta_i x_i`` and ``b + sum_i delta_i``: every rule's update, given its ``delta``."""
    return {"w": params["w"] + delta @ x, "b": params["b"] + jnp.sum(delta)}


class LearningRule(NamedTuple):
    """A unit and its rule: ``output(params, x)``, ``update(params, x, t, eta) -> params`` and
    the ``loss(params, x, t)`` (a sum over the examples) that the update descends."""

    name: str
    output: Callable
    update: Callable
    loss: Callable


def _threshold(params, x):
    return activations.step(net_input(params, x))


def _sigmoid_output(params, x):
    return activations.sigmoid(net_input(params, x))


perceptron = LearningRule(
    "perceptron", _threshold,
    update=lambda params, x, t, eta: _step(params, x, eta * (t - _threshold(params, x))),
    loss=lambda params, x, t: jnp.sum(losses.perceptron_loss(net_input(params, x), 2 * t - 1)),
)

delta_rule = LearningRule(
    "delta_rule", net_input,
    update=lambda params, x, t, eta: _step(params, x, eta * (t - net_input(params, x))),
    loss=lambda params, x, t: 0.5 * jnp.sum((t - net_input(params, x)) ** 2),
)


def _sigmoid_delta_update(params, x, t, eta):
    f = _sigmoid_output(params, x)
    return _step(params, x, -eta * (f - t) * f * (1 - f))


sigmoid_delta_rule = LearningRule(
    "sigmoid_delta_rule", _sigmoid_output, _sigmoid_delta_update,
    loss=lambda params, x, t: 0.5 * jnp.sum((_sigmoid_output(params, x) - t) ** 2),
)

logistic_regression = LearningRule(
    "logistic_regression", _sigmoid_output,
    update=lambda params, x, t, eta: _step(params, x, eta * (t - _sigmoid_output(params, x))),
    loss=lambda params, x, t: jnp.sum(losses.sigmoid_binary_cross_entropy(net_input(params, x), t)),
)


class FitHistory(NamedTuple):
    """Per epoch: ``mistakes`` (examples misclassified, output thresholded at 1/2, when the
    rule met them: during the pass online, before the update in batch) and ``loss`` after it."""

    mistakes: jax.Array
    loss: jax.Array


def _mistakes(rule: LearningRule, params, x, t):
    return jnp.sum((rule.output(params, x) > 0.5) != (t > 0.5))


def fit(rule: LearningRule, params: Params, x: jax.Array, t: jax.Array, *, learning_rate: float, epochs: int,
        online: bool = True, key: jax.Array | None = None) -> tuple[Params, FitHistory]:
    """Train one unit with ``rule`` for ``epochs`` passes over ``(x, t)``; ``(params, history)``.

    ``online=True`` updates after every example (in order, or in a fresh random order each
    epoch when a ``key`` is given); ``online=False`` makes one batch update per epoch from the
    sum over all examples. Everything runs in ``lax.scan``: jit it, or ``vmap`` it over keys.
    """
    where = f"linear_units.fit({rule.name})"
    check_floating(where, x)
    check_rank(where, x, 2, "(examples, num_inputs)")
    check_rank(where, t, 1, "(examples,)", "targets")
    check_same_shape(where, x[:, 0], t, "x's examples", "targets")
    check_that(params["w"].shape == x.shape[1:], where, f"params['w'] of shape {x.shape[1:]}",
               f"{params['w'].shape}")
    check_int_at_least(where, "epochs", epochs, 1)
    t = t.astype(x.dtype)

    def online_epoch(params, epoch_key):
        order = jnp.arange(len(x)) if epoch_key is None else jax.random.permutation(epoch_key, len(x))

        def visit(params, i):
            xi, ti = x[i][None], t[i][None]
            return rule.update(params, xi, ti, learning_rate), _mistakes(rule, params, xi, ti)

        params, wrong = jax.lax.scan(visit, params, order)
        return params, FitHistory(jnp.sum(wrong), rule.loss(params, x, t))

    def batch_epoch(params, _):
        wrong = _mistakes(rule, params, x, t)
        params = rule.update(params, x, t, learning_rate)
        return params, FitHistory(wrong, rule.loss(params, x, t))

    epoch_keys = None if key is None or not online else jax.random.split(key, epochs)
    return jax.lax.scan(online_epoch if online else batch_epoch, params, epoch_keys, length=epochs)


def least_squares(x: jax.Array, t: jax.Array) -> tuple[Params, jax.Array]:
    """The linear unit minimising ``J = 1/n sum (t - x . w - b)^2``, by the normal equations.

    Solves ``(X^T X) theta = X^T t`` for ``theta = (w, b)``, ``X`` the inputs with a column of
    ones (``lstsq``, so a rank-deficient ``X`` gets the minimum-norm solution). Returns
    ``(params, J)``. On XOR (seed 002) it gives ``w = 0``, ``b = 1/2`` and ``J = 1/4``: no
    linear unit does better than predicting 1/2 everywhere.
    """
    where = "linear_units.least_squares"
    check_floating(where, x)
    check_rank(where, x, 2, "(examples, num_inputs)")
    check_same_shape(where, x[:, 0], t, "x's examples", "targets")
    design = jnp.concatenate([x, jnp.ones((len(x), 1), x.dtype)], axis=1)
    theta = jnp.linalg.lstsq(design, t.astype(x.dtype))[0]
    params = {"w": theta[:-1], "b": theta[-1]}
    return params, jnp.mean((t - net_input(params, x)) ** 2)


def novikoff_bound(x: jax.Array, t: jax.Array, separator: Params) -> jax.Array:
    """Novikoff's bound ``(R / gamma)^2`` on the perceptron's mistakes, from a separating unit.

    ``R = max |(x, 1)|`` (the inputs with the bias's constant input) and ``gamma`` the margin
    ``min (2t - 1)(w* . x + b*) / |(w*, b*)|`` of ``separator``. Any separator gives a valid
    bound (the best is the maximum-margin one); ``inf`` if it does not separate the data.
    """
    augmented = jnp.concatenate([x, jnp.ones((len(x), 1), x.dtype)], axis=1)
    radius = jnp.max(jnp.linalg.norm(augmented, axis=1))
    norm = jnp.sqrt(jnp.sum(separator["w"] ** 2) + separator["b"] ** 2)
    margin = jnp.min((2 * t - 1) * net_input(separator, x)) / norm
    return jnp.where(margin > 0, (radius / margin) ** 2, jnp.inf)
