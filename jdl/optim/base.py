"""The optimizer interface: optax's, so jdl and optax transformations mix freely.

A gradient transformation is a pair of pure functions,

* ``init(params) -> state`` and
* ``update(updates, state, params=None) -> (updates, state)``,

held in a :class:`GradientTransformation` NamedTuple; states are NamedTuples. An
optimizer is a :func:`chain` of transformations whose last step scales by ``-learning_rate``,
and :func:`apply_updates` adds the result to the params: ``params <- params + updates``.
A jdl transformation can sit inside ``optax.chain`` and an optax one inside
:func:`chain`, because both sides only call ``init`` and ``update``.

Example:
    >>> import jax.numpy as jnp

    >>> from jdl import optim
    >>> params = {"w": jnp.ones(3)}
    >>> optimizer = optim.chain(optim.clip(1.0), optim.scale_by_learning_rate(0.1))
    >>> state = optimizer.init(params)
    >>> updates, state = optimizer.update({"w": jnp.array([0.5, 2.0, -3.0])}, state, params)
    >>> optim.apply_updates(params, updates)["w"]
    Array([0.95, 0.9 , 1.1 ], dtype=float32)
"""
from __future__ import annotations

import math
import numbers
from typing import Annotated, Any, Callable, NamedTuple, Union

import jax
import jax.numpy as jnp

from jdl._checks import Constraint, check_that, checks_arguments, is_concrete

Params = Any
Updates = Any
OptState = Any
Schedule = Callable[[jax.Array], jax.Array]
ScalarOrSchedule = Union[float, jax.Array, Schedule]


class GradientTransformation(NamedTuple):
    """``init(params) -> state`` and ``update(updates, state, params=None) -> (updates, state)``."""

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Updates, OptState]]


class EmptyState(NamedTuple):
    """The state of a transformation that keeps none."""


# ---------------------------------------------------------------------------------------
# Checks shared by every transformation


def _known_number(value: Any) -> Union[float, None]:
    """The value of a hyperparameter given as a number or a concrete scalar array; ``None`` for a
    schedule or a traced array, whose value cannot be read at trace time (and is not checked)."""
    if isinstance(value, numbers.Real):
        return float(value)
    real = is_concrete(value) and jnp.ndim(value) == 0 and any(
        jnp.issubdtype(jnp.result_type(value), kind) for kind in (jnp.integer, jnp.floating))
    return float(value) if real else None


def check_finite(where: str, name: str, value: Any) -> None:
    """A hyperparameter must be a finite number: ``inf`` or ``nan`` (a learning rate of ``inf``)
    would only turn every param into ``inf`` or ``nan`` at the first step."""
    number = _known_number(value)
    check_that(number is None or math.isfinite(number), where, f"{name} to be a finite number", value)


def check_non_negative(where: str, name: str, value: Any) -> None:
    """A hyperparameter given as a number must be finite and >= 0 (a schedule is checked by its maker)."""
    check_finite(where, name, value)
    number = _known_number(value)
    check_that(number is None or number >= 0, where, f"{name} >= 0", value)


def check_positive_number(where: str, name: str, value: Any) -> None:
    """A threshold given as a number must be finite and > 0 (a traced array is not checked by value)."""
    check_finite(where, name, value)
    number = _known_number(value)
    check_that(number is None or number > 0, where, f"{name} > 0", value)


def check_non_negative_or_schedule(where: str, name: str, value: Any) -> None:
    """A finite number >= 0, a schedule, or a scalar array (checked by value when concrete)."""
    scalar_array = hasattr(value, "shape") and jnp.ndim(value) == 0
    check_that(callable(value) or isinstance(value, numbers.Real) or scalar_array, where,
               f"{name} to be a number or a schedule (a function of the step count)", type(value).__name__, TypeError)
    check_non_negative(where, name, value)


def check_decay_rate(where: str, name: str, value: Any) -> None:
    """A decay rate such as Adam's b1, b2 must lie in [0, 1)."""
    check_finite(where, name, value)
    number = _known_number(value)
    check_that(number is None or 0.0 <= number < 1.0, where, f"{name} in [0, 1)", value)


# The types that declare them (``b1: DecayRate``), checked by ``jdl._checks.checks_arguments``.
FiniteNumber = Annotated[Any, Constraint(check_finite)]
NonNegative = Annotated[Any, Constraint(check_non_negative)]
PositiveNumber = Annotated[Any, Constraint(check_positive_number)]
DecayRate = Annotated[Any, Constraint(check_decay_rate)]
NonNegativeOrSchedule = Annotated[Any, Constraint(check_non_negative_or_schedule)]


def check_updates(where: str, updates: Any, reference: Any, reference_name: str = "the state") -> None:
    """The updates must have the tree structure *and* each leaf's shape of ``reference``.

    The one check wherever updates meet params or a state: nothing is silently broadcast
    or reshaped (a ``(1, 2)`` update for a ``(2,)`` param is an error naming the leaf's path).
    """
    got, expected = jax.tree.structure(updates), jax.tree.structure(reference)
    check_that(got == expected, where, f"updates with the tree structure of {reference_name} ({expected})",
               f"{got}; were these gradients made for other params?")
    for (path, update), leaf in zip(jax.tree_util.tree_leaves_with_path(updates), jax.tree.leaves(reference)):
        check_that(jnp.shape(update) == jnp.shape(leaf), where, f"updates{jax.tree_util.keystr(path)} of shape "
                   f"{jnp.shape(leaf)} (as {reference_name})", jnp.shape(update))


