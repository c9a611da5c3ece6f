"""Linear regions of ReLU networks: activation patterns, counted along a line or over a plane.

A network of dense layers and ReLUs is piecewise linear: wherever the set of active units
(its **activation pattern**, ``[f_k > 0]`` for every hidden pre-activation ``f_k``) stays
the same, every ReLU acts as a fixed 0 or identity and the network is one affine map
(Understanding Deep Learning, chapters 3 and 4). The inputs sharing a pattern form a convex
polytope, a **linear region**; this module counts them.

* :func:`activation_pattern`: the pattern of every input, read from the outputs of the
  model's ``ReLU`` and ``LeakyReLU`` layers (:func:`jdl.capture_intermediates`; a ReLU's
  output is ``> 0`` exactly where its input is).
* :func:`count_regions_on_line`: regions met along a segment. A region is convex, so the
  segment crosses it in one interval: the count is the number of pattern changes between
  neighbouring sample points, plus one. Regions narrower than the spacing can be missed,
  so it is a lower bound that becomes exact as ``num_points`` grows.
* :func:`count_regions_on_grid`: distinct patterns over a 2-D grid (each region is convex,
  hence connected: one pattern, one region).
* :func:`max_regions`: the largest number of regions the widths allow, and
  :func:`dense_param_count`, the parameters of the same widths, for UDL's comparison of
  regions per parameter.

Two regions can carry the same affine map (a unit whose outgoing weights are 0 splits
nothing): patterns count regions of the network's parametrisation, an upper bound of the
pieces of the function it computes, equal to it for generic (random) weights.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn, regions
    >>> model = nn.Sequential([nn.Dense(3), nn.ReLU(), nn.Dense(1)])  # UDL's 1-3-1 network
    >>> params, state = model.init(jax.random.key(0), jnp.zeros((1, 1)))
    >>> regions.dense_param_count([1, 3, 1])
    10
    >>> int(regions.count_regions_on_line(model, params, jnp.array([-100.0]), jnp.array([100.0]))) <= 3 + 1
    True
    >>> regions.max_regions([10] * 5, input_dim=1)  # 5 layers of 10 units, one input: 11^5
    161051
"""
from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jdl._checks import check_floating, check_floating_min_rank, check_int_at_least, check_shape, check_that
from jdl.nn.activation import LeakyReLU, ReLU
from jdl.nn.core import Layer
from jdl.summaries import capture_intermediates

__all__ = ["activation_pattern", "count_regions_on_line", "count_regions_on_grid", "max_regions",
           "dense_param_count"]


def activation_pattern(model: Layer, params: Any, x: jax.Array, state: Any = None) -> jax.Array:
    """``[f > 0]`` for every unit of every ``ReLU``/``LeakyReLU`` layer, per example.

    ``x`` has shape ``(batch, ...)``; the result is boolean ``(batch, units)``, the units of
    all the layers in call order, each layer's flattened. ``state`` may be left out for a
    model without state (no batch norm). A LeakyReLU is read the same way, as long as its
    slope is positive.
    """
    where = "activation_pattern"
    check_floating_min_rank(where, x, 1, "batch, ...")
    if state is None:
        state = jax.eval_shape(model.init, jax.random.key(0), x)[1]
        check_that(not jax.tree.leaves(state), where, f"the state of {model}, which has one", "state=None")
    _, _, hidden = capture_intermediates(model, params, state, x, filter=(ReLU, LeakyReLU))
    check_that(hidden, where, "a model with ReLU or LeakyReLU layers", f"none in {model}")
    return jnp.concatenate([h.reshape(h.shape[0], -1) > 0 for h in hidden.values()], axis=-1)


def _pattern_changes(patterns: jax.Array) -> jax.Array:
    return jnp.sum(jnp.any(patterns[1:] != patterns[:-1], axis=-1))


def count_regions_on_line(model: Layer, params: Any, start: jax.Array, end: jax.Array, num_points: int = 10_001,
                          state: Any = None) -> jax.Array:
    """The linear regions met along the segment from ``start`` to ``end`` (one input each).

    ``num_points`` evenly spaced inputs ``start + t (end - start)``, ``t`` in ``[0, 1]``; the
    count is ``1 + `` the pattern changes between neighbours, an int32 scalar (jittable).
    """
    where = "count_regions_on_line"
    check_int_at_least(where, "num_points", num_points, 2)
    check_floating(where, start, "start")
    check_shape(where, end, tuple(start.shape), "the shape of start", "end")
    return _count_on_line(model, params, start, end, num_points, state)


