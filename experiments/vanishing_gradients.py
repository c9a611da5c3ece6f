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

    python experiments/vanishing_gradients.py --out experiments/results

Writes ``OUT/vanishing_gradients.png`` and ``OUT/vanishing_gradients.json``.
"""
from __future__ import annotations

import argparse
import os

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import atomic_save_figure
from jdl import io, nn

CELLS = {
    "elman_rnn": lambda hidden: nn.SimpleRNNCell(hidden),
    "lstm": lambda hidden: nn.LSTMCell(hidden),
    "lstm_forget_bias_1": lambda hidden: nn.LSTMCell(hidden, forget_bias=1.0),
    "lstm_forget_bias_3": lambda hidden: nn.LSTMCell(hidden, forget_bias=3.0),
    "gru": lambda hidden: nn.GRUCell(hidden),
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


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(8, 4.5))
    for name, run in results["cells"].items():
        norms = np.asarray(run["gradient_norm"])
        distance = np.arange(len(norms))[::-1]  # steps back from the last one
        ax.semilogy(distance, np.maximum(norms, 1e-30), label=name)
    ax.set(xlabel="steps back from the last time step (T - t)", ylabel="||dL/dx_t|| (batch mean)",
           title=f"Gradient reaching each input, L = sum(h_T), T = {results['length']}")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    atomic_save_figure(path, figure)
    plt.close(figure)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed; results average over --num-seeds")
    parser.add_argument("--num-seeds", type=int, default=3)
    parser.add_argument("--length", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    if min(args.num_seeds, args.length, args.hidden, args.batch, args.features) < 1:
        parser.error("--num-seeds, --length, --hidden, --batch and --features must be positive")
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
    io.atomic_write_json(os.path.join(args.out, "vanishing_gradients.json"), results)
    plot(results, os.path.join(args.out, "vanishing_gradients.png"))
    print(f"wrote {args.out}/vanishing_gradients.png and vanishing_gradients.json")
    return results


if __name__ == "__main__":
    main()
