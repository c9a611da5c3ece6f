"""Shallow and deep ReLU networks (UDL chapters 3 and 4): approximation, and linear regions per parameter.

A ReLU network is piecewise linear. The shallow network ``1-D-1``,

    y = phi_0 + sum_{d=1}^D phi_d a[theta_d0 + theta_d1 x],   a[z] = ReLU[z] = max(0, z),

has ``3D + 1`` parameters and one joint per hidden unit (where ``theta_d0 + theta_d1 x = 0``),
so at most ``D + 1`` linear regions on a line. A deep network of ``K`` layers of ``D'``
units composes such maps: each layer can fold the regions of the one before onto each other,
so the regions can multiply, up to ``(D' + 1)^K`` on one input (:func:`jdl.regions.max_regions`).
Measured here:

1. **Universal approximation.** The target ``f(x) = sin(2 pi x) + 0.3 cos(9 x)`` on
   ``[0, 1]`` fitted by least squares, ``L = mean_i (y(x_i) - f(x_i))^2`` over ``--points``
   evenly spaced ``x_i``, with a shallow network of ``D`` units for every ``D`` in
   ``--widths``: full-batch Adam for ``--steps`` steps (cosine-decayed learning rate), all
   seeds and widths at once (``vmap``). The training MSE against ``D`` falls as ``D`` grows;
   the reference is the least-squares continuous piecewise-linear fit of ``f`` on ``D``
   equal pieces, a function ``D`` units can represent (one unit with its joint at ``x = 0``
   makes the linear term, one per interior knot the others), whose error falls as ``D^-4``
   (``h^2 f''`` per piece of width ``h = 1 / D``, squared). Each fit's regions on ``[0, 1]``
   are counted: never more than ``D + 1``.
2. **Regions per parameter.** (a) Networks of ``K = 1 .. --max-depth`` layers on one input,
   each width chosen so that the parameters are nearest ``--budget`` (471, UDL's five layers
   of ten units): their regions on ``[0, 1]`` (:func:`jdl.regions.count_regions_on_line`) at
   random initialisation and after fitting ``f`` as above, against the bound
   ``max_regions = (D' + 1)^K``. The bound grows with depth; the counts do not: at
   initialisation a network has about as many regions along a line as it has units (Hanin &
   Rolnick, 2019), and at equal parameters the shallow network has the most units; fitting a
   smooth target does not bring the deep networks' regions near their bound either.
   (b) UDL's construction: network 1, ``y = 3 a[x + 0.05] - 6 a[x - 1/3] + 6 a[x - 2/3]``,
   folds ``[0, 1]`` onto ``[0.15, 1.15]`` three times; network 2, the same map, folds it
   again: ``3 x 3 = 9`` regions with 20 parameters, where a shallow network of 6 units (19
   parameters) has at most 7; the best of ``--num-seeds`` Adam fits of the composition by 6
   units is drawn beside it. (c) UDL's counts from :func:`jdl.regions.max_regions`: 5 layers
   of 10 units on one input have 471 parameters and up to ``11^5 = 161,051`` regions (the
   course's slide prints 161,501, two digits swapped: the computed figure is used), 5 layers
   of 50 units on 10 inputs 10,801 parameters and more than ``10^40`` (the slide's figure;
   the product bound gives ``4.4 x 10^50``); against shallow networks of as many parameters
   (``D + 1`` regions on one input, ``sum_{j <= 10} C(D, j)`` on ten: ``9.2 x 10^22`` for
   the 900 units of 10,801 parameters).
3. **Regions in the plane.** A random shallow network and a random deep network of about
   ``--plane-budget`` parameters on 2 inputs, their activation patterns
   (:func:`jdl.regions.activation_pattern`) over a ``--resolution`` square grid of
   ``[-1, 1]^2``, one colour per pattern, counted with
   :func:`jdl.regions.count_regions_on_grid`. A shallow network's joints are straight lines;
   a deep network's bend at every joint of the layers below.

Counts from samples are lower bounds: a region narrower than the spacing of
``--count-points`` samples of ``[0, 1]``, or between grid points, is missed (the random
networks of 5 layers of 10 units lose at most 2 regions at 100,001 samples against 10^6; the shallow
``2-62-1`` network of seed 0 has 1,076 regions at 400 x 400 and 1,137 at 1600 x 1600).

Random networks: He-normal weights, ``N(0, 2 / fan_in)``. Biases: every first-layer unit's
joint (its hyperplane ``theta_0 + theta x = 0``) passes through a point drawn uniformly from
the input box, ``theta_0 = -theta . c``; deeper biases are 0. (With every bias 0, as
``Dense`` starts, the network is positively homogeneous, ``y(s x) = s y(x)`` for ``s > 0``:
all its joints pass through the origin, and on ``[0, 1]`` it would be one linear piece.)
The fits start from these networks.

    python experiments/shallow_deep.py --out experiments/results

Writes ``OUT/shallow_deep.png`` and ``OUT/shallow_deep.json``.
"""
from __future__ import annotations

