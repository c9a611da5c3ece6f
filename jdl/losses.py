"""Losses, written by hand in ``jax.numpy``; names and arguments mirror ``optax.losses``.

Like optax, every loss returns one value per example (no reduction over the batch), so
``jdl.losses.softmax_cross_entropy`` and ``optax.losses.softmax_cross_entropy`` can be
swapped with one import; take ``.mean()`` yourself. The exceptions say so in their name:
:func:`mean_squared_error` and :func:`mean_absolute_error` return a scalar, and the weight
penalties :func:`l1_penalty` and :func:`l2_penalty` sum over a whole params pytree.

Inputs are checked at trace time: logits must be floating point, integer class labels
must have an integer dtype and the shape ``logits.shape[:-1]``, and arrays that should
match must have the same shape (nothing is silently broadcast). Concrete integer labels
(outside ``jit``) must be in ``[0, num_classes)``; under ``jit`` an out-of-range label
gives NaN. Where jdl is stricter than optax (optax broadcasts), the error says what was
expected and what was given.

=========================================  ============================================
``squared_error(p, t)``                    ``(p - t)^2``
``l2_loss(p, t)``                          ``0.5 (p - t)^2``
``absolute_error(p, t)``                   ``|p - t|``
``mean_squared_error(p, t)``               ``mean((p - t)^2)`` (a scalar)
``mean_absolute_error(p, t)``              ``mean(|p - t|)`` (a scalar)
``sigmoid_binary_cross_entropy(z, y)``     ``-y log s(z) - (1 - y) log(1 - s(z))``
``binary_cross_entropy(p, y)``             ``-y log p - (1 - y) log(1 - p)``
``softmax_cross_entropy(z, y)``            ``-sum_c y_c log softmax(z)_c``
``softmax_cross_entropy_with_integer...``  ``-log softmax(z)_y``
``nll_loss(log_p, y)``                     ``-log_p[y]``
``hinge_loss(f, t)``                       ``max(0, 1 - t f)``, ``t in {-1, +1}``
``perceptron_loss(f, t)``                  ``max(0, -t f)``
``kl_divergence(log_q, p)``                ``sum_c p_c (log p_c - log_q_c)``
``l1_penalty(params)``                     ``sum |w|`` over every leaf
``l2_penalty(params)``                     ``1/2 sum w^2`` over every leaf
``kl_sparsity(rho, a)``                    ``sum_j KL(rho || mean_i a_ij)`` (a scalar)
``l1_activity(a)``                         ``mean_i sum_j |a_ij|`` (a scalar)
``masked_cross_entropy(z, y, mask)``       mean of ``-log softmax(z)_y`` where ``mask`` (a scalar)
=========================================  ============================================

For padded sequences, :func:`sequence_mask` gives the mask of the real steps and
:func:`masked_mean` averages over them only.

Example:
    >>> import jax.numpy as jnp, jdl
    >>> logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    >>> labels = jnp.array([0, 2])
    >>> jdl.losses.softmax_cross_entropy_with_integer_labels(logits, labels)
    Array([0.23954484, 1.0986123 ], dtype=float32)
"""
from __future__ import annotations

import numbers
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jdl._checks import (
    NonNegativeInt, check_array, check_class_labels, check_floating, check_floating_min_rank, check_integer,
    check_min_rank, check_real, check_same_shape, check_that, checks_arguments, is_concrete,
)
from jdl.activations import log_sigmoid, log_softmax

__all__ = [
    "squared_error", "l2_loss", "absolute_error", "mean_squared_error", "mean_absolute_error",
    "sigmoid_binary_cross_entropy", "binary_cross_entropy", "smooth_labels", "smooth_labels_over_wrong_classes",
    "wrong_class_smoothing_alpha", "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels", "nll_loss", "hinge_loss", "perceptron_loss", "kl_divergence",
    "l1_penalty", "l2_penalty", "kl_sparsity", "l1_activity", "sequence_mask", "masked_mean", "masked_cross_entropy",
]

# PyTorch's BCELoss clamps each log term at -100 so that p = 0 or 1 gives a finite loss.
_BCE_LOG_CLAMP = -100.0


# --------------------------------------------------------------------------- checks


