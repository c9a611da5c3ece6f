"""The perceptron, the delta rule and XOR: what one linear unit can learn, and the hidden layer that fixes it.

Seeds 000 and 002 open the course with these; the rules are :mod:`jdl.linear_units`:

* **Separable data**: 2-D points labelled by a line ``w* . x + b* = 0``, those within a
  margin ``gamma_0`` of it removed. Rosenblatt's perceptron (``w <- w + eta (t - y) x``,
  online, shuffled each epoch) stops making mistakes after finitely many, at most
  Novikoff's ``(R / gamma)^2``; the delta rule (a linear unit on ``1/2 sum (t - y)^2``,
  batch) and logistic regression (batch) draw their own lines through the same data.
* **XOR**: no line separates ``{(0,1), (1,0)}`` from ``{(0,0), (1,1)}``. The perceptron keeps
  making mistakes every epoch; the best linear unit by least squares is the constant
  ``w = 0``, ``b = 1/2`` with ``J = 1/4`` (seed 002).
* **A hidden layer**: seed 002's ``f = w^T max(0, W^T x + c) + b`` with ``W = [[1, 1], [1, 1]]``,
  ``c = (0, -1)``, ``w = (1, -2)``, ``b = 0`` computes XOR exactly; trained from random
  initialisations (``jdl.nn`` + ``jdl.optim``, squared error, gradient descent), two hidden
  ReLUs solve it only from some starts, more hidden units from (almost) all.

Several seeds run at once with ``jax.vmap`` (the data, the visiting order, the initialisation).

    python experiments/perceptron.py --out docs/results

Writes ``OUT/perceptron.json`` and ``OUT/perceptron.png``.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import finish_figure, require_positive
from jdl import io, linear_units as lu, nn, optim

SEPARATOR = {"w": jnp.array([1.0, -1.5]), "b": jnp.array(0.25)}
XOR_X = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_T = jnp.array([0.0, 1.0, 1.0, 0.0])


def separable_data(key: jax.Array, num_points: int, margin: float) -> tuple[jax.Array, jax.Array]:
    """``num_points`` uniform points in ``[-2, 2]^2`` at least ``margin`` from SEPARATOR's line, labelled by it.

    Drawn as 8x as many candidates, of which the first ``num_points`` outside the margin are
    kept (a fixed shape, so it jits and vmaps; the margin takes out well under 1/8 of them).
    """
    candidates = jax.random.uniform(key, (8 * num_points, 2), minval=-2.0, maxval=2.0)
    norm = jnp.sqrt(jnp.sum(SEPARATOR["w"] ** 2) + SEPARATOR["b"] ** 2)
    distance = jnp.abs(lu.net_input(SEPARATOR, candidates)) / norm
    order = jnp.argsort(distance <= margin, stable=True)  # the points outside the margin first, in draw order
    x = candidates[order[:num_points]]
    return x, (lu.net_input(SEPARATOR, x) > 0).astype(jnp.float32)


def run_linear_units(seed_keys: jax.Array, num_points: int, margin: float, epochs: int, learning_rate: float) -> dict:
    """Every rule on every seed's separable data, and the perceptron on XOR, all vmapped over seeds."""
    def one_seed(key):
        data_key, order_key = jax.random.split(key)
        x, t = separable_data(data_key, num_points, margin)
        perceptron, perceptron_history = lu.fit(lu.perceptron, lu.init(2), x, t, learning_rate=learning_rate,
                                                epochs=epochs, key=order_key)
        delta, delta_history = lu.fit(lu.delta_rule, lu.init(2), x, t, learning_rate=0.002, epochs=epochs,
                                      online=False)
        logistic, logistic_history = lu.fit(lu.logistic_regression, lu.init(2), x, t, learning_rate=0.05,
                                            epochs=epochs, online=False)
        _, xor_history = lu.fit(lu.perceptron, lu.init(2), XOR_X, XOR_T, learning_rate=learning_rate, epochs=epochs,
                                key=order_key)
        return {"x": x, "t": t, "bound": lu.novikoff_bound(x, t, SEPARATOR),
                "perceptron": perceptron, "perceptron_mistakes": perceptron_history.mistakes,
                "delta": delta, "delta_mistakes": delta_history.mistakes, "delta_loss": delta_history.loss,
                "logistic": logistic, "logistic_mistakes": logistic_history.mistakes,
                "xor_mistakes": xor_history.mistakes}

    return jax.jit(jax.vmap(one_seed))(seed_keys)


def xor_network(hidden: int) -> nn.Sequential:
    """Seed 002's two-layer network ``f = w^T max(0, W^T x + c) + b``, ``hidden`` units wide."""
    return nn.Sequential([nn.Dense(hidden), nn.ReLU(), nn.Dense(1)])


