"""Classification metrics, as plain functions of logits and integer labels.

``logits`` have shape ``(..., num_classes)`` and ``labels`` the integer shape
``logits.shape[:-1]``; each metric is a scalar averaged over every leading axis. Inputs
are checked at trace time, like the losses in :mod:`jdl.losses`.

Example:
    >>> import jax.numpy as jnp, jdl
    >>> logits = jnp.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]])
    >>> jdl.metrics.accuracy(logits, jnp.array([1, 1, 1]))
    Array(0.6666667, dtype=float32)
"""
from __future__ import annotations

import numbers

import jax
import jax.numpy as jnp

from jdl.losses import _check_class_labels

__all__ = ["accuracy", "top_k_accuracy"]


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The fraction of examples with ``argmax(logits) == label``: ``mean([argmax_c z_c = y])``.

    Ties go to the lowest class index, as ``jnp.argmax``. Returns a float32 scalar.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> logits = jnp.array([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]])
        >>> jdl.metrics.accuracy(logits, jnp.array([0, 1]))
        Array(0.5, dtype=float32)
    """
    _check_class_labels("accuracy", logits, labels, "logits")
    return jnp.mean(jnp.argmax(logits, axis=-1) == labels, dtype=jnp.float32)


def top_k_accuracy(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """The fraction of examples whose label is among the ``k`` largest logits.

    ``k = 1`` is :func:`accuracy`. Among tied logits the lower class index ranks first,
    as ``jax.lax.top_k`` and ``jnp.argmax``. Returns a float32 scalar.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> logits = jnp.array([[3.0, 2.0, 1.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
        >>> jdl.metrics.top_k_accuracy(logits, jnp.array([1, 3]), k=2)
        Array(0.5, dtype=float32)
    """
    where = "top_k_accuracy"
    _check_class_labels(where, logits, labels, "logits")
    num_classes = logits.shape[-1]
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k <= num_classes:
        raise ValueError(
            f"{where}: expected k to be an int in [1, num_classes = {num_classes}], got {k!r}"
        )
    _, top_classes = jax.lax.top_k(logits, int(k))
    hit = jnp.any(top_classes == labels[..., None], axis=-1)
    return jnp.mean(hit, dtype=jnp.float32)