import argparse
import functools
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import atomic_save_figure, plot_mean_and_spread, require_positive
from jdl import init, io, nn, optim, regions

TARGET = "sin(2 pi x) + 0.3 cos(9 x)"
LINE = (0.0, 1.0)  # the 1-D input range: the target's domain, where regions are counted
PLANE = (-1.0, 1.0)  # each input's range in the 2-D part

# UDL 4.1's folding network, twice: joints at -0.05 (outside [0, 1], so that no output of
# network 1 grazes a joint of network 2), 1/3 and 2/3; slopes 3, -3, 3 on [0, 1].
FOLD = {"w": [[1.0, 1.0, 1.0]], "b": [0.05, -1 / 3, -2 / 3]}
MIX = {"w": [[3.0], [-6.0], [6.0]], "b": [0.0]}

# UDL's two networks of chapter 4's "regions per parameter" figure, and the slide's misprint.
UDL_NETWORKS = [{"inputs": 1, "layers": 5, "width": 10, "slide_params": 471, "slide_regions": "161,501"},
                {"inputs": 10, "layers": 5, "width": 50, "slide_params": 10_801, "slide_regions": "> 10^40"}]


def target(x):
    """``f(x) = sin(2 pi x) + 0.3 cos(9 x)``: a period of a sine and 1.4 periods of a smaller cosine.

    A faster ripple, ``0.3 cos(9 pi x)``, stalls this budget of Adam at an MSE near 1e-2 at every
    width up to 128 (a ReLU network fits the low frequencies first): the widths would not show.
    """
    return jnp.sin(2 * jnp.pi * x) + 0.3 * jnp.cos(9 * x)


@functools.lru_cache(maxsize=None)
def mlp(widths: tuple[int, ...]) -> nn.Sequential:
    """``Dense(D_1), ReLU, ..., Dense(D_K), ReLU, Dense(1)``, He-normal weights; one instance per ``widths``
    (the jitted functions below are cached per model)."""
    layers = []
    for width in widths:
        layers += [nn.Dense(width, kernel_init=init.he_normal()), nn.ReLU()]
    return nn.Sequential(layers + [nn.Dense(1, kernel_init=init.he_normal())])


def random_network(model: nn.Sequential, key: jax.Array, input_dim: int, box: tuple[float, float]):
    """``(params, state)``: He-normal weights, the first layer's hyperplanes through uniform points of ``box^input_dim``.

    Unit ``d`` of the first layer computes ``theta_d . x + theta_d0``; with
    ``theta_d0 = -theta_d . c_d``, ``c_d ~ U(box^input_dim)``, its joint passes through ``c_d``.
    """
    params_key, point_key = jax.random.split(key)
    params, state = model.init(params_key, jnp.zeros((1, input_dim)))
    first = params["dense_0"]
    points = jax.random.uniform(point_key, first["w"].T.shape, minval=box[0], maxval=box[1])  # (units, inputs)
    params["dense_0"] = {"w": first["w"], "b": -jnp.sum(first["w"].T * points, axis=1)}
    return params, state


def width_for_budget(budget: int, depth: int, input_dim: int = 1) -> int:
    """The width ``D'`` whose ``input_dim-(D')^depth-1`` network has the parameter count nearest ``budget``."""
    counts = {width: regions.dense_param_count([input_dim] + [width] * depth + [1]) for width in range(1, budget + 1)}
    return min(counts, key=lambda width: (abs(counts[width] - budget), width))


def seed_keys(seeds: list[int], part: int) -> list[jax.Array]:
    """One key per seed, distinct per part of the experiment (``fold_in``) so that the parts draw independently."""
    return [jax.random.fold_in(jax.random.key(seed), part) for seed in seeds]


