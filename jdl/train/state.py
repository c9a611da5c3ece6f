"""The train state and the random streams a run draws from.

A run is one :class:`TrainState`: params, layer state (batch-norm statistics), optimizer
state, the step count and one PRNG key. Everything random in a step is derived from
``(key, step)`` with ``jax.random.fold_in``, so a state saved at step ``k`` and restored
in another process continues exactly as the uninterrupted run would: nothing random lives
outside the state.

The key is split once into three independent streams (:func:`streams`):

* ``step``: step ``t``'s dropout and augmentation key is ``fold_in(step, t)``;
* ``order``: epoch ``e``'s shuffle is ``permutation(fold_in(order, e), n)``;
* ``sample``: a sampled-batch loop draws step ``t``'s batch with ``fold_in(sample, t)``.

Example:
    >>> import jax, jdl
    >>> from jdl import nn, optim
    >>> model = nn.Dense(3)
    >>> ts = jdl.train.init(model, optim.sgd(0.1), jax.random.key(0), jax.numpy.zeros((4, 2)))
    >>> ts.params["w"].shape, int(ts.step)
    ((2, 3), 0)
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jdl._checks import check_that
from jdl.nn.core import Layer
from jdl.optim.base import GradientTransformation, chain

__all__ = ["TrainState", "Streams", "init", "streams", "with_lr_factor", "LrFactorState", "lr_factor",
           "scale_lr_factor"]


class TrainState(NamedTuple):
    """Everything a run needs to continue: ``(params, state, opt_state, step, key)``.

    ``step`` is an int32 scalar (the number of optimizer steps taken) and ``key`` a typed
    PRNG key, the root of every random number the run draws (see :func:`streams`). Under
    ``jax.vmap`` (an ensemble of seeds) every leaf has the members on axis 0.
    """

    params: Any
    state: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


class Streams(NamedTuple):
    """Three independent keys split from a run's key: per-step randomness, epoch orders, batch draws."""

    step: jax.Array
    order: jax.Array
    sample: jax.Array


def streams(key: jax.Array) -> Streams:
    """The run key's three streams (``jax.random.split(key, 3)``), fixed for the whole run."""
    return Streams(*jax.random.split(key, 3))


def init(model: Layer, optimizer: GradientTransformation, key: jax.Array, example: Any) -> TrainState:
    """A fresh :class:`TrainState`: ``model.init`` with the first half of ``split(key)``, the run key the second.

    ``example`` is an example input (array or ``jax.ShapeDtypeStruct``): only its shape and
    dtype are read. Jittable and vmappable over ``key`` (an ensemble: one member per key).
    """
    check_that(isinstance(model, Layer), "jdl.train.init", "a jdl.nn.Layer as model", type(model).__name__,
               TypeError)
    init_key, run_key = jax.random.split(key)
    params, state = model.init(init_key, example)
    return TrainState(params, state, optimizer.init(params), jnp.zeros((), jnp.int32), run_key)


# ---------------------------------------------------------------------------------------
# A learning-rate factor the host can change between compiled chunks (the plateau rule)


class LrFactorState(NamedTuple):
    """The factor :func:`with_lr_factor` multiplies every update by (float32 scalar)."""

    factor: jax.Array


def with_lr_factor(optimizer: GradientTransformation) -> GradientTransformation:
    """``optimizer`` followed by a multiplication of its updates by a factor kept in its state.

    Every optimizer whose update is ``learning_rate * direction`` (SGD, momentum, Adam, AdamW
    with its decay, RMSProp, ...) then behaves as if its learning rate were multiplied by the
    factor: dividing the factor by 10 on a plateau divides the learning rate by 10 (seed
    002's ResNet recipe), like ``optax.contrib.reduce_on_plateau``'s scale. The factor is an
    array in the optimizer state, so changing it (:func:`scale_lr_factor`) never recompiles.
    """

    def init_fn(params):
        return LrFactorState(jnp.ones((), jnp.float32))

    def update_fn(updates, state, params=None):
        scaled = jax.tree.map(lambda u: (u * state.factor).astype(u.dtype), updates)
        return scaled, state

    return chain(optimizer, GradientTransformation(init_fn, update_fn))


def _is_factor(node: Any) -> bool:
    return isinstance(node, LrFactorState)


def lr_factor(opt_state: Any) -> jax.Array | None:
    """The factor of the :func:`with_lr_factor` state inside ``opt_state`` (``None`` if it has none)."""
    found = [node.factor for node in jax.tree.leaves(opt_state, is_leaf=_is_factor) if _is_factor(node)]
    return found[0] if found else None


def scale_lr_factor(opt_state: Any, by: float) -> Any:
    """``opt_state`` with its :func:`with_lr_factor` factor multiplied by ``by`` (every member of an ensemble)."""
    check_that(lr_factor(opt_state) is not None, "jdl.train.scale_lr_factor",
               "an optimizer state built by jdl.train.with_lr_factor(optimizer)", "a state without an LrFactorState")
    return jax.tree.map(lambda node: LrFactorState(node.factor * by) if _is_factor(node) else node, opt_state,
                        is_leaf=_is_factor)
