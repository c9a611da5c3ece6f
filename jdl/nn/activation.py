"""Activation layers: the functions of :mod:`jdl.activations` as layers, and PReLU.

All but :class:`PReLU` have no params; PReLU learns its negative slope. They are
:class:`~jdl.nn.core.ParamFree` layers: an input check and a function. Every one gives
NaN where its input is NaN (the rule of :mod:`jdl.activations`).

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import nn
    >>> nn.ReLU().apply({}, {}, jnp.array([-1.0, 2.0]))[0]
    Array([0., 2.], dtype=float32)
    >>> nn.LeakyReLU(0.1)
    LeakyReLU(negative_slope=0.1)
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, ClassVar

import jax.numpy as jnp

from jdl import activations
from jdl import init as initializers
from jdl._checks import check_floating, check_that
from jdl.nn.core import KW_ONLY, Layer, ParamFree, check_params


class _Activation(ParamFree):
    """A function of :mod:`jdl.activations` as a layer: ``y = function(x, **options)``.

    A subclass names the ``function`` and declares its options as fields, with the
    function's defaults. The layer is named after the function (``"relu"``,
    ``"leaky_relu"``) unless given a ``name``, and its repr shows every option:
    ``LeakyReLU(negative_slope=0.01)``.
    """

    function: ClassVar[Callable]
    _: KW_ONLY
    name: str = ""

    def __post_init__(self):
        if not self.name:
            object.__setattr__(self, "name", self.function.__name__)

    @property
    def options(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "name"}

    @property
    def always_shown(self) -> tuple[str, ...]:
        return tuple(self.options)

    def fn(self, x):
        return self.function(x, **self.options)


class Sigmoid(_Activation):
    """``1 / (1 + exp(-x))``."""

    function = staticmethod(activations.sigmoid)


class Tanh(_Activation):
    """``tanh(x)``."""

    function = staticmethod(activations.tanh)


class ReLU(_Activation):
    """``max(0, x)``."""

    function = staticmethod(activations.relu)


class LeakyReLU(_Activation):
    """``x`` for ``x >= 0``, ``negative_slope * x`` otherwise (a fixed slope)."""

    negative_slope: float = 0.01
    function = staticmethod(activations.leaky_relu)


class ELU(_Activation):
    """``x`` for ``x > 0``, ``alpha (e^x - 1)`` otherwise."""

    alpha: float = 1.0
    function = staticmethod(activations.elu)


class GELU(_Activation):
    """``x Phi(x)``; ``approximate`` chooses the tanh form (the default of jax and flax)."""

    approximate: bool = True
    function = staticmethod(activations.gelu)


class Softplus(_Activation):
    """``log(1 + e^x)``: a smooth ReLU."""

    function = staticmethod(activations.softplus)


class HardTanh(_Activation):
    """``x`` clipped to ``[min_value, max_value]``."""

    min_value: float = -1.0
    max_value: float = 1.0
    function = staticmethod(activations.hard_tanh)

    def __post_init__(self):
        super().__post_init__()
        check_that(self.min_value < self.max_value, self, "min_value < max_value",
                   f"min_value={self.min_value}, max_value={self.max_value}")


class Softmax(_Activation):
    """``exp(x_i) / sum_j exp(x_j)`` along ``axis``."""

    axis: int = -1
    function = staticmethod(activations.softmax)


class LogSoftmax(_Activation):
    """``x_i - log sum_j exp(x_j)`` along ``axis``."""

    axis: int = -1
    function = staticmethod(activations.log_softmax)


class Step(_Activation):
    """The perceptron's step function: 1 where ``x > 0``, NaN where ``x`` is NaN, else 0."""

    function = staticmethod(activations.step)


class PReLU(Layer):
    """Parametric ReLU (He et al., 2015): ``x`` for ``x >= 0``, ``a x`` otherwise, ``a`` learned.

    Params ``{"slope": ()}``, one slope shared by every unit (as flax's ``PReLU``), or
    ``(channels,)`` with ``per_channel=True``; the slope starts at ``negative_slope_init``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> layer = PReLU(0.1, per_channel=True)
        >>> params, state = layer.init(jax.random.key(0), jnp.zeros((4, 3)))
        >>> params["slope"]
        Array([0.1, 0.1, 0.1], dtype=float32)
    """

    negative_slope_init: float = 0.01
    per_channel: bool = False
    _: KW_ONLY
    param_dtype: Any = jnp.float32
    name: str = "prelu"
    always_shown: ClassVar[tuple] = ("negative_slope_init", "per_channel")

    def init(self, key, x):
        check_floating(self, x)
        slope_shape = (x.shape[-1],) if self.per_channel else ()
        return {"slope": initializers.constant(self.negative_slope_init)(key, slope_shape, self.param_dtype)}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        check_params(self, params, state, x)  # init's input check included
        return activations.prelu(x, params["slope"].astype(x.dtype)), state
