"""Autoencoders against PCA: linear, deep, denoising and sparse, on the 8x8 digits and MNIST-1D.

Seed 000's autoencoder maps ``x in R^d`` to a code ``x' in R^{d'}`` (``d' << d``) and back,
trained to make the output close to the input. Every model here is a
:class:`jdl.models.Autoencoder`, trained with Adam on the full training set inside one
jitted ``lax.scan`` on mini-batches of 256 (one compile per model, the seeds vmapped), on the squared error
``J = (1/(N d)) sum_i ||x_hat_i - x_i||^2``; the number reported is that **test MSE per
input** at the same code size ``d'`` (8 by default, ``--code-size``):

* **PCA** (scikit-learn), the reference: the best rank-``d'`` linear reconstruction
  ``x_hat = mu + U_{d'} U_{d'}^T (x - mu)``.
* **Linear AE**: ``d -> d' -> d``, no activations. Its optimum spans PCA's first ``d'``
  components (Baldi and Hornik, 1989), so its error should match PCA's.
* **Deep AE**: ``d -> 128 -> 64 -> d' -> 64 -> 128 -> d``, ReLU hidden layers, linear code
  (sigmoid output on the digits, whose pixels lie in ``[0, 1]``). Non-linear, so it may beat PCA.
* **Denoising AE** (Vincent et al., 2008): the deep AE trained to rebuild ``x`` from
  ``mask * x``, ``mask ~ Bernoulli(1 - r)`` (``nn.MaskingNoise(r)``, ``r = 0.3``). Reported
  on clean test inputs, and on masked test inputs (the same masks for every model) against
  the plain deep AE, both compared with the clean ``x``.
* **Sparse AE**: one wide sigmoid code layer ``d -> 100 -> d`` (overcomplete on MNIST-1D's
  40 inputs and wider than the digits' 64), trained on
  ``J + beta sum_j KL(rho || rho_hat_j)`` (:func:`jdl.losses.kl_sparsity`), ``rho_hat_j`` unit
  ``j``'s mean activation over the batch, ``rho = 0.1``. Reported: its error, the mean code
  activation on the test set (aim: within 20% of ``rho``), and the fraction of units above
  0.5 per example (seed 000's "only 10 of 100 neurons active").
* A ``d' = 2`` deep AE of the digits, whose test codes are drawn coloured by class.

Data: scikit-learn's digits at their native 8 x 8 (64 inputs, pixel counts / 16, in
``[0, 1]``; the stratified 1,437 / 360 split of ``experiments.common.digits_dataset``), and
MNIST-1D (40 inputs, 4,000 / 1,000, each input standardised with the training set's mean
and deviation, so that PCA's error at ``d' = 0`` is 1 per input).

What it shows (default: 3 seeds, 3,000 steps of batch 256, learning rate 3e-3, d' = 8;
about 140 s on 2 shared CPU cores), test MSE per input, mean over seeds:

==================  ========  ========
model               digits    MNIST-1D
==================  ========  ========
PCA                 0.02465   0.2620
linear AE           0.02485   0.2625
deep AE             0.01264   0.3137
denoising AE        0.01420   0.2803
sparse AE (100)     0.00683   0.0102
deep AE, masked in  0.05179   0.4197
denoising, masked   0.01784   0.3164
masked input        0.07042   0.3063
==================  ========  ========

The linear AE matches PCA to within 1%. On the digits the deep AE halves PCA's error
(train 0.0053: it overfits somewhat); on MNIST-1D's 4,000 signals it overfits badly (train
0.18, test 0.31, worse than PCA), and the masking corruption, a regulariser, brings it back
to 0.28. Fed masked test inputs, the denoising AE's error is about a third of the deep AE's
on the digits (0.018 against 0.052) and three quarters on MNIST-1D. The sparse AE's code is
not a bottleneck (100 units), so its low error is no comparison at d' = 8; its mean code
activation is 0.102 (digits) and 0.104 (MNIST-1D) for rho = 0.1, within 2% and 4%, but the
KL penalty holds each unit's *mean* near rho, not the count of units "on": the activations
spread over 0 .. 0.5 and only 0.4 (digits) and 0.1 (MNIST-1D) units of 100 exceed 0.5 per
example. The d' = 2 deep AE's digits codes (test MSE 0.034) group by class.

    python experiments/autoencoders.py --out docs/results
    python experiments/autoencoders.py --datasets digits --steps 100 --num-seeds 1 --out /tmp/ae

Writes ``OUT/autoencoders.json`` and ``OUT/autoencoders.png``.
"""
from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments.common import atomic_save_figure, mnist1d_dataset, require_positive, write_results
from jdl import losses, models, nn, optim