def check_floating_params(where: str, params: Any) -> None:
    """Every param leaf must be floating-point: params are trained, and an integer (or bool) leaf
    would have each update truncated (``1 - 0.1`` stored as ``0``) instead of taken."""
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = jnp.result_type(leaf)
        check_that(jnp.issubdtype(dtype, jnp.floating), where, f"params{jax.tree_util.keystr(path)} to be "
                   "floating-point (params are trained; cast it explicitly, p.astype(jnp.float32))",
                   f"{jnp.dtype(dtype).name} of shape {jnp.shape(leaf)}", TypeError)


def check_transformation(where: str, transform: Any, role: str) -> None:
    """An object with optax's ``init`` and ``update`` (a jdl or an optax transformation)."""
    check_that(hasattr(transform, "init") and hasattr(transform, "update"), where,
               f"a gradient transformation (init and update) {role}", type(transform).__name__, TypeError)


# ---------------------------------------------------------------------------------------
# Counting steps


def safe_increment(count: jax.Array) -> jax.Array:
    """``count + 1`` for an int32 step counter, saturating at the int32 maximum (never wrapping)."""
    limit = jnp.iinfo(jnp.int32).max
    return jnp.where(count < limit, count + 1, limit).astype(jnp.int32)


def zero_count() -> jax.Array:
    return jnp.zeros([], jnp.int32)


# ---------------------------------------------------------------------------------------
# Composition


def stateless(where: str, update_leaves: Callable[[Updates], Updates]) -> GradientTransformation:
    """A transformation without state: ``update_leaves(updates)``, after checking the updates
    against the params when they are given (with ``params=None`` there is nothing to compare)."""

    def init(params):
        del params
        return EmptyState()

    def update(updates, state, params=None):
        if params is not None:
            check_updates(where, updates, params, "params")
        return update_leaves(updates), state

    return GradientTransformation(init, update)


def identity() -> GradientTransformation:
    """Leave the updates as they are."""
    return stateless("identity", lambda updates: updates)


def chain(*transforms: GradientTransformation) -> GradientTransformation:
    """Apply transformations one after another; the state is the tuple of their states.

    ``chain(clip_by_global_norm(1.0), scale_by_adam(), scale_by_learning_rate(1e-3))`` is
    Adam with clipping. Any object with optax's ``init``/``update`` may be a link.
    """
    for index, transform in enumerate(transforms):
        check_transformation("chain", transform, f"at position {index}")

    def init(params):
        return tuple(transform.init(params) for transform in transforms)

    def update(updates, state, params=None):
        if not isinstance(state, tuple) or len(state) != len(transforms):
            got = f"a tuple of {len(state)}" if isinstance(state, tuple) else type(state).__name__
            raise ValueError(f"chain: expected a state of {len(transforms)} entries (one per transformation), "
                             f"got {got}")
        new_state = []
        for transform, transform_state in zip(transforms, state):
            updates, transform_state = transform.update(updates, transform_state, params)
            new_state.append(transform_state)
        return updates, tuple(new_state)

    return GradientTransformation(init, update)


def apply_updates(params: Params, updates: Updates) -> Params:
    """``params + updates``, leaf by leaf, in each param's own dtype (as ``optax.apply_updates``).

    The updates must have the params' tree and leaf shapes (nothing is broadcast) and the
    params must be floating-point (an integer param would truncate its update).
    """
    check_updates("apply_updates", updates, params, "params")
    check_floating_params("apply_updates", params)
    return jax.tree.map(
        lambda p, u: None if p is None else jnp.asarray(p + u).astype(jnp.asarray(p).dtype),
        params, updates, is_leaf=lambda x: x is None,
    )


# ---------------------------------------------------------------------------------------
# Scaling


def scale(step_size: float) -> GradientTransformation:
    """Multiply every update by ``step_size``."""
    return stateless("scale", lambda updates: jax.tree.map(lambda u: u * step_size, updates))


class ScaleByScheduleState(NamedTuple):
    count: jax.Array  # steps taken so far (int32)


def scale_by_schedule(step_size_fn: Schedule) -> GradientTransformation:
    """Multiply the updates by ``step_size_fn(count)``, ``count`` the steps taken before this one."""

    def init(params):
        del params
        return ScaleByScheduleState(count=zero_count())

    def update(updates, state, params=None):
        if params is not None:
            check_updates("scale_by_schedule", updates, params, "params")
        step_size = step_size_fn(state.count)
        updates = jax.tree.map(lambda u: jnp.array(step_size, dtype=u.dtype) * u, updates)
        return updates, ScaleByScheduleState(count=safe_increment(state.count))

    return GradientTransformation(init, update)


@checks_arguments
def scale_by_learning_rate(learning_rate: NonNegativeOrSchedule, *, flip_sign: bool = True) -> GradientTransformation:
    """Scale by ``-learning_rate`` (a number or a schedule): the descent step of every optimizer."""
    sign = -1 if flip_sign else 1
    if callable(learning_rate):
        return scale_by_schedule(lambda count: sign * learning_rate(count))
    return scale(sign * learning_rate)
