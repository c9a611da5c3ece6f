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

    def normalize(self, params, centered, var, dtype, unit=1.0):
        """``gamma * centered * rsqrt(var + epsilon / unit^2) + beta``, in ``dtype``.

        With ``centered = (x - mean) / unit`` and ``var = Var[x] / unit^2`` (:func:`moments`)
        this is ``gamma (x - mean) / sqrt(Var[x] + epsilon) + beta`` whatever ``unit``.
        """
        # gamma joins the per-example factor before it meets x: one full-size product, not two.
        factor = lax.rsqrt(var + jnp.asarray(self.epsilon, var.dtype) / unit / unit)
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
    and about ``max |x - mean|``. With ``axis_name`` the statistics are over that mapped
    axis too (the same batch size on every member). Compute in float32 or wider.

    Not ``E[x^2] - E[x]^2``: that difference cancels catastrophically (off by ~2e3 for
    ``1e4 + N(0, 1)`` in float32) and overflows to ``inf - inf = NaN`` for ``|x| >= 1e19``.
    Instead the deviations from a first mean ``m`` are averaged again, which corrects ``m``
    for its own rounding (Chan, Golub and LeVeque's corrected two-pass algorithm), and their
    squares averaged. Measuring deviations in ``unit`` keeps the squares and their sums finite
    for any finite deviation (float32 squares overflow from 1.8e19) and, being a power of
    two, changes no rounding: it is 1 for deviations up to 1, and otherwise shifts exponents.
    """
    mean = _mean(x, axes, axis_name)
    deviation = x - mean
    # The correction and the unit come from one more pass over the deviations.
    correction = _mean(deviation, axes, axis_name)
    largest = jnp.max(jnp.abs(lax.stop_gradient(deviation)), axis=axes, keepdims=True, initial=0.0)
    if axis_name is not None:
        largest = lax.pmax(largest, axis_name)
    # A constant: the normalised output does not depend on it, so neither does its gradient.
    unit = jnp.exp2(jnp.ceil(jnp.log2(jnp.maximum(largest, 1.0))))
    centered = (deviation - correction) / unit
    return mean + correction, centered, _mean(jnp.square(centered), axes, axis_name), unit


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
        mean, centered, var, unit = moments(x32, batch_axes, self.axis_name)
        features = x.shape[-1]
        # Var[x] = var * unit^2 (inf only where the variance itself exceeds the dtype's range).
        batch_mean, batch_var = mean.reshape(features), (var * unit * unit).reshape(features)
        new_state = {
            "mean": self.momentum * state["mean"] + (1.0 - self.momentum) * batch_mean.astype(state["mean"].dtype),
            "var": self.momentum * state["var"] + (1.0 - self.momentum) * batch_var.astype(state["var"].dtype),
        }
        return self.normalize(params, centered, var, x.dtype, unit), new_state


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
        _, centered, var, unit = moments(x32, (-1,))
        return self.normalize(params, centered, var, x.dtype, unit), state


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