DATASETS = ("digits", "mnist1d")
MODELS = ("pca", "linear", "deep", "denoising", "sparse")
HIDDEN = (128, 64)


# ---------------------------------------------------------------------------------------
# Data


def digits_8x8(test_fraction: float = 0.2, split_seed: int = 0) -> dict[str, np.ndarray]:
    """scikit-learn's digits, native 8 x 8 flattened to 64 inputs in ``[0, 1]``; common.digits_dataset's split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = np.asarray(digits.data, np.float32) / 16.0
    x_train, x_test, y_train, y_test = train_test_split(
        x, digits.target.astype(np.int32), test_size=test_fraction, stratify=digits.target, random_state=split_seed)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


def mnist1d_standardised() -> dict[str, np.ndarray]:
    """MNIST-1D, each of the 40 inputs standardised with the training set's mean and deviation."""
    data = mnist1d_dataset()
    mean, std = data["x_train"].mean(axis=0), data["x_train"].std(axis=0)
    return {**data, "x_train": (data["x_train"] - mean) / std, "x_test": (data["x_test"] - mean) / std}


def load(name: str, subset: int | None) -> dict[str, np.ndarray]:
    data = digits_8x8() if name == "digits" else mnist1d_standardised()
    if subset is not None:
        data = {key: value[:subset] for key, value in data.items()}
    return data


# ---------------------------------------------------------------------------------------
# Models and training


def build(kind: str, data_name: str, code_size: int, noise_rate: float, sparse_units: int) -> models.Autoencoder:
    output = "sigmoid" if data_name == "digits" else "linear"
    if kind == "linear":
        return models.Autoencoder((code_size,), activation="linear")
    if kind == "deep":
        return models.Autoencoder(HIDDEN + (code_size,), code_activation="linear", output_activation=output)
    if kind == "denoising":
        return models.Autoencoder(HIDDEN + (code_size,), code_activation="linear", output_activation=output,
                                  corruption=nn.MaskingNoise(noise_rate))
    if kind == "sparse":
        return models.Autoencoder((sparse_units,), code_activation="sigmoid", output_activation=output)
    raise ValueError(kind)


def train(model: models.Autoencoder, x_train: np.ndarray, seed_keys: jax.Array, steps: int, learning_rate: float,
          batch_size: int, sparsity: tuple[float, float] | None = None):
    """Adam on mini-batches for ``steps`` steps from each seed's initialisation: the params (seeds first), the losses.

    Each step draws ``batch_size`` training examples (with replacement; the whole set when
    ``batch_size`` is at least its size) and, for the denoising AE, a fresh corruption, from
    the seed's key folded with the step number. ``sparsity=(rho, beta)`` adds
    ``beta * kl_sparsity(rho, code)``, ``rho_hat`` taken over the mini-batch.
    """
    x_all = jnp.asarray(x_train)
    full_batch = batch_size >= len(x_train)
    optimizer = optim.adam(learning_rate)

    def loss_fn(params, key):
        batch_key, noise_key = jax.random.split(key)
        x = x_all if full_batch else x_all[jax.random.randint(batch_key, (batch_size,), 0, len(x_train))]
        code = model.encode(params, x, key=noise_key, train=True)
        loss = losses.mean_squared_error(model.decode(params, code), x)
        if sparsity is not None:
            rho, beta = sparsity
            loss = loss + beta * losses.kl_sparsity(rho, code)
        return loss

    def one_seed(key):
        init_key, noise_key = jax.random.split(key)
        params, _ = model.init(init_key, x_all)
        opt_state = optimizer.init(params)

        def step(carry, i):
            params, opt_state = carry
            value, grads = jax.value_and_grad(loss_fn)(params, jax.random.fold_in(noise_key, i))
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optim.apply_updates(params, updates), opt_state), value

        (params, _), curve = jax.lax.scan(step, (params, opt_state), jnp.arange(steps))
        return params, curve

    return jax.jit(jax.vmap(one_seed))(seed_keys)