def seed_002_solution() -> dict:
    """The weights that compute XOR exactly (Goodfellow et al., section 6.1, quoted by seed 002)."""
    return {"dense_0": {"w": jnp.ones((2, 2)), "b": jnp.array([0.0, -1.0])}, "relu_1": {},
            "dense_2": {"w": jnp.array([[1.0], [-2.0]]), "b": jnp.zeros(1)}}


def train_xor(hidden: int, seed_keys: jax.Array, steps: int, learning_rate: float) -> dict:
    """Gradient descent on ``J = 1/4 sum (t - f)^2`` from each seed's initialisation; final outputs and J."""
    model = xor_network(hidden)
    optimizer = optim.sgd(learning_rate)
    state = {name: {} for name, _ in model.layers}

    def loss(params):
        return jnp.mean((model.apply(params, state, XOR_X)[0][:, 0] - XOR_T) ** 2)

    def one_seed(key):
        params, _ = model.init(key, XOR_X)
        opt_state = optimizer.init(params)

        def step(carry, _):
            params, opt_state = carry
            value, grads = jax.value_and_grad(loss)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optim.apply_updates(params, updates), opt_state), value

        (params, _), losses = jax.lax.scan(step, (params, opt_state), length=steps)
        return model.apply(params, state, XOR_X)[0][:, 0], losses

    outputs, losses = jax.jit(jax.vmap(one_seed))(seed_keys)
    solved = np.all((np.asarray(outputs) > 0.5) == (np.asarray(XOR_T) > 0.5), axis=1)
    return {"outputs": np.asarray(outputs), "loss": np.asarray(losses), "solved": solved}


def _boundary(axes, params, label: str, style: str, lim: float = 2.0, level: float = 0.0) -> None:
    """The line ``w . x + b = level`` across the plot."""
    w, b = np.asarray(params["w"]), float(params["b"])
    xs = np.linspace(-lim, lim, 2)
    if abs(w[1]) > 1e-9:
        axes.plot(xs, (level - b - w[0] * xs) / w[1], style, label=label)


