"""The timing harness: two callables, compiled first, then timed alternately.

A case hands :func:`compare` two zero-argument callables, one for jdl and one for the
reference (flax + optax). Each call runs ``steps_per_call`` jitted train steps on data
already on the device and returns its outputs. The harness

1. calls each side ``warmup`` times (the first call compiles) and gives the outputs of
   their first calls to the case's ``check`` (do the two sides compute the same thing?);
2. runs ``rounds`` timed rounds, each timing one jdl call and then one reference call,
   every call followed by ``jax.block_until_ready`` on its outputs, so that the two sides
   see the same machine load (other processes, thermal state, caches) in turn;
3. reports the median time per train step of each side (call time / ``steps_per_call``)
   and their ratio, jdl / reference.

A case may add a third callable, ``baseline`` (the optimizer cases' memory-bandwidth
probe), timed last in every round under the same conditions; its median per step is
``Timing.baseline_s``.

Several steps per call (inside a ``lax.scan`` on both sides) amortise the host's dispatch
overhead, which would otherwise dominate the sub-millisecond steps of small models.
"""
from __future__ import annotations

import dataclasses
import gc
import statistics
import time
from typing import Any, Callable

import jax


@dataclasses.dataclass(frozen=True)
class Timing:
    """Per-train-step times in seconds, over the timed rounds, for both sides."""

    jdl_s: float  # median
    ref_s: float  # median
    jdl_min_s: float
    ref_min_s: float
    jdl_iqr_s: float  # interquartile range: how noisy the rounds were
    ref_iqr_s: float
    jdl_compile_s: float  # the first call: trace, compile and run once
    ref_compile_s: float
    rounds: int
    steps_per_call: int
    check: Any  # what the case's check returned (e.g. the two sides' losses)
    baseline_s: float | None = None  # median per step of the optional baseline call
    baseline_min_s: float | None = None

    @property
    def ratio(self) -> float:
        return self.jdl_s / self.ref_s


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
    """Time ``jdl_call`` against ``ref_call``, alternating; see the module docstring.

    ``check(jdl_out, ref_out)`` sees the outputs of each side's first call (before any
    later call can donate their buffers) and should raise if they disagree. ``baseline``,
    if given, is warmed up likewise and timed after the two sides in every round.
    """
    if rounds < 1 or steps_per_call < 1 or warmup < 1:
        raise ValueError(f"compare: expected rounds, steps_per_call and warmup >= 1, got {rounds}, "
                         f"{steps_per_call}, {warmup}")
    jdl_compile_s, jdl_out = _timed(jdl_call)
    ref_compile_s, ref_out = _timed(ref_call)
    checked = check(jdl_out, ref_out) if check is not None else None
    del jdl_out, ref_out
    for _ in range(warmup - 1):
        _timed(jdl_call)
        _timed(ref_call)
    for _ in range(warmup if baseline is not None else 0):
        _timed(baseline)

    jdl_times, ref_times, baseline_times = [], [], []
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection inside one side's call would bias it
    try:
        for _ in range(rounds):
            jdl_times.append(_timed(jdl_call)[0])
            ref_times.append(_timed(ref_call)[0])
            if baseline is not None:
                baseline_times.append(_timed(baseline)[0])
    finally:
        if gc_was_enabled:
            gc.enable()

    per_step = lambda seconds: seconds / steps_per_call  # noqa: E731
    return Timing(
        jdl_s=per_step(statistics.median(jdl_times)),
        ref_s=per_step(statistics.median(ref_times)),
        jdl_min_s=per_step(min(jdl_times)),
        ref_min_s=per_step(min(ref_times)),
        jdl_iqr_s=per_step(_iqr(jdl_times)),
        ref_iqr_s=per_step(_iqr(ref_times)),
        jdl_compile_s=jdl_compile_s,
        ref_compile_s=ref_compile_s,
        rounds=rounds,
        steps_per_call=steps_per_call,
        check=checked,
        baseline_s=per_step(statistics.median(baseline_times)) if baseline_times else None,
        baseline_min_s=per_step(min(baseline_times)) if baseline_times else None,
    )