def reconstruction_mse(model: models.Autoencoder, params, x_in: np.ndarray, x_target: np.ndarray) -> np.ndarray:
    """Per seed: ``mean((decode(encode(x_in)) - x_target)^2)`` over every test example and input."""
    def one(p):
        return losses.mean_squared_error(model.apply(p, {}, jnp.asarray(x_in))[0], jnp.asarray(x_target))

    return np.asarray(jax.jit(jax.vmap(one))(params))


def pca_mse(x_train: np.ndarray, x_test: np.ndarray, code_size: int) -> float:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=code_size).fit(x_train)
    return float(np.mean((pca.inverse_transform(pca.transform(x_test)) - x_test) ** 2))


def masked(x: np.ndarray, rate: float, seed: int) -> np.ndarray:
    """``x`` with each entry set to 0 with probability ``rate`` (the corrupted test set, one per seed)."""
    keep = np.random.default_rng(seed).random(x.shape) >= rate
    return np.where(keep, x, 0.0).astype(x.dtype)


def summary(values) -> dict:
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "std": float(values.std()), "per_seed": values.tolist()}


def run_dataset(name: str, args, seeds: list[int]) -> tuple[dict, dict]:
    """The error table of one data set, and what the figure needs."""
    start = time.perf_counter()
    data = load(name, args.subset)
    x_train, x_test = data["x_train"], data["x_test"]
    seed_keys = jnp.stack([jax.random.key(s) for s in seeds])
    noisy_tests = [masked(x_test, args.noise_rate, 1000 + s) for s in seeds]  # the same masks for every model
    table = {"pca": {"mean": pca_mse(x_train, x_test, args.code_size), "std": 0.0}}
    corrupted = {"identity": summary([np.mean((xn - x_test) ** 2) for xn in noisy_tests])}
    extras, trained = {"x_test": x_test, "y_test": data["y_test"], "noisy_test": noisy_tests[0]}, {}
    for kind in MODELS[1:]:
        model_start = time.perf_counter()
        model = build(kind, name, args.code_size, args.noise_rate, args.sparse_units)
        sparsity = (args.rho, args.sparse_beta) if kind == "sparse" else None
        params, curve = train(model, x_train, seed_keys, args.steps, args.learning_rate, args.batch_size, sparsity)
        trained[kind] = (model, params)
        table[kind] = summary(reconstruction_mse(model, params, x_test, x_test))
        table[kind]["final_train_loss"] = np.asarray(curve[:, -100:].mean(axis=1)).tolist()  # the last 100 steps
        table[kind]["seconds"] = round(time.perf_counter() - model_start, 2)
        if kind in ("deep", "denoising"):
            corrupted[kind] = summary([
                reconstruction_mse(model, jax.tree.map(lambda v, i=i: v[i:i + 1], params), xn, x_test)[0]
                for i, xn in enumerate(noisy_tests)])
        print(f"{name:>8} {kind:>10}: test MSE per input {table[kind]['mean']:.5f} +- {table[kind]['std']:.5f} "
              f"(PCA {table['pca']['mean']:.5f}), {table[kind]['seconds']:.1f} s")

    model, params = trained["sparse"]
    codes = np.asarray(jax.jit(jax.vmap(lambda p: model.encode(p, jnp.asarray(x_test))))(params))  # (seeds, N, units)
    sparse = {"rho": args.rho, "beta": args.sparse_beta, "units": args.sparse_units,
              "mean_activation": summary(codes.mean(axis=(1, 2))),
              "relative_gap_to_rho": summary(np.abs(codes.mean(axis=(1, 2)) - args.rho) / args.rho),
              "fraction_active_over_half": summary((codes > 0.5).mean(axis=(1, 2))),
              "units_active_over_half_per_example": summary((codes > 0.5).sum(axis=2).mean(axis=1)),
              "dead_units_below_0.01": summary((codes.mean(axis=1) < 0.01).sum(axis=1))}
    sparse["within_20_percent"] = bool(np.all(np.asarray(sparse["relative_gap_to_rho"]["per_seed"]) <= 0.2))
    extras["sparse_codes"] = codes[0]
    print(f"{name:>8}     sparse: mean code activation {sparse['mean_activation']['mean']:.4f} (rho {args.rho}), "
          f"{sparse['units_active_over_half_per_example']['mean']:.1f} of {args.sparse_units} units > 0.5 per example")
    print(f"{name:>8}  corrupted test (masking {args.noise_rate}): deep AE {corrupted['deep']['mean']:.5f}, denoising "
          f"AE {corrupted['denoising']['mean']:.5f}, the masked input itself {corrupted['identity']['mean']:.5f}")

    for kind in ("deep", "denoising"):
        model, params = trained[kind]
        first = jax.tree.map(lambda v: v[0], params)
        extras[f"{kind}_from_noisy"] = np.asarray(model.apply(first, {}, jnp.asarray(noisy_tests[0]))[0])

    if name == "digits":  # a 2-D code to look at
        model = build("deep", name, 2, args.noise_rate, args.sparse_units)
        params, _ = train(model, x_train, seed_keys[:1], args.steps, args.learning_rate, args.batch_size)
        first = jax.tree.map(lambda v: v[0], params)
        extras["code_2d"] = np.asarray(model.encode(first, jnp.asarray(x_test)))
        table["deep_code_2"] = summary(reconstruction_mse(model, params, x_test, x_test))
        print(f"{name:>8}  deep AE with d' = 2: test MSE per input {table['deep_code_2']['mean']:.5f}")

    result = {"inputs": int(x_train.shape[1]), "train": int(len(x_train)), "test": int(len(x_test)),
              "code_size": args.code_size, "test_mse_per_input": table,
              "corrupted_test_mse_per_input": corrupted, "sparse": sparse,
              "seconds": round(time.perf_counter() - start, 1)}
    return result, extras