def plot(results: dict, linear: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 10))
    data, boundaries, curves, xor_axes = axes.ravel()
    x, t = np.asarray(linear["x"][0]), np.asarray(linear["t"][0])
    data.scatter(*x[t == 1].T, marker="o", s=14, label="t = 1")
    data.scatter(*x[t == 0].T, marker="x", s=14, label="t = 0")
    first = lambda tree: jax.tree.map(lambda v: v[0], tree)  # noqa: E731  (seed 0)
    _boundary(data, SEPARATOR, "true line w* . x + b* = 0", "k:")
    _boundary(data, first(linear["perceptron"]), "perceptron", "C2-")
    _boundary(data, first(linear["delta"]), "delta rule (y = 1/2)", "C3--", level=0.5)
    _boundary(data, first(linear["logistic"]), "logistic regression (p = 1/2)", "C4-.")
    data.set(xlim=(-2, 2), ylim=(-2, 2), title="Separable data (seed 0): the lines each rule learns",
             xlabel="x_1", ylabel="x_2")

    epochs = np.arange(1, results["epochs"] + 1)
    for key, label in [("perceptron_mistakes", "perceptron, separable"), ("xor_mistakes", "perceptron, XOR"),
                       ("delta_mistakes", "delta rule, separable")]:
        values = np.asarray(linear[key], np.float64)
        boundaries.plot(epochs, values.mean(axis=0), label=label)
    boundaries.axhline(np.mean(results["separable"]["novikoff_bound"]), color="k", ls=":",
                       label="Novikoff (R/gamma)^2 (mean over seeds; a bound on the total)")
    boundaries.set_yscale("symlog", linthresh=1.0)  # linear near 0, where the perceptron ends
    boundaries.set(xscale="log", ylim=(0, None), xlabel="epoch", ylabel="mistakes in the epoch (mean over seeds)",
                   title="Mistakes per epoch")

    for name, run in results["xor_training"].items():
        loss = np.asarray(run["loss_curve"])
        curves.plot(1 + run["loss_every"] * np.arange(loss.shape[1]), np.median(loss, axis=0),
                    label=f"{name}: solved {run['solved']}/{run['seeds']} (median J)")
    curves.axhline(0.25, color="k", ls=":", label="best linear unit: J = 1/4")
    curves.set(xscale="log", yscale="log", xlabel="gradient descent step", ylabel="J = 1/4 sum (t - f)^2",
               title="XOR with a hidden ReLU layer, trained")

    grid = np.linspace(-0.5, 1.5, 201, dtype=np.float32)
    mesh = np.stack(np.meshgrid(grid, grid), axis=-1).reshape(-1, 2)
    model = xor_network(2)
    f = np.asarray(model.apply(seed_002_solution(), {"dense_0": {}, "relu_1": {}, "dense_2": {}},
                               jnp.asarray(mesh))[0]).reshape(201, 201)
    shading = xor_axes.contourf(grid, grid, f, levels=np.linspace(f.min(), f.max(), 21), cmap="coolwarm", alpha=0.6)
    xor_axes.contour(grid, grid, f, levels=[0.5], colors="k")
    figure.colorbar(shading, ax=xor_axes, label="f(x) of seed 002's network")
    xor_x, xor_t = np.asarray(XOR_X), np.asarray(XOR_T)
    xor_axes.scatter(*xor_x[xor_t == 1].T, marker="o", s=80, c="w", edgecolors="k", label="XOR = 1")
    xor_axes.scatter(*xor_x[xor_t == 0].T, marker="x", s=80, c="k", label="XOR = 0")
    xor_axes.plot([], [], "k-", label="f = 1/2 (the least-squares line is f = 1/2 everywhere)")
    xor_axes.set(xlabel="x_1", ylabel="x_2", title="f = w^T max(0, W^T x + c) + b computes XOR exactly")
    finish_figure(figure, [data, boundaries, curves, xor_axes], path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--num-seeds", type=int, default=10)
    parser.add_argument("--points", type=int, default=100, help="separable data points per seed")
    parser.add_argument("--margin", type=float, default=0.1, help="gamma_0: no point closer to the true line")
    parser.add_argument("--epochs", type=int, default=100, help="epochs of every linear rule")
    parser.add_argument("--xor-steps", type=int, default=2000, help="gradient descent steps of the XOR networks")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    require_positive(parser, args, ("num_seeds", "points", "epochs", "xor_steps"))
    if not args.margin > 0:
        parser.error(f"--margin must be positive, got {args.margin}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    seed_keys = jnp.stack([jax.random.key(s) for s in seeds])
    linear = run_linear_units(seed_keys, args.points, args.margin, args.epochs, 1.0)
    mistakes = np.asarray(linear["perceptron_mistakes"])
    total = mistakes.sum(axis=1)
    clean = mistakes == 0
    converged_at = [int(np.argmax(row)) + 1 if row.any() else None for row in clean]  # first mistake-free epoch
    bound = np.asarray(linear["bound"])
    results = {
        "seeds": seeds, "epochs": args.epochs, "points": args.points, "margin": args.margin,
        "backend": jax.default_backend(),
        "separable": {
            "perceptron_total_mistakes": total.tolist(), "novikoff_bound": bound.tolist(),
            "within_bound": bool(np.all(total <= bound)), "first_mistake_free_epoch": converged_at,
            "delta_rule_final_mistakes": np.asarray(linear["delta_mistakes"])[:, -1].tolist(),
            "logistic_final_mistakes": np.asarray(linear["logistic_mistakes"])[:, -1].tolist(),
        },
        "xor": {"perceptron_min_mistakes_per_epoch": np.asarray(linear["xor_mistakes"]).min(axis=1).tolist()},
    }
    print(f"perceptron on separable data: total mistakes {total.tolist()}, Novikoff bounds "
          f"{np.round(bound, 1).tolist()}; mistake-free from epoch {converged_at}")
    print(f"perceptron on XOR: fewest mistakes in any epoch per seed {results['xor']['perceptron_min_mistakes_per_epoch']}")

    params, mse = lu.least_squares(XOR_X, XOR_T)
    constructed = xor_network(2).apply(seed_002_solution(), {"dense_0": {}, "relu_1": {}, "dense_2": {}}, XOR_X)[0]
    results["xor"].update({"least_squares": {"w": np.asarray(params["w"]).round(6).tolist(),
                                             "b": round(float(params["b"]), 6), "J": round(float(mse), 6)},
                           "seed_002_network_outputs": np.asarray(constructed[:, 0]).tolist()})
    print(f"XOR by least squares: w = {results['xor']['least_squares']['w']}, b = {results['xor']['least_squares']['b']},"
          f" J = {results['xor']['least_squares']['J']}; seed 002's network gives {results['xor']['seed_002_network_outputs']}")

    results["xor_training"] = {}
    for hidden in (2, 8):
        run = train_xor(hidden, seed_keys, args.xor_steps, 0.1)
        every = max(1, args.xor_steps // 200)
        results["xor_training"][f"{hidden} hidden ReLUs"] = {
            "solved": int(run["solved"].sum()), "seeds": len(seeds), "final_J": run["loss"][:, -1].tolist(),
            "loss_every": every, "loss_curve": run["loss"][:, ::every].tolist()}
        print(f"XOR, {hidden} hidden ReLUs trained by gradient descent: solved from {int(run['solved'].sum())}"
              f"/{len(seeds)} initialisations")
    results["seconds"] = round(time.perf_counter() - start, 1)
    io.atomic_write_json(os.path.join(args.out, "perceptron.json"), results)
    plot(results, linear, os.path.join(args.out, "perceptron.png"))
    print(f"wrote {args.out}/perceptron.png and perceptron.json ({results['seconds']} s)")
    return results


if __name__ == "__main__":
    main()
