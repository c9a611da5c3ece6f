"""Radial basis units: each hidden unit responds to the distance of the input from its centre.

``h_i = exp(-||x - c_i||^2 / (2 sigma_i^2))``: a Gaussian bump around the centre ``c_i``
with width ``sigma_i``, largest (1) at the centre and near 0 far from it. The course lists
radial basis functions among the hidden units to choose from besides ReLU, sigmoid and tanh
(Goodfellow et al., 2016, section 6.3.3, write the width as ``sigma_i^2`` without the 2).
Unlike a ReLU or sigmoid unit, whose response is constant along a hyperplane, an RBF unit is
local: it saturates to 0 for most inputs, which is why it is rarely used in deep networks.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> layer = nn.RadialBasis(3)
    >>> shapes = jax.tree.map(jnp.shape, layer.init(jax.random.key(0), jnp.zeros((4, 2)))[0])
    >>> shapes == {"centers": (2, 3), "widths": (3,)}
    True
    >>> h, _ = layer.apply({"centers": jnp.zeros((2, 3)), "widths": jnp.ones(3)}, {}, jnp.zeros((4, 2)))
    >>> h[0]  # at every centre: exp(0) = 1
    Array([1., 1., 1.], dtype=float32)
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from jdl import init as initializers
from jdl._checks import PositiveInt
from jdl.nn.core import KW_ONLY, Layer, check_params
from jdl.nn.dense import check_features


class RadialBasis(Layer):
    """Gaussian radial basis units ``h_i = exp(-||x - c_i||^2 / (2 sigma_i^2))`` over the last axis.

    Params ``{"centers": (in_features, features), "widths": (features,)}``: column ``i`` of
    ``centers`` is ``c_i``, ``widths[i]`` is ``sigma_i`` (its sign does not matter).

    The squared distance is expanded as ``|x|^2 - 2 x.c + |c|^2`` (one matrix product, as
    scikit-learn's ``rbf_kernel``) and floored at 0, where rounding could make it slightly
    negative.

    Args:
      features: the number of units.
      center_init: initialiser of the centres (standard normal: inputs are expected standardised).
      width_init: initialiser of the widths (ones).
      param_dtype: dtype of the params.
    """

    features: PositiveInt
    _: KW_ONLY
    center_init: Callable = initializers.normal(1.0)
    width_init: Callable = initializers.ones
    param_dtype: Any = jnp.float32
    name: str = "radial_basis"

    def init(self, key, x):
        check_features(self, x)
        center_key, width_key = jax.random.split(key)
        return {"centers": self.center_init(center_key, (x.shape[-1], self.features), self.param_dtype),
                "widths": self.width_init(width_key, (self.features,), self.param_dtype)}, {}

    def apply(self, params, state, x, *, key=None, train=False):
        check_params(self, params, state, x)  # init's input check included

        centers = params["centers"].astype(x.dtype)
        widths = params["widths"].astype(x.dtype)
        squared_distance = (jnp.sum(x * x, axis=-1, keepdims=True) - 2.0 * x @ centers
                            + jnp.sum(centers * centers, axis=0))
        squared_distance = jnp.maximum(squared_distance, 0.0)
        return jnp.exp(-squared_distance / (2.0 * widths**2)), state
