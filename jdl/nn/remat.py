"""Rematerialisation: a layer whose activations are recomputed in the backward pass.

``Remat(layer)`` computes what ``layer`` computes, with the same params (the same tree: it is
transparent to saved weights), but under ``jax.checkpoint``: reverse mode keeps only the
inputs of the layer (plus what ``policy`` allows to be saved) and runs its forward pass again
during the backward pass, trading compute for memory. A stack of ``Remat`` blocks holds one
block's activations at a time instead of all of them. ``policy`` is one of
``jax.checkpoint_policies`` (``dots_with_no_batch_dims_saveable`` keeps the matrix products'
results, the usual choice for Transformers).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> block = nn.Sequential([nn.Dense(16), nn.GELU(), nn.Dense(8)])
    >>> remat = nn.Remat(block)
    >>> x = jnp.ones((4, 8))
    >>> params, state = remat.init(jax.random.key(0), x)
    >>> sorted(params) == sorted(block.init(jax.random.key(0), x)[0])   # the same params tree
    True
    >>> loss = lambda layer: lambda p: layer.apply(p, state, x)[0].sum()
    >>> g1, g2 = jax.jit(jax.grad(loss(remat)))(params), jax.jit(jax.grad(loss(block)))(params)
    >>> bool(jnp.allclose(g1["dense_0"]["w"], g2["dense_0"]["w"]))
    True
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax

from jdl._checks import check_that
from jdl.nn.core import KW_ONLY, Layer, inside


class Remat(Layer):
    """``layer`` recomputed in the backward pass (``jax.checkpoint``); params, state and outputs unchanged.

    Args:
      layer: any layer, combinator or block. Its name is kept, so a combinator files the
        params under the same key with or without ``Remat``.
      policy: which intermediate values may be saved instead of recomputed
        (``jax.checkpoint_policies.*``); ``None`` saves nothing but the inputs.
      prevent_cse: as in ``jax.checkpoint`` (``False`` is safe, and faster, inside ``lax.scan``).
    """

    layer: Layer
    _: KW_ONLY
    policy: Callable | None = dataclasses.field(default=None, repr=False)
    prevent_cse: bool = True
    name: str = ""

    def __post_init__(self):
        check_that(isinstance(self.layer, Layer), type(self).__name__, "a jdl Layer to recompute",
                   type(self.layer).__name__, TypeError)
        if not self.name:
            object.__setattr__(self, "name", self.layer.name)

    def __repr__(self) -> str:
        return f"Remat({self.layer})"

    def init(self, key, x):
        with inside(self, "layer"):
            return self.layer.init(key, x)

    def apply(self, params, state, x, *, key=None, train=False, **kwargs):
        def run(p, s, v, k, kw):
            return self.layer.apply(p, s, v, key=k, train=train, **kw)

        with inside(self, "layer"):
            return jax.checkpoint(run, policy=self.policy, prevent_cse=self.prevent_cse)(params, state, x, key, kwargs)
