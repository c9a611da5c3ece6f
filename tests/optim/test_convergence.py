"""Every optimizer solves two standard problems to a stated tolerance, in float32.

* An ill-conditioned quadratic ``0.5 (w - w*)^T H (w - w*)`` in 10 dimensions, ``H`` with
  eigenvalues from 1 to 100 (condition number 100) in a random rotation, so no coordinate
  is special; start ``w = 0``, ``|w0 - w*| = 3.3``. Tolerance: ``|w - w*| < 1e-3``.
* The Rosenbrock function ``(1 - x)^2 + 100 (y - x^2)^2`` from the standard start
  ``(-1.2, 1)``. Tolerance: ``|w - (1, 1)| < 1e-3``.

The hyperparameters below are chosen per problem and stated with the number of steps.
The adaptive methods (RMSProp, Adam and kin, AdaDelta) take a step of about the learning
rate however small the gradient, so they reach a tight tolerance only with a decaying
rate: they use ``exponential_decay(rate, every, 0.1)`` (the rate times 0.1 every ``every``
steps). Normalized gradients, which "make good progress, but will not converge" (seeds/001),
are held to a looser tolerance, 2e-2.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import optim
from tests.optim.test_alias import FAST_COMPILE

TOLERANCE = 1e-3
START_ROSENBROCK = jnp.array([-1.2, 1.0])


def _quadratic():
    rng = np.random.default_rng(0)
    rotation, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    hessian = rotation @ np.diag(np.logspace(0, 2, 10)) @ rotation.T
    return jnp.asarray(hessian, jnp.float32), jnp.asarray(rng.normal(size=10), jnp.float32)


HESSIAN, MINIMUM = _quadratic()


def quadratic(w):
    return 0.5 * (w - MINIMUM) @ HESSIAN @ (w - MINIMUM)


def rosenbrock(w):
    return (1 - w[0]) ** 2 + 100 * (w[1] - w[0] ** 2) ** 2


def decay(rate, every):
    """``rate * 0.1 ** (count / every)``."""
    return lambda count: rate * 0.1 ** (count / every)


# name: (quadratic optimizer, steps), (Rosenbrock optimizer, steps), tolerance
CASES = {
    "sgd": ((optim.sgd(0.0198), 2000), (optim.sgd(1e-3), 20000), TOLERANCE),
    "sgd momentum": ((optim.sgd(0.01, 0.9), 1000), (optim.sgd(1e-3, 0.9), 5000), TOLERANCE),
    "sgd nesterov": ((optim.sgd(0.01, 0.9, nesterov=True), 1000),
                     (optim.sgd(1e-3, 0.9, nesterov=True), 5000), TOLERANCE),
    "sgd moving average": ((optim.sgd(0.1, 0.9, moving_average=True), 1000),
                           (optim.sgd(1e-2, 0.9, moving_average=True), 5000), TOLERANCE),
    "nesterov look-ahead": ((optim.nesterov_lookahead(0.01, 0.9), 1000),
                            (optim.nesterov_lookahead(1e-3, 0.9), 5000), TOLERANCE),
    "normalized gradients": ((optim.normalized_sgd(decay(0.01, 3000)), 10000),
                             (optim.normalized_sgd(decay(0.01, 3000)), 10000), 2e-2),
    "adagrad": ((optim.adagrad(0.5), 3000), (optim.adagrad(1.0), 20000), TOLERANCE),
    "adadelta": ((optim.adadelta(decay(1.0, 5000), rho=0.95), 20000),
                 (optim.adadelta(decay(1.0, 5000), rho=0.95), 20000), TOLERANCE),
    "rmsprop": ((optim.rmsprop(decay(0.01, 1000)), 3000), (optim.rmsprop(decay(0.01, 4000)), 10000), TOLERANCE),
    "rmsprop centred": ((optim.rmsprop(decay(0.01, 1000), centered=True), 3000),
                        (optim.rmsprop(decay(0.01, 4000), centered=True), 10000), TOLERANCE),
    "rmsprop momentum": ((optim.rmsprop(decay(0.01, 1000), momentum=0.9), 3000),
                         (optim.rmsprop(decay(0.01, 4000), momentum=0.9), 10000), TOLERANCE),
    "adam": ((optim.adam(decay(0.1, 1000)), 3000), (optim.adam(decay(0.05, 4000)), 10000), TOLERANCE),
    "adam eps in root": ((optim.adam(decay(0.1, 1000), eps=0.0, eps_root=1e-8), 3000),
                         (optim.adam(decay(0.05, 4000), eps=0.0, eps_root=1e-8), 10000), TOLERANCE),
    "nadam": ((optim.nadam(decay(0.1, 1000)), 3000), (optim.nadam(decay(0.05, 4000)), 10000), TOLERANCE),
    "adamw": ((optim.adamw(decay(0.1, 1000), weight_decay=1e-4), 3000),
              (optim.adamw(decay(0.05, 4000), weight_decay=1e-4), 10000), TOLERANCE),
}


def minimize(optimizer, loss, start, steps):
    """``steps`` steps from ``start``; the gradient at the look-ahead point where there is one."""
    lookahead = getattr(optimizer, "lookahead", None)

    def step(carry, _):
        w, state = carry
        gradient = jax.grad(loss)(lookahead(w, state) if lookahead else w)
        updates, state = optimizer.update(gradient, state, w)
        return (optim.apply_updates(w, updates), state), None

    return jax.lax.scan(step, (start, optimizer.init(start)), None, length=steps)[0][0]


@pytest.mark.parametrize("name", CASES)
def test_solves_ill_conditioned_quadratic_and_rosenbrock(name):
    (quadratic_optimizer, quadratic_steps), (rosenbrock_optimizer, rosenbrock_steps), tolerance = CASES[name]

    @jax.jit(compiler_options=FAST_COMPILE)
    def solve():
        return (minimize(quadratic_optimizer, quadratic, jnp.zeros(10), quadratic_steps),
                minimize(rosenbrock_optimizer, rosenbrock, START_ROSENBROCK, rosenbrock_steps))

    w_quadratic, w_rosenbrock = solve()
    quadratic_error = float(jnp.linalg.norm(w_quadratic - MINIMUM))
    rosenbrock_error = float(jnp.linalg.norm(w_rosenbrock - 1.0))
    assert quadratic_error < tolerance, f"{name}: quadratic |w - w*| = {quadratic_error:.2e}"
    assert rosenbrock_error < tolerance, f"{name}: Rosenbrock |w - (1, 1)| = {rosenbrock_error:.2e}"


def test_plain_gradient_descent_is_slow_on_the_quadratic():
    """The quadratic is hard: far fewer steps leave gradient descent well short (a sanity check)."""
    w = jax.jit(lambda: minimize(optim.sgd(0.0198), quadratic, jnp.zeros(10), 100))()
    assert float(jnp.linalg.norm(w - MINIMUM)) > 0.1