def stack(trees: list):
    """Pytrees of the same structure stacked on a new axis 0: what ``vmap`` maps over."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def random_networks(widths: tuple[int, ...], keys: list[jax.Array], input_dim: int, box: tuple[float, float]):
    """:func:`random_network` per key, stacked. Drawn one at a time outside ``jit``: the draws' small
    programs are compiled once per shape and reused, where a jitted ``vmap`` of ``init`` costs a
    second or more of compilation per architecture on a small CPU."""
    model = mlp(widths)
    return stack([random_network(model, key, input_dim, box)[0] for key in keys])


def padded_shallow(width: int, most: int, keys: list[jax.Array]):
    """Random ``1-width-1`` networks (:func:`random_network` on ``LINE``) as ``1-most-1`` ones, stacked.

    The extra units are dead: weight 0 and bias -1, so ``a[-1] = 0`` whatever the input, and
    output weight 0. Their gradients are exactly 0 (the ReLU's derivative at -1 and the
    unit's activation are both 0), so Adam never moves them (its update is ``0 / (0 + eps)``),
    their pattern never changes (no regions) and the function is the ``width``-unit
    network's: every width trains in one compiled program, and counts with one.
    """
    params = random_networks((width,), keys, 1, LINE)
    pad = most - width
    return {"dense_0": {"w": jnp.pad(params["dense_0"]["w"], ((0, 0), (0, 0), (0, pad))),
                        "b": jnp.pad(params["dense_0"]["b"], ((0, 0), (0, pad)), constant_values=-1.0)},
            "relu_1": params["relu_1"],
            "dense_2": {"w": jnp.pad(params["dense_2"]["w"], ((0, 0), (0, pad), (0, 0))), "b": params["dense_2"]["b"]}}


@functools.lru_cache(maxsize=None)
def ensemble_fitter(widths: tuple[int, ...], steps: int, learning_rate: float):
    """A jitted ``fit(params, x, y) -> (params, mse)`` for a stack of networks (``vmap`` over axis 0).

    Each takes ``steps`` full-batch Adam steps on ``mean_i (y(x_i) - y_i)^2``, the learning
    rate decayed from ``learning_rate`` to 1% of it along half a cosine (``lax.scan``: one
    compiled loop). Cached per architecture and budget, so that a second run in the same
    process compiles nothing.
    """
    model = mlp(widths)
    state = {name: {} for name, _ in model.layers}
    optimizer = optim.adam(optim.cosine_decay_schedule(learning_rate, steps, alpha=0.01))

    def mse(params, x, y):
        return jnp.mean((model.apply(params, state, x)[0][:, 0] - y) ** 2)

    def fit_one(params, x, y):
        def step(carry, _):
            params, opt_state = carry
            grads = jax.grad(mse)(params, x, y)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optim.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
        return params, mse(params, x, y)

    return jax.jit(jax.vmap(fit_one, in_axes=(0, None, None)))


@functools.lru_cache(maxsize=None)
def line_counter(widths: tuple[int, ...], num_points: int):
    """A jitted ``params -> counts``: :func:`jdl.regions.count_regions_on_line` over ``LINE``, per stacked network."""
    model = mlp(widths)
    start, end = jnp.array([LINE[0]]), jnp.array([LINE[1]])
    return jax.jit(jax.vmap(lambda params: regions.count_regions_on_line(model, params, start, end, num_points)))


def first(tree):
    """The first network of a stack (seed axis 0)."""
    return jax.tree.map(lambda leaf: leaf[0], tree)


@functools.lru_cache(maxsize=None)
def line_evaluator(model: nn.Layer):
    """A jitted ``(params, x) -> (y, changed)`` for a 1-input model on sorted points ``x`` of shape ``(n, 1)``:
    its output, and whether the activation pattern changes between neighbours, ``(n - 1,)``."""

    def evaluate(params, x):
        y = model.apply(params, {name: {} for name, _ in model.layers}, x)[0][:, 0]
        patterns = regions.activation_pattern(model, params, x)
        return y, jnp.any(patterns[1:] != patterns[:-1], axis=1)

    return jax.jit(evaluate)


def on_line(model, params, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The model's output at sorted 1-D points ``x``, and each point's linear region: 0 for the first, +1 at
    every pattern change."""
    y, changed = line_evaluator(model)(params, jnp.asarray(x[:, None], jnp.float32))
    return np.asarray(y), np.concatenate([[0], np.cumsum(np.asarray(changed))])


def summarise(values) -> dict:
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()), "min": float(values.min()),
            "max": float(values.max())}


