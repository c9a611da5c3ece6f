"""The fully connected layer.

``y = x W + b`` over the last axis of ``x``; any leading axes are batch axes.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> layer = nn.Dense(10)
    >>> params, state = layer.init(jax.random.key(0), jnp.zeros((4, 784)))
    >>> params["w"].shape, params["b"].shape
    ((784, 10), (10,))
    >>> y, _ = layer.apply(params, state, jnp.ones((4, 784)))
    >>> y.shape
    (4, 10)
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jdl import init as initializers
from jdl._checks import PositiveInt, check_floating_min_rank, check_last_axis, check_that
from jdl.nn.core import KW_ONLY, Layer, check_params


def init_kernel_and_bias(key, kernel_shape, use_bias, kernel_init, bias_init, param_dtype) -> dict:
    """``{"w": kernel, "b": bias}`` (no ``"b"`` without a bias); the bias has the kernel's last size."""
    w_key, b_key = jax.random.split(key)
    params = {"w": kernel_init(w_key, tuple(kernel_shape), param_dtype)}
    if use_bias:
        params["b"] = bias_init(b_key, (kernel_shape[-1],), param_dtype)
    return params


def check_features(where, x, layout: str = "..., in_features") -> None:
    """A floating input with at least one axis and at least one feature on the last."""
    check_floating_min_rank(where, x, 1, layout)
    check_that(x.shape[-1] != 0, where, "input with at least one feature", f"shape {tuple(x.shape)}")


def in_features_of(params, name: str = "w") -> int | None:
    """The input size a kernel ``params[name]`` of shape ``(in_features, ...)`` was made for."""
    w = params.get(name) if isinstance(params, dict) else None
    return w.shape[0] if getattr(w, "ndim", 0) >= 1 else None


class Dense(Layer):
    """A fully connected layer, ``y = x W + b``, with params ``{"w": (in, features), "b": (features,)}``.

    Args:
      features: the size of the output's last axis.
      use_bias: whether to add ``b``.
      kernel_init, bias_init: initialisers (``jdl.init`` or ``jax.nn.initializers``); the default
        kernel initialiser is LeCun normal, as in flax.
      param_dtype: dtype of the params.
      dtype: dtype of the computation; ``None`` promotes the input's and the params'.
    """

    features: PositiveInt
    _: KW_ONLY
    use_bias: bool = True
    kernel_init: Callable = initializers.lecun_normal()
    bias_init: Callable = initializers.zeros
    param_dtype: Any = jnp.float32
    dtype: Any = None
    name: str = "dense"

    def init(self, key, x):
        check_features(self, x)
        params = init_kernel_and_bias(key, (x.shape[-1], self.features), self.use_bias, self.kernel_init,
                                      self.bias_init, self.param_dtype)
        return params, {}

    def apply(self, params, state, x, *, key=None, train=False):
        check_features(self, x)
        in_features = in_features_of(params)
        if in_features is not None and params["w"].shape[-1] == self.features:
            check_last_axis(self, x, in_features, "the params' in_features")
        check_params(self, params, state, x)

        w = params["w"]
        compute_dtype = self.dtype or jnp.result_type(x.dtype, w.dtype)
        y = jnp.dot(x.astype(compute_dtype), w.astype(compute_dtype))
        if self.use_bias:
            y = y + params["b"].astype(compute_dtype)
        return y, state
