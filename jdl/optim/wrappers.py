"""Wrappers that change when an inner optimizer steps: accumulation and skipping bad steps.

* :func:`multi_steps` (and the class :class:`MultiSteps`, optax's spelling): add up the
  gradients of ``k`` micro-batches and step the inner optimizer once on their mean,
  i.e. train with a batch ``k`` times larger than fits in memory at once.
* :func:`apply_if_finite`: skip an update whose gradients hold a NaN or an Inf, leaving
  params and the inner state as they were, and count the skip.

Both have optax's names, arguments, defaults and state fields, and give its numbers.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

from jdl._checks import check_that, is_concrete
from jdl.optim.base import (
    GradientTransformation, check_transformation, check_updates, safe_increment, zero_count,
)


def _zeros_like_output(fn, *args):
    """Zeros with the shapes and dtypes ``fn(*args)`` would return, without running it."""
    return jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), jax.eval_shape(fn, *args))


def _is_whole_number(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _micro_batches(where: str, k: Any) -> Any:
    """The ``k`` a schedule returned, as the whole number of micro-batches per step (int32).

    A concrete ``k`` (known at trace time) must be a whole number >= 1, or it is an error. A
    traced one cannot be checked, so its whole part is taken, and a value below 1 (or NaN)
    counts as 1: the wrapper then steps on every call, instead of never stepping again.
    """
    if is_concrete(k) and jnp.ndim(k) == 0:
        value = float(k)
        check_that(value.is_integer() and value >= 1, where, "every_k_schedule to return a whole number >= 1 "
                   "(k micro-batches per step)", k)
    k = jnp.asarray(k)
    if jnp.issubdtype(k.dtype, jnp.floating):
        k = jnp.floor(k)
    return jnp.where(k >= 1, k, 1).astype(jnp.int32)


def _keep_dtypes(new_tree, old_tree):
    """Cast ``new_tree``'s leaves to ``old_tree``'s dtypes, so a state never drifts in dtype."""
    return jax.tree.map(lambda new, old: jnp.asarray(new).astype(jnp.asarray(old).dtype), new_tree, old_tree)


# ---------------------------------------------------------------------------------------
# Gradient accumulation


class MultiStepsState(NamedTuple):
    mini_step: jax.Array  # micro-batches accumulated since the last real step (int32)
    gradient_step: jax.Array  # real steps of the inner optimizer so far (int32)
    inner_opt_state: Any
    acc_grads: Any  # mean (or sum) of the gradients accumulated so far, in accumulator_dtype


def multi_steps(
    opt: GradientTransformation,
    every_k_schedule: Union[int, Callable[[jax.Array], Any]],
    use_grad_mean: bool = True,
    accumulator_dtype: Any = jnp.float32,
) -> GradientTransformation:
    """Accumulate ``k`` micro-batch gradients, then step ``opt`` once on their mean (or sum).

    With ``k = every_k_schedule`` (a number, or a function of the count of real steps so
    far) and ``g_1 .. g_k`` the gradients of ``k`` consecutive calls::

        a_j = a_{j-1} + (g_j - a_{j-1}) / j      (running mean; a_j = a_{j-1} + g_j if not use_grad_mean)

    The first ``k - 1`` calls return zero updates and leave ``opt``'s state alone; the
    ``k``-th call returns ``opt.update(a_k, ...)`` and resets the accumulator. With
    equal micro-batches and a loss that averages over examples, ``k`` micro-steps are one
    step on the batch of all ``k`` (up to rounding). Matches ``optax.MultiSteps`` (the
    same running-mean arithmetic; accumulation in ``accumulator_dtype``, float32 by
    default); ``opt`` is only run on the steps that apply it.

    A schedule's ``k`` must be a whole number >= 1: checked when it is known at trace time
    (a ``ValueError``); under ``jit`` a traced ``k`` is taken as ``max(1, floor(k))`` (NaN as
    1), so a schedule that returns 0 steps on every call rather than never again.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> optimizer = optim.multi_steps(optim.scale_by_learning_rate(1.0), every_k_schedule=2)
        >>> params = jnp.zeros(2)
        >>> state = optimizer.init(params)
        >>> updates, state = optimizer.update(jnp.array([1.0, 2.0]), state, params)
        >>> updates                                     # still accumulating
        Array([0., 0.], dtype=float32)
        >>> updates, state = optimizer.update(jnp.array([3.0, 4.0]), state, params)
        >>> updates                                     # -1.0 * mean of the two gradients
        Array([-2., -3.], dtype=float32)
    """
    where = "multi_steps"
    check_transformation(where, opt, "to wrap")
    if not callable(every_k_schedule):
        check_that(_is_whole_number(every_k_schedule), where, "every_k_schedule to be a whole number >= 1 or a "
                   "function of the step count", repr(every_k_schedule), TypeError)
        check_that(every_k_schedule >= 1, where, "every_k_schedule (k micro-batches per step) >= 1", every_k_schedule)
    k_at = every_k_schedule if callable(every_k_schedule) else lambda gradient_step: every_k_schedule

    def accumulate(grad, acc, count):
        if use_grad_mean:
            return acc + (grad - acc) / (count + 1)
        return grad + acc

    def init(params):
        return MultiStepsState(
            mini_step=zero_count(),
            gradient_step=zero_count(),
            inner_opt_state=opt.init(params),
            acc_grads=jax.tree.map(lambda p: jnp.zeros(jnp.shape(p), accumulator_dtype), params),
        )

    def update(updates, state, params=None):
        check_updates(where, updates, state.acc_grads, "the params given to init")
        k = _micro_batches(where, k_at(state.gradient_step))
        acc_grads = jax.tree.map(lambda g, a: accumulate(g, a, state.mini_step), updates, state.acc_grads)
        emit = state.mini_step == k - 1

        def step_inner(acc_grads, inner_state):
            acc_grads = jax.tree.map(lambda a, g: a.astype(g.dtype), acc_grads, updates)
            inner_updates, new_inner_state = opt.update(acc_grads, inner_state, params)
            return inner_updates, _keep_dtypes(new_inner_state, inner_state)

        def hold(acc_grads, inner_state):
            return _zeros_like_output(step_inner, acc_grads, inner_state)[0], inner_state

        new_updates, inner_state = jax.lax.cond(emit, step_inner, hold, acc_grads, state.inner_opt_state)
        new_state = MultiStepsState(
            mini_step=safe_increment(state.mini_step) % k,
            gradient_step=jnp.where(emit, safe_increment(state.gradient_step), state.gradient_step),
            inner_opt_state=inner_state,
            acc_grads=jax.tree.map(
                lambda a: jnp.where(emit, jnp.zeros_like(a), a).astype(accumulator_dtype), acc_grads
            ),
        )
        return new_updates, new_state

    return GradientTransformation(init, update)


def has_updated(state: MultiStepsState) -> jax.Array:
    """Whether the :func:`multi_steps` call that returned ``state`` stepped the inner optimizer."""
    return jnp.logical_and(state.mini_step == 0, state.gradient_step > 0)


class MultiSteps:
    """optax's spelling of :func:`multi_steps`: ``MultiSteps(opt, k).gradient_transformation()``.

    Has ``init``, ``update``, ``has_updated(state)``, ``inner_opt`` and
    ``gradient_transformation()`` as ``optax.MultiSteps`` (without its
    ``should_skip_update_fn``; wrap the inner optimizer in :func:`apply_if_finite` instead).

    Example:
        >>> from jdl import optim
        >>> optimizer = optim.MultiSteps(optim.scale_by_learning_rate(0.1), every_k_schedule=4)
        >>> isinstance(optimizer.gradient_transformation(), optim.GradientTransformation)
        True
    """

    def __init__(self, opt, every_k_schedule, use_grad_mean: bool = True, accumulator_dtype: Any = jnp.float32):
        self._opt = opt
        self._transformation = multi_steps(opt, every_k_schedule, use_grad_mean, accumulator_dtype)

    @property
    def inner_opt(self) -> GradientTransformation:
        return self._opt

    def init(self, params) -> MultiStepsState:
        return self._transformation.init(params)

    def update(self, updates, state, params=None):
        return self._transformation.update(updates, state, params)

    has_updated = staticmethod(has_updated)

    def gradient_transformation(self) -> GradientTransformation:
        return self._transformation


# ---------------------------------------------------------------------------------------
# Skipping non-finite steps


class ApplyIfFiniteState(NamedTuple):
    notfinite_count: jax.Array  # consecutive non-finite updates so far, reset by a finite one (int32)
    last_finite: jax.Array  # whether the last update was finite (bool)
    total_notfinite: jax.Array  # non-finite updates since init, never reset (int32)
    inner_state: Any


def _all_finite(tree: Any) -> jax.Array:
    return jnp.all(jnp.array([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(tree)], dtype=bool))


def apply_if_finite(inner: GradientTransformation, max_consecutive_errors: int) -> GradientTransformation:
    """Skip updates whose gradients hold a NaN or an Inf; give up after too many in a row.

    A non-finite gradient gives zero updates (so ``apply_updates`` leaves the params as
    they are) and leaves ``inner``'s state unchanged; ``notfinite_count`` (consecutive)
    and ``total_notfinite`` count it. After more than ``max_consecutive_errors``
    non-finite updates in a row the update is applied anyway, as in
    ``optax.apply_if_finite`` (a loss that stays NaN is a bug to see, not to hide).

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> optimizer = optim.apply_if_finite(optim.scale_by_learning_rate(0.1), max_consecutive_errors=3)
        >>> updates, state = optimizer.update(jnp.array([1.0, jnp.nan]), optimizer.init(jnp.ones(2)))
        >>> updates, int(state.total_notfinite)          # the step is skipped (zero updates) and counted
        (Array([0., 0.], dtype=float32), 1)
    """
    where = "apply_if_finite"
    check_transformation(where, inner, "to wrap")
    check_that(_is_whole_number(max_consecutive_errors), where, "max_consecutive_errors to be a whole number",
               repr(max_consecutive_errors), TypeError)
    check_that(max_consecutive_errors >= 0, where, "max_consecutive_errors >= 0", max_consecutive_errors)

    def init(params):
        return ApplyIfFiniteState(
            notfinite_count=zero_count(),
            last_finite=jnp.array(True),
            total_notfinite=zero_count(),
            inner_state=inner.init(params),
        )

    def update(updates, state, params=None):
        finite = _all_finite(updates)
        notfinite_count = jnp.where(finite, zero_count(), safe_increment(state.notfinite_count))

        def step_inner(inner_state):
            new_updates, new_inner_state = inner.update(updates, inner_state, params)
            return new_updates, _keep_dtypes(new_inner_state, inner_state)

        def skip(inner_state):
            return _zeros_like_output(step_inner, inner_state)[0], inner_state

        apply = jnp.logical_or(finite, notfinite_count > max_consecutive_errors)
        new_updates, inner_state = jax.lax.cond(apply, step_inner, skip, state.inner_state)
        return new_updates, ApplyIfFiniteState(
            notfinite_count=notfinite_count,
            last_finite=finite,
            total_notfinite=jnp.where(finite, state.total_notfinite, safe_increment(state.total_notfinite)),
            inner_state=inner_state,
        )

    return GradientTransformation(init, update)
