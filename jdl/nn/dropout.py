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

from jdl._checks import Rate, check_train_flag, check_training_key
from jdl.nn.core import KW_ONLY, ParamFree


class Dropout(ParamFree):
    """Drop each entry with probability ``rate`` in training; identity in evaluation.

    ``broadcast_dims`` shares one mask along those axes (e.g. ``(-2,)`` drops whole
    channels of a ``(batch, length, channels)`` input: spatial dropout).
    """

    rate: Rate
    broadcast_dims: tuple[int, ...] = ()
    _: KW_ONLY
    name: str = "dropout"

    def __post_init__(self):
        object.__setattr__(self, "broadcast_dims", tuple(self.broadcast_dims))

    def fn(self, x):
        return x  # evaluation (train=False) is the identity

    def apply(self, params, state, x, *, key=None, train=False):
        x, state = super().apply(params, state, x)  # the checks, then the identity
        check_train_flag(self, train)
        if not train or self.rate == 0.0:
            return x, state
        check_training_key(self, key)

        mask_shape = list(x.shape)
        for axis in self.broadcast_dims:
            mask_shape[axis] = 1
        keep = jax.random.bernoulli(key, 1.0 - self.rate, tuple(mask_shape))
        scaled = x / jnp.asarray(1.0 - self.rate, x.dtype)
        # A dropped NaN stays NaN (NaN * 0 is NaN). Not a product with the 0/1 mask: under jit XLA
        # rewrites x * mask into a select and the NaN would come out as 0.
        return jnp.where(keep | jnp.isnan(scaled), scaled, jnp.zeros_like(scaled)), state
