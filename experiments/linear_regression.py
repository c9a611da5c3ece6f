"""The course's first models, fitted by hand: 1-D linear regression and the Gabor model (UDL ch. 2 and 6).

Part (a), linear regression. The model ``y = f[x, phi] = phi_0 + phi_1 x`` is fitted to
``I`` points by least squares, ``L[phi] = sum_i (phi_0 + phi_1 x_i - y_i)^2``, twice:

* in closed form: with the design matrix ``X = [1, x]`` (one row ``[1, x_i]`` per point),
  ``L = ||X phi - y||^2`` and the normal equations ``X^T X phi = X^T y`` give the minimum;
* by gradient descent, ``phi <- phi - alpha dL/dphi``, from a fixed start, with the
  course's hand-written gradient ``dL/dphi = sum_i dl_i/dphi``,
  ``dl_i/dphi = [2 (phi_0 + phi_1 x_i - y_i), 2 x_i (phi_0 + phi_1 x_i - y_i)]``,
  checked against ``jax.grad`` at every point of the path. The loss is a quadratic with
  Hessian ``H = 2 X^T X``, so the descent converges for ``alpha < 2 / lambda_max(H)``, at
  the rate ``1 - alpha lambda_min(H)`` per step along the flattest direction.

Part (b), the Gabor model of the course's gradient-descent slides,

    f[x, phi] = sin(phi_0 + 0.06 phi_1 x) exp(-(phi_0 + 0.06 phi_1 x)^2 / 8),

fitted by least squares to points drawn from a known ``phi`` plus Gaussian noise. Its loss
surface is not convex: gradient descent from a grid of starts (all starts at once with
``vmap``) reaches the global minimum only from the right valley. Each final point is
classified by its loss relative to the best final loss: ``global`` (within 1%), ``local``
(a strict local minimum: gradient near zero and a positive definite Hessian), or ``flat``
(neither: a plateau where the model is about zero on every point, or a valley along which
descent is still creeping when the budget ends).

    python experiments/linear_regression.py --out experiments/results

Writes ``OUT/linear_regression.png`` and ``OUT/linear_regression.json``.
"""
from __future__ import annotations

import argparse
import functools
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import finish_figure, require_positive
from jdl import io, optim

# Part (a): the data-generating line, the noise and the descent's start (far from the fit,
# on the other side of the valley, so the path shows the descent across the loss surface).
LINE_PHI = (0.5, 0.6)
LINE_NOISE = 0.2
LINE_START = (1.6, -0.8)

# Part (b): the course's constants (0.06 and 8), the generating phi, the noise, and the box
# the starts fill and the loss surface is drawn over (phi_0 in [-10, 10], phi_1 in [2.5, 22.5]).
GABOR_SCALE, GABOR_WIDTH = 0.06, 8.0
GABOR_PHI = (-1.0, 12.0)
GABOR_NOISE = 0.1
GABOR_X_RANGE = 15.0
GABOR_BOX = ((-10.0, 10.0), (2.5, 22.5))
# A final point is at a minimum if its gradient norm is below this and its Hessian's smallest
# eigenvalue above the next; minima closer than the last are the same one.
GRADIENT_TOLERANCE = 1e-3
CURVATURE_TOLERANCE = 1e-3
SAME_MINIMUM_DISTANCE = 1.0
GLOBAL_RELATIVE_TOLERANCE = 0.01


# ---------------------------------------------------------------------------------------
# Part (a): 1-D linear regression


def make_line_data(key, num_points: int) -> tuple[jax.Array, jax.Array]:
    """``x_i ~ U(0, 2)`` and ``y_i = 0.5 + 0.6 x_i + N(0, 0.2^2)``: a noisy line."""
    x_key, noise_key = jax.random.split(key)
    x = jax.random.uniform(x_key, (num_points,), minval=0.0, maxval=2.0)
    y = LINE_PHI[0] + LINE_PHI[1] * x + LINE_NOISE * jax.random.normal(noise_key, (num_points,))
    return x, y