# ---------------------------------------------------------------------------------------
# 1. Universal approximation


def best_uniform_fit_mse(pieces: int, x: np.ndarray) -> float:
    """MSE on ``x`` of the least-squares continuous piecewise-linear fit of :func:`target` with
    ``pieces`` equal pieces of ``LINE`` (hat functions on the knots as the basis): a function
    ``pieces`` units can represent, one with its joint at the left end making the linear term
    and one per interior knot, so a bound on the best such a network can do."""
    knots = np.linspace(*LINE, pieces + 1)
    basis = np.stack([np.interp(x, knots, np.eye(pieces + 1)[k]) for k in range(pieces + 1)], axis=1)
    f = np.asarray(target(jnp.asarray(x, jnp.float32)), np.float64)
    coefficients, *_ = np.linalg.lstsq(basis, f, rcond=None)
    return float(np.mean((basis @ coefficients - f) ** 2))


def universal_approximation(args, seeds: list[int], x: jax.Array, y: jax.Array) -> dict:
    """Shallow networks of every width in ``args.widths``, all seeds, fitted to ``f`` in one call (:func:`padded_shallow`)."""
    most = max(args.widths)
    keys = seed_keys(seeds, 1)
    params = stack([padded_shallow(width, most, keys) for width in args.widths])  # (widths, seeds, ...)
    flat = jax.tree.map(lambda leaf: leaf.reshape((-1,) + leaf.shape[2:]), params)
    trained, mse = ensemble_fitter((most,), args.steps, args.learning_rate)(flat, x, y)
    counts = np.asarray(line_counter((most,), args.count_points)(trained)).reshape(len(args.widths), len(seeds))
    mse = np.asarray(mse, np.float64).reshape(len(args.widths), len(seeds))
    x_host = np.asarray(x[:, 0], np.float64)
    result = {"widths": args.widths, "params": [regions.dense_param_count([1, width, 1]) for width in args.widths],
              "mse": mse.tolist(), "mse_summary": [summarise(row) for row in mse],
              "best_uniform_fit_mse": [best_uniform_fit_mse(width, x_host) for width in args.widths],
              "regions": counts.tolist(), "fits": {}}
    for i, width in enumerate(args.widths):
        result["fits"][width] = jax.tree.map(lambda leaf: leaf[i * len(seeds)], trained)  # the first seed's, padded
        print(f"  shallow 1-{width}-1 ({result['params'][i]} params): MSE {mse[i].mean():.2e} +- {mse[i].std():.1e} "
              f"(best fit on {width} equal pieces {result['best_uniform_fit_mse'][i]:.2e}); regions on [0, 1] "
              f"{counts[i].tolist()} <= {width + 1}")
    return result


# ---------------------------------------------------------------------------------------
# 2. Regions per parameter


def depth_sweep(args, seeds: list[int], x: jax.Array, y: jax.Array) -> dict:
    """Networks of 1 .. max_depth layers at about ``args.budget`` parameters: regions at random and after fitting."""
    result = {"budget": args.budget, "depths": [], "widths": [], "params": [], "max_regions": [],
              "random_regions": [], "trained_regions": [], "trained_mse": [], "fits": {}}
    for depth in range(1, args.max_depth + 1):
        start = time.perf_counter()
        widths = (width_for_budget(args.budget, depth),) * depth
        random_params = random_networks(widths, seed_keys(seeds, 2), 1, LINE)
        random_counts = np.asarray(line_counter(widths, args.count_points)(random_params))
        # The fits start from other draws: the networks counted above stay as drawn.
        trained, mse = ensemble_fitter(widths, args.steps, args.learning_rate)(
            random_networks(widths, seed_keys(seeds, 3), 1, LINE), x, y)
        trained_counts = np.asarray(line_counter(widths, args.count_points)(trained))
        result["depths"].append(depth)
        result["widths"].append(widths[0])
        result["params"].append(regions.dense_param_count([1, *widths, 1]))
        result["max_regions"].append(regions.max_regions(widths))
        result["random_regions"].append(random_counts.tolist())
        result["trained_regions"].append(trained_counts.tolist())
        result["trained_mse"].append(np.asarray(mse, np.float64).tolist())
        result["fits"][depth] = first(trained)
        print(f"  {depth} x {widths[0]:>3} units ({result['params'][-1]} params, at most {result['max_regions'][-1]:,} "
              f"regions): random {random_counts.mean():.1f} +- {random_counts.std():.1f}, trained "
              f"{trained_counts.mean():.1f} +- {trained_counts.std():.1f} regions (MSE {np.mean(mse):.2e})  "
              f"[{time.perf_counter() - start:.1f}s]")
    return result


