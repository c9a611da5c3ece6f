"""The course's vanishing-gradient argument, measured: how much the last step hears from each earlier one.

For an Elman RNN, an LSTM and a GRU (jdl layers, default initialisation, hidden 64) run
over random sequences of length T, take the loss ``L = sum(h_T)`` (the final hidden
state) and measure ``||dL/dx_t||`` for every time step ``t``, averaged over a batch and
several seeds. Backpropagation through time multiplies one Jacobian per step, so the norm
decays geometrically as ``t`` moves away from ``T`` unless a step's Jacobian stays near
the identity. At initialisation every gate sits near 1/2, so the LSTM's cell path
(``dc_t/dc_{t-1} = f``) and the GRU's interpolation (``dh_t/dh_{t-1} ~ z``) shrink the
gradient about as fast as the Elman RNN's ``tanh'`` does; the LSTM keeps it only as far
as its forget gate is open, which the ``forget_bias`` variants show (``sigmoid(3) = 0.95``).

The same argument through depth instead of time: a stack of ``L`` layers
``h_k = a(f_k)``, ``f_k = h_{k-1} W_k + b_k`` (``Dense`` + activation, width 64) with the
loss ``L = s . h_L`` for fixed random signs ``s_j = +-1``. Backpropagation gives

    dL/dh_{k-1} = (dL/dh_k * a'(f_k)) W_k^T,  so  ||dL/dh_{k-1}|| <= max a' * ||W_k||_2 * ||dL/dh_k||,

one factor ``a'(f_k) W_k`` per layer. The sigmoid's derivative is at most ``1/4`` (at 0),
so with the default (LeCun normal, ``||W_k||_2 ~ 2``) weights each layer shrinks the
gradient by about ``sigma'(f) ~ 0.2`` and the first layer hears ``0.2^(L-1)`` of the last.
ReLU passes half the units with derivative 1, so He's ``Var(W) = 2 / fan_in`` keeps the
expected squared norm constant from layer to layer, where the default ``1 / fan_in`` halves
it. Measured: ``||dL/dh_k||`` for every layer ``k``, averaged over a batch and the seeds;
each layer's shrink factor ``||dL/dh_{k-1}|| / ||dL/dh_k||`` against the bound
``max a' ||W_k||_2``; and ``||dL/dW_k||``.

    python experiments/vanishing_gradients.py --out experiments/results

Writes ``OUT/vanishing_gradients.png`` and ``OUT/vanishing_gradients.json``.
"""
from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import finish_figure, plot_mean_and_spread, require_positive
from jdl import init, io, nn

CELLS = {
    "elman_rnn": lambda hidden: nn.SimpleRNNCell(hidden),
    "lstm": lambda hidden: nn.LSTMCell(hidden),
    "lstm_forget_bias_1": lambda hidden: nn.LSTMCell(hidden, forget_bias=1.0),
    "lstm_forget_bias_3": lambda hidden: nn.LSTMCell(hidden, forget_bias=3.0),
    "gru": lambda hidden: nn.GRUCell(hidden),
}


# Deep MLPs: (activation layer, kernel initialiser or None for Dense's default, max of a', legend).
STACKS = {
    "sigmoid": (nn.Sigmoid, None, 0.25, "sigmoid, default init"),
    "relu": (nn.ReLU, None, 1.0, "ReLU, default init"),
    "relu_he": (nn.ReLU, init.he_normal(), 1.0, "ReLU, He init"),
}


def gradient_norms(cell_name: str, seed: int, length: int, hidden: int, batch: int, features: int) -> np.ndarray:
    """``||dL/dx_t||`` for ``t = 0 .. length-1``, averaged over the batch; ``L = sum(h_T)``."""
    layer = nn.RNN(CELLS[cell_name](hidden))
    params_key, data_key = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(data_key, (batch, length, features))
    params, state = layer.init(params_key, x)

    def loss(inputs):
        (outputs, _), _ = layer.apply(params, state, inputs)
        return jnp.sum(outputs[:, -1])

    grads = jax.jit(jax.grad(loss))(x)  # (batch, time, features)
    return np.asarray(jnp.linalg.norm(grads, axis=-1).mean(axis=0))


def make_stack(stack_name: str, depth: int, width: int) -> nn.Sequential:
    """``depth`` blocks of ``Dense(width)`` and the stack's activation: ``dense_0, sigmoid_1, dense_2, ...``."""
    activation, kernel_init, _, _ = STACKS[stack_name]
    dense = (lambda: nn.Dense(width)) if kernel_init is None else (lambda: nn.Dense(width, kernel_init=kernel_init))
    return nn.Sequential([layer for _ in range(depth) for layer in (dense(), activation())])