def _check_pair(where: str, x: Any, y: Any, x_name: str, y_name: str) -> None:
    """A floating ``x`` and a real ``y`` of exactly the same shape."""
    check_floating(where, x, x_name)
    check_real(where, y, y_name)
    check_same_shape(where, x, y, x_name, y_name)


def _check_distributions(where: str, x: Any, y: Any, x_name: str, y_name: str, hint: str = "") -> None:
    """Floating ``x`` and ``y`` of exactly the same shape ``(..., num_classes)``: distributions, not class indices."""
    check_min_rank(where, x, 1, "..., num_classes", x_name)
    check_that(not (hasattr(y, "dtype") and jnp.issubdtype(y.dtype, jnp.integer) and y.shape == x.shape[:-1]), where,
               f"floating {y_name} of shape {tuple(x.shape)} (one-hot or probabilities)",
               f"{getattr(y, 'dtype', None)} {y_name} of shape {tuple(getattr(y, 'shape', ()))} (class indices?){hint}",
               TypeError)
    _check_pair(where, x, y, x_name, y_name)
    check_floating(where, y, y_name)


def check_integer_labels(where: str, scores: Any, labels: Any, scores_name: str = "logits", mask: Any = None) -> None:
    """Integer class ``labels`` for ``scores [..., num_classes]`` (and a bool ``mask`` of their shape,
    which labels count), at least one class, and, when labels and mask are concrete, every label
    that counts in ``[0, num_classes)``.

    Under ``jit`` values cannot be checked: an out-of-range label then gives NaN (see
    :func:`_pick_class`), never a wrapped or clipped class.
    """
    check_class_labels(where, scores, labels, scores_name, mask=mask)
    if not is_concrete(labels) or (mask is not None and not is_concrete(mask)):
        return
    values = np.asarray(labels) if mask is None else np.asarray(labels)[np.asarray(mask)]
    if values.size:
        num_classes = scores.shape[-1]
        check_that(values.min() >= 0 and values.max() < num_classes, where, f"labels in [0, {num_classes}) (the "
                   f"classes of {scores_name}'s last axis{', where mask is true' * (mask is not None)})",
                   f"labels from {values.min()} to {values.max()}")


def _check_smoothing(where: str, alpha: Any, name: str) -> None:
    check_that(not isinstance(alpha, numbers.Real) or 0.0 <= alpha <= 1.0, where, f"{name} in [0, 1]", repr(alpha))


def _is_zero(alpha: Any) -> bool:
    return isinstance(alpha, numbers.Real) and alpha == 0


# ------------------------------------------------------------------ shared pieces


def _pick_class(values: jax.Array, labels: jax.Array) -> jax.Array:
    """``values[..., labels]``; NaN where a label is outside ``[0, num_classes)``.

    Values cannot be checked at trace time, so an out-of-range label gives NaN rather
    than a silently wrong number (a negative label would otherwise wrap around).
    """
    num_classes = values.shape[-1]
    in_range = (labels >= 0) & (labels < num_classes)
    safe_labels = jnp.where(in_range, labels, 0)
    picked = jnp.take_along_axis(values, safe_labels[..., None], axis=-1)[..., 0]
    return jnp.where(in_range, picked, jnp.nan)


def _smooth(labels: jax.Array, alpha) -> jax.Array:
    return (1.0 - alpha) * labels + alpha / labels.shape[-1]


def _clamped_log(p: jax.Array) -> jax.Array:
    """``max(log p, -100)``, with a finite (zero) gradient where the clamp is active; NaN stays NaN."""
    # `p <= 0` is false for NaN, so NaN takes the log branch and `maximum` keeps it (selecting
    # on `p > 0` sent NaN to the clamp: a loss of 100 with zero gradient).
    nonpositive = p <= 0
    log_p = jnp.log(jnp.where(nonpositive, 1.0, p))  # no log(0) even in the discarded branch
    return jnp.where(nonpositive, _BCE_LOG_CLAMP, jnp.maximum(log_p, _BCE_LOG_CLAMP))


def _tree_leaves(where: str, params: Any) -> list[jax.Array]:
    leaves = []
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not hasattr(leaf, "dtype") or not jnp.issubdtype(leaf.dtype, jnp.floating):
            got = jnp.dtype(leaf.dtype).name if hasattr(leaf, "dtype") else type(leaf).__name__
            raise TypeError(f"{where}: expected every leaf of params to be a floating-point array, got {got} at "
                            f"params{jax.tree_util.keystr(path)}")
        leaves.append(leaf)
    return leaves


