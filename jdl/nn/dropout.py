"""Inverted dropout (Srivastava et al., 2014).

In training each entry is kept with probability ``1 - rate`` and scaled by
``1 / (1 - rate)``, so the expected output equals the input and evaluation needs no
rescaling: ``y = mask * x / (1 - rate)``, ``mask ~ Bernoulli(1 - rate)``. In evaluation
(``train=False``) dropout is the identity.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> drop = nn.Dropout(0.5)
    >>> y, _ = drop.apply({}, {}, jnp.ones((4, 8)), key=jax.random.key(0), train=True)
    >>> sorted(set(y.ravel().tolist()))
    [0.0, 2.0]
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from jdl._checks import check_floating, check_keys
from jdl.nn.core import Layer, make_layer


def Dropout(rate: float, broadcast_dims: tuple[int, ...] = (), name: str = "dropout") -> Layer:
    """Drop each entry with probability ``rate`` in training; identity in evaluation.

    ``broadcast_dims`` shares one mask along those axes (e.g. ``(-2,)`` drops whole
    channels of a ``(batch, length, channels)`` input: spatial dropout).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"Dropout: expected rate in [0, 1), got {rate}")
    description = f"Dropout(rate={rate})"

    def init(key, x):
        del key
        check_floating(description, x)
        return {}, {}

    def apply(params, state, x, *, key=None, train=False):
        check_floating(description, x)
        check_keys(description, params, [])
        check_keys(description, state, [], "state")
        if not train or rate == 0.0:
            return x, state
        if key is None:
            raise ValueError(
                f"{description}: train=True needs a PRNG key, got key=None; call "
                f"apply(params, state, x, key=jax.random.key(...), train=True)"
            )
        mask_shape = list(x.shape)
        for axis in broadcast_dims:
            mask_shape[axis] = 1
        keep = jax.random.bernoulli(key, 1.0 - rate, tuple(mask_shape))
        scaled = x / jnp.asarray(1.0 - rate, x.dtype)
        return jnp.where(keep, scaled, jnp.zeros_like(x)), state

    return make_layer(name, description, init, apply)