def mlp_gradients(stack_name: str, seeds: list[int], depth: int, width: int, batch: int) -> dict:
    """Each seed's stack on a batch of ``N(0, 1)`` inputs, all seeds at once (``vmap``, one compile).

    Returns, with the seeds on axis 0: ``"h"``, ``||dL/dh_k||`` per layer and example
    ``(seeds, depth, batch)``; per layer ``"w"`` ``||dL/dW_k||``, ``"spectral"`` ``||W_k||_2``
    and ``"derivative"`` the mean ``a'(f_k)``. The loss is ``L = s . h_L`` with fixed random
    signs ``s_j = +-1`` (so ``||dL/dh_L|| = sqrt(width)``) and summed over the batch.
    ``dL/dh_k`` is the gradient with respect to a zero added to ``h_k``: the forward pass runs
    the ``Sequential``'s children one at a time so that each output can take its perturbation.
    """
    model = make_stack(stack_name, depth, width)
    children = model.layers  # (name, layer) pairs: Dense and activation in turn
    dense_names = [children[2 * k][0] for k in range(depth)]
    activation = children[1][1]

    def draw(seed):
        params_key, data_key, sign_key = jax.random.split(jax.random.key(seed), 3)
        params, state = model.init(params_key, jnp.zeros((batch, width)))
        # Random signs, not sum(h_L): with every unit's gradient of one sign, the units a ReLU lets
        # through (those whose weight column points along its non-negative input) add up instead
        # of cancelling, and ReLU-He's gradient grows by about 5% a layer (x2.9 over 20 layers).
        x = jax.random.normal(data_key, (batch, width))
        return params, state, x, jnp.sign(jax.random.normal(sign_key, (width,)))

    def measure(params, state, x, signs):
        def loss(params, perturbations):
            h, pre_activations = x, []
            for k in range(depth):
                (dense_name, dense), (activation_name, layer) = children[2 * k], children[2 * k + 1]
                f, _ = dense.apply(params[dense_name], state[dense_name], h)
                h, _ = layer.apply(params[activation_name], state[activation_name], f)
                h = h + perturbations[k]
                pre_activations.append(f)
            return jnp.sum(h * signs), jnp.stack(pre_activations)

        (param_grads, h_grads), f = jax.grad(loss, argnums=(0, 1), has_aux=True)(
            params, jnp.zeros((depth, batch, width)))
        # a'(f), by autodiff of the activation layer itself (elementwise: a vjp with ones).
        derivative = jax.vjp(lambda z: activation.apply({}, {}, z)[0], f)[1](jnp.ones_like(f))[0]
        return {
            "h": jnp.linalg.norm(h_grads, axis=-1),
            "w": jnp.stack([jnp.linalg.norm(param_grads[name]["w"]) for name in dense_names]),
            # One batched SVD for all layers (one per layer would compile one per layer).
            "spectral": jnp.linalg.svd(jnp.stack([params[name]["w"] for name in dense_names]), compute_uv=False)[:, 0],
            "derivative": derivative.mean(axis=(1, 2)),
        }

    # Drawn one seed at a time outside jit (the initialisers' programs are compiled once per shape
    # and reused: inside one jit, 20 layers' draws cost seconds of compilation), then stacked.
    draws = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[draw(seed) for seed in seeds])
    return {name: np.asarray(value) for name, value in jax.jit(jax.vmap(measure))(*draws).items()}


