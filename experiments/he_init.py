"""UDL figure 7.4, measured: how the weights' variance sets the variance of a deep ReLU network, forward and backward.

The network (Prince, *Understanding Deep Learning*, figure 7.4): ``K`` hidden layers (50)
of ``D_h`` ReLU units (100) on a ``D_h``-dimensional input ``x ~ N(0, I)``, one output,
target ``y = 0`` and the least-squares loss ``l = (f_out - y)^2``::

    f_1 = Omega_1 x,    f_k = Omega_k ReLU(f_{k-1})  (k = 2 .. K),    f_out = Omega_out ReLU(f_K)

with every bias zero and every weight drawn from ``N(0, sigma^2)``, for the five variances
``sigma^2 in {0.001, 0.01, 0.02, 0.1, 1.0}`` (``0.02 = 2 / D_h`` is He's). At every layer
it measures the variance of the pre-activations ``f_k`` and of the gradients ``dl/df_k``,
over a batch of inputs and all units, averaged over seeds.

The course's argument: with ``f_k`` symmetric about 0, ``E[ReLU(f)^2] = Var(f) / 2``, so

    Var(f_{k+1}) = D_h sigma^2 Var(f_k) / 2,

and backpropagation, ``dl/df_k = ReLU'(f_k) * Omega_{k+1}^T dl/df_{k+1}`` (a sum over the
``D_h`` units of the next layer, half of them switched off), gives the same factor
``D_h sigma^2 / 2`` per layer going back. He's ``sigma^2 = 2 / D_h`` makes it 1; the others
multiply the variance by 0.05, 0.5, 5 and 50 per layer, so over 49 layers by 1e-64 ..
1e83 (forward) and, since ``dl/df_out = 2 f_out`` carries the forward scale into the
backward pass, the gradient at layer 1 ranges over about 1e-134 .. 1e169. Float32 holds
1e-45 .. 3e38, so the experiment computes in float64 (inside ``jax.enable_x64``, for this
experiment only): every number in the figure is then a real one, not an overflow to
``inf`` or an underflow to 0.

The pre-activations' gradients come from ``jax.grad`` by the probe trick: a zero array
``p_k`` is added to each ``f_k``, and ``dl/dp_k = dl/df_k``. The loss is summed over the
batch, ``L = sum_i l_i``, so that ``dL/dp_k`` holds each example's own ``dl_i/df_k``.

What it shows (default: 5 seeds, 1000 inputs; 11 s on 2 CPU cores): per layer, the variance
grows by 0.0495, 0.495, 0.989, 4.95 and 49.5 forward (theory 0.05, 0.5, 1, 5, 50) and by
0.0488, 0.488, 0.976, 4.88 and 48.8 going back. He's keeps Var(f_k) between 1.14 and 3.23
(2.02 at layer 1, 1.18 at layer 50) and Var(dl/df_k) between 0.0014 and 0.0061 (0.0018 at
layer 1, 0.0061 at layer 50): within a factor of 3 or 4 over 50 layers; the
others end at 1e-65, 1e-15, 1e35 and 1e85 forward, and the gradient at layer 1 at 7e-135,
7e-34, 7e67 and 7e168. The five variances share each seed's draws (``N(0, sigma^2)`` is
``sigma`` times one standard normal, and a bias-free ReLU network is positively
homogeneous), so their curves differ exactly in slope, and the measured factor is the same
fraction of the course's for all five: 0.99 forward and 0.98 backward, short of 1 by about
1 / D_h per layer, the order of the fluctuations a finite width of 100 units leaves.

    python experiments/he_init.py --out experiments/results
    python experiments/he_init.py --layers 10 --batch 256 --num-seeds 1 --out /tmp/he

Writes ``OUT/he_init.json`` and ``OUT/he_init.png``.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import finish_figure, require_positive, write_results
from jdl import activations, init, nn

VARIANCES = (0.001, 0.01, 0.02, 0.1, 1.0)  # UDL figure 7.4's sigma^2; 0.02 = 2 / D_h for D_h = 100


def network(variance: float, key, layers: int, hidden: int, batch: int):
    """One network of ``sigma^2 = variance`` and one batch of inputs, both drawn from ``key``, in float64.

    ``(hidden_params, output_params, x)``: the hidden layers' ``nn.Dense`` params stacked on a
    leading axis (input and hidden layers are all ``D_h -> D_h``, as ``D_in = D_h``), the
    output layer's params and ``x ~ N(0, I)`` of shape ``(batch, hidden)``. Called inside
    ``jax.enable_x64``.
    """
    weights = init.normal(math.sqrt(variance))  # jdl.init.normal takes a standard deviation
    dense = nn.Dense(hidden, kernel_init=weights, param_dtype=jnp.float64)
    output = nn.Dense(1, kernel_init=weights, param_dtype=jnp.float64)
    layers_key, output_key, x_key = jax.random.split(key, 3)
    x = jax.random.normal(x_key, (batch, hidden), jnp.float64)
    hidden_params, _ = jax.vmap(lambda k: dense.init(k, x))(jax.random.split(layers_key, layers))
    output_params, _ = output.init(output_key, x)
    return hidden_params, output_params, x


def forward_and_backward(hidden_params, output_params, x):
    """``(Var(f_k), Var(dl/df_k))`` for ``k = 1 .. K``, over the batch and the units.

    The hidden layers run with ``lax.scan`` over their stacked params, so K layers trace (and
    compile) as one. The loss is ``sum_i (f_out_i - 0)^2``, and a zero probe added to each
    ``f_k`` makes ``jax.grad`` return ``dl/df_k`` for every example.
    """
    layers, hidden = hidden_params["w"].shape[0], hidden_params["w"].shape[-1]
    dense, output = nn.Dense(hidden), nn.Dense(1)  # only their apply is used: the params are given

    def loss(probes):
        def layer(h, params_and_probe):
            params, probe = params_and_probe
            f, _ = dense.apply(params, {}, h)
            f = f + probe  # zero: only there so that jax.grad hands back dl/df_k
            return activations.relu(f), f

        h, pre_activations = jax.lax.scan(layer, x, (hidden_params, probes))
        f_out, _ = output.apply(output_params, {}, h)
        return jnp.sum((f_out - 0.0) ** 2), pre_activations  # least squares, y = 0, summed over the batch

    grads, pre_activations = jax.grad(loss, has_aux=True)(jnp.zeros((layers,) + x.shape, x.dtype))
    return jnp.var(pre_activations, axis=(1, 2)), jnp.var(grads, axis=(1, 2))


# One compilation for every variance (and every call of main with the same sizes): the
# networks are drawn outside it and passed in, the seeds stacked on axis 0.
_forward_and_backward = jax.jit(jax.vmap(forward_and_backward))


def run_setting(variance: float, seeds: list[int], layers: int, hidden: int, batch: int) -> dict:
    """All seeds of one ``sigma^2`` at once (vmap over their keys); float64 inside."""
    with jax.enable_x64(True):
        keys = jnp.stack([jax.random.key(s) for s in seeds])
        networks = jax.vmap(lambda key: network(variance, key, layers, hidden, batch))(keys)
        forward, backward = _forward_and_backward(*networks)
        forward, backward = np.asarray(forward, np.float64), np.asarray(backward, np.float64)  # (seeds, layers)
    mean_forward, mean_backward = forward.mean(axis=0), backward.mean(axis=0)
    steps = layers - 1
    return {
        "sigma2": variance,
        "he": math.isclose(variance, 2.0 / hidden),
        # The course's factor per layer, forward and backward alike.
        "theory_factor_per_layer": hidden * variance / 2.0,
        "forward_variance": mean_forward,
        "backward_variance": mean_backward,
        "forward_variance_min": forward.min(axis=0),  # over seeds: the band in the figure
        "forward_variance_max": forward.max(axis=0),
        "backward_variance_min": backward.min(axis=0),
        "backward_variance_max": backward.max(axis=0),
        "forward_first": float(mean_forward[0]),
        "forward_last": float(mean_forward[-1]),
        "backward_first": float(mean_backward[0]),
        "backward_last": float(mean_backward[-1]),
        # Measured per-layer growth from the end points: forward from layer 1 to K, backward from K to 1.
        "forward_factor_per_layer": float((mean_forward[-1] / mean_forward[0]) ** (1 / steps)) if steps else None,
        "backward_factor_per_layer": float((mean_backward[0] / mean_backward[-1]) ** (1 / steps)) if steps else None,
    }


def _g(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def label(setting: dict) -> str:
    return f"sigma^2 = {setting['sigma2']:g}" + (" (He, 2/D_h)" if setting["he"] else "")


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (forward_axes, backward_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    layer = np.arange(1, results["layers"] + 1)
    for setting in results["settings"].values():
        for axes, key in ((forward_axes, "forward"), (backward_axes, "backward")):
            axes.semilogy(layer, setting[f"{key}_variance"], label=label(setting))
            axes.fill_between(layer, setting[f"{key}_variance_min"], setting[f"{key}_variance_max"], alpha=0.2)
    size = f"{results['layers']} layers of {results['hidden']} ReLU units, float64"
    forward_axes.set(xlabel="layer k", ylabel="Var(f_k)", title=f"Forward: pre-activations ({size})")
    backward_axes.set(xlabel="layer k", ylabel="Var(dl/df_k)", title="Backward: gradients, l = f_out^2")
    finish_figure(figure, (forward_axes, backward_axes), path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed; results average over --num-seeds")
    parser.add_argument("--num-seeds", type=int, default=5, help="networks (and input batches) per variance, vmapped")
    parser.add_argument("--layers", type=int, default=50, help="hidden layers K")
    parser.add_argument("--hidden", type=int, default=100, help="units per hidden layer D_h (and input size)")
    parser.add_argument("--batch", type=int, default=1000, help="inputs the variances are taken over")
    parser.add_argument("--variances", type=float, nargs="+", default=list(VARIANCES), help="the weights' sigma^2")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"),
                        help="output folder (default: experiments/results/)")
    args = parser.parse_args(argv)
    require_positive(parser, args, ("num_seeds", "layers", "hidden", "batch"))
    if min(args.variances) <= 0:
        parser.error(f"--variances must be positive, got {args.variances}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    results = {"layers": args.layers, "hidden": args.hidden, "batch": args.batch, "seeds": seeds,
               "dtype": "float64", "backend": jax.default_backend(), "settings": {}}
    for variance in args.variances:
        setting = run_setting(variance, seeds, args.layers, args.hidden, args.batch)
        results["settings"][f"{variance:g}"] = setting
        print(f"{label(setting):>28}: Var f_1 = {setting['forward_first']:.3g}, Var f_{args.layers} = "
              f"{setting['forward_last']:.3g}; Var dl/df_1 = {setting['backward_first']:.3g}, Var dl/df_{args.layers}"
              f" = {setting['backward_last']:.3g}; per layer {_g(setting['forward_factor_per_layer'])} (forward), "
              f"{_g(setting['backward_factor_per_layer'])} (backward), theory {setting['theory_factor_per_layer']:g}")
    results["seconds"] = time.perf_counter() - start
    write_results(args.out, "he_init", results, plot)
    return results


if __name__ == "__main__":
    main()
