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

import jax
import jax.numpy as jnp

from jdl import init as initializers
from jdl._checks import check_floating, check_kernel_matches_input, check_keys, check_min_rank, check_param_shape
from jdl.nn.core import Layer, make_layer


def init_kernel_and_bias(key, kernel_shape, use_bias, kernel_init, bias_init, param_dtype) -> dict:
    """``{"w": kernel, "b": bias}`` (no ``"b"`` without a bias); the bias has the kernel's last size."""
    w_key, b_key = jax.random.split(key)
    params = {"w": kernel_init(w_key, tuple(kernel_shape), param_dtype)}
    if use_bias:
        params["b"] = bias_init(b_key, (kernel_shape[-1],), param_dtype)
    return params


def Dense(
    features: int,
    *,
    use_bias: bool = True,
    kernel_init=initializers.lecun_normal(),
    bias_init=initializers.zeros,
    param_dtype=jnp.float32,
    dtype=None,
    name: str = "dense",
) -> Layer:
    """A fully connected layer, ``y = x W + b``, with params ``{"w": (in, features), "b": (features,)}``.

    Args:
      features: the size of the output's last axis.
      use_bias: whether to add ``b``.
      kernel_init, bias_init: initialisers (``jdl.init`` or ``jax.nn.initializers``); the default
        kernel initialiser is LeCun normal, as in flax.
      param_dtype: dtype of the params.
      dtype: dtype of the computation; ``None`` promotes the input's and the params'.
    """
    if not isinstance(features, int) or features <= 0:
        raise ValueError(f"Dense: expected features to be a positive int, got {features!r}")
    description = f"Dense(features={features})"
    keys = ["w", "b"] if use_bias else ["w"]

    def check_input(x):
        check_floating(description, x)
        check_min_rank(description, x, 1, "..., in_features")
        if x.shape[-1] == 0:
            raise ValueError(f"{description}: expected input with at least one feature, got shape {tuple(x.shape)}")

    def init(key, x):
        check_input(x)
        return init_kernel_and_bias(key, (x.shape[-1], features), use_bias, kernel_init, bias_init, param_dtype), {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_input(x)
        check_keys(description, params, keys)
        check_keys(description, state, [], "state")
        w = params["w"]
        check_kernel_matches_input(description, w, x, features)
        compute_dtype = dtype or jnp.result_type(x.dtype, w.dtype)
        y = jnp.dot(x.astype(compute_dtype), w.astype(compute_dtype))
        if use_bias:
            check_param_shape(description, params["b"], (features,), "b")
            y = y + params["b"].astype(compute_dtype)
        return y, state

    return make_layer(name, description, init, apply)
