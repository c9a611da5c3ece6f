"""Schedules: functions of the step count that give a hyperparameter's value.

A schedule maps ``count`` (the number of updates taken before this one: 0 on the first
update, an int32 scalar inside an optimizer state, or a Python int) to a value, and is
used wherever a number is, e.g. ``scale_by_learning_rate(linear_schedule(...))``. Every
schedule here has optax's name, arguments and defaults, and the same float32 arithmetic,
so it returns optax's numbers (tested step by step). Every schedule holds its first value
at a negative count (as a joined schedule's shifted count can be), works at Python int counts
far beyond int32 (``2**40``) and with step constants beyond int32, and refuses a value that
is not finite (``inf`` or ``nan``) when built.

The course's decaying learning rate (seed 003) is :func:`linear_schedule`:
``eps_k = (1 - k/T) eps_0 + (k/T) eps_T`` for ``k <= T``, held at ``eps_T`` after ``T``.

Example:
    >>> from jdl import optim
    >>> schedule = optim.linear_schedule(init_value=0.1, end_value=0.001, transition_steps=100)
    >>> [round(float(schedule(k)), 6) for k in (0, 50, 100, 1000)]
    [0.1, 0.0505, 0.001, 0.001]
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
import functools
from typing import Annotated, Any, Optional

import jax.numpy as jnp
import numpy as np

from jdl._checks import Constraint, check_that, checks_arguments
from jdl.optim.base import FiniteNumber, PositiveNumber, Schedule, check_finite

# ---------------------------------------------------------------------------------------
# Checks (at construction, on Python numbers; arrays cannot be checked by value under jit)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_steps(where: str, name: str, value: Any, *, positive: bool = False) -> None:
    """A step count must be a whole number, >= 0 (or > 0 with ``positive``)."""
    if not (_is_number(value) and float(value).is_integer()):
        raise TypeError(f"{where}: expected {name} to be a whole number of steps, got {value!r}")
    check_that(not positive or value > 0, where, f"{name} > 0", value)
    check_that(value >= 0, where, f"{name} >= 0", value)


Steps = Annotated[int, Constraint(_check_steps)]
PositiveSteps = Annotated[int, Constraint(functools.partial(_check_steps, positive=True))]


def _as_float_count(count: Any) -> Any:
    """The step count as a float, for the arithmetic of every schedule.

    A Python (or NumPy) int beyond int32, such as ``2**40``, would overflow on its way into
    ``jnp``; an int32 count mixed with a step constant beyond int32 (``transition_steps=2**40``)
    would too. As a float neither can: a Python float keeps every count below 2**53 exact, and
    float32 is the precision the schedule's value is computed in anyway (as optax).
    """
    if isinstance(count, (numbers.Integral, np.integer)):
        return float(count)
    if jnp.issubdtype(jnp.result_type(count), jnp.integer):
        return jnp.asarray(count).astype(jnp.float32)
    return count


def _boundary_for(count: Any, boundary: int) -> Any:
    """``boundary`` in the form that mixes with ``count`` without overflow (jnp reads a Python
    int as int32): as is for a Python count (compared exactly), a float for a float count, and
    ``None`` where an integer array count can never reach it (it saturates at its maximum)."""
    if isinstance(count, (numbers.Integral, np.integer)):
        return boundary
    dtype = jnp.result_type(count)
    if jnp.issubdtype(dtype, jnp.integer):
        return boundary if boundary <= jnp.iinfo(dtype).max else None
    return float(boundary)


# ---------------------------------------------------------------------------------------
# Schedules


@checks_arguments
def constant_schedule(value: FiniteNumber) -> Schedule:
    """The same ``value`` at every step.

    Example:
        >>> from jdl import optim
        >>> optim.constant_schedule(0.5)(1000)
        0.5
    """
    return lambda count: value


@checks_arguments
def polynomial_schedule(
    init_value: FiniteNumber, end_value: FiniteNumber, power: FiniteNumber, transition_steps: Steps,
    transition_begin: Steps = 0,
) -> Schedule:
    """From ``init_value`` to ``end_value`` along a power of the remaining fraction.

    With ``I = init_value``, ``E = end_value``, ``B = transition_begin``,
    ``T = transition_steps`` and ``k = clip(count - B, 0, T)``::

        value(count) = (I - E) * (1 - k / T) ** power + E

    so the value is ``I`` up to step ``B``, reaches ``E`` at ``B + T`` and stays there.
    ``transition_steps = 0`` means no transition: ``I`` at every step (as optax).

    Example:
        >>> from jdl import optim
        >>> schedule = optim.polynomial_schedule(1.0, 0.0, power=2, transition_steps=10)
        >>> [round(float(schedule(k)), 4) for k in (0, 5, 10, 20)]
        [1.0, 0.25, 0.0, 0.0]
    """
    return _polynomial(init_value, end_value, power, transition_steps, transition_begin)


def _polynomial(init_value: Any, end_value: Any, power: Any, transition_steps: int, transition_begin: int) -> Schedule:
    if transition_steps == 0:
        return lambda count: init_value
    # Floats, as the count: a Python int beyond int32 (2**40 steps) would overflow in jnp.
    transition_steps, transition_begin = float(transition_steps), float(transition_begin)

    def schedule(count):
        steps_into_transition = jnp.clip(_as_float_count(count) - transition_begin, 0, transition_steps)
        remaining_fraction = 1 - steps_into_transition / transition_steps
        return (init_value - end_value) * remaining_fraction**power + end_value

    return schedule


@checks_arguments
def linear_schedule(
    init_value: FiniteNumber, end_value: FiniteNumber, transition_steps: Steps, transition_begin: Steps = 0
) -> Schedule:
    """Linear decay (or growth) from ``init_value`` to ``end_value``, then held there.

    This is the course's decaying learning rate (seed 003): with ``eps_0 = init_value``,
    ``eps_T = end_value``, ``T = transition_steps`` and ``k`` the step count,

        eps_k = (1 - k/T) eps_0 + (k/T) eps_T     for k <= T,
        eps_k = eps_T                             for k > T.

    ``transition_begin = B`` holds ``eps_0`` for the first ``B`` steps and then runs the
    formula with ``k = count - B``. It is :func:`polynomial_schedule` with ``power=1``
    and computes ``(eps_0 - eps_T) (1 - k/T) + eps_T`` in float32, as optax does (the two
    forms agree to float32 rounding). ``transition_steps = 0`` holds ``init_value``
    forever (as optax).

    Example:
        >>> from jdl import optim
        >>> schedule = optim.linear_schedule(1.0, 0.01, transition_steps=100, transition_begin=10)
        >>> [round(float(schedule(k)), 4) for k in (0, 10, 60, 110, 500)]
        [1.0, 1.0, 0.505, 0.01, 0.01]
    """
    return _polynomial(init_value, end_value, 1, transition_steps, transition_begin)


@checks_arguments
def exponential_decay(init_value: FiniteNumber, transition_steps: Steps, decay_rate: PositiveNumber,
                      transition_begin: Steps = 0, staircase: bool = False,
                      end_value: Optional[FiniteNumber] = None) -> Schedule:
    """Multiply by ``decay_rate`` every ``transition_steps`` steps, smoothly or in stairs.

    With ``p = (count - transition_begin) / transition_steps`` (``floor(p)`` when
    ``staircase``)::

        value(count) = init_value                       if count <= transition_begin
                       init_value * decay_rate ** p     otherwise

    ``end_value``, if given, bounds the value: from below when ``decay_rate < 1``, from
    above when it is > 1. ``transition_steps = 0`` holds ``init_value`` (as optax).

    Example:
        >>> from jdl import optim
        >>> smooth = optim.exponential_decay(1.0, transition_steps=10, decay_rate=0.5)
        >>> stairs = optim.exponential_decay(1.0, 10, 0.5, staircase=True)
        >>> [round(float(smooth(k)), 4) for k in (0, 5, 10, 20)]
        [1.0, 0.7071, 0.5, 0.25]
        >>> [round(float(stairs(k)), 4) for k in (0, 5, 10, 15, 20)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
    """
    if transition_steps == 0:
        return lambda count: init_value
    bound = None
    if end_value is not None:
        bound = jnp.maximum if decay_rate < 1.0 else jnp.minimum
    transition_steps, transition_begin = float(transition_steps), float(transition_begin)  # as in _polynomial

    def schedule(count):
        steps_since_begin = _as_float_count(count) - transition_begin
        exponent = steps_since_begin / transition_steps
        if staircase:
            exponent = jnp.floor(exponent)
        value = jnp.where(
            steps_since_begin <= 0, init_value, init_value * jnp.power(decay_rate, exponent)
        )
        return value if bound is None else bound(value, end_value)

    return schedule


@checks_arguments
def cosine_decay_schedule(
    init_value: FiniteNumber, decay_steps: PositiveSteps, alpha: FiniteNumber = 0.0, exponent: FiniteNumber = 1.0
) -> Schedule:
    """Half a cosine from ``init_value`` down to ``alpha * init_value`` over ``decay_steps``.

    With ``T = decay_steps`` and ``t = clip(count, 0, T)`` (Loshchilov & Hutter, SGDR, 2017)::

        value(count) = init_value * ((1 - alpha) * (0.5 * (1 + cos(pi t / T))) ** exponent + alpha)

    Example:
        >>> from jdl import optim
        >>> schedule = optim.cosine_decay_schedule(1.0, decay_steps=100, alpha=0.1)
        >>> [round(float(schedule(k)), 4) for k in (0, 50, 100, 200)]
        [1.0, 0.55, 0.1, 0.1]
    """
    total_steps = float(decay_steps)

    def schedule(count):
        # Clamped at 0 too: a negative count holds init_value, as every other schedule here
        # does, instead of mirroring the decay (cos is even).
        count = jnp.clip(_as_float_count(count), 0, total_steps)
        cosine = 0.5 * (1 + jnp.cos(jnp.pi * count / total_steps))
        return init_value * ((1 - alpha) * cosine**exponent + alpha)

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Run ``schedules[0]`` until ``boundaries[0]``, then ``schedules[1]``, and so on.

    Each schedule after the first counts from its own boundary: from step ``b`` on,
    ``schedules[i + 1]`` is called with ``count - b``.

    Example:
        >>> from jdl import optim
        >>> schedule = optim.join_schedules(
        ...     [optim.constant_schedule(1.0), optim.linear_schedule(1.0, 0.0, 10)], [5])
        >>> [round(float(schedule(k)), 2) for k in (0, 4, 5, 10, 15)]
        [1.0, 1.0, 1.0, 0.5, 0.0]
    """
    schedules, boundaries = list(schedules), list(boundaries)
    check_that(schedules and len(boundaries) == len(schedules) - 1, "join_schedules", "one boundary fewer than "
               "schedules", f"{len(schedules)} schedules and {len(boundaries)} boundaries")
    for boundary in boundaries:
        _check_steps("join_schedules", "each boundary", boundary)

    def schedule(count):
        value = schedules[0](count)
        for boundary, next_schedule in zip(boundaries, schedules[1:]):
            boundary = _boundary_for(count, boundary)
            if boundary is None:
                break
            value = jnp.where(count < boundary, value, next_schedule(count - boundary))
        return value

    return schedule


@checks_arguments
def warmup_cosine_decay_schedule(init_value: FiniteNumber, peak_value: FiniteNumber, warmup_steps: Steps,
                                 decay_steps: Steps, end_value: FiniteNumber = 0.0,
                                 exponent: FiniteNumber = 1.0) -> Schedule:
    """Linear warmup from ``init_value`` to ``peak_value``, then cosine decay to ``end_value``.

    Steps ``0..warmup_steps`` follow :func:`linear_schedule`; from ``warmup_steps`` the
    value follows :func:`cosine_decay_schedule` from ``peak_value`` over the remaining
    ``decay_steps - warmup_steps`` steps (``decay_steps`` counts the warmup, as in
    optax), with ``alpha = end_value / peak_value``, and stays at ``end_value``.

    Example:
        >>> from jdl import optim
        >>> schedule = optim.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=10, decay_steps=110)
        >>> [round(float(schedule(k)), 4) for k in (0, 5, 10, 60, 110, 200)]
        [0.0, 0.5, 1.0, 0.5, 0.0, 0.0]
    """
    where = "warmup_cosine_decay_schedule"
    check_that(decay_steps > warmup_steps, where, "decay_steps (which include the warmup) > warmup_steps",
               f"decay_steps={decay_steps} and warmup_steps={warmup_steps}")
    alpha = 0.0 if peak_value == 0.0 else end_value / peak_value
    return join_schedules(
        [
            linear_schedule(init_value, peak_value, warmup_steps),
            cosine_decay_schedule(peak_value, decay_steps - warmup_steps, alpha, exponent),
        ],
        [warmup_steps],
    )


def piecewise_constant_schedule(
    init_value: Any, boundaries_and_scales: Optional[Mapping[int, float]] = None
) -> Schedule:
    """``init_value`` times every ``scale`` whose boundary step has been reached.

    ``boundaries_and_scales = {b_i: s_i}`` gives ``init_value * prod(s_i for b_i <= count)``.

    Example:
        >>> from jdl import optim
        >>> schedule = optim.piecewise_constant_schedule(1.0, {100: 0.1, 200: 0.1})
        >>> [round(float(schedule(k)), 4) for k in (0, 99, 100, 200, 300)]
        [1.0, 1.0, 0.1, 0.01, 0.01]
    """
    where = "piecewise_constant_schedule"
    steps_and_scales = sorted((boundaries_and_scales or {}).items())
    for boundary, scale in steps_and_scales:
        _check_steps(where, "each boundary", boundary)
        check_finite(where, f"the scale at step {boundary}", scale)
        check_that(not _is_number(scale) or scale >= 0, where, "scales >= 0", f"{scale} at step {boundary}")

    def schedule(count):
        if not steps_and_scales:
            return init_value
        value = jnp.asarray(init_value)  # multiply in float32, as optax does, not in Python floats
        for boundary, scale in steps_and_scales:
            boundary = _boundary_for(count, boundary)
            if boundary is None:
                break
            value = jnp.where(count < boundary, value, scale * value)
        return value

    return schedule
