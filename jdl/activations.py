"""Activation functions, as pure elementwise functions of arrays.

The layer forms (``jdl.nn.ReLU()``, ``jdl.nn.PReLU()`` with its learned slope, ...) live
in :mod:`jdl.nn.activation`; these are the functions they apply.

Derivatives, as the course material writes them, are what ``jax.grad`` gives:
``sigmoid' = sigmoid (1 - sigmoid)``, ``tanh' = 1 - tanh^2``, ``relu'(z) = [z > 0]``
(0 at ``z = 0``, like ``jax.nn.relu``).

NaN propagates: every function gives NaN where its input is NaN (and the ones along an
axis, for the whole slice), so a NaN never turns into an ordinary number on its way to
the loss. A comparison is false for NaN, so each selection is written with the branch
that keeps ``x`` as its false branch (``relu``), or says what NaN gives (``step``).

Example:
    >>> import jax.numpy as jnp, jdl
    >>> jdl.activations.leaky_relu(jnp.array([-2.0, 3.0]))
    Array([-0.02,  3.  ], dtype=float32)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def sigmoid(x):
    """``1 / (1 + exp(-x))``.

    Computed as ``1 / (1 + e^-x)`` for ``x >= 0`` and ``e^x / (1 + e^x)`` for ``x < 0``:
    the exponential is never of a positive number, so nothing overflows, and the small
    values of the negative tail keep full relative precision (``sigmoid(-20) = 2e-9``).
    """
    exp_neg_abs = jnp.exp(-jnp.abs(x))
    return jnp.where(x >= 0, 1.0 / (1.0 + exp_neg_abs), exp_neg_abs / (1.0 + exp_neg_abs))


def log_sigmoid(x):
    """``log sigmoid(x) = -log(1 + e^-x)``, via ``logaddexp`` so it stays finite at +-1e4."""
    return -jnp.logaddexp(0.0, -x)


def tanh(x):
    """``(e^x - e^-x) / (e^x + e^-x)``."""
    return jnp.tanh(x)


def relu(x):
    """``max(0, x)``, with derivative 0 at 0 (as ``jax.nn.relu``); NaN stays NaN."""
    # Not where(x > 0, x, 0): NaN > 0 is false, and NaN would become 0. Not maximum(x, 0):
    # its gradient at the tie x = 0 is 1/2.
    return jnp.where(x <= 0, jnp.zeros_like(x), x)


def leaky_relu(x, negative_slope: float = 0.01):
    """``x`` if ``x >= 0`` else ``negative_slope * x`` (the course's leaky ReLU: a = 0.01)."""
    return jnp.where(x >= 0, x, negative_slope * x)


def prelu(x, slope):
    """Parametric ReLU: ``x`` if ``x >= 0`` else ``slope * x``, with ``slope`` learned."""
    return jnp.where(x >= 0, x, slope * x)


def elu(x, alpha: float = 1.0):
    """``x`` if ``x > 0`` else ``alpha (e^x - 1)``."""
    # expm1 only of the non-positive part, so a large positive x cannot overflow the branch
    # that `where` discards (its gradient would be NaN). `where`, not `minimum`: minimum
    # splits the gradient at the tie x = 0 and would give elu'(0) = alpha / 2.
    safe = jnp.where(x > 0, jnp.zeros_like(x), x)
    return jnp.where(x > 0, x, alpha * jnp.expm1(safe))


def gelu(x, approximate: bool = True):
    """Gaussian error linear unit ``x Phi(x)`` (Hendrycks and Gimpel, 2016).

    ``approximate=True`` (the default, as ``jax.nn.gelu`` and flax) uses
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``; ``False`` the exact
    ``0.5 x (1 + erf(x / sqrt(2)))``.
    """
    if approximate:
        inner = jnp.sqrt(2.0 / jnp.pi).astype(x.dtype) * (x + 0.044715 * x**3)
        return 0.5 * x * (1.0 + jnp.tanh(inner))
    return 0.5 * x * (1.0 + jax.lax.erf(x / jnp.sqrt(2.0).astype(x.dtype)))


def softplus(x):
    """``log(1 + e^x)``, a smooth ReLU whose derivative is ``sigmoid(x)``.

    Computed as ``logaddexp(0, x)``: finite at +-1e4 (``softplus(1e4) = 1e4``), and the
    negative tail keeps its relative precision (``softplus(-20) = 2e-9``).
    """
    return jnp.logaddexp(0.0, x)


def hard_tanh(x, min_value: float = -1.0, max_value: float = 1.0):
    """``x`` clipped to ``[min_value, max_value]``: tanh's shape, piecewise linear.

    The derivative is 1 on the closed interval and 0 outside it (as ``jax.nn.hard_tanh``);
    NaN stays NaN.
    """
    # Each `where` keeps x on its false branch, so NaN (false in every comparison) passes through.
    x = jnp.where(x > max_value, jnp.full_like(x, max_value), x)
    return jnp.where(x < min_value, jnp.full_like(x, min_value), x)


def softmax(x, axis: int = -1):
    """``exp(x_i) / sum_j exp(x_j)``, shifted by the max so it never overflows."""
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    exp = jnp.exp(shifted)
    return exp / jnp.sum(exp, axis=axis, keepdims=True)


def log_softmax(x, axis: int = -1):
    """``x_i - log sum_j exp(x_j)``, computed stably (finite for logits of +-1e4)."""
    shifted = x - jax.lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
    return shifted - jnp.log(jnp.sum(jnp.exp(shifted), axis=axis, keepdims=True))


def step(x):
    """The perceptron's step function: 1 where ``x > 0``, NaN where ``x`` is NaN, else 0.

    The gradient is 0 everywhere.
    """
    return jnp.where(jnp.isnan(x), jnp.nan, jnp.greater(x, 0)).astype(x.dtype)