def run_mlp(stack_name: str, seeds: list[int], depth: int, width: int, batch: int) -> dict:
    """``mlp_gradients`` over the seeds, with each layer's shrink factor against its bound ``max a' ||W_k||_2``."""
    runs = mlp_gradients(stack_name, seeds, depth, width, batch)
    max_derivative = STACKS[stack_name][2]
    h = runs["h"]  # (seeds, depth, batch)
    factors = h[:, :-1] / h[:, 1:]  # ||dL/dh_{k-1}|| / ||dL/dh_k|| through layer k = 2 .. depth (1-based)
    bounds = max_derivative * runs["spectral"][:, 1:]  # layer k's W_k
    per_seed = h.mean(axis=2)  # (seeds, depth)
    norms = per_seed.mean(axis=0)
    weight_norms = runs["w"].mean(axis=0)
    return {
        "gradient_norm": [float(v) for v in norms],
        "gradient_norm_per_seed": per_seed.tolist(),
        "first_over_last": float(norms[0] / norms[-1]),
        "weight_gradient_norm": [float(v) for v in weight_norms],
        "weight_first_over_last": float(weight_norms[0] / weight_norms[-1]),
        "shrink_factor": [float(v) for v in factors.mean(axis=(0, 2))],
        "shrink_factor_geometric_mean": float(np.exp(np.log(factors).mean())),
        "bound": [float(v) for v in bounds.mean(axis=0)],
        "bound_geometric_mean": float(np.exp(np.log(bounds).mean())),
        "max_factor_over_bound": float((factors / bounds[:, :, None]).max()),
        "max_activation_derivative": max_derivative,
        "mean_activation_derivative": [float(v) for v in runs["derivative"].mean(axis=0)],
    }


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (ax, mlp_ax) = plt.subplots(1, 2, figsize=(15, 4.8))
    for name, run in results["cells"].items():
        norms = np.asarray(run["gradient_norm"])
        distance = np.arange(len(norms))[::-1]  # steps back from the last one
        ax.semilogy(distance, np.maximum(norms, 1e-30), label=name)
    ax.set(xlabel="steps back from the last time step (T - t)", ylabel="||dL/dx_t|| (batch mean)",
           title=f"RNNs: gradient reaching each input, L = sum(h_T), T = {results['length']}")
    ax.grid(alpha=0.3, which="both")

    mlp = results["mlp"]
    layers = np.arange(1, mlp["depth"] + 1)
    for name, run in mlp["stacks"].items():
        # Spread over the seeds of log10 of each seed's batch mean.
        plot_mean_and_spread(mlp_ax, layers, np.log10(np.asarray(run["gradient_norm_per_seed"]).T),
                             f"{STACKS[name][3]} (first / last {run['first_over_last']:.1e})")
    sigmoid = mlp["stacks"]["sigmoid"]
    # The bound carried down from the last layer: ||dL/dh_k|| <= ||dL/dh_L|| prod_{j > k} ||W_j||_2 / 4.
    bound = sigmoid["gradient_norm"][-1] * np.concatenate([np.cumprod(sigmoid["bound"][::-1])[::-1], [1.0]])
    mlp_ax.plot(layers, np.log10(bound), "k:", label="sigmoid bound: prod of ||W_j||_2 / 4")
    mlp_ax.set(xlabel="layer k", ylabel="log10 ||dL/dh_k|| (batch mean; +- std over seeds)",
               title=f"MLPs: {mlp['depth']} layers of width {mlp['width']}, L = s . h_L (s_j = +-1)")
    finish_figure(figure, [ax, mlp_ax], path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed; results average over --num-seeds")
    parser.add_argument("--num-seeds", type=int, default=3)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--depth", type=int, default=20, help="layers of the MLPs")
    parser.add_argument("--width", type=int, default=64, help="units per layer of the MLPs")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    require_positive(parser, args, ("num_seeds", "length", "hidden", "batch", "features", "width"))
    if args.depth < 2:
        parser.error(f"--depth must be at least 2 (a shrink factor needs two layers), got {args.depth}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    results = {"length": args.length, "hidden": args.hidden, "seeds": list(range(args.seed, args.seed + args.num_seeds)),
               "backend": jax.default_backend(), "cells": {}}
    for name in CELLS:
        norms = np.mean([gradient_norms(name, s, args.length, args.hidden, args.batch, args.features)
                         for s in results["seeds"]], axis=0)
        ratio = float(norms[0] / norms[-1])  # first step's gradient relative to the last step's
        results["cells"][name] = {"gradient_norm": [float(v) for v in norms], "first_over_last": ratio}
        print(f"{name:>10}: ||dL/dx_0|| / ||dL/dx_T-1|| = {ratio:.3e}")
    results["mlp"] = {"depth": args.depth, "width": args.width, "batch": args.batch,
                      "loss": "s . h_L, fixed random signs s_j = +-1", "stacks": {}}
    for name in STACKS:
        run = run_mlp(name, results["seeds"], args.depth, args.width, args.batch)
        results["mlp"]["stacks"][name] = run
        print(f"{name:>10}: ||dL/dh_1|| / ||dL/dh_L|| = {run['first_over_last']:.3e}; per layer x"
              f"{run['shrink_factor_geometric_mean']:.3f} (bound max a' ||W||_2 = {run['bound_geometric_mean']:.3f}, "
              f"max measured / bound {run['max_factor_over_bound']:.2f})")
    io.atomic_write_json(os.path.join(args.out, "vanishing_gradients.json"), results)
    plot(results, os.path.join(args.out, "vanishing_gradients.png"))
    print(f"wrote {args.out}/vanishing_gradients.png and vanishing_gradients.json")
    return results


if __name__ == "__main__":
    main()
