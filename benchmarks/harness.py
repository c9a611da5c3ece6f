"""The timing harness: zero-argument callables, compiled first, then timed alternately.

Every benchmark times its calls with :func:`time_alternating`. Each call returns its
outputs (a train case's call runs ``steps_per_call`` jitted train steps on data already on
the device); the timer

1. calls each one once (the first call traces and compiles: its time is the compile
   time) and hands their outputs to the caller's ``check`` before anything else runs (do
   the sides compute the same thing? a later call may donate those outputs' buffers);
2. calls each one ``warmup`` more times, untimed;
3. runs the timed rounds: every round calls each one in turn (one drops out once it has
   its ``rounds``), each call followed by ``jax.block_until_ready`` on its outputs and the
   garbage collector paused, so that all of them see the same machine load (other
   processes, thermal state, caches) in turn;
4. reports per call the median, minimum and interquartile range of its timed calls.

:func:`compare` is the side-by-side form the train-step and optimizer cases use: a jdl
call against a reference call (flax + optax), plus an optional ``baseline`` (the
optimizer cases' memory-bandwidth probe), reported per step (call time /
``steps_per_call``) with the ratio jdl / reference.

Several steps per call (inside a ``lax.scan`` on both sides) amortise the host's dispatch
overhead, which would otherwise dominate the sub-millisecond steps of small models.
"""
from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from typing import Any, Callable, Mapping

import jax


@dataclasses.dataclass(frozen=True)
class CallTimes:
    """Seconds of one call: its first (compiling) call and the statistics of its timed calls."""

    compile_s: float  # the first call: trace, compile and run once
    median_s: float
    min_s: float
    iqr_s: float  # interquartile range: how noisy the rounds were
    rounds: int


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    out = call()
    jax.block_until_ready(out)
    return time.perf_counter() - start, out


def _iqr(values: list[float]) -> float:
    if len(values) < 4:
        return max(values) - min(values)
    quartiles = statistics.quantiles(values, n=4)
    return quartiles[2] - quartiles[0]


def time_alternating(calls: Mapping[str, Callable[[], Any]], *, rounds: int | Mapping[str, int],
                     warmup: int | Mapping[str, int] = 1,
                     check: Callable[[dict], Any] | None = None) -> tuple[dict[str, CallTimes], Any]:
    """Time every call of ``calls``, alternating round by round; see the module docstring.

    ``rounds`` and ``warmup`` (untimed calls after the first) are one number for all calls
    or one per name. ``check(first_outputs)`` gets ``{name: output of its first call}``;
    what it returns is returned beside the times, and it should raise if the outputs
    disagree.
    """
    rounds = rounds if isinstance(rounds, Mapping) else dict.fromkeys(calls, rounds)
    warmup = warmup if isinstance(warmup, Mapping) else dict.fromkeys(calls, warmup)
    if min(rounds.values()) < 1 or min(warmup.values()) < 0:
        raise ValueError(f"time_alternating: expected rounds >= 1 and warmup >= 0, got {rounds}, {warmup}")
    compile_s, first = {}, {}
    for name, call in calls.items():
        compile_s[name], first[name] = _timed(call)
    checked = check(first) if check is not None else None
    del first
    for name, call in calls.items():
        for _ in range(warmup[name]):
            _timed(call)

    times = {name: [] for name in calls}
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection inside one call would bias it
    try:
        for round_index in range(max(rounds.values())):
            for name, call in calls.items():
                if round_index < rounds[name]:
                    times[name].append(_timed(call)[0])
    finally:
        if gc_was_enabled:
            gc.enable()
    return {name: CallTimes(compile_s[name], statistics.median(values), min(values), _iqr(values), len(values))
            for name, values in times.items()}, checked


@dataclasses.dataclass(frozen=True)
class Timing:
    """Per-step times in seconds, over the timed rounds, for both sides (and the baseline)."""

    jdl_s: float  # median
    ref_s: float  # median
    jdl_min_s: float
    ref_min_s: float
    jdl_iqr_s: float
    ref_iqr_s: float
    jdl_compile_s: float  # the first call, whole (not per step)
    ref_compile_s: float
    rounds: int
    steps_per_call: int
    check: Any  # what the case's check returned (e.g. the two sides' losses)
    baseline_s: float | None = None  # median per step of the optional baseline call
    baseline_min_s: float | None = None

    @property
    def ratio(self) -> float:
        return self.jdl_s / self.ref_s


def compare(
    jdl_call: Callable[[], Any],
    ref_call: Callable[[], Any],
    *,
    rounds: int,
    steps_per_call: int = 1,
    warmup: int = 2,
    check: Callable[[Any, Any], Any] | None = None,
    baseline: Callable[[], Any] | None = None,
) -> Timing:
    """Time ``jdl_call`` against ``ref_call`` (and ``baseline``) with :func:`time_alternating`.

    ``warmup`` counts the calls before the timed rounds, the compiling one included.
    ``check(jdl_out, ref_out)`` sees the outputs of each side's first call and should raise
    if they disagree.
    """
    if steps_per_call < 1 or warmup < 1:
        raise ValueError(f"compare: expected steps_per_call and warmup >= 1, got {steps_per_call}, {warmup}")
    calls = {"jdl": jdl_call, "ref": ref_call} | ({"baseline": baseline} if baseline is not None else {})
    times, checked = time_alternating(calls, rounds=rounds, warmup=warmup - 1,
                                      check=None if check is None else lambda first: check(first["jdl"], first["ref"]))
    jdl, ref, base = times["jdl"], times["ref"], times.get("baseline")
    per_step = lambda seconds: seconds / steps_per_call  # noqa: E731
    return Timing(
        jdl_s=per_step(jdl.median_s), ref_s=per_step(ref.median_s),
        jdl_min_s=per_step(jdl.min_s), ref_min_s=per_step(ref.min_s),
        jdl_iqr_s=per_step(jdl.iqr_s), ref_iqr_s=per_step(ref.iqr_s),
        jdl_compile_s=jdl.compile_s, ref_compile_s=ref.compile_s,
        rounds=rounds, steps_per_call=steps_per_call, check=checked,
        baseline_s=per_step(base.median_s) if base else None,
        baseline_min_s=per_step(base.min_s) if base else None,
    )
