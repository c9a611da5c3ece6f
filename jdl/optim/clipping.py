"""Gradient clipping: bound the size of an update before the optimizer takes it.

* :func:`clip`: each element into ``[-max_delta, max_delta]``.
* :func:`clip_by_global_norm`: the course's rule (seed 002), on the whole gradient as
  one vector: ``g <- c g / ||g||`` when ``||g|| >= c``.
* :func:`clip_by_leaf_norm`: the same rule on each leaf (each weight array) by itself.
* :func:`clip_by_block_rms`: each leaf scaled so its root-mean-square is at most a
  threshold (optax's per-leaf rule).

All are stateless (:class:`~jdl.optim.EmptyState`) and have optax's names and arguments.
Given the params, each checks that the updates have their tree and leaf shapes.

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import optim
    >>> grads = {"w": jnp.array([3.0, 0.0]), "b": jnp.array([4.0])}   # ||g|| = 5
    >>> clipper = optim.clip_by_global_norm(1.0)
    >>> clipped, _ = clipper.update(grads, clipper.init(grads))
    >>> clipped["w"], clipped["b"]
    (Array([0.6, 0. ], dtype=float32), Array([0.8], dtype=float32))
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jdl._checks import checks_arguments
from jdl.optim.base import GradientTransformation, NonNegative, PositiveNumber, stateless


def _squared_sum(leaf: jax.Array) -> jax.Array:
    """``sum |x|^2`` over one array, in the array's own dtype (as optax)."""
    leaf = jnp.asarray(leaf)
    if jnp.iscomplexobj(leaf):
        return jnp.sum(jnp.square(leaf.real) + jnp.square(leaf.imag))
    return jnp.sum(jnp.square(leaf))


def global_norm(tree: Any) -> jax.Array:
    """The L2 norm of all the leaves of ``tree`` taken together as one vector.

    ``||g|| = sqrt(sum over leaves of sum(g_leaf ** 2))``; the leaves are added in
    ``jax.tree.leaves`` order, in their own dtypes (as ``optax.tree.norm``).

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> float(optim.global_norm({"a": jnp.array([3.0]), "b": [jnp.array(4.0)]}))
        5.0
    """
    return jnp.array(jnp.sqrt(sum((_squared_sum(leaf) for leaf in jax.tree.leaves(tree)), 0)))


@checks_arguments
def clip(max_delta: NonNegative) -> GradientTransformation:
    """Clip every element of the updates into ``[-max_delta, max_delta]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> clipped, _ = optim.clip(1.0).update(jnp.array([-3.0, 0.5, 2.0]), optim.EmptyState())
        >>> clipped
        Array([-1. ,  0.5,  1. ], dtype=float32)
    """
    return stateless("clip", lambda updates: jax.tree.map(lambda u: jnp.clip(u, -max_delta, max_delta), updates))


@checks_arguments
def clip_by_global_norm(max_norm: PositiveNumber) -> GradientTransformation:
    """Rescale the whole gradient so its global norm is at most ``max_norm``.

    The course's gradient clipping (seed 002), with ``c = max_norm`` and ``||g||``
    the :func:`global_norm` of all leaves together::

        g <- c * g / ||g||    if ||g|| >= c,    else g unchanged.

    Every leaf is scaled by the same factor, so the direction is kept (Pascanu et al.,
    2013). Computed as optax does, ``(g / ||g||) * c`` in each leaf's dtype.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> grads = (jnp.array([6.0, 8.0]),)                     # ||g|| = 10
        >>> optim.clip_by_global_norm(5.0).update(grads, optim.EmptyState())[0]
        (Array([3., 4.], dtype=float32),)
    """

    def clip_all(updates):
        norm = global_norm(updates)
        keep = norm < max_norm
        return jax.tree.map(
            lambda u: jnp.where(keep, u, (u / norm.astype(u.dtype)) * max_norm).astype(u.dtype), updates
        )

    return stateless("clip_by_global_norm", clip_all)


@checks_arguments
def clip_by_leaf_norm(max_norm: PositiveNumber) -> GradientTransformation:
    """Apply the clipping rule to each leaf (each weight array) on its own.

    For every leaf ``g_i``, with ``c = max_norm`` and ``||g_i||`` its own L2 norm::

        g_i <- c * g_i / ||g_i||    if ||g_i|| >= c,    else g_i unchanged.

    Unlike :func:`clip_by_global_norm`, one large leaf does not shrink the others; the
    direction of the whole gradient may change. The norm and the scaling are computed in
    at least float32 and the result cast back to the leaf's dtype. optax has no direct
    twin: on a tree whose leaves all have ``n`` elements this equals
    ``optax.clip_by_block_rms(max_norm / sqrt(n))`` (rms = norm / sqrt(n)).

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> grads = {"big": jnp.array([6.0, 8.0]), "small": jnp.array([0.3, 0.4])}
        >>> clipped, _ = optim.clip_by_leaf_norm(1.0).update(grads, optim.EmptyState())
        >>> clipped["big"], clipped["small"]
        (Array([0.6, 0.8], dtype=float32), Array([0.3, 0.4], dtype=float32))
    """

    def clip_leaf(u):
        wide = jnp.asarray(u).astype(jnp.promote_types(u.dtype, jnp.float32))
        norm = jnp.sqrt(_squared_sum(wide))
        factor = jnp.where(norm < max_norm, 1.0, max_norm / norm)
        return (wide * factor).astype(u.dtype)

    return stateless("clip_by_leaf_norm", lambda updates: jax.tree.map(clip_leaf, updates))


@checks_arguments
def clip_by_block_rms(threshold: PositiveNumber) -> GradientTransformation:
    """Scale each leaf so its root-mean-square is at most ``threshold`` (as optax).

    For every leaf ``g_i`` with ``n_i`` elements, ``rms_i = sqrt(sum(g_i ** 2) / n_i)``::

        g_i <- g_i / max(1, rms_i / threshold)

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> optim.clip_by_block_rms(1.0).update([jnp.array([4.0, -4.0])], optim.EmptyState())[0]
        [Array([ 1., -1.], dtype=float32)]
    """

    def clip_leaf(u):
        rms = jnp.sqrt(jnp.mean((u.conj() * u).real))
        return u / jnp.maximum(1.0, rms / threshold)

    return stateless("clip_by_block_rms", lambda updates: jax.tree.map(clip_leaf, updates))