@functools.lru_cache(maxsize=None)
def folding_network():
    """UDL 4.1's composition of two 3-unit networks, as one ``1-3-1-3-1`` model and its 20 params."""
    model = nn.Sequential([nn.Dense(3), nn.ReLU(), nn.Dense(1), nn.Dense(3), nn.ReLU(), nn.Dense(1)])
    fold = {name: jnp.asarray(value, jnp.float32) for name, value in FOLD.items()}
    mix = {name: jnp.asarray(value, jnp.float32) for name, value in MIX.items()}
    return model, {"dense_0": fold, "relu_1": {}, "dense_2": mix, "dense_3": fold, "relu_4": {}, "dense_5": mix}


def folding(args, seeds: list[int], x: jax.Array) -> dict:
    """The 9-region composition, and the least-squares fit of it by a shallow network of 6 units (19 parameters)."""
    model, params = folding_network()
    # Counted on a fine grid of [0, 1]: its narrowest piece is 1/27 wide.
    count = int(regions.count_regions_on_line(model, params, jnp.array([LINE[0]]), jnp.array([LINE[1]]),
                                              args.count_points))
    y = model.apply(params, {name: {} for name, _ in model.layers}, x)[0][:, 0]
    shallow, mse = ensemble_fitter((6,), args.steps, args.learning_rate)(
        random_networks((6,), seed_keys(seeds, 4), 1, LINE), x, y)
    shallow_counts = np.asarray(line_counter((6,), args.count_points)(shallow))
    best = int(np.argmin(mse))
    result = {"params": sum(int(p.size) for p in jax.tree.leaves(params)), "regions": count,
              "shallow_units": 6, "shallow_params": regions.dense_param_count([1, 6, 1]),
              "shallow_max_regions": regions.max_regions([6]), "shallow_fit_mse": np.asarray(mse, np.float64).tolist(),
              "shallow_fit_regions": shallow_counts.tolist(), "best_seed": seeds[best],
              "model": model, "network": params, "shallow_fit": jax.tree.map(lambda leaf: leaf[best], shallow)}
    print(f"  folding: {result['params']} params, {count} regions on [0, 1]; shallow 1-6-1 ({result['shallow_params']} "
          f"params, at most {result['shallow_max_regions']}): best fit MSE {float(mse[best]):.2e}, regions "
          f"{shallow_counts.tolist()}")
    return result


def udl_counts() -> list[dict]:
    """UDL's two networks: parameters and ``max_regions``, and a shallow network of as many parameters."""
    rows = []
    for network in UDL_NETWORKS:
        widths = [network["width"]] * network["layers"]
        params = regions.dense_param_count([network["inputs"], *widths, 1])
        bound = regions.max_regions(widths, input_dim=network["inputs"])
        # A shallow network D_i-D-1 has (D_i + 2) D + 1 parameters.
        shallow_width = round((params - 1) / (network["inputs"] + 2))
        shallow_bound = regions.max_regions([shallow_width], input_dim=network["inputs"])
        rows.append({**network, "params": params, "max_regions": bound, "log10_max_regions": math.log10(bound),
                     "shallow_width": shallow_width,
                     "shallow_params": regions.dense_param_count([network["inputs"], shallow_width, 1]),
                     "shallow_max_regions": shallow_bound, "log10_shallow_max_regions": math.log10(shallow_bound)})
        print(f"  UDL: {network['layers']} layers of {network['width']} on {network['inputs']} input(s): {params:,} params, "
              f"at most {bound:.4g} regions (slide: {network['slide_params']:,} and {network['slide_regions']}); "
              f"shallow {network['inputs']}-{shallow_width}-1: at most {shallow_bound:.4g}")
    return rows