def linear_loss(phi, x, y):
    """``L[phi] = sum_i (phi_0 + phi_1 x_i - y_i)^2``."""
    return jnp.sum((phi[0] + phi[1] * x - y) ** 2)


def linear_gradient(phi, x, y):
    """The course's gradient: ``sum_i [2 r_i, 2 x_i r_i]`` with the residual ``r_i = phi_0 + phi_1 x_i - y_i``."""
    residual = phi[0] + phi[1] * x - y
    return jnp.stack([jnp.sum(2.0 * residual), jnp.sum(2.0 * x * residual)])


def design_matrix(x):
    """``X`` with rows ``[1, x_i]``, so that the model's outputs are ``X phi``."""
    return jnp.stack([jnp.ones_like(x), x], axis=1)


def normal_equations(x, y):
    """The least-squares ``phi``: the solution of ``X^T X phi = X^T y``."""
    design = design_matrix(x)
    return jnp.linalg.solve(design.T @ design, design.T @ y)


def descend(gradient, start, learning_rate: float, steps: int):
    """Gradient descent ``phi <- phi - alpha gradient(phi)`` (jdl's ``sgd``) in one ``lax.scan``.

    Returns the path, ``(steps + 1, 2)``: the start, then ``phi`` after every step. Pure in
    ``start``, so ``vmap`` runs many starts at once.
    """
    optimizer = optim.sgd(learning_rate)

    def step(carry, _):
        phi, state = carry
        updates, state = optimizer.update(gradient(phi), state, phi)
        phi = optim.apply_updates(phi, updates)
        return (phi, state), phi

    _, path = jax.lax.scan(step, (start, optimizer.init(start)), None, length=steps)
    return jnp.concatenate([start[None], path])


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def fit_line(key, num_points: int, learning_rate: float, steps: int) -> dict:
    """Part (a) as one XLA program: the data, the closed form, the descent and both gradients along it."""
    x, y = make_line_data(key, num_points)
    design = design_matrix(x)
    start = jnp.asarray(LINE_START, jnp.float32)
    path = descend(lambda phi: linear_gradient(phi, x, y), start, learning_rate, steps)
    return {
        "x": x, "y": y, "path": path,
        "normal_equations_phi": normal_equations(x, y),
        "hessian_eigenvalues": jnp.linalg.eigvalsh(2.0 * design.T @ design),
        "losses": jax.vmap(linear_loss, (0, None, None))(path, x, y),
        "normal_equations_loss": linear_loss(normal_equations(x, y), x, y),
        "hand": jax.vmap(linear_gradient, (0, None, None))(path, x, y),
        "autodiff": jax.vmap(jax.grad(linear_loss), (0, None, None))(path, x, y),
    }


def run_linear(key, num_points: int, learning_rate: float, steps: int) -> dict:
    fit = {name: np.asarray(value) for name, value in fit_line(key, num_points, learning_rate, steps).items()}
    x, y, path, phi_closed = fit["x"], fit["y"], fit["path"], fit["normal_equations_phi"]
    curvature = fit["hessian_eigenvalues"]
    if learning_rate >= 2.0 / curvature[-1]:
        raise ValueError(f"gradient descent diverges: --learning-rate {learning_rate} >= 2 / lambda_max(H) = "
                         f"{2.0 / curvature[-1]:.4g} for these {num_points} points")
    # The hand-written gradient against autodiff at every point the descent visited.
    gradient_error = float(np.max(np.abs(fit["hand"] - fit["autodiff"])))
    gradient_scale = float(np.max(np.abs(fit["autodiff"])))
    if not gradient_error <= 1e-5 * max(1.0, gradient_scale):  # float32 rounding of sums of ~I terms
        raise AssertionError(f"hand-written gradient differs from jax.grad by {gradient_error:.3g}")
    phi_descent = path[-1]
    return {
        "num_points": num_points,
        "phi_true": list(LINE_PHI),
        "noise": LINE_NOISE,
        "x": x, "y": y,
        "normal_equations_phi": phi_closed,
        "normal_equations_loss": float(fit["normal_equations_loss"]),
        "hessian_eigenvalues": curvature,
        "gd": {"start": list(LINE_START), "learning_rate": learning_rate, "steps": steps,
               "final_phi": phi_descent, "final_loss": float(fit["losses"][-1]),
               "start_loss": float(fit["losses"][0])},
        "gd_minus_normal_equations": phi_descent - phi_closed,
        "gd_max_abs_difference": float(np.max(np.abs(phi_descent - phi_closed))),
        "hand_vs_autodiff_max_abs_difference": gradient_error,
        "path": np.asarray(path),
    }