@functools.partial(jax.jit, static_argnames=("model", "num_points"))
def _count_on_line(model, params, start, end, num_points, state):
    # One compiled program per model and resolution (called eagerly, the pattern's many small
    # ops would each compile on their own); inside an outer jit it simply inlines.
    t = jnp.linspace(0.0, 1.0, num_points, dtype=start.dtype).reshape((-1,) + (1,) * start.ndim)
    points = start + t * (end - start)
    return 1 + _pattern_changes(activation_pattern(model, params, points, state))


def count_regions_on_grid(model: Layer, params: Any, lower: Sequence[float], upper: Sequence[float],
                          resolution: int = 400, state: Any = None, chunk: int = 65_536) -> int:
    """The linear regions met on a ``resolution x resolution`` grid over ``[lower, upper]`` (2 inputs).

    Counted as the distinct patterns among the grid points (on the host: a Python int);
    evaluated ``chunk`` points at a time. Regions that fall between grid points are missed,
    so it is a lower bound that becomes exact as ``resolution`` grows.
    """
    where = "count_regions_on_grid"
    check_int_at_least(where, "resolution", resolution, 2)
    check_int_at_least(where, "chunk", chunk, 1)
    check_that(len(lower) == 2 and len(upper) == 2 and all(lo < hi for lo, hi in zip(lower, upper)), where,
               "lower and upper corners of a 2-D box, lower < upper", f"lower={lower}, upper={upper}")
    axes = [np.linspace(lo, hi, resolution, dtype=np.float32) for lo, hi in zip(lower, upper)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 2)
    seen = set()
    for begin in range(0, len(points), chunk):
        packed = np.asarray(_packed_patterns(model, params, jnp.asarray(points[begin:begin + chunk]), state))
        seen.update(row.tobytes() for row in packed)
    return len(seen)


@functools.partial(jax.jit, static_argnames="model")
def _packed_patterns(model, params, points, state):
    # Compiled once per model and chunk shape, not once per call.
    return jnp.packbits(activation_pattern(model, params, points, state), axis=-1)


def _check_sizes(where: str, sizes: Sequence[int], least: int, expected: str, name: str) -> None:
    check_that(len(sizes) >= least, where, expected, list(sizes) if sizes else "none")
    for size in sizes:
        check_int_at_least(where, name, size, 1)


def max_regions(widths: Sequence[int], input_dim: int = 1) -> int:
    """The most linear regions ReLU layers of these ``widths`` can carve ``input_dim`` inputs into.

    One layer of ``D`` units cuts the input space with ``D`` hyperplanes, at most
    ``sum_{j=0}^{D_i} C(D, j)`` regions (Zaslavsky, 1975; the exact maximum for a shallow
    network, ``D + 1`` for one input). A deeper layer can at most multiply the regions by
    its own count inside each (Serra et al., 2018, the bound that ``widths >= input_dim``
    makes simple), so the bound is the product over layers: ``(D + 1)^K`` for ``K`` layers of
    ``D`` units on one input, which deep networks reach by folding (UDL section 4.5; the
    course's slide prints 161,501 for ``K = 5``, ``D = 10``: a slip for ``11^5 = 161,051``).
    """
    check_int_at_least("max_regions", "input_dim", input_dim, 1)
    _check_sizes("max_regions", widths, 1, "at least one hidden layer width", "every width")
    return math.prod(sum(math.comb(width, j) for j in range(min(width, input_dim) + 1)) for width in widths)


def dense_param_count(sizes: Sequence[int]) -> int:
    """The weights and biases of fully connected layers ``sizes[0] -> sizes[1] -> ...``: ``sum (D_in + 1) D_out``.

    ``[1, 3, 1]`` (UDL's shallow network) has 10, ``[3, 3, 2]`` has 20, ``[1] + [10] * 5 + [1]``
    (five layers of ten units) 471.
    """
    _check_sizes("dense_param_count", sizes, 2, "an input size and at least one layer size", "every size")
    return sum((d_in + 1) * d_out for d_in, d_out in zip(sizes[:-1], sizes[1:]))