# ---------------------------------------------------------------------------------------
# Figure


def _mosaic(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of 8x8 images (each row ``[n, 64]``) as one image with 1-pixel gaps."""
    n = rows[0].shape[0]
    canvas = np.full((9 * len(rows) - 1, 9 * n - 1), np.nan)
    for r, row in enumerate(rows):
        for c in range(n):
            canvas[9 * r:9 * r + 8, 9 * c:9 * c + 8] = row[c].reshape(8, 8)
    return canvas


def plot(results: dict, extras: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(14, 11))
    images, histogram, scatter, bars = axes.ravel()

    main_name = "digits" if "digits" in extras else next(iter(extras))
    ex = extras[main_name]
    if main_name == "digits":
        picks = [int(np.flatnonzero(ex["y_test"] == k)[0]) if np.any(ex["y_test"] == k) else 0 for k in range(10)]
        rows = [ex["x_test"][picks], ex["noisy_test"][picks], ex["deep_from_noisy"][picks],
                ex["denoising_from_noisy"][picks]]
        images.imshow(_mosaic(rows), cmap="gray_r", vmin=0, vmax=1)
        images.set_yticks([4 + 9 * r for r in range(4)],
                          ["original", f"masked ({results['noise_rate']:g})", "deep AE", "denoising AE"])
        images.set_xticks([])
        images.set_title("Test digits: masked, then rebuilt (seed 0)")
    else:
        images.set_axis_off()

    for name, e in extras.items():
        histogram.hist(e["sparse_codes"].ravel(), bins=50, range=(0, 1), alpha=0.6,
                       label=f"{name}: mean {results[name]['sparse']['mean_activation']['mean']:.3f}")
    histogram.axvline(results["rho"], color="k", ls=":", label=f"rho = {results['rho']:g}")
    histogram.set(yscale="log", xlabel="code activation (test set, all units, seed 0)", ylabel="count",
                  title=f"Sparse AE, {results['sparse_units']} sigmoid code units, KL penalty")
    histogram.legend()

    if "code_2d" in ex:
        points = scatter.scatter(*ex["code_2d"].T, c=ex["y_test"], cmap="tab10", s=10)
        figure.colorbar(points, ax=scatter, label="digit")
        scatter.set(xlabel="z_1", ylabel="z_2", title="Digits' test codes: a deep AE with d' = 2 (seed 0)")
    else:
        scatter.set_axis_off()

    labels = ["PCA", "linear AE", "deep AE", "denoising AE", "sparse AE (100 units)", "deep AE, masked in",
              "denoising AE, masked in"]
    names = list(extras)
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        table, corrupted = results[name]["test_mse_per_input"], results[name]["corrupted_test_mse_per_input"]
        scale = table["pca"]["mean"]
        values = [table[k]["mean"] / scale for k in MODELS] + [corrupted[k]["mean"] / scale
                                                                 for k in ("deep", "denoising")]
        bars.bar(np.arange(len(values)) + (j - (len(names) - 1) / 2) * width, values, width, label=name)
    bars.axhline(1.0, color="k", ls=":", lw=1)
    bars.set_xticks(np.arange(len(labels)), labels, rotation=30, ha="right")
    bars.set(yscale="log", ylabel="test MSE per input / PCA's",
             title=f"Test reconstruction error at d' = {results['code_size']} (sparse: {results['sparse_units']} "
                   "units), mean over seeds")
    bars.legend()
    bars.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    atomic_save_figure(path, figure)
    plt.close(figure)


# ---------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0, help="first seed")
    parser.add_argument("--num-seeds", type=int, default=3, help="initialisations per model, vmapped")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, default=list(DATASETS))
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps per model")
    parser.add_argument("--batch-size", type=int, default=256, help="examples per step (drawn with replacement)")
    parser.add_argument("--learning-rate", type=float, default=3e-3)
    parser.add_argument("--code-size", type=int, default=8, help="d', the code size of PCA and the AEs")
    parser.add_argument("--noise-rate", type=float, default=0.3, help="masking rate of the denoising AE")
    parser.add_argument("--sparse-units", type=int, default=100)
    parser.add_argument("--rho", type=float, default=0.1, help="the sparse AE's target mean activation")
    parser.add_argument("--sparse-beta", type=float, default=0.05, help="weight of the KL sparsity penalty")
    parser.add_argument("--subset", type=int, default=None, help="use only the first N train and test examples")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = parser.parse_args(argv)
    require_positive(parser, args, ("num_seeds", "steps", "batch_size", "code_size", "sparse_units"))
    if args.subset is not None and args.subset < 2:
        parser.error(f"--subset must be at least 2, got {args.subset}")
    if args.subset is not None and args.code_size > args.subset:
        parser.error(f"--code-size ({args.code_size}) must not exceed --subset ({args.subset}), for PCA")
    if not args.learning_rate > 0:
        parser.error(f"--learning-rate must be positive, got {args.learning_rate}")
    if not 0 < args.noise_rate < 1:
        parser.error(f"--noise-rate must be in (0, 1), got {args.noise_rate}")
    if not 0 < args.rho < 1:
        parser.error(f"--rho must be in (0, 1), got {args.rho}")
    if not args.sparse_beta >= 0:
        parser.error(f"--sparse-beta must be >= 0, got {args.sparse_beta}")
    if (args.code_size >= 40 and "mnist1d" in args.datasets) or args.code_size >= 64:
        parser.error(f"--code-size must be below the inputs (64 digits, 40 MNIST-1D), got {args.code_size}")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    start = time.perf_counter()
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    results = {"seeds": seeds, "steps": args.steps, "learning_rate": args.learning_rate, "code_size": args.code_size,
               "noise_rate": args.noise_rate, "rho": args.rho, "sparse_beta": args.sparse_beta,
               "sparse_units": args.sparse_units, "hidden": list(HIDDEN), "backend": jax.default_backend()}
    extras = {}
    for name in args.datasets:
        results[name], extras[name] = run_dataset(name, args, seeds)
    results["seconds"] = round(time.perf_counter() - start, 1)
    write_results(args.out, "autoencoders", results, lambda results, path: plot(results, extras, path))
    return results


if __name__ == "__main__":
    main()
