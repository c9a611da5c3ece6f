"""Loss scaling for float16 training (Micikevicius et al., 2018).

float16 has five exponent bits: gradients under ``6e-8`` flush to zero. Multiplying the loss
by a scale ``S`` multiplies every gradient by ``S`` (the chain rule), lifting them into
float16's range; dividing the float32 gradients by ``S`` afterwards restores them. The
**dynamic** rule picks ``S`` as large as the gradients allow: a step whose gradients are not
all finite (an overflow) is skipped and ``S`` halved; after ``period`` finite steps in a row
``S`` doubles. bfloat16 has float32's exponent range and needs none of this.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl.train import loss_scale
    >>> scale = loss_scale.DynamicLossScale.create(2.0 ** 15)
    >>> loss_fn = lambda w: (w.astype(jnp.float16) * jnp.float16(1e-4)) ** 2   # a gradient of ~2e-8
    >>> float(jax.grad(lambda w: loss_fn(w).astype(jnp.float32))(1.0))          # underflows in float16
    0.0
    >>> loss, grads, finite = loss_scale.value_and_grad(loss_fn, scale)(1.0)
    >>> round(float(grads), 10), bool(finite)
    (2e-08, True)
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp


class DynamicLossScale(NamedTuple):
    """The current scale ``S`` (float32) and how many finite steps in a row have passed (int32)."""

    scale: jax.Array
    good_steps: jax.Array

    @classmethod
    def create(cls, initial_scale: float = 2.0 ** 15) -> "DynamicLossScale":
        return cls(jnp.asarray(initial_scale, jnp.float32), jnp.zeros((), jnp.int32))


def all_finite(tree) -> jax.Array:
    """True when every leaf of ``tree`` is finite (no Inf, no NaN)."""
    return jnp.all(jnp.asarray([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)]))


def value_and_grad(loss_fn: Callable, loss_scale: DynamicLossScale, has_aux: bool = False) -> Callable:
    """``jax.value_and_grad`` of ``loss_fn`` through the scaled loss ``S loss``: returns ``(loss, grads,
    finite)`` with the loss and the gradients (float32) divided back by ``S``, and whether they are
    all finite (else the step must be skipped: :func:`adjust` then halves ``S``)."""

    def scaled(*args, **kwargs):
        out = loss_fn(*args, **kwargs)
        loss, aux = out if has_aux else (out, None)
        return loss.astype(jnp.float32) * loss_scale.scale, (loss, aux)

    def run(*args, **kwargs):
        (_, (loss, aux)), grads = jax.value_and_grad(scaled, has_aux=True)(*args, **kwargs)
        grads = jax.tree.map(lambda g: (g.astype(jnp.float32) / loss_scale.scale), grads)
        finite = all_finite(grads)
        return ((loss, aux) if has_aux else loss), grads, finite

    return run


def adjust(loss_scale: DynamicLossScale, finite: jax.Array, *, period: int = 2000, factor: float = 2.0,
           min_scale: float = 1.0) -> DynamicLossScale:
    """The next scale: ``S / factor`` (at least ``min_scale``) after a non-finite step, ``S * factor``
    after ``period`` finite steps in a row, else ``S``."""
    grow = finite & (loss_scale.good_steps + 1 >= period)
    scale = jnp.where(finite, jnp.where(grow, loss_scale.scale * factor, loss_scale.scale),
                      jnp.maximum(loss_scale.scale / factor, min_scale))
    good_steps = jnp.where(finite & ~grow, loss_scale.good_steps + 1, 0)
    return DynamicLossScale(scale.astype(jnp.float32), good_steps.astype(jnp.int32))


def select_finite(finite: jax.Array, new, old):
    """``new`` where the step was finite, ``old`` otherwise (a skipped step leaves the state intact)."""
    return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
