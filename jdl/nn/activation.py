"""Activation layers: the functions of :mod:`jdl.activations` as layers, and PReLU.

All but :func:`PReLU` have no params; PReLU learns its negative slope.

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import nn
    >>> nn.ReLU().apply({}, {}, jnp.array([-1.0, 2.0]))[0]
    Array([0., 2.], dtype=float32)
"""
from __future__ import annotations

import jax.numpy as jnp

from jdl import activations
from jdl import init as initializers
from jdl._checks import check_floating, check_keys, check_param_shape
from jdl.nn.core import Layer, make_layer, stateless


def _activation(name: str, description: str, fn) -> Layer:
    return stateless(name, description, fn, lambda x: check_floating(description, x))


def Sigmoid() -> Layer:
    """``1 / (1 + exp(-x))``."""
    return _activation("sigmoid", "Sigmoid()", activations.sigmoid)


def Tanh() -> Layer:
    """``tanh(x)``."""
    return _activation("tanh", "Tanh()", activations.tanh)


def ReLU() -> Layer:
    """``max(0, x)``."""
    return _activation("relu", "ReLU()", activations.relu)


def LeakyReLU(negative_slope: float = 0.01) -> Layer:
    """``x`` for ``x >= 0``, ``negative_slope * x`` otherwise (a fixed slope)."""
    return _activation("leaky_relu", f"LeakyReLU(negative_slope={negative_slope})",
                       lambda x: activations.leaky_relu(x, negative_slope))


def ELU(alpha: float = 1.0) -> Layer:
    """``x`` for ``x > 0``, ``alpha (e^x - 1)`` otherwise."""
    return _activation("elu", f"ELU(alpha={alpha})", lambda x: activations.elu(x, alpha))


def GELU(approximate: bool = True) -> Layer:
    """``x Phi(x)``; ``approximate`` chooses the tanh form (the default of jax and flax)."""
    return _activation("gelu", f"GELU(approximate={approximate})", lambda x: activations.gelu(x, approximate))


def Softmax(axis: int = -1) -> Layer:
    """``exp(x_i) / sum_j exp(x_j)`` along ``axis``."""
    return _activation("softmax", f"Softmax(axis={axis})", lambda x: activations.softmax(x, axis))


def LogSoftmax(axis: int = -1) -> Layer:
    """``x_i - log sum_j exp(x_j)`` along ``axis``."""
    return _activation("log_softmax", f"LogSoftmax(axis={axis})", lambda x: activations.log_softmax(x, axis))


def Step() -> Layer:
    """The perceptron's step function: 1 where ``x > 0``, else 0."""
    return _activation("step", "Step()", activations.step)


def PReLU(negative_slope_init: float = 0.01, per_channel: bool = False, param_dtype=jnp.float32,
          name: str = "prelu") -> Layer:
    """Parametric ReLU (He et al., 2015): ``x`` for ``x >= 0``, ``a x`` otherwise, ``a`` learned.

    Params ``{"slope": ()}``, one slope shared by every unit (as flax's ``PReLU``), or
    ``(channels,)`` with ``per_channel=True``.
    """
    description = f"PReLU(negative_slope_init={negative_slope_init}, per_channel={per_channel})"

    def slope_shape(x):
        return (x.shape[-1],) if per_channel else ()

    def init(key, x):
        check_floating(description, x)
        return {"slope": initializers.constant(negative_slope_init)(key, slope_shape(x), param_dtype)}, {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_floating(description, x)
        check_keys(description, params, ["slope"])
        check_keys(description, state, [], "state")
        check_param_shape(description, params["slope"], slope_shape(x), "slope")
        return activations.prelu(x, params["slope"].astype(x.dtype)), state

    return make_layer(name, description, init, apply)