# ------------------------------------------------------------------------ regression


def squared_error(predictions: jax.Array, targets: Optional[jax.Array] = None) -> jax.Array:
    """Elementwise ``(predictions - targets)^2`` (``targets`` defaults to zeros), as optax.

    Same shape as ``predictions``; ``targets`` must have exactly that shape.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.squared_error(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]))
        Array([1., 4.], dtype=float32)
    """
    return _squared_error("squared_error", predictions, targets)


def _squared_error(where: str, predictions, targets):
    if targets is None:
        check_floating(where, predictions, "predictions")
        return predictions**2
    _check_pair(where, predictions, targets, "predictions", "targets")
    return (predictions - targets) ** 2


def l2_loss(predictions: jax.Array, targets: Optional[jax.Array] = None) -> jax.Array:
    """Elementwise ``0.5 (predictions - targets)^2``, as ``optax.losses.l2_loss``.

    The factor 1/2 (Bishop's convention) makes the gradient ``predictions - targets``.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.l2_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]))
        Array([0.5, 2. ], dtype=float32)
    """
    return 0.5 * _squared_error("l2_loss", predictions, targets)


def absolute_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Elementwise ``|predictions - targets|``.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.absolute_error(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]))
        Array([1., 2.], dtype=float32)
    """
    _check_pair("absolute_error", predictions, targets, "predictions", "targets")
    return jnp.abs(predictions - targets)


def mean_squared_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """MSE: the scalar ``mean((predictions - targets)^2)`` over every element.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.mean_squared_error(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]))
        Array(2.5, dtype=float32)
    """
    where = "mean_squared_error"
    check_that(targets is not None, where, "targets", "None (use squared_error)", TypeError)
    errors = _squared_error(where, predictions, targets)
    return jnp.mean(errors)


def mean_absolute_error(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """MAE: the scalar ``mean(|predictions - targets|)`` over every element.

    Its gradient, ``sign(predictions - targets) / n``, has the same size for every error, so
    an outlier pulls no harder than any other point (MSE's pulls in proportion to its error).

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.mean_absolute_error(jnp.array([1.0, 2.0]), jnp.array([0.0, 4.0]))
        Array(1.5, dtype=float32)
    """
    where = "mean_absolute_error"
    _check_pair(where, predictions, targets, "predictions", "targets")
    return jnp.mean(jnp.abs(predictions - targets))


# ------------------------------------------------------------------ binary classification


def sigmoid_binary_cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy from logits, as optax.

    With ``s`` the sigmoid, ``-y log s(z) - (1 - y) log(1 - s(z))``, computed as
    ``-y log_sigmoid(z) - (1 - y) log_sigmoid(-z)`` so that it is finite (and so is its
    gradient ``s(z) - y``) for logits of any size. ``labels`` (0/1 or probabilities) must
    have the shape of ``logits``; bool or integer labels are converted to the logits'
    dtype.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.sigmoid_binary_cross_entropy(jnp.array([0.0, 1e4]), jnp.array([1.0, 0.0]))
        Array([6.931472e-01, 1.000000e+04], dtype=float32)
    """
    _check_pair("sigmoid_binary_cross_entropy", logits, labels, "logits", "labels")
    labels = labels.astype(logits.dtype)
    return -labels * log_sigmoid(logits) - (1.0 - labels) * log_sigmoid(-logits)


def binary_cross_entropy(probabilities: jax.Array, labels: jax.Array) -> jax.Array:
    """Elementwise binary cross-entropy from probabilities ``p`` (PyTorch's ``BCELoss``).

    ``-y max(log p, -100) - (1 - y) max(log(1 - p), -100)``. Each log term is clamped at
    -100, as PyTorch does, so ``p = 0`` or ``p = 1`` gives a finite loss (at most 100)
    instead of ``inf``; where the clamp is active the gradient is zero. A NaN probability
    gives a NaN loss (and gradient), never a clamped number. Prefer
    :func:`sigmoid_binary_cross_entropy` on logits: it needs no clamp and loses no
    precision when ``p`` rounds to 0 or 1. Bool or integer labels are converted to the
    probabilities' dtype.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.binary_cross_entropy(jnp.array([0.5, 0.0]), jnp.array([1.0, 1.0]))
        Array([  0.6931472, 100.       ], dtype=float32)
    """
    _check_pair("binary_cross_entropy", probabilities, labels, "probabilities", "labels")
    labels = labels.astype(probabilities.dtype)
    return -labels * _clamped_log(probabilities) - (1.0 - labels) * _clamped_log(1.0 - probabilities)


def hinge_loss(predictor_outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Elementwise ``max(0, 1 - t y)`` for scores ``y`` and targets ``t`` in {-1, +1}, as optax.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.hinge_loss(jnp.array([2.0, 0.5, -1.0]), jnp.array([1, 1, 1]))
        Array([0. , 0.5, 2. ], dtype=float32)
    """
    _check_pair("hinge_loss", predictor_outputs, targets, "predictor_outputs", "targets")
    return jnp.maximum(0, 1 - predictor_outputs * targets.astype(predictor_outputs.dtype))


def perceptron_loss(predictor_outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """Elementwise ``max(0, -t y)`` for scores ``y`` and targets ``t`` in {-1, +1}, as optax.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.perceptron_loss(jnp.array([2.0, -0.5]), jnp.array([1, 1]))
        Array([0. , 0.5], dtype=float32)
    """
    _check_pair("perceptron_loss", predictor_outputs, targets, "predictor_outputs", "targets")
    return jnp.maximum(0, -predictor_outputs * targets.astype(predictor_outputs.dtype))


# ------------------------------------------------------------- multiclass classification


def smooth_labels(labels: jax.Array, alpha: float) -> jax.Array:
    """Label smoothing, as optax: ``(1 - alpha) labels + alpha / num_classes``.

    ``labels`` are one-hot (or probabilities) over the last axis; ``alpha`` in [0, 1]
    (Szegedy et al., 2016; Mueller et al., 2019).

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.smooth_labels(jnp.array([0.0, 1.0, 0.0, 0.0]), 0.2)
        Array([0.05, 0.85, 0.05, 0.05], dtype=float32)
    """
    where = "smooth_labels"
    check_floating_min_rank(where, labels, 1, "..., num_classes", "labels")
    _check_smoothing(where, alpha, "alpha")
    return _smooth(labels, alpha)


def smooth_labels_over_wrong_classes(labels: jax.Array, epsilon: float) -> jax.Array:
    """Label smoothing in the course's convention: ``1 - epsilon`` on the true class, ``epsilon / (K - 1)`` on each other.

    Seed 002's noise on the outputs, for ``K = 10`` classes: ``p = (eps/9, ..., 1 - eps, ..., eps/9)``.
    It is optax's :func:`smooth_labels` with ``alpha = epsilon K / (K - 1)``
    (:func:`wrong_class_smoothing_alpha`): optax gives every class ``alpha / K``, the true one
    included, so the true class keeps ``1 - alpha (K - 1) / K = 1 - epsilon``. ``labels`` are
    one-hot over the last axis (probabilities work too: the same affine map is applied).

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.smooth_labels_over_wrong_classes(jnp.array([0.0, 1.0, 0.0, 0.0, 0.0]), 0.2)
        Array([0.05, 0.8 , 0.05, 0.05, 0.05], dtype=float32)
    """
    where = "smooth_labels_over_wrong_classes"
    check_floating_min_rank(where, labels, 1, "..., num_classes", "labels")
    check_that(labels.shape[-1] >= 2, where, "at least two classes on the last axis", labels.shape[-1])
    _check_smoothing(where, epsilon, "epsilon")
    classes = labels.shape[-1]
    check_that(not isinstance(epsilon, numbers.Real) or epsilon <= (classes - 1) / classes, where,
               f"epsilon <= (K - 1) / K = {(classes - 1) / classes:.4g} (beyond, the true class gets less than the others)",
               repr(epsilon))
    return _smooth(labels, wrong_class_smoothing_alpha(epsilon, classes))


def wrong_class_smoothing_alpha(epsilon: float, num_classes: int) -> float:
    """optax's ``alpha`` for the course's ``epsilon``: ``alpha = epsilon K / (K - 1)`` (``epsilon <= (K - 1) / K``
    keeps ``alpha <= 1``; ``epsilon = (K - 1) / K`` is the uniform distribution)."""
    check_that(isinstance(num_classes, int) and num_classes >= 2, "wrong_class_smoothing_alpha",
               "num_classes an int >= 2", repr(num_classes))
    return epsilon * num_classes / (num_classes - 1)


def softmax_cross_entropy(
    logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
) -> jax.Array:
    """Cross-entropy ``-sum_c y_c log softmax(z)_c`` over the last axis, as optax.

    ``labels`` are one-hot or probabilities with the shape of ``logits``
    ``(..., num_classes)``; the result has shape ``logits.shape[:-1]``. With
    ``label_smoothing = alpha`` the labels are first replaced by
    ``smooth_labels(labels, alpha)``, i.e. optax's
    ``softmax_cross_entropy(logits, smooth_labels(labels, alpha))``.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> logits = jnp.array([[2.0, 0.0, 0.0]])
        >>> jdl.losses.softmax_cross_entropy(logits, jnp.array([[1.0, 0.0, 0.0]]))
        Array([0.23954484], dtype=float32)
    """
    where = "softmax_cross_entropy"
    _check_distributions(where, logits, labels, "logits", "labels", f"; use {where}_with_integer_labels for those")
    _check_smoothing(where, label_smoothing, "label_smoothing")
    if not _is_zero(label_smoothing):
        labels = _smooth(labels, label_smoothing)
    return -jnp.sum(labels * log_softmax(logits, axis=-1), axis=-1)


def softmax_cross_entropy_with_integer_labels(
    logits: jax.Array, labels: jax.Array, *, label_smoothing: float = 0.0
) -> jax.Array:
    """Cross-entropy ``-log softmax(z)_y`` for integer class labels ``y``, as optax.

    ``logits`` have shape ``(..., num_classes)`` and ``labels`` the integer shape
    ``logits.shape[:-1]``; so does the result. A label outside ``[0, num_classes)`` is an
    error, or, under ``jit`` (where values cannot be checked), gives NaN. With
    ``label_smoothing = alpha`` this equals :func:`softmax_cross_entropy` on
    ``smooth_labels(one_hot(y), alpha)``:

        ``(1 - alpha) (-log softmax(z)_y) + alpha mean_c (-log softmax(z)_c)``.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> logits = jnp.array([[2.0, 0.0, 0.0]])
        >>> jdl.losses.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0]))
        Array([0.23954484], dtype=float32)
    """
    where = "softmax_cross_entropy_with_integer_labels"
    check_integer_labels(where, logits, labels)
    _check_smoothing(where, label_smoothing, "label_smoothing")
    # logsumexp(z) - z_y, with the max subtracted first for stability: the log-probabilities of
    # every class are never formed, whose backward would be a second full pass over the classes
    # (half the time of a Transformer's output layer and loss on CPU, measured).
    shifted = logits - jax.lax.stop_gradient(jnp.max(logits, axis=-1, keepdims=True))
    log_normalizer = jnp.log(jnp.sum(jnp.exp(shifted), axis=-1))
    loss = log_normalizer - _pick_class(shifted, labels)
    if _is_zero(label_smoothing):
        return loss
    uniform = log_normalizer - jnp.mean(shifted, axis=-1)
    return (1.0 - label_smoothing) * loss + label_smoothing * uniform


def nll_loss(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    """Negative log-likelihood ``-log_probs[..., y]`` for integer labels ``y``, per example.

    ``log_probs`` are log-probabilities (e.g. the output of ``log_softmax``) of shape
    ``(..., num_classes)``; ``labels`` have the integer shape ``log_probs.shape[:-1]``.
    ``nll_loss(log_softmax(z), y)`` equals
    ``softmax_cross_entropy_with_integer_labels(z, y)``. Unlike PyTorch's ``nll_loss``
    there is no reduction over the batch. A label outside ``[0, num_classes)`` is an error,
    or, under ``jit``, gives NaN.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> log_probs = jnp.log(jnp.array([[0.5, 0.25, 0.25]]))
        >>> jdl.losses.nll_loss(log_probs, jnp.array([1]))
        Array([1.3862944], dtype=float32)
    """
    check_integer_labels("nll_loss", log_probs, labels, "log_probs")
    return -_pick_class(log_probs, labels)


def kl_divergence(log_predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """``KL(targets || predictions) = sum_c p_c (log p_c - log q_c)`` over the last axis, as optax.

    ``log_predictions`` are ``log q`` (log-space, to avoid underflow) and ``targets`` the
    probabilities ``p``, both of shape ``(..., num_classes)``; the result has shape
    ``(...)``. ``0 log 0 = 0``, and the gradient where ``p = 0`` is finite too.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> log_q = jnp.log(jnp.array([0.5, 0.5]))
        >>> jdl.losses.kl_divergence(log_q, jnp.array([1.0, 0.0]))
        Array(0.6931472, dtype=float32)
    """
    _check_distributions("kl_divergence", log_predictions, targets, "log_predictions", "targets")
    positive = targets > 0
    log_targets = jnp.where(positive, jnp.log(jnp.where(positive, targets, 1.0)), 0.0)
    return jnp.sum(targets * (log_targets - log_predictions), axis=-1)


# ------------------------------------------------------------------ weight penalties


def l1_penalty(params: Any) -> jax.Array:
    """``sum |w|`` over every element of every leaf of a params pytree (a scalar).

    Multiply by ``lambda`` yourself: ``loss + lam * l1_penalty(params)``. Every leaf must
    be a floating array; select the leaves to penalise (e.g. only kernels) beforehand.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.l1_penalty({"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])})
        Array(3.5, dtype=float32)
    """
    leaves = _tree_leaves("l1_penalty", params)
    return sum((jnp.sum(jnp.abs(leaf)) for leaf in leaves), jnp.zeros((), jnp.float32))


def l2_penalty(params: Any) -> jax.Array:
    """``1/2 sum w^2`` over every element of every leaf of a params pytree (a scalar).

    The course's weight-decay term is ``lambda * 1/2 * sum theta^2``: add
    ``lam * l2_penalty(params)`` to the loss; its gradient is ``lam * params``.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.l2_penalty({"w": jnp.array([1.0, -2.0]), "b": jnp.array([0.5])})
        Array(2.625, dtype=float32)
    """
    leaves = _tree_leaves("l2_penalty", params)
    return 0.5 * sum((jnp.sum(jnp.square(leaf)) for leaf in leaves), jnp.zeros((), jnp.float32))


# ------------------------------------------------------------------ activity penalties (sparse codes)


def _check_activations(where: str, activations: Any) -> int:
    """Floating ``activations [*batch, units]`` with no empty axis; returns the number of examples."""
    check_floating_min_rank(where, activations, 1, "*batch, units", "activations")
    return int(np.prod(activations.shape[:-1], dtype=np.int64))


def kl_sparsity(rho: float, activations: jax.Array) -> jax.Array:
    """The sparse autoencoder's penalty ``sum_j KL(rho || rho_hat_j)`` (a scalar).

    ``rho_hat_j = (1/N) sum_i a_ij`` is unit ``j``'s mean activation over the ``N``
    examples (every leading axis of ``activations [*batch, units]`` is a batch axis), and
    ``KL(rho || q) = rho log(rho / q) + (1 - rho) log((1 - rho) / (1 - q))``, the divergence
    between Bernoulli variables of means ``rho`` (the target sparsity, in ``(0, 1)``) and
    ``q``. The activations must lie in ``[0, 1]`` (sigmoid codes): ``rho_hat`` is clipped to
    ``[eps, 1 - eps]`` (``eps`` the dtype's machine epsilon) so that a dead or saturated unit
    gives a large finite penalty, not ``inf`` (the gradient is 0 where the clip is active);
    NaN stays NaN. Its gradient is ``(-rho / rho_hat_j + (1 - rho) / (1 - rho_hat_j)) / N``
    for every ``a_ij``. Add ``beta * kl_sparsity(rho, codes)`` to the reconstruction loss.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> codes = jnp.array([[0.1, 0.5], [0.1, 0.3]])        # mean activations 0.1 and 0.4
        >>> jdl.losses.kl_sparsity(0.1, codes)                  # 0 for the first unit
        Array(0.22628915, dtype=float32)
    """
    check_that(isinstance(rho, numbers.Real) and not isinstance(rho, bool) and 0.0 < rho < 1.0, "kl_sparsity",
               "rho (the target mean activation) in (0, 1)", repr(rho))
    num_examples = _check_activations("kl_sparsity", activations)
    dtype = activations.dtype
    eps = jnp.finfo(dtype).eps
    rho_hat = jnp.sum(activations.reshape(num_examples, activations.shape[-1]), axis=0) / jnp.asarray(
        num_examples, dtype)
    rho_hat = jnp.clip(rho_hat, eps, 1 - eps)  # min and max: NaN stays NaN
    rho = jnp.asarray(rho, dtype)
    kl = rho * (jnp.log(rho) - jnp.log(rho_hat)) + (1 - rho) * (jnp.log1p(-rho) - jnp.log1p(-rho_hat))
    return jnp.sum(kl)


def l1_activity(activations: jax.Array) -> jax.Array:
    """``(1/N) sum_i sum_j |a_ij|``: each example's L1 norm of its activations, averaged over examples.

    A sparsity penalty on activations (codes) rather than on weights (:func:`l1_penalty`):
    every leading axis of ``activations [*batch, units]`` is a batch axis, ``N`` the number
    of examples, so the penalty does not grow with the batch size. A scalar.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.l1_activity(jnp.array([[1.0, -2.0], [0.0, 1.0]]))
        Array(2., dtype=float32)
    """
    num_examples = _check_activations("l1_activity", activations)
    return jnp.sum(jnp.abs(activations)) / jnp.asarray(num_examples, activations.dtype)


# ------------------------------------------------------------------ padded sequences


@checks_arguments
def sequence_mask(lengths: jax.Array, time: NonNegativeInt) -> jax.Array:
    """``mask[..., t] = t < lengths[...]``: which steps of a padded batch are real.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.sequence_mask(jnp.array([3, 1]), 4).astype(int)
        Array([[1, 1, 1, 0],
               [1, 0, 0, 0]], dtype=int32)
    """
    check_integer("sequence_mask", lengths, "lengths")
    return jnp.arange(time) < lengths[..., None]


def masked_mean(values: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The mean of ``values`` where ``mask`` is true: ``sum(mask * values) / max(sum(mask), 1)``.

    Masked-out values (NaN included) never leak in, nor into the gradient; ``mask=None`` is
    the plain mean (of at least one value: empty ``values`` are an error), and an all-false
    mask gives 0.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> jdl.losses.masked_mean(jnp.array([1.0, 3.0, jnp.nan]), jnp.array([True, True, False]))
        Array(2., dtype=float32)
    """
    if mask is None:
        check_array("masked_mean", values, "values")  # a mean over no value is undefined: refused
        return jnp.mean(values)
    total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
    return total / jnp.maximum(jnp.sum(mask), 1).astype(values.dtype)


def masked_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean cross-entropy over the real steps of a padded batch (a scalar, in nats).

    ``L = sum_{b,t} m_{bt} (-log softmax(z_{bt})_{y_{bt}}) / sum_{b,t} m_{bt}`` with
    ``m = mask`` (``sequence_mask(lengths, time)``; ``None`` means every step, of which there
    must be at least one). Labels at masked-out steps are ignored, whatever their value
    (``-1`` is a fine padding label), and get no gradient; an out-of-range label at a real
    step is an error, or, under ``jit``, gives NaN, as in
    :func:`softmax_cross_entropy_with_integer_labels`. An all-false mask gives 0.

    Example:
        >>> import jax.numpy as jnp, jdl
        >>> logits = jnp.zeros((1, 3, 4))                     # uniform: log 4 = 1.386 per step
        >>> labels = jnp.array([[2, 0, -1]])                  # the last step is padding
        >>> jdl.losses.masked_cross_entropy(logits, labels, jdl.losses.sequence_mask(jnp.array([2]), 3))
        Array(1.3862944, dtype=float32)
    """
    where = "masked_cross_entropy"
    check_integer_labels(where, logits, labels, mask=mask)
    real_labels = labels if mask is None else jnp.where(mask, labels, 0)
    return masked_mean(-_pick_class(log_softmax(logits, axis=-1), real_labels), mask)
