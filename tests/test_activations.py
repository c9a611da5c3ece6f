"""jdl.activations against jax.nn (values and gradients, large magnitudes included), the
course's derivative formulas, step and prelu."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import activations as act

# Random values plus the edges: +-1e4 (must stay finite), moderate tails, exact zero.
_EDGES = np.array([1e4, -1e4, 100.0, -100.0, 30.0, -30.0, 10.0, -10.0, 1e-3, -1e-3, 0.0])
X = np.concatenate([3.0 * np.random.default_rng(0).standard_normal(53), _EDGES]).astype(np.float32)
X_2D = X.reshape(8, 8)

ELEMENTWISE = {
    "sigmoid": (act.sigmoid, jax.nn.sigmoid),
    "log_sigmoid": (act.log_sigmoid, jax.nn.log_sigmoid),
    "tanh": (act.tanh, jnp.tanh),
    "relu": (act.relu, jax.nn.relu),
    "leaky_relu": (act.leaky_relu, jax.nn.leaky_relu),
    "leaky_relu_0.2": (lambda x: act.leaky_relu(x, 0.2), lambda x: jax.nn.leaky_relu(x, 0.2)),
    "elu": (act.elu, jax.nn.elu),
    "elu_0.5": (lambda x: act.elu(x, 0.5), lambda x: jax.nn.elu(x, 0.5)),
    "gelu_tanh": (act.gelu, lambda x: jax.nn.gelu(x, approximate=True)),
    "gelu_erf": (lambda x: act.gelu(x, approximate=False), lambda x: jax.nn.gelu(x, approximate=False)),
    "prelu_0.25": (lambda x: act.prelu(x, 0.25), lambda x: jax.nn.leaky_relu(x, 0.25)),
    "softplus": (act.softplus, jax.nn.softplus),
    "hard_tanh": (act.hard_tanh, jax.nn.hard_tanh),
    "hard_tanh_0_2": (lambda x: act.hard_tanh(x, 0.0, 2.0), lambda x: jax.nn.hard_tanh(x - 1.0) + 1.0),
}
ALONG_AXIS = {
    "softmax": (act.softmax, jax.nn.softmax),
    "log_softmax": (act.log_softmax, jax.nn.log_softmax),
    "softmax_axis0": (lambda x: act.softmax(x, axis=0), lambda x: jax.nn.softmax(x, axis=0)),
    "log_softmax_axis0": (lambda x: act.log_softmax(x, axis=0), lambda x: jax.nn.log_softmax(x, axis=0)),
}


def _value_and_grad(fn, x, cotangent):
    """f(x) and the gradient of sum(f(x) * r): every output element gets a random weight."""
    y, vjp = jax.vjp(fn, x)
    return y, vjp(cotangent)[0]


@jax.jit  # all of jdl's and jax.nn's values and gradients in one compilation
def _all_results(x, x_2d):
    r = jax.random.normal(jax.random.key(1), x.shape)
    r_2d = r.reshape(x_2d.shape)
    out = {}
    for name, (ours, theirs) in ELEMENTWISE.items():
        out[name] = (_value_and_grad(ours, x, r), _value_and_grad(theirs, x, r))
    for name, (ours, theirs) in ALONG_AXIS.items():
        out[name] = (_value_and_grad(ours, x_2d, r_2d), _value_and_grad(theirs, x_2d, r_2d))
    return out


@pytest.fixture(scope="module")
def results():
    return _all_results(X, X_2D)


# Absolute tolerances: 1e-7 by default; 1e-6 for gelu, where 1 + tanh (or 1 + erf)
# cancels for x around -3 in both implementations, so float32 rounding differences of
# the argument show up as ~1e-7 absolute differences.
ATOL = {"gelu_tanh": 1e-6, "gelu_erf": 1e-6}
# Gradients: 1e-6 by default; 3e-6 for gelu, whose derivative holds 1 - tanh(u)^2 (or the
# Gaussian density): for x near -3.7, tanh(u) = -0.99988 and one float32 ulp of it (6e-8) is
# 5e-4 of 1 - tanh^2, a term of ~1e-3 times the cotangent (up to ~3 here). Measured against
# float64: jdl's gradient 1.04e-6 from the exact one at x = -3.74 under one set of XLA flags,
# jax.nn's 5e-9 there; both are 5.6e-6 from it at x = -6.98, where XLA's float32 tanh stops
# one ulp short of -1 (the same error on both sides, so the comparison does not see it).
GRAD_ATOL = {"gelu_tanh": 3e-6, "gelu_erf": 3e-6}


@pytest.mark.parametrize("name", list(ELEMENTWISE) + list(ALONG_AXIS))
def test_matches_jax_nn_values_and_gradients(results, name):
    (y, grad), (y_ref, grad_ref) = results[name]
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad)), name  # +-1e4 included
    np.testing.assert_allclose(y, y_ref, rtol=1e-6, atol=ATOL.get(name, 1e-7))
    np.testing.assert_allclose(grad, grad_ref, rtol=1e-5, atol=GRAD_ATOL.get(name, 1e-6))
    assert np.max(np.abs(grad)) > 0.1  # the gradient comparison has teeth


def test_large_magnitudes_saturate_correctly(results):
    big = np.array([1e4, -1e4], np.float32)
    index = [list(X).index(v) for v in big]
    (y, _), _ = results["sigmoid"]
    np.testing.assert_array_equal(np.asarray(y)[index], [1.0, 0.0])
    (y, _), _ = results["tanh"]
    np.testing.assert_array_equal(np.asarray(y)[index], [1.0, -1.0])
    (y, _), _ = results["elu"]
    np.testing.assert_array_equal(np.asarray(y)[index], [1e4, -1.0])
    (y, _), _ = results["gelu_tanh"]
    np.testing.assert_array_equal(np.asarray(y)[index], [1e4, 0.0])
    soft = act.softmax(np.array([1e4, -1e4, 0.0], np.float32))
    np.testing.assert_array_equal(soft, [1.0, 0.0, 0.0])
    np.testing.assert_allclose(act.log_softmax(np.array([1e4, -1e4, 0.0], np.float32)), [0.0, -2e4, -1e4])


def test_softmax_is_a_distribution_and_log_softmax_its_log():
    x = 3.0 * np.random.default_rng(2).standard_normal((4, 6)).astype(np.float32)
    p = np.asarray(act.softmax(x), np.float64)
    np.testing.assert_allclose(p.sum(-1), np.ones(4), rtol=1e-6)
    np.testing.assert_allclose(act.log_softmax(x), np.log(p), rtol=1e-5, atol=1e-6)
    x64 = x.astype(np.float64)
    expected = np.exp(x64) / np.exp(x64).sum(-1, keepdims=True)
    np.testing.assert_allclose(p, expected, rtol=1e-6)


@jax.jit
def _derivatives(x):
    grad = lambda fn: jax.vmap(jax.grad(fn))(x)  # noqa: E731
    return {
        "sigmoid": (grad(act.sigmoid), act.sigmoid(x)),
        "tanh": (grad(act.tanh), act.tanh(x)),
        "relu": grad(act.relu),
        "leaky_relu": grad(act.leaky_relu),
        "elu": grad(lambda v: act.elu(v, 0.5)),
        "step": grad(act.step),
    }


def test_derivatives_match_course_formulas():
    x = np.concatenate([np.linspace(-8.0, 8.0, 33), [0.0]]).astype(np.float32)  # includes 0 twice
    d = _derivatives(x)
    grad, s = d["sigmoid"]
    np.testing.assert_allclose(grad, s * (1 - s), rtol=1e-5, atol=1e-7)  # sigmoid' = s (1 - s)
    grad, t = d["tanh"]
    np.testing.assert_allclose(grad, 1 - t**2, rtol=1e-5, atol=1e-7)  # tanh' = 1 - tanh^2
    np.testing.assert_array_equal(d["relu"], (x > 0).astype(np.float32))  # relu'(0) = 0
    assert float(d["relu"][-1]) == 0.0
    np.testing.assert_allclose(d["leaky_relu"], np.where(x >= 0, 1.0, 0.01), rtol=1e-6)
    # elu' = 1 for x > 0, alpha e^x for x < 0 (x = 0: see test_elu_gradient_at_zero); rtol
    # 1e-4 because XLA's CPU exp is accurate to a few 1e-5 relative.
    nonzero = x != 0
    np.testing.assert_allclose(np.asarray(d["elu"])[nonzero],
                               np.where(x > 0, 1.0, 0.5 * np.exp(x.astype(np.float64)))[nonzero], rtol=1e-4)
    np.testing.assert_array_equal(d["step"], np.zeros_like(x))


def test_step_worked_example():
    np.testing.assert_array_equal(act.step(np.array([-2.0, 0.0, 0.5, 3.0], np.float32)), [0.0, 0.0, 1.0, 1.0])
    assert act.step(np.array([1.0], np.float32)).dtype == jnp.float32


def test_prelu_per_channel_slope_and_its_gradient():
    x = np.array([[-2.0, 3.0, -1.0], [4.0, -0.5, -3.0]], np.float32)
    slope = np.array([0.1, 0.2, 0.3], np.float32)  # one learned slope per channel
    np.testing.assert_allclose(act.prelu(x, slope), [[-0.2, 3.0, -0.3], [4.0, -0.1, -0.9]], rtol=1e-6)
    # d/d(slope_c) sum prelu = sum of the negative inputs of channel c.
    grad_slope = jax.grad(lambda a: jnp.sum(act.prelu(x, a)))(slope)
    np.testing.assert_allclose(grad_slope, [-2.0, -0.5, -4.0], rtol=1e-6)


def test_sigmoid_relative_accuracy_in_negative_tail():
    x = np.array([-10.0, -20.0, -50.0], np.float32)
    expected = 1.0 / (1.0 + np.exp(-x.astype(np.float64)))
    np.testing.assert_allclose(act.sigmoid(x), expected, rtol=1e-5)


def test_elu_gradient_at_zero():
    zero = np.float32(0.0)
    assert float(jax.grad(act.elu)(zero)) == float(jax.grad(jax.nn.elu)(zero)) == 1.0
    assert float(jax.grad(lambda v: act.elu(v, 0.5))(zero)) == float(jax.grad(lambda v: jax.nn.elu(v, 0.5))(zero))


# Every function of jdl.activations, found by inspection, so a new one is tested too.
_FUNCTIONS = {name: fn for name, fn in vars(act).items()
              if callable(fn) and getattr(fn, "__module__", None) == act.__name__ and not name.startswith("_")}
_EXTRA_ARGS = {"prelu": (0.25,)}


@pytest.mark.parametrize("name", sorted(_FUNCTIONS))
def test_nan_in_gives_nan_out(name):
    """NaN is never turned into a number (relu and step used to give 0)."""
    x = np.array([[np.nan, 2.0, -2.0, 0.0], [1.0, -1.0, 0.5, 3.0]], np.float32)
    y = np.asarray(_FUNCTIONS[name](x, *_EXTRA_ARGS.get(name, ())))
    assert np.isnan(y[0, 0]), (name, y)
    assert np.all(np.isfinite(y[1])), (name, y)  # only the NaN (and, along an axis, its row) is NaN


def test_relu_and_step_keep_nan_and_their_values():
    x = np.array([np.nan, -np.inf, -1.0, -0.0, 0.0, 2.0, np.inf], np.float32)
    np.testing.assert_array_equal(act.relu(x), [np.nan, 0.0, 0.0, 0.0, 0.0, 2.0, np.inf])
    np.testing.assert_array_equal(act.step(x), [np.nan, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0])
    assert act.step(x.astype(jnp.bfloat16)).dtype == jnp.bfloat16
    np.testing.assert_array_equal(jax.grad(lambda v: jnp.sum(act.step(v)))(x), np.zeros(7))