# ---------------------------------------------------------------------------------------
# Part (b): the Gabor model


def gabor(phi, x):
    """``f[x, phi] = sin(u) exp(-u^2 / 8)`` with ``u = phi_0 + 0.06 phi_1 x``."""
    u = phi[0] + GABOR_SCALE * phi[1] * x
    return jnp.sin(u) * jnp.exp(-u**2 / GABOR_WIDTH)


def gabor_loss(phi, x, y):
    """``L[phi] = sum_i (f[x_i, phi] - y_i)^2``."""
    return jnp.sum((gabor(phi, x) - y) ** 2)


def make_gabor_data(key, num_points: int) -> tuple[jax.Array, jax.Array]:
    """``x_i ~ U(-15, 15)``, ``y_i = f[x_i, (-1, 12)] + N(0, 0.1^2)``."""
    x_key, noise_key = jax.random.split(key)
    x = jax.random.uniform(x_key, (num_points,), minval=-GABOR_X_RANGE, maxval=GABOR_X_RANGE)
    y = gabor(jnp.asarray(GABOR_PHI), x) + GABOR_NOISE * jax.random.normal(noise_key, (num_points,))
    return x, y


def grid_starts(per_axis: int) -> jax.Array:
    """``per_axis^2`` starts at the centres of a regular grid of cells over ``GABOR_BOX``."""
    (a0, a1), (b0, b1) = GABOR_BOX
    phi0 = a0 + (np.arange(per_axis) + 0.5) * (a1 - a0) / per_axis
    phi1 = b0 + (np.arange(per_axis) + 0.5) * (b1 - b0) / per_axis
    grid = np.stack(np.meshgrid(phi0, phi1, indexing="ij"), axis=-1).reshape(-1, 2)
    return jnp.asarray(grid, jnp.float32)


def classify(losses, gradient_norms, min_curvatures) -> list[str]:
    """``global`` within 1% of the best final loss; else ``local`` at a strict minimum; else ``flat``."""
    best = float(np.min(losses))
    classes = []
    for loss, gradient_norm, curvature in zip(losses, gradient_norms, min_curvatures):
        at_minimum = gradient_norm < GRADIENT_TOLERANCE and curvature > CURVATURE_TOLERANCE
        if loss <= best * (1.0 + GLOBAL_RELATIVE_TOLERANCE):
            classes.append("global")
        else:
            classes.append("local" if at_minimum else "flat")
    return classes


