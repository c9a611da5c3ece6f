"""GaussianNoise and MaskingNoise: identity at evaluation, the noise's statistics in training, keys, errors."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn
from jdl.nn.noise import GaussianNoise, MaskingNoise

N_ROWS, N_COLS = 500, 400  # 200,000 draws


@functools.partial(jax.jit, static_argnums=0)
def _train(layer, x, key):
    return layer.apply({}, {}, x, key=key, train=True)[0]


@pytest.mark.parametrize("layer", [GaussianNoise(0.5), MaskingNoise(0.5)], ids=repr)
def test_evaluation_is_the_identity(layer, randn):
    x = randn((4, 5))
    for key in (None, jax.random.key(0)):
        y, state = layer.apply({}, {}, x, key=key, train=False)
        assert state == {}
        np.testing.assert_array_equal(y, x)
    # Zero noise is the identity in training too, and needs no key.
    zero = GaussianNoise(0.0) if isinstance(layer, GaussianNoise) else MaskingNoise(0.0)
    np.testing.assert_array_equal(zero.apply({}, {}, x, train=True)[0], x)


@pytest.mark.parametrize("stddev", [0.1, 2.0])
def test_gaussian_noise_mean_and_variance(stddev, randn):
    x = randn((N_ROWS, N_COLS), scale=3.0)
    noise = np.asarray(_train(GaussianNoise(stddev), x, jax.random.key(0)), np.float64) - np.asarray(x, np.float64)
    n = noise.size
    # The mean's standard error is stddev / sqrt(n); the sample variance's, stddev^2 sqrt(2 / n).
    assert abs(noise.mean()) < 4 * stddev / n**0.5
    assert abs(noise.var() - stddev**2) < 4 * stddev**2 * (2 / n) ** 0.5 + 1e-6 * stddev**2
    # Independent entries: neighbouring columns are uncorrelated.
    correlation = np.corrcoef(noise[:, 0::2].ravel(), noise[:, 1::2].ravel())[0, 1]
    assert abs(correlation) < 4 / (n / 2) ** 0.5


@pytest.mark.parametrize("rate", [0.2, 0.7])
def test_masking_noise_masked_fraction_and_no_rescaling(rate, randn):
    x = np.abs(np.asarray(randn((N_ROWS, N_COLS)))) + 1.0  # no zeros in x: a zero in y is a masked entry
    y = np.asarray(_train(MaskingNoise(rate), jnp.asarray(x), jax.random.key(1)))
    masked = y == 0
    assert abs(masked.mean() - rate) < 4 * (rate * (1 - rate) / masked.size) ** 0.5
    # The kept entries are x itself: not divided by 1 - rate, unlike dropout.
    np.testing.assert_array_equal(y[~masked], x[~masked])
    # Masking is per entry: rows are masked independently, not all at once.
    assert 0 < masked.mean(axis=1).min() and masked.mean(axis=1).max() < 1


def test_same_key_same_noise_and_the_draws_are_jax_randoms(randn):
    x = randn((8, 16))
    key, other = jax.random.key(3), jax.random.key(4)

    @jax.jit
    def run(x):
        outputs = {}
        for name, layer in {"gaussian": GaussianNoise(0.3), "masking": MaskingNoise(0.4)}.items():
            outputs[name] = tuple(layer.apply({}, {}, x, key=k, train=True)[0] for k in (key, key, other))
        reference = {"gaussian": x + 0.3 * jax.random.normal(key, x.shape),
                     "masking": x * jax.random.bernoulli(key, 0.6, x.shape)}
        return outputs, reference

    outputs, reference = run(x)
    for name, (first, again, different) in outputs.items():
        np.testing.assert_array_equal(first, again)
        assert np.any(np.asarray(first) != np.asarray(different))
        np.testing.assert_allclose(first, reference[name], rtol=1e-6, atol=1e-6)


def test_gradients_nan_and_dtype(randn):
    x = randn((6, 7))
    key = jax.random.key(2)
    gaussian, masking = GaussianNoise(0.5), MaskingNoise(0.5)

    @jax.jit
    def run(x):
        def total(layer):
            return lambda v: jnp.sum(layer.apply({}, {}, v, key=key, train=True)[0])
        nan = jnp.full_like(x, jnp.nan)
        low = x.astype(jnp.bfloat16)
        return (jax.grad(total(gaussian))(x), jax.grad(total(masking))(x), masking.apply({}, {}, x, key=key,
                train=True)[0], gaussian.apply({}, {}, nan, key=key, train=True)[0],
                masking.apply({}, {}, nan, key=key, train=True)[0], gaussian.apply({}, {}, low, key=key, train=True)[0],
                masking.apply({}, {}, low, key=key, train=True)[0])

    grad_gaussian, grad_masking, masked, nan_gaussian, nan_masking, low_gaussian, low_masking = run(x)
    np.testing.assert_array_equal(grad_gaussian, np.ones(x.shape))          # additive noise: dy/dx = 1
    np.testing.assert_array_equal(grad_masking, (np.asarray(masked) != 0).astype(np.float32))  # the mask
    assert np.all(np.isnan(nan_gaussian)) and np.all(np.isnan(nan_masking))  # a masked NaN stays NaN
    assert low_gaussian.dtype == jnp.bfloat16 and low_masking.dtype == jnp.bfloat16


def test_errors(randn):
    x = randn((2, 3))
    for layer in (GaussianNoise(0.5), MaskingNoise(0.5)):
        with pytest.raises(ValueError, match=rf"{type(layer).__name__}\(.*\): train=True needs a PRNG key"):
            layer.apply({}, {}, x, train=True)
        with pytest.raises(TypeError, match=r"expected key to be one PRNG key"):
            layer.apply({}, {}, x, key=jax.random.split(jax.random.key(0), 2), train=True)
        with pytest.raises(TypeError, match=rf"{type(layer).__name__}.*floating-point input.*int32"):
            layer.apply({}, {}, jnp.ones((2, 3), jnp.int32), key=jax.random.key(0), train=True)
        with pytest.raises(ValueError, match=r"no empty axis"):
            layer.apply({}, {}, jnp.ones((0, 3)), key=jax.random.key(0), train=True)
        with pytest.raises(TypeError, match=r"train to be a Python bool"):
            jax.jit(lambda v, t: layer.apply({}, {}, v, key=jax.random.key(0), train=t))(x, True)
        with pytest.raises(ValueError, match=r"expected params with keys \[\]"):
            layer.apply({"w": x}, {}, x)
    for stddev in (-0.1, float("nan"), float("inf"), True, "0.1", None):
        with pytest.raises(ValueError, match=r"GaussianNoise.*expected stddev to be a finite number >= 0, got"):
            GaussianNoise(stddev)
    for rate in (1.0, -0.1, 1.5, float("nan"), True, None):
        with pytest.raises(ValueError, match=r"MaskingNoise.*expected rate in \[0, 1\), got"):
            MaskingNoise(rate)


def test_repr_and_name():
    assert repr(GaussianNoise(0.1)) == "GaussianNoise(stddev=0.1)" and GaussianNoise(0.1).name == "gaussian_noise"
    assert repr(MaskingNoise(0.3)) == "MaskingNoise(rate=0.3)" and MaskingNoise(0.3).name == "masking_noise"


def test_add_weight_noise_perturbs_every_floating_leaf_keyed():
    params = {"w": jnp.zeros((400, 500)), "b": jnp.ones(3), "count": jnp.array(7, jnp.int32)}
    perturb = jax.jit(lambda key, p: nn.add_weight_noise(key, p, 0.1))
    noisy = perturb(jax.random.key(0), params)
    np.testing.assert_allclose([float(noisy["w"].mean()), float(noisy["w"].std())], [0.0, 0.1], atol=2e-3)
    assert int(noisy["count"]) == 7 and noisy["count"].dtype == jnp.int32  # integers are not perturbed
    again = perturb(jax.random.key(0), params)
    np.testing.assert_array_equal(noisy["w"], again["w"])  # same key, same noise
    assert not np.array_equal(noisy["w"], perturb(jax.random.key(1), params)["w"])
    assert not np.allclose(noisy["b"], 1.0)
    # differentiable: the gradient is the loss's at the perturbed point
    grad = jax.grad(lambda p: jnp.sum(nn.add_weight_noise(jax.random.key(0), p, 0.1)["b"] ** 2))({"b": jnp.ones(3)})
    np.testing.assert_allclose(grad["b"], 2 * nn.add_weight_noise(jax.random.key(0), {"b": jnp.ones(3)}, 0.1)["b"],
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"add_weight_noise: expected stddev to be a finite number >= 0"):
        nn.add_weight_noise(jax.random.key(0), params, -0.1)
