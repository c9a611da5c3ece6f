"""Normalisation layers: batch norm and layer norm, with learned gamma and beta; local response norm.

Both standardise and then rescale:

    y = gamma * (x - mean) / sqrt(var + epsilon) + beta

Batch norm (Ioffe and Szegedy, 2015) takes ``mean`` and ``var`` over every axis but the
feature axis, from the batch when training and from running averages otherwise; the
running averages follow ``running = momentum * running + (1 - momentum) * batch``
(flax's convention: ``momentum`` is the weight of the old value; PyTorch's
``momentum`` is ``1 -`` this). The variance is the biased batch variance, as in flax,
but computed in two passes in float32 or wider (:func:`moments`), so large offsets and
magnitudes (``1e4 + N(0, 1)``, ``|x| ~ 1e19``) do not cancel it away or overflow it.
Layer norm (Ba et al., 2016) takes them over the feature axis of each example and has no
running state. Local response normalisation (AlexNet's, :class:`LocalResponseNorm`) has
neither params nor state: it divides each activity by the energy of its neighbouring channels.

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

import functools
from dataclasses import field
from typing import Any, Callable, ClassVar, Literal

import jax
import jax.numpy as jnp
from jax import lax

from jdl import init as initializers
from jdl._checks import Positive, PositiveInt, UnitInterval, check_floating_min_rank, check_train_flag
from jdl.nn.core import KW_ONLY, Layer, ParamFree, check_params


class _Normalization(Layer):
    """What batch and layer norm share: the learned ``gamma`` and ``beta`` of the last axis."""

    _: KW_ONLY
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Callable = field(default=initializers.ones, repr=False)
    bias_init: Callable = field(default=initializers.zeros, repr=False)
    param_dtype: Any = jnp.float32

    def init_scale_and_shift(self, key, features: int) -> dict:
        """``{"gamma": (features,), "beta": (features,)}``, each only where it is used."""
        scale_key, bias_key = jax.random.split(key)
        params = {}
        if self.use_scale:
            params["gamma"] = self.scale_init(scale_key, (features,), self.param_dtype)
        if self.use_bias:
            params["beta"] = self.bias_init(bias_key, (features,), self.param_dtype)
        return params

    def scale_and_shift(self, params, x_hat, dtype):
        """``gamma * x_hat + beta``, in ``dtype``."""
        y = x_hat * params["gamma"] if self.use_scale else x_hat
        if self.use_bias:
            y = y + params["beta"]
        return y.astype(dtype)

    def normalize(self, params, centered, var, dtype):
        """``gamma * centered * rsqrt(var + epsilon) + beta``, in ``dtype`` (batch norm's evaluation)."""
        # gamma joins the per-feature factor before it meets x: one full-size product, not two.
        factor = lax.rsqrt(var + jnp.asarray(self.epsilon, var.dtype))
        if self.use_scale:
            factor = factor * params["gamma"]
        y = centered * factor
        if self.use_bias:
            y = y + params["beta"]
        return y.astype(dtype)


def moments(x, axes: tuple[int, ...], axis_name: str | None = None):
    """Mean and variance of ``x`` over ``axes`` (kept, size 1), by two passes, scaled against overflow.

    Returns ``(mean, centered, var, unit)`` with ``centered = (x - mean) / unit`` and
    ``var = mean(centered^2) = Var[x] / unit^2``, where ``unit`` is a power of two, at least 1
    and about ``max |x|``. With ``axis_name`` the statistics are over that mapped axis too
    (the same batch size on every member). Compute in float32 or wider.

    Not ``E[x^2] - E[x]^2``: that difference cancels catastrophically (off by ~2e3 for
    ``1e4 + N(0, 1)`` in float32) and overflows to ``inf - inf = NaN`` for ``|x| >= 1e19``.
    Instead the deviations ``d`` from a first mean ``m`` are averaged again, which corrects
    ``m`` for its own rounding, and ``Var = mean(d^2) - mean(d)^2`` (Chan, Golub and LeVeque's
    corrected two-pass algorithm; ``mean(d)`` is a rounding error, so nothing cancels).
    Measuring the deviations in ``unit`` keeps their squares and sums finite for any finite
    input: ``|d| <= 2 max |x|``, so ``(d / unit)^2 <= 4`` (float32 squares overflow from
    1.8e19); being a power of two, it changes no rounding. Each pass is two sibling
    reductions over the same array (the first mean with ``max |x|``, the correction with the
    squares), which XLA fuses into one loop.
    """
    mean = _mean(x, axes, axis_name)
    largest = jnp.max(jnp.abs(lax.stop_gradient(x)), axis=axes, keepdims=True, initial=0.0)
    if axis_name is not None:
        largest = lax.pmax(largest, axis_name)
    # A constant: the normalised output does not depend on it, so neither does its gradient.
    unit = jnp.exp2(jnp.ceil(jnp.log2(jnp.maximum(largest, 1.0))))
    deviation = (x - mean) / unit
    correction = _mean(deviation, axes, axis_name)
    var = _mean(jnp.square(deviation), axes, axis_name) - jnp.square(correction)
    return mean + correction * unit, deviation - correction, var, unit


@functools.partial(jax.custom_jvp, nondiff_argnums=(1, 2, 3))
def standardize(x, axes: tuple[int, ...], epsilon: float, axis_name: str | None = None):
    """``(x_hat, mean, var)``: ``x_hat = (x - mean) / sqrt(var + epsilon)`` with the mean and the
    (biased) variance over ``axes`` (and ``axis_name``'s mapped axis) from :func:`moments`.

    Differentiated by its closed form instead of through the two passes: with ``s = 1 /
    sqrt(var + epsilon)`` and ``<.>`` the mean over the axes,

        d x_hat = s (dx - <dx> - x_hat <x_hat dx>),   d mean = <dx>,   d var = 2 <x_hat dx> / s,

    two reductions per tangent (or, transposed, per cotangent) where autodiff of the passes
    runs a dozen; forward and reverse mode and higher orders all work (a ``custom_jvp``).
    ``var`` is ``inf`` only where the variance itself exceeds the dtype's range.
    """
    return _standardize(x, axes, epsilon, axis_name)[:3]


def _standardize(x, axes, epsilon, axis_name):
    """``(x_hat, mean, var, s)``, ``s = 1 / sqrt(var + epsilon)``."""
    mean, centered, var, unit = moments(x, axes, axis_name)
    unit_over_std = lax.rsqrt(var + jnp.asarray(epsilon, var.dtype) / unit / unit)
    return centered * unit_over_std, mean, var * unit * unit, unit_over_std / unit


@standardize.defjvp
def _standardize_jvp(axes, epsilon, axis_name, primals, tangents):
    (x,), (dx,) = primals, tangents
    x_hat, mean, var, inverse_std = _standardize(x, axes, epsilon, axis_name)
    mean_of = functools.partial(_mean, axes=axes, axis_name=axis_name)
    # s dx - (s <dx> + x_hat (s <x_hat dx>)), its reductions its own (XLA merges the equal
    # ones below). This form, no other tried, makes XLA compute the backward pass's input
    # gradient once: from s (dx - <dx> - x_hat <x_hat dx>), or with the reductions shared with
    # d_mean and d_var, XLA recomputed it inside each of its 3-4 consumers, a transposing copy
    # among them: 2-4% of the Transformer's train step on CPU (benchmarks/transformer_cases.py).
    d_x_hat = inverse_std * dx - (inverse_std * mean_of(dx) + x_hat * (inverse_std * mean_of(x_hat * dx)))
    d_mean, d_along = mean_of(dx), mean_of(x_hat * dx)
    return (x_hat, mean, var), (d_x_hat, d_mean, 2.0 * d_along / inverse_std)


def _mean(x, axes, axis_name):
    mean = jnp.mean(x, axis=axes, keepdims=True)
    return mean if axis_name is None else lax.pmean(mean, axis_name)


class BatchNorm(_Normalization):
    """Batch normalisation over the last (feature) axis.

    Params ``{"gamma", "beta"}`` of shape ``(features,)``; state ``{"mean", "var"}``, the
    running averages. With ``train=True`` the batch statistics normalise and the state
    is updated (a batch of zero examples is then an error: its statistics are undefined);
    with ``train=False`` the running averages normalise and the state is returned
    unchanged. ``axis_name`` averages the batch statistics over a mapped axis
    (``jax.pmap``/``shard_map`` data parallelism), so every device uses the global batch.
    """

    momentum: UnitInterval = 0.99
    epsilon: Positive = 1e-5
    _: KW_ONLY
    axis_name: str | None = None
    name: str = "batch_norm"
    always_shown: ClassVar[tuple] = ("momentum", "epsilon")

    def init(self, key, x):
        # With axis_name the batch may be a mapped axis (vmap/shard_map), so one example suffices.
        min_rank, layout = (1, "..., features") if self.axis_name else (2, "batch, ..., features")
        check_floating_min_rank(self, x, min_rank, layout)
        features = x.shape[-1]
        state = {"mean": jnp.zeros((features,), self.param_dtype), "var": jnp.ones((features,), self.param_dtype)}
        return self.init_scale_and_shift(key, features), state

    def apply(self, params, state, x, *, key=None, train=False):
        check_params(self, params, state, x)  # init's input checks: an empty batch too, whose statistics would
        check_train_flag(self, train)  # write NaN into the running averages
        if not train:
            return self.normalize(params, x - state["mean"], state["var"], x.dtype), state

        batch_axes = tuple(range(x.ndim - 1))
        # Statistics in float32 at least, so bfloat16 inputs do not lose the variance.
        x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        x_hat, mean, var = standardize(x32, batch_axes, self.epsilon, self.axis_name)
        features = x.shape[-1]
        batch_mean, batch_var = mean.reshape(features), var.reshape(features)
        new_state = {
            "mean": self.momentum * state["mean"] + (1.0 - self.momentum) * batch_mean.astype(state["mean"].dtype),
            "var": self.momentum * state["var"] + (1.0 - self.momentum) * batch_var.astype(state["var"].dtype),
        }
        return self.scale_and_shift(params, x_hat, x.dtype), new_state


class LayerNorm(_Normalization):
    """Layer normalisation over the last axis of each example (defaults as flax's ``LayerNorm``)."""

    epsilon: Positive = 1e-6
    _: KW_ONLY
    name: str = "layer_norm"
    always_shown: ClassVar[tuple] = ("epsilon",)

    def init(self, key, x):
        check_floating_min_rank(self, x, 1, "..., features")
        return self.init_scale_and_shift(key, x.shape[-1]), {}

    def apply(self, params, state, x, *, key=None, train=False):
        check_params(self, params, state, x)  # init's input check included

        # Statistics in float32 at least, so bfloat16 inputs do not lose the variance.
        x32 = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        x_hat, _, _ = standardize(x32, (-1,), self.epsilon)
        return self.scale_and_shift(params, x_hat, x.dtype), state


class LocalResponseNorm(ParamFree):
    """Local response normalisation across channels (Krizhevsky et al., 2012, section 3.3).

    Each activity ``a_c`` (channels last) is divided by the energy of the ``size`` channels
    around it at the same position, channels past either end left out of the sum:

        b_c = a_c / (k + alpha * sum_{j = c - size // 2}^{c + (size - 1) // 2} a_j^2) ^ beta

    The defaults are AlexNet's: ``k = 2``, ``n = size = 5``, ``alpha = 1e-4``, ``beta = 0.75``.
    For an odd ``size`` the window is the paper's ``max(0, c - n/2) .. min(N - 1, c + n/2)``; an
    even one reaches one channel further back than forward, as PyTorch's.

    ``convention`` says what multiplies the sum. ``"paper"`` (and TensorFlow's
    ``tf.nn.local_response_normalization``, with ``depth_radius = size // 2``, ``bias = k``):
    ``alpha``. ``"pytorch"`` (``torch.nn.LocalResponseNorm``, Caffe's LRN layer): ``alpha /
    size``, the mean of the squares instead of their sum, so the paper's AlexNet is
    ``alpha = 5e-4`` there (Caffe's reference AlexNet keeps ``alpha = 1e-4`` and ``k = 1``:
    other numbers than the paper's). The denominator is computed in float32 at least: ``alpha * sum`` is
    about ``1e-4`` of ``k``, below bfloat16's resolution.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import nn
        >>> lrn = nn.LocalResponseNorm(size=3, alpha=1.0, beta=1.0, k=1.0)
        >>> lrn.apply({}, {}, jnp.array([[1.0, 2.0, 0.0]]))[0]  # 1/(1+1+4), 2/(1+1+4+0), 0
        Array([[0.16666667, 0.33333334, 0.        ]], dtype=float32)
    """

    size: PositiveInt = 5
    alpha: Positive = 1e-4
    beta: Positive = 0.75
    k: Positive = 2.0
    _: KW_ONLY
    convention: Literal["paper", "pytorch"] = "paper"
    name: str = "local_response_norm"

    def check_input(self, x) -> None:
        check_floating_min_rank(self, x, 1, "..., channels")

    def fn(self, x):
        wide = x.astype(jnp.promote_types(x.dtype, jnp.float32))
        window = (1,) * (x.ndim - 1) + (self.size,)
        pads = ((0, 0),) * (x.ndim - 1) + ((self.size // 2, (self.size - 1) // 2),)
        energy = lax.reduce_window(jnp.square(wide), 0.0, lax.add, window, (1,) * x.ndim, pads)  # 0.0: a sum JAX differentiates
        alpha = self.alpha / self.size if self.convention == "pytorch" else self.alpha
        return (wide / (self.k + alpha * energy) ** self.beta).astype(x.dtype)
