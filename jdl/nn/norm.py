"""Normalisation layers: batch norm and layer norm, with learned gamma and beta.

Both standardise and then rescale:

    y = gamma * (x - mean) / sqrt(var + epsilon) + beta

Batch norm (Ioffe and Szegedy, 2015) takes ``mean`` and ``var`` over every axis but the
feature axis, from the batch when training and from running averages otherwise; the
running averages follow ``running = momentum * running + (1 - momentum) * batch``
(flax's convention: ``momentum`` is the weight of the old value; PyTorch's
``momentum`` is ``1 -`` this). The variance is the biased batch variance, as in flax.
Layer norm (Ba et al., 2016) takes them over the feature axis of each example and has no
running state.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> bn = nn.BatchNorm()
    >>> params, state = bn.init(jax.random.key(0), jnp.zeros((32, 16)))
    >>> sorted(params), sorted(state)
    (['beta', 'gamma'], ['mean', 'var'])
    >>> y, state = bn.apply(params, state, jnp.ones((32, 16)), train=True)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jdl import init as initializers
from jdl._checks import check_floating, check_keys, check_min_rank, check_param_shape
from jdl.nn.core import Layer, make_layer


def _affine_params(key, features, use_scale, use_bias, scale_init, bias_init, param_dtype):
    scale_key, bias_key = jax.random.split(key)
    params = {}
    if use_scale:
        params["gamma"] = scale_init(scale_key, (features,), param_dtype)
    if use_bias:
        params["beta"] = bias_init(bias_key, (features,), param_dtype)
    return params


def _normalize(x, mean, var, params, epsilon, description, features):
    """``gamma * (x - mean) * rsqrt(var + epsilon) + beta``, in the input's dtype."""
    y = (x - mean) * lax.rsqrt(var + jnp.asarray(epsilon, var.dtype))
    if "gamma" in params:
        check_param_shape(description, params["gamma"], (features,), "gamma")
        y = y * params["gamma"]
    if "beta" in params:
        check_param_shape(description, params["beta"], (features,), "beta")
        y = y + params["beta"]
    return y.astype(x.dtype)


def BatchNorm(
    momentum: float = 0.99,
    epsilon: float = 1e-5,
    *,
    use_scale: bool = True,
    use_bias: bool = True,
    scale_init=initializers.ones,
    bias_init=initializers.zeros,
    axis_name: str | None = None,
    param_dtype=jnp.float32,
    name: str = "batch_norm",
) -> Layer:
    """Batch normalisation over the last (feature) axis.

    Params ``{"gamma", "beta"}`` of shape ``(features,)``; state ``{"mean", "var"}``, the
    running averages. With ``train=True`` the batch statistics normalise and the state
    is updated; with ``train=False`` the running averages normalise and the state is
    returned unchanged. ``axis_name`` averages the batch statistics over a mapped axis
    (``jax.pmap``/``shard_map`` data parallelism), so every device uses the global batch.
    """
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"BatchNorm: expected momentum in [0, 1], got {momentum}")
    if epsilon <= 0:
        raise ValueError(f"BatchNorm: expected epsilon > 0, got {epsilon}")
    description = f"BatchNorm(momentum={momentum}, epsilon={epsilon})"
    keys = [k for k, used in (("gamma", use_scale), ("beta", use_bias)) if used]

    def check_input(x):
        check_floating(description, x)
        # With axis_name the batch may be a mapped axis (vmap/shard_map), so one example suffices.
        if axis_name is None:
            check_min_rank(description, x, 2, "batch, ..., features")
        else:
            check_min_rank(description, x, 1, "..., features")

    def init(key, x):
        check_input(x)
        features = x.shape[-1]
        params = _affine_params(key, features, use_scale, use_bias, scale_init, bias_init, param_dtype)
        state = {"mean": jnp.zeros((features,), param_dtype), "var": jnp.ones((features,), param_dtype)}
        return params, state

    def apply(params, state, x, *, key=None, train=False):
        del key
        check_input(x)
        check_keys(description, params, keys)
        check_keys(description, state, ["mean", "var"], "state")
        features = x.shape[-1]
        check_param_shape(description, state["mean"], (features,), "mean", "state")
        check_param_shape(description, state["var"], (features,), "var", "state")
        if not train:
            return _normalize(x, state["mean"], state["var"], params, epsilon, description, features), state
        reduce_axes = tuple(range(x.ndim - 1))
        # Statistics in float32 at least, so bfloat16 inputs do not lose the variance.
        stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
        x32 = x.astype(stats_dtype)
        mean = jnp.mean(x32, axis=reduce_axes)
        mean_of_squares = jnp.mean(jnp.square(x32), axis=reduce_axes)
        if axis_name is not None:
            mean, mean_of_squares = lax.pmean((mean, mean_of_squares), axis_name)
        var = jnp.maximum(mean_of_squares - jnp.square(mean), 0.0)
        new_state = {
            "mean": momentum * state["mean"] + (1.0 - momentum) * mean.astype(state["mean"].dtype),
            "var": momentum * state["var"] + (1.0 - momentum) * var.astype(state["var"].dtype),
        }
        return _normalize(x32, mean, var, params, epsilon, description, features).astype(x.dtype), new_state

    return make_layer(name, description, init, apply)


def LayerNorm(
    epsilon: float = 1e-6,
    *,
    use_scale: bool = True,
    use_bias: bool = True,
    scale_init=initializers.ones,
    bias_init=initializers.zeros,
    param_dtype=jnp.float32,
    name: str = "layer_norm",
) -> Layer:
    """Layer normalisation over the last axis of each example (defaults as flax's ``LayerNorm``)."""
    if epsilon <= 0:
        raise ValueError(f"LayerNorm: expected epsilon > 0, got {epsilon}")
    description = f"LayerNorm(epsilon={epsilon})"
    keys = [k for k, used in (("gamma", use_scale), ("beta", use_bias)) if used]

    def check_input(x):
        check_floating(description, x)
        check_min_rank(description, x, 1, "..., features")

    def init(key, x):
        check_input(x)
        return _affine_params(key, x.shape[-1], use_scale, use_bias, scale_init, bias_init, param_dtype), {}

    def apply(params, state, x, *, key=None, train=False):
        del key, train
        check_input(x)
        check_keys(description, params, keys)
        check_keys(description, state, [], "state")
        stats_dtype = jnp.promote_types(x.dtype, jnp.float32)
        x32 = x.astype(stats_dtype)
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        var = jnp.maximum(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) - jnp.square(mean), 0.0)
        return _normalize(x32, mean, var, params, epsilon, description, x.shape[-1]).astype(x.dtype), state

    return make_layer(name, description, init, apply)