def bound_curves() -> dict:
    """``log10 max_regions`` against parameters, shallow and 5 layers deep, on 1 and on 10 inputs."""
    curves = {}
    for inputs in (1, 10):
        deep = [[regions.dense_param_count([inputs] + [width] * 5 + [1]), math.log10(regions.max_regions([width] * 5, inputs))]
                for width in range(max(2, inputs), 61)]  # widths >= inputs: where the simple bound holds
        most = deep[-1][0]
        shallow = [[regions.dense_param_count([inputs, width, 1]), math.log10(regions.max_regions([width], inputs))]
                   for width in np.unique(np.geomspace(1, (most - 1) // (inputs + 2), 60).astype(int)).tolist()]
        curves[inputs] = {"shallow": shallow, "deep_5_layers": deep}
    return curves


# ---------------------------------------------------------------------------------------
# 3. Regions in the plane


def plane_regions(args, seeds: list[int]) -> dict:
    """Random shallow and deep networks on 2 inputs at about ``args.plane_budget`` params: their patterns on a grid."""
    deep_width = width_for_budget(args.plane_budget, args.plane_depth, input_dim=2)
    shallow_width = width_for_budget(regions.dense_param_count([2] + [deep_width] * args.plane_depth + [1]), 1, 2)
    axis = np.linspace(*PLANE, args.resolution, dtype=np.float32)
    grid = np.stack(np.meshgrid(axis, axis, indexing="xy"), axis=-1).reshape(-1, 2)  # row = x2, column = x1
    result = {"box": list(PLANE), "resolution": args.resolution}
    for name, widths in (("shallow", (shallow_width,)), ("deep", (deep_width,) * args.plane_depth)):
        start = time.perf_counter()
        model = mlp(widths)
        stacked = random_networks(widths, seed_keys(seeds, 5), 2, PLANE)
        counts = [regions.count_regions_on_grid(model, jax.tree.map(lambda leaf: leaf[i], stacked), (PLANE[0],) * 2,
                                                (PLANE[1],) * 2, args.resolution) for i in range(len(seeds))]
        patterns = np.asarray(jax.jit(lambda p, g: regions.activation_pattern(model, p, g))(first(stacked),
                                                                                      jnp.asarray(grid)))
        _, labels = np.unique(np.packbits(patterns, axis=1), axis=0, return_inverse=True)
        result[name] = {"widths": list(widths), "params": regions.dense_param_count([2, *widths, 1]),
                        "max_regions": regions.max_regions(widths, input_dim=2), "regions": counts,
                        "labels": labels.reshape(args.resolution, args.resolution)}
        print(f"  plane, {name} {'-'.join(map(str, [2, *widths, 1]))} ({result[name]['params']} params, at most "
              f"{result[name]['max_regions']:,}): {np.mean(counts):.1f} +- {np.std(counts):.1f} regions on the grid "
              f"[{time.perf_counter() - start:.1f}s]")
    return result


# ---------------------------------------------------------------------------------------
# Figure


def plot_pieces(axes, x: np.ndarray, y: np.ndarray, labels: np.ndarray, label: str, colors, width: float = 2.0):
    """One line per linear region, cycling through ``colors``, and a dot at every joint."""
    for piece in range(int(labels.max()) + 1):
        mask = labels == piece
        axes.plot(x[mask], y[mask], color=colors[piece % len(colors)], lw=width,
                  label=label if piece == 0 else None)
    joints = np.flatnonzero(np.diff(labels))
    axes.plot(x[joints], y[joints], "k.", ms=4)


def plot_fit(axes, model, params, x: np.ndarray, label: str) -> None:
    """The model's curve on ``x`` and a dot at each joint; ``{pieces}`` in ``label`` becomes the count of pieces."""
    y, labels = on_line(model, params, x)
    line, = axes.plot(x, y, lw=1.3, label=label.format(pieces=labels.max() + 1))
    joints = np.flatnonzero(np.diff(labels))
    axes.plot(x[joints], y[joints], ".", color=line.get_color(), ms=5)


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, grid = plt.subplots(2, 4, figsize=(26, 12), gridspec_kw={"hspace": 0.3})
    (error_ax, fits_ax, depth_ax, depth_fits_ax), (fold_ax, bound_ax, shallow_ax, deep_ax) = grid
    dense_x = np.linspace(*LINE, 4001)
    f = np.asarray(target(jnp.asarray(dense_x, jnp.float32)))

    ua = results["universal_approximation"]
    widths = np.asarray(ua["widths"])
    # Spread over the seeds of log10 MSE: the errors span seven decades, and one seed's dead unit can double a mean.
    plot_mean_and_spread(error_ax, widths, np.log10(np.asarray(ua["mse"])), "Adam fit (mean +- std over seeds)")
    error_ax.plot(widths, np.log10(ua["best_uniform_fit_mse"]), "k--",
                  label="least squares on D equal pieces (representable)")
    error_ax.set(xscale="log", xlabel="hidden units D", ylabel="log10 training MSE",
                 title=f"Universal approximation: 1-D-1 fitting f(x) = {TARGET}")

    fits_ax.plot(dense_x, f, color="0.6", lw=5, alpha=0.5, label="target f")
    for width in results["curve_widths"]:
        mse = ua["mse"][ua["widths"].index(width)][0]
        plot_fit(fits_ax, mlp((max(ua["widths"]),)), ua["fits"][width], dense_x,  # padded with dead units
                 f"D = {width}: MSE {mse:.1e}, {{pieces}} pieces")
    fits_ax.set(xlabel="x", ylabel="y", title="Shallow fits (first seed); dots at the joints")

    sweep = results["depth_sweep"]
    depths = np.asarray(sweep["depths"])
    plot_mean_and_spread(depth_ax, depths, np.asarray(sweep["random_regions"]), "random (He, mean +- std)")
    plot_mean_and_spread(depth_ax, depths, np.asarray(sweep["trained_regions"]), "fitted to f")
    depth_ax.plot(depths, sweep["max_regions"], "k--o", label="max_regions (D' + 1)^K")
    depth_ax.set_xticks(depths, [f"{k} x {w}\n{p} p." for k, w, p in zip(depths, sweep["widths"], sweep["params"])])
    depth_ax.set(yscale="log", ylabel="linear regions on [0, 1]",
                 title=f"1-input networks of K layers x D' units, about {sweep['budget']} parameters")

    depth_fits_ax.plot(dense_x, f, color="0.6", lw=5, alpha=0.5, label="target f")
    for i in sorted({0, len(depths) - 1}):
        width, depth = sweep["widths"][i], int(depths[i])
        plot_fit(depth_fits_ax, mlp((width,) * depth), sweep["fits"][depth], dense_x,
                 f"{depth} x {width} ({sweep['params'][i]} params): MSE {sweep['trained_mse'][i][0]:.1e}, "
                 f"{{pieces}} regions")
    depth_fits_ax.set(xlabel="x", ylabel="y", title="Shallow and deep, equal parameters, fitted (first seed)")

    fold = results["folding"]
    fold_model, fold_params = folding_network()
    plot_pieces(fold_ax, dense_x, *on_line(fold_model, fold_params, dense_x),
                f"two composed 3-unit networks: {fold['params']} params, {fold['regions']} regions",
                plt.get_cmap("tab10").colors, 3.0)
    best = fold["seeds"].index(fold["best_seed"])
    fold_ax.plot(dense_x, on_line(mlp((6,)), fold["shallow_fit"], dense_x)[0], "k--", lw=1.2,
                 label=f"best of {len(fold['seeds'])} Adam fits by 1-6-1: {fold['shallow_params']} params, "
                       f"{fold['shallow_fit_regions'][best]} regions (<= 7), MSE {fold['shallow_fit_mse'][best]:.1e}")
    fold_ax.set(xlabel="x", ylabel="y'", ylim=(-0.1, 1.8), title="UDL 4.1: network 2 after network 1, 3 x 3 = 9 regions")

    for inputs, style in ((1, "-"), (10, ":")):
        curves = results["bound_curves"][inputs]
        for kind, color in (("shallow", "C0"), ("deep_5_layers", "C3")):
            points = np.asarray(curves[kind])
            bound_ax.plot(points[:, 0], points[:, 1], style, color=color,
                          label=f"{kind.replace('_', ' ')}, {inputs} input{'s' * (inputs > 1)}")
    for row in results["udl"]:
        bound_ax.plot(row["params"], row["log10_max_regions"], "k*", ms=12)
        count = f"{row['max_regions']:.3g}" if row["max_regions"] > 10**6 else f"{row['max_regions']:,}"
        bound_ax.annotate(f"{row['layers']} x {row['width']} on {row['inputs']} input{'s' * (row['inputs'] > 1)}: "
                          f"{row['params']:,} params,\n{count} regions (slide: {row['slide_regions']})",
                          (row["params"], row["log10_max_regions"]), textcoords="offset points",
                          xytext=(-200, 10) if row["inputs"] > 1 else (10, -28), fontsize=8)
    bound_ax.set(xscale="log", xlabel="parameters", ylabel="log10 max_regions",
                 title="Upper bounds on regions (jdl.regions.max_regions)")

    plane = results["plane"]
    extent = (*PLANE, *PLANE)
    palette = np.random.default_rng(0).uniform(0.15, 1.0, (max(plane[n]["labels"].max() for n in ("shallow", "deep")) + 1, 3))
    for ax, name in ((shallow_ax, "shallow"), (deep_ax, "deep")):
        net = plane[name]
        ax.imshow(palette[net["labels"]], origin="lower", extent=extent, interpolation="nearest")
        ax.set(xlabel="x1", ylabel="x2", title=f"random {'-'.join(map(str, [2, *net['widths'], 1]))}, {net['params']} "
                                               f"params:\n{net['regions'][0]} regions on the grid (at most {net['max_regions']:,})")
    for ax in (error_ax, fits_ax, depth_ax, depth_fits_ax, fold_ax, bound_ax):
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    atomic_save_figure(path, figure)
    plt.close(figure)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed; results are over --num-seeds")
    parser.add_argument("--num-seeds", type=int, default=4)
    parser.add_argument("--widths", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64, 128],
                        help="hidden units D of the shallow fits")
    parser.add_argument("--steps", type=int, default=4000, help="full-batch Adam steps per fit")
    parser.add_argument("--learning-rate", type=float, default=0.01)
    parser.add_argument("--points", type=int, default=512, help="evenly spaced training inputs on [0, 1]")
    parser.add_argument("--budget", type=int, default=471, help="parameters of the depth sweep's networks")
    parser.add_argument("--max-depth", type=int, default=5)
    parser.add_argument("--count-points", type=int, default=100_001, help="samples of [0, 1] for region counts")
    parser.add_argument("--plane-budget", type=int, default=249, help="parameters of the 2-input networks")
    parser.add_argument("--plane-depth", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=400, help="grid points per side in the plane")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    require_positive(parser, args, ("num_seeds", "steps", "budget", "max_depth", "plane_budget", "plane_depth"))
    for name, least in (("points", 2), ("count_points", 2), ("resolution", 2)):
        if getattr(args, name) < least:
            parser.error(f"--{name.replace('_', '-')} must be at least {least}, got {getattr(args, name)}")
    if min(args.widths) < 1:
        parser.error(f"--widths must all be at least 1, got {args.widths}")
    if not args.learning_rate > 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    args.widths = sorted(set(args.widths))
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    x = jnp.linspace(*LINE, args.points)[:, None]
    y = target(x[:, 0])
    results = {"target": TARGET, "input_range": list(LINE), "seeds": seeds, "steps": args.steps,
               "learning_rate": args.learning_rate, "points": args.points, "count_points": args.count_points,
               "backend": jax.default_backend(), "seconds": {}}
    parts = [("universal_approximation", lambda: universal_approximation(args, seeds, x, y)),
             ("depth_sweep", lambda: depth_sweep(args, seeds, x, y)),
             ("folding", lambda: folding(args, seeds, x)),
             ("udl", udl_counts),
             ("plane", lambda: plane_regions(args, seeds))]
    for name, run in parts:
        print(f"{name}:")
        start = time.perf_counter()
        results[name] = run()
        results["seconds"][name] = round(time.perf_counter() - start, 2)
    results["folding"]["seeds"] = seeds
    results["bound_curves"] = bound_curves()
    results["curve_widths"] = args.widths[1::2][:3] or args.widths  # 2, 8 and 32 of the default widths
    os.makedirs(args.out, exist_ok=True)
    plot(results, os.path.join(args.out, "shallow_deep.png"))
    io.atomic_write_json(os.path.join(args.out, "shallow_deep.json"), to_json(results))
    print(f"wrote {args.out}/shallow_deep.png and shallow_deep.json")
    return results


def to_json(results: dict) -> dict:
    """``results`` without what only the figure needs (params, models, label images)."""
    drop = {"fits", "model", "network", "shallow_fit", "labels"}

    def clean(value):
        if isinstance(value, dict):
            return {str(key): clean(item) for key, item in value.items() if key not in drop}
        if isinstance(value, list):
            return [clean(item) for item in value]
        return value

    return clean(results)


if __name__ == "__main__":
    main()