def distinct_minima(finals, losses, gradient_norms, min_curvatures) -> list[dict]:
    """The strict minima the descents reached, merged within ``SAME_MINIMUM_DISTANCE``, lowest loss first."""
    minima = []
    for index in np.argsort(losses):
        if not (gradient_norms[index] < GRADIENT_TOLERANCE and min_curvatures[index] > CURVATURE_TOLERANCE):
            continue
        for minimum in minima:
            if np.linalg.norm(finals[index] - np.asarray(minimum["phi"])) < SAME_MINIMUM_DISTANCE:
                minimum["starts"].append(int(index))
                break
        else:
            minima.append({"phi": [float(v) for v in finals[index]], "loss": float(losses[index]),
                           "starts": [int(index)]})
    return minima


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4))
def descend_gabor(key, num_points: int, starts_per_axis: int, learning_rate: float, steps: int) -> dict:
    """Part (b) as one XLA program: the data, every start's descent, and the gradient and Hessian where each ends."""
    x, y = make_gabor_data(key, num_points)
    gradient = jax.grad(gabor_loss)
    paths = jax.vmap(lambda start: descend(lambda phi: gradient(phi, x, y), start, learning_rate, steps))(
        grid_starts(starts_per_axis))
    finals = paths[:, -1]
    return {
        "x": x, "y": y, "paths": paths,
        "losses": jax.vmap(gabor_loss, (0, None, None))(finals, x, y),
        "gradient_norms": jnp.linalg.norm(jax.vmap(gradient, (0, None, None))(finals, x, y), axis=-1),
        "hessian_eigenvalues": jax.vmap(lambda phi: jnp.linalg.eigvalsh(jax.hessian(gabor_loss)(phi, x, y)))(finals),
        "loss_at_phi_true": gabor_loss(jnp.asarray(GABOR_PHI), x, y),
    }


def run_gabor(key, num_points: int, starts_per_axis: int, learning_rate: float, steps: int) -> dict:
    run = {name: np.asarray(value)
           for name, value in descend_gabor(key, num_points, starts_per_axis, learning_rate, steps).items()}
    x, y, paths, losses, gradient_norms, curvatures = (
        run[name] for name in ("x", "y", "paths", "losses", "gradient_norms", "hessian_eigenvalues"))
    starts = paths[:, 0]
    finals = paths[:, -1]
    classes = classify(losses, gradient_norms, curvatures[:, 0])
    minima = distinct_minima(finals, losses, gradient_norms, curvatures[:, 0])
    return {
        "num_points": num_points,
        "phi_true": list(GABOR_PHI),
        "noise": GABOR_NOISE,
        "x": x, "y": y,
        "learning_rate": learning_rate,
        "steps": steps,
        "starts": starts,
        "finals": finals,
        "losses": losses,
        "gradient_norms": gradient_norms,
        "hessian_eigenvalues": curvatures,
        "classes": classes,
        "best_loss": float(np.min(losses)),
        "best_phi": finals[int(np.argmin(losses))],
        "loss_at_phi_true": float(run["loss_at_phi_true"]),
        "num_global": classes.count("global"),
        "num_local": classes.count("local"),
        "num_flat": classes.count("flat"),
        "minima": minima,
        "num_distinct_minima": len(minima),
        "paths": paths,
    }


# ---------------------------------------------------------------------------------------
# Output


def loss_grid(loss, box, x, y, size: int = 150):
    """``loss`` on a ``size x size`` grid over ``box``: ``(phi0s, phi1s, values)`` for ``contour``."""
    (a0, a1), (b0, b1) = box
    phi0, phi1 = np.meshgrid(np.linspace(a0, a1, size), np.linspace(b0, b1, size))
    points = jnp.asarray(np.stack([phi0, phi1], -1), jnp.float32)
    values = jax.jit(jax.vmap(jax.vmap(lambda phi: loss(phi, x, y))))(points)
    return phi0, phi1, np.asarray(values)


