"""The course's hill-descent picture, measured: every jdl optimizer on 2-D surfaces and on MNIST-1D.

Part 1 runs each optimizer from a standard start on three 2-D surfaces and draws the
trajectories over contour plots:

* an ill-conditioned quadratic ``f = (x^2 + 50 y^2) / 2`` (condition number 50), from (-4, 1.5);
* the Rosenbrock function ``f = (1 - x)^2 + 100 (y - x^2)^2``, from (-1.2, 1);
* a saddle ``f = x^2 / 2 - y^2 / 2 + y^4 / 4`` (saddle at the origin, minima at (0, +-1)),
  from (-1.5, 1e-3), just off the ridge.

Part 2 trains the MNIST-1D MLP (40-100-100-10) under each optimizer, several seeds at
once with ``vmap``, and plots the training-loss curves.

    python experiments/optimizers.py --out experiments/results

Writes ``OUT/optimizers_surfaces.png``, ``OUT/optimizers_mnist1d.png`` and
``OUT/optimizers.json`` (final losses and distances on the surfaces; final training loss
and test accuracy on MNIST-1D).
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import atomic_save_figure, epochs_for, mnist1d_dataset, train_ensemble
from experiments.mnist1d import make_model
from jdl import io, optim

# Every optimizer, built from its learning rate.
OPTIMIZERS = {
    "sgd": lambda lr: optim.sgd(lr),
    "momentum": lambda lr: optim.sgd(lr, momentum=0.9),
    "nesterov": lambda lr: optim.sgd(lr, momentum=0.9, nesterov=True),
    "adagrad": lambda lr: optim.adagrad(lr),
    "adadelta": lambda lr: optim.adadelta(lr),
    "rmsprop": lambda lr: optim.rmsprop(lr),
    "normalized": lambda lr: optim.normalized_sgd(lr),
    "adam": lambda lr: optim.adam(lr),
    "adamw": lambda lr: optim.adamw(lr, weight_decay=1e-4),
    "nadam": lambda lr: optim.nadam(lr),
}


# ---------------------------------------------------------------------------------------
# Part 1: 2-D surfaces


def quadratic(p):
    x, y = p[0], p[1]
    return 0.5 * (x**2 + 50.0 * y**2)


def rosenbrock(p):
    x, y = p[0], p[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def saddle(p):
    x, y = p[0], p[1]
    return 0.5 * x**2 - 0.5 * y**2 + 0.25 * y**4


# name: (function, start, minima, steps, plot box, learning rate per optimizer). The rates
# were picked per surface from a small sweep; the sign-like rules (RMSProp, normalized
# gradients, AdaDelta) take steps of roughly constant size, so with a constant rate they
# hover around the minimum instead of converging, as the course notes say.
SURFACES = {
    "quadratic": (quadratic, (-4.0, 1.5), [(0.0, 0.0)], 300, ((-4.5, 4.5), (-2.0, 2.0)),
                  {"sgd": 0.035, "momentum": 0.01, "nesterov": 0.01, "adagrad": 1.0, "adadelta": 10.0,
                   "rmsprop": 0.05, "normalized": 0.05, "adam": 0.1, "adamw": 0.1, "nadam": 0.1}),
    "rosenbrock": (rosenbrock, (-1.2, 1.0), [(1.0, 1.0)], 3000, ((-2.0, 2.0), (-1.0, 3.0)),
                   {"sgd": 1e-3, "momentum": 2e-4, "nesterov": 2e-4, "adagrad": 0.5, "adadelta": 1.0,
                    "rmsprop": 3e-3, "normalized": 1e-3, "adam": 0.05, "adamw": 0.05, "nadam": 0.05}),
    "saddle": (saddle, (-1.5, 1e-3), [(0.0, 1.0), (0.0, -1.0)], 300, ((-2.0, 2.0), (-1.6, 1.6)),
               {"sgd": 0.05, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.5, "adadelta": 20.0,
                "rmsprop": 0.02, "normalized": 0.02, "adam": 0.05, "adamw": 0.05, "nadam": 0.05}),
}


def trajectory(optimizer, fn, start, steps: int) -> np.ndarray:
    """Positions ``(steps + 1, 2)`` of ``optimizer`` descending ``fn`` from ``start``, in one scan."""

    @jax.jit
    def run(p0):
        def step(carry, _):
            p, state = carry
            updates, state = optimizer.update(jax.grad(fn)(p), state, p)
            p = optim.apply_updates(p, updates)
            return (p, state), p

        _, path = jax.lax.scan(step, (p0, optimizer.init(p0)), None, length=steps)
        return jnp.concatenate([p0[None], path])

    return np.asarray(run(jnp.asarray(start, jnp.float32)))


def run_surfaces(names) -> dict:
    results = {}
    for surface, (fn, start, minima, steps, _, rates) in SURFACES.items():
        results[surface] = {}
        for name in names:
            path = trajectory(OPTIMIZERS[name](rates[name]), fn, start, steps)
            final = path[-1]
            distance = min(float(np.hypot(*(final - np.asarray(m)))) for m in minima)
            results[surface][name] = {
                "learning_rate": rates[name],
                "steps": steps,
                "final_loss": float(fn(jnp.asarray(final))),
                "final_distance_to_minimum": distance,
                "path": path,
            }
    return results


def plot_surfaces(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(SURFACES), figsize=(6 * len(SURFACES), 5.2))
    colors = plt.get_cmap("tab10")
    for ax, (surface, (fn, start, minima, steps, box, _)) in zip(axes, SURFACES.items()):
        (x0, x1), (y0, y1) = box
        xs, ys = np.meshgrid(np.linspace(x0, x1, 300), np.linspace(y0, y1, 300))
        zs = np.asarray(jax.vmap(jax.vmap(fn))(jnp.stack([xs, ys], -1)))
        levels = np.quantile(zs, np.linspace(0.0, 0.95, 25)) if surface != "saddle" else 25
        ax.contour(xs, ys, zs, levels=levels, cmap="Greys", linewidths=0.6)
        for index, (name, run) in enumerate(results[surface].items()):
            trace = np.clip(run["path"], [x0, y0], [x1, y1])
            ax.plot(trace[:, 0], trace[:, 1], "-", lw=1.3, color=colors(index), label=name)
        ax.plot(*start, "ko", ms=5)
        for m in minima:
            ax.plot(*m, "r*", ms=12)
        ax.set(title=f"{surface} ({steps} steps)", xlim=(x0, x1), ylim=(y0, y1))
    axes[0].legend(fontsize=8, loc="lower right")
    figure.suptitle("Descent trajectories (start: black dot, minima: red stars)")
    atomic_save_figure(path, figure)
    plt.close(figure)


# ---------------------------------------------------------------------------------------
# Part 2: the MNIST-1D MLP

MNIST1D_RATES = {"sgd": 0.1, "momentum": 0.02, "nesterov": 0.02, "adagrad": 0.05, "adadelta": 1.0,
                 "rmsprop": 1e-3, "normalized": 1e-3, "adam": 2e-3, "adamw": 2e-3, "nadam": 2e-3}


def run_mnist1d(names, data, seeds, steps: int, batch_size: int = 100, evals: int = 20) -> dict:
    model = make_model("mlp")
    epochs = epochs_for(steps, data["x_train"].shape[0], batch_size)
    results = {}
    for name in names:
        run = train_ensemble(model, OPTIMIZERS[name](MNIST1D_RATES[name]), data, seeds, epochs, batch_size, evals)
        train_metrics = run.evaluate(run.train_state, (jnp.asarray(data["x_train"]), jnp.asarray(data["y_train"])))
        train_accuracy, train_loss = train_metrics["accuracy"], train_metrics["loss"]
        results[name] = {
            "learning_rate": MNIST1D_RATES[name],
            "final_train_loss": float(np.mean(train_loss)),
            "train_accuracy": float(np.mean(train_accuracy)),
            "test_accuracy": float(np.mean(run.test_accuracy[-1])),
            "test_accuracy_std": float(np.std(run.test_accuracy[-1])),
            "seeds": list(seeds),
            "steps": run.steps[-1],
            "seconds": run.seconds,
            "curve": {"step": run.steps, "train_loss": [float(v.mean()) for v in run.train_loss]},
        }
        print(f"  {name:>10}: test accuracy {results[name]['test_accuracy']:.3f}, "
              f"train loss {results[name]['final_train_loss']:.4f} ({results[name]['seconds']:.1f} s)")
    return results


def plot_mnist1d(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(8, 5))
    for name, run in results.items():
        ax.plot(run["curve"]["step"], run["curve"]["train_loss"],
                label=f"{name} (lr {run['learning_rate']:g}; test {100 * run['test_accuracy']:.1f}%)")
    ax.set(xlabel="step", ylabel="training loss (epoch mean)", yscale="log",
           title="MNIST-1D MLP: training loss under each jdl optimizer")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    atomic_save_figure(path, figure)
    plt.close(figure)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizers", nargs="+", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    parser.add_argument("--seed", type=int, default=0, help="first seed of the MNIST-1D runs")
    parser.add_argument("--num-seeds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3000, help="MNIST-1D training steps")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    if args.num_seeds < 1 or args.steps < 1:
        parser.error("--num-seeds and --steps must be positive")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    print(f"2-D surfaces ({jax.default_backend()}):")
    surfaces = run_surfaces(args.optimizers)
    for surface, runs in surfaces.items():
        print(f"  {surface:>10}: " + ", ".join(f"{n} {r['final_loss']:.2e}" for n, r in runs.items()))
    print(f"MNIST-1D MLP, {args.num_seeds} seeds, {args.steps} steps:")
    data = mnist1d_dataset()
    mnist = run_mnist1d(args.optimizers, data, list(range(args.seed, args.seed + args.num_seeds)), args.steps)
    plot_surfaces(surfaces, os.path.join(args.out, "optimizers_surfaces.png"))
    plot_mnist1d(mnist, os.path.join(args.out, "optimizers_mnist1d.png"))
    summary = {
        "surfaces": {s: {n: {k: v for k, v in r.items() if k != "path"} for n, r in runs.items()}
                     for s, runs in surfaces.items()},
        "mnist1d_mlp": mnist,
        "backend": jax.default_backend(),
    }
    io.atomic_write_json(os.path.join(args.out, "optimizers.json"), summary)
    print(f"done in {time.perf_counter() - start:.1f} s; wrote {args.out}/optimizers_surfaces.png, "
          f"optimizers_mnist1d.png, optimizers.json")
    return summary


if __name__ == "__main__":
    main()