def plot(linear: dict, gabor_run: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ((line_ax, line_surface), (gabor_ax, gabor_surface)) = plt.subplots(2, 2, figsize=(13, 10.5))

    # (a) The data and the fitted line; the loss surface with the descent's path.
    x, y = np.asarray(linear["x"]), np.asarray(linear["y"])
    grid = np.linspace(0.0, 2.0, 50)
    phi_closed, phi_descent = np.asarray(linear["normal_equations_phi"]), np.asarray(linear["gd"]["final_phi"])
    line_ax.plot(x, y, "o", color="tab:orange", label=f"data (I = {len(x)})")
    line_ax.plot(grid, phi_closed[0] + phi_closed[1] * grid, "-", color="tab:blue", lw=2,
                 label=f"normal equations: {phi_closed[0]:.3f} + {phi_closed[1]:.3f} x")
    line_ax.plot(grid, phi_descent[0] + phi_descent[1] * grid, "--", color="black",
                 label=f"gradient descent ({linear['gd']['steps']} steps)")
    line_ax.plot(grid, LINE_PHI[0] + LINE_PHI[1] * grid, ":", color="gray", label="generating line")
    line_ax.set(xlabel="input x", ylabel="output y", title="(a) 1-D linear regression")

    trace = linear["path"]
    margin = 0.4
    box = ((min(trace[:, 0].min(), phi_closed[0]) - margin, max(trace[:, 0].max(), phi_closed[0]) + margin),
           (min(trace[:, 1].min(), phi_closed[1]) - margin, max(trace[:, 1].max(), phi_closed[1]) + margin))
    phi0, phi1, values = loss_grid(linear_loss, box, jnp.asarray(x), jnp.asarray(y))
    # Levels evenly spaced in the square root of the loss: a quadratic's contours equally spaced.
    levels = np.linspace(np.sqrt(values.min()), np.sqrt(values.max()), 25)[1:] ** 2
    filled = line_surface.contourf(phi0, phi1, values, levels=np.concatenate([[values.min()], levels]),
                                   cmap="viridis")
    figure.colorbar(filled, ax=line_surface, label="L[phi]")
    line_surface.contour(phi0, phi1, values, levels=levels, colors="white", linewidths=0.4)
    line_surface.plot(trace[:, 0], trace[:, 1], ".-", color="tab:red", ms=3, lw=1, markevery=5,
                      label=f"descent, alpha = {linear['gd']['learning_rate']:g}")
    line_surface.plot(*trace[0], "wo", ms=6, mec="black", label="start")
    line_surface.plot(*phi_closed, "w*", ms=14, mec="black", label="normal equations")
    line_surface.set(xlabel="phi_0 (intercept)", ylabel="phi_1 (slope)",
                     title="(a) least-squares loss L[phi] and the descent")

    # (b) The data and the fits at each minimum; the loss surface with every path.
    x, y = np.asarray(gabor_run["x"]), np.asarray(gabor_run["y"])
    grid = np.linspace(-GABOR_X_RANGE, GABOR_X_RANGE, 600)
    gabor_ax.plot(x, y, "o", color="tab:orange", label=f"data (I = {len(x)})")
    best, *local = gabor_run["minima"]
    # The global fit and the three local minima most descents ended in.
    shown = [best] + sorted(local, key=lambda m: -len(m["starts"]))[:3]
    fits = np.asarray(jax.jit(jax.vmap(gabor, (0, None)))(jnp.asarray([m["phi"] for m in shown]), grid))
    for rank, (minimum, fit) in enumerate(zip(shown, fits)):
        phi = minimum["phi"]
        gabor_ax.plot(grid, fit, "-" if rank == 0 else "--",
                      lw=2 if rank == 0 else 1.2,
                      label=f"{'global' if rank == 0 else 'local'} min ({phi[0]:.2f}, {phi[1]:.2f}): "
                            f"L = {minimum['loss']:.2f}, {len(minimum['starts'])} starts")
    gabor_ax.set(xlabel="input x", ylabel="output y", ylim=(-1.0, 1.6),  # room for the legend above the data
                 title="(b) Gabor model: data and the fit at each minimum")

    # GABOR_BOX, widened to show every minimum a descent reached.
    reached = np.asarray([m["phi"] for m in gabor_run["minima"]]).reshape(-1, 2)
    (a0, a1), (b0, b1) = GABOR_BOX
    box = ((min(a0, reached[:, 0].min() - 1.0), max(a1, reached[:, 0].max() + 1.0)),
           (min(b0, reached[:, 1].min() - 1.0), max(b1, reached[:, 1].max() + 1.0)))
    phi0, phi1, values = loss_grid(gabor_loss, box, jnp.asarray(x), jnp.asarray(y))
    filled = gabor_surface.contourf(phi0, phi1, values, levels=30, cmap="viridis")
    gabor_surface.contour(phi0, phi1, values, levels=30, colors="white", linewidths=0.3)
    figure.colorbar(filled, ax=gabor_surface, label="L[phi]")
    colors = {"global": "tab:red", "local": "tab:orange", "flat": "lightgray"}
    labelled = set()
    for trace, kind in zip(gabor_run["paths"], gabor_run["classes"]):
        label = None if kind in labelled else f"{kind} ({gabor_run['num_' + kind]})"
        labelled.add(kind)
        gabor_surface.plot(trace[:, 0], trace[:, 1], "-", color=colors[kind], lw=1.2, label=label)
        gabor_surface.plot(*trace[0], "o", color=colors[kind], ms=3)
        gabor_surface.plot(*trace[-1], "x", color="white", ms=6, mew=1.5)
    gabor_surface.set(xlim=box[0], ylim=box[1], xlabel="phi_0", ylabel="phi_1",
                      title=f"(b) Gabor loss and {len(gabor_run['classes'])} descents (o start, x end), "
                            f"{gabor_run['steps']} steps")
    finish_figure(figure, [line_ax, line_surface, gabor_ax, gabor_surface], path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="draws both data sets")
    parser.add_argument("--num-points", type=int, default=15, help="points for the linear regression")
    parser.add_argument("--steps", type=int, default=300, help="gradient-descent steps for the linear regression")
    parser.add_argument("--learning-rate", type=float, default=0.01, help="the linear regression's step size alpha")
    parser.add_argument("--gabor-points", type=int, default=30)
    parser.add_argument("--gabor-starts", type=int, default=6, help="starts per axis of the grid (its square in all)")
    parser.add_argument("--gabor-steps", type=int, default=10000)
    parser.add_argument("--gabor-learning-rate", type=float, default=0.1)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    require_positive(parser, args, ("num_points", "steps", "gabor_points", "gabor_starts", "gabor_steps"))
    for name in ("learning_rate", "gabor_learning_rate"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.num_points < 2:
        parser.error(f"--num-points must be at least 2 (a line has two parameters), got {args.num_points}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start_time = time.perf_counter()
    line_key, gabor_key = jax.random.split(jax.random.key(args.seed))
    linear = run_linear(line_key, args.num_points, args.learning_rate, args.steps)
    print(f"(a) linear regression, {args.num_points} points ({jax.default_backend()}): normal equations phi = "
          f"{np.round(np.asarray(linear['normal_equations_phi']), 4)}, gradient descent after {args.steps} steps "
          f"{np.round(np.asarray(linear['gd']['final_phi']), 4)} (max |difference| "
          f"{linear['gd_max_abs_difference']:.1e}); hand gradient = jax.grad to "
          f"{linear['hand_vs_autodiff_max_abs_difference']:.1e}")
    gabor_run = run_gabor(gabor_key, args.gabor_points, args.gabor_starts, args.gabor_learning_rate, args.gabor_steps)
    print(f"(b) Gabor model, {len(gabor_run['classes'])} starts x {args.gabor_steps} steps: "
          f"{gabor_run['num_global']} reach the global minimum (L = {gabor_run['best_loss']:.3f} at "
          f"{np.round(gabor_run['best_phi'], 3)}), {gabor_run['num_local']} stop in local minima, "
          f"{gabor_run['num_flat']} on flat ground; {gabor_run['num_distinct_minima']} distinct minima")
    plot(linear, gabor_run, os.path.join(args.out, "linear_regression.png"))
    results = {
        "seed": args.seed,
        "backend": jax.default_backend(),
        "linear": {k: v for k, v in linear.items() if k != "path"},
        "gabor": {k: v for k, v in gabor_run.items() if k != "paths"},
        "seconds": time.perf_counter() - start_time,
    }
    io.atomic_write_json(os.path.join(args.out, "linear_regression.json"), results)
    print(f"done in {results['seconds']:.1f} s; wrote {args.out}/linear_regression.png and linear_regression.json")
    return results


if __name__ == "__main__":
    main()
