"""jdl.linear_units: the perceptron against Novikoff's bound and XOR, the rules against jax.grad of
their losses, the normal equations against numpy, logistic regression against scikit-learn."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import linear_units as lu
from jdl import nn

XOR_X = jnp.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
XOR_T = jnp.array([0.0, 1.0, 1.0, 0.0])
SEPARATOR = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}


def separable_data(seed: int, n: int = 60, margin: float = 0.2):
    """Points in [-2, 2]^2 labelled by SEPARATOR, those within ``margin`` of its line dropped."""
    x = np.asarray(jax.random.uniform(jax.random.key(seed), (4 * n, 2), minval=-2.0, maxval=2.0))
    score = x @ np.asarray(SEPARATOR["w"]) + float(SEPARATOR["b"])
    keep = np.abs(score) / np.sqrt(1.0 + 4.0 + 0.25) > margin
    return jnp.asarray(x[keep][:n]), jnp.asarray((score[keep][:n] > 0).astype(np.float32))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perceptron_converges_within_novikoffs_bound(seed):
    x, t = separable_data(seed)
    bound = float(lu.novikoff_bound(x, t, SEPARATOR))
    params, history = jax.jit(lambda x, t, key: lu.fit(lu.perceptron, lu.init(2), x, t, learning_rate=1.0,
                                                       epochs=200, key=key))(x, t, jax.random.key(seed))
    mistakes = np.asarray(history.mistakes)
    assert 0 < mistakes.sum() <= bound, (mistakes.sum(), bound)
    assert mistakes[-1] == 0 and np.all(lu.perceptron.output(params, x) == t)
    # once an epoch passes without a mistake the weights never change again
    first_clean = int(np.argmax(mistakes == 0))
    assert np.all(mistakes[first_clean:] == 0)


def test_perceptron_never_converges_on_xor():
    for key in [None, jax.random.key(0)]:
        _, history = lu.fit(lu.perceptron, lu.init(2), XOR_X, XOR_T, learning_rate=1.0, epochs=100, key=key)
        assert np.all(np.asarray(history.mistakes) >= 1)  # no linear unit separates XOR
    assert np.isinf(lu.novikoff_bound(XOR_X, XOR_T, SEPARATOR))


@pytest.mark.parametrize("rule", [lu.delta_rule, lu.sigmoid_delta_rule, lu.logistic_regression, lu.perceptron],
                         ids=lambda r: r.name)
def test_each_update_is_a_gradient_step_on_its_loss(rule):
    """``update(params) = params - eta grad(loss)`` (the perceptron: off its decision boundary)."""
    key_x, key_t, key_w = jax.random.split(jax.random.key(3), 3)
    x = jax.random.normal(key_x, (9, 3))
    t = (jax.random.uniform(key_t, (9,)) > 0.5).astype(jnp.float32)
    params = {"w": jax.random.normal(key_w, (3,)), "b": jnp.array(0.3)}
    eta = 0.1
    updated = rule.update(params, x, t, eta)
    gradient = jax.grad(rule.loss)(params, x, t)
    for name in ("w", "b"):
        np.testing.assert_allclose(updated[name], params[name] - eta * gradient[name], rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(gradient["w"]).max()) > 1e-2  # the comparison has teeth


def test_the_seeds_formulas_in_numpy():
    """Delta rule ``eta sum (t - y) x``; sigmoid ``-eta sum (f - t) f (1 - f) x``; logistic ``eta sum (t - f) x``."""
    rng = np.random.default_rng(0)
    x, t, w, b, eta = rng.normal(size=(7, 2)), (rng.random(7) > 0.5) * 1.0, rng.normal(size=2), 0.2, 0.05
    params = {"w": jnp.asarray(w, jnp.float32), "b": jnp.asarray(b, jnp.float32)}
    x32, t32 = jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.float32)
    z = x @ w + b
    f = 1 / (1 + np.exp(-z))
    for rule, delta in [(lu.delta_rule, eta * (t - z)), (lu.sigmoid_delta_rule, -eta * (f - t) * f * (1 - f)),
                        (lu.logistic_regression, eta * (t - f)), (lu.perceptron, eta * (t - (z > 0)))]:
        updated = rule.update(params, x32, t32, eta)
        np.testing.assert_allclose(updated["w"], w + delta @ x, rtol=1e-5, atol=1e-6, err_msg=rule.name)
        np.testing.assert_allclose(updated["b"], b + delta.sum(), rtol=1e-5, atol=1e-6, err_msg=rule.name)


def test_xor_by_least_squares_is_the_constant_one_half():
    """Seed 002: the normal equations give ``w = 0``, ``b = 1/2``; ``J = 1/4 sum (f* - f)^2 = 1/4``."""
    params, mse = lu.least_squares(XOR_X, XOR_T)
    np.testing.assert_allclose(params["w"], [0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(params["b"], 0.5, atol=1e-6)
    np.testing.assert_allclose(mse, 0.25, atol=1e-6)
    rng = np.random.default_rng(1)
    x, t = rng.normal(size=(20, 3)), rng.normal(size=20)
    params, mse = lu.least_squares(jnp.asarray(x, jnp.float32), jnp.asarray(t, jnp.float32))
    reference = np.linalg.lstsq(np.c_[x, np.ones(20)], t, rcond=None)[0]
    np.testing.assert_allclose(np.r_[params["w"], params["b"]], reference, rtol=1e-4, atol=1e-5)


def test_the_relu_network_of_seed_002_solves_xor_exactly():
    """``f = w^T max(0, W^T x + c) + b`` with ``W = [[1, 1], [1, 1]]``, ``c = (0, -1)``, ``w = (1, -2)``, ``b = 0``."""
    model = nn.Sequential([nn.Dense(2), nn.ReLU(), nn.Dense(1)])
    params = {"dense_0": {"w": jnp.ones((2, 2)), "b": jnp.array([0.0, -1.0])}, "relu_1": {},
              "dense_2": {"w": jnp.array([[1.0], [-2.0]]), "b": jnp.zeros(1)}}
    y, _ = model.apply(params, {"dense_0": {}, "relu_1": {}, "dense_2": {}}, XOR_X)
    np.testing.assert_array_equal(y[:, 0], XOR_T)


def test_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(-1.0, 1.0, (50, 2)), rng.normal(1.0, 1.0, (50, 2))].astype(np.float32)
    t = np.r_[np.zeros(50), np.ones(50)].astype(np.float32)
    params, history = jax.jit(lambda x, t: lu.fit(lu.logistic_regression, lu.init(2), x, t, learning_rate=0.02,
                                                  epochs=3000, online=False))(jnp.asarray(x), jnp.asarray(t))
    reference = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10_000).fit(x, t)
    np.testing.assert_allclose(params["w"], reference.coef_[0], rtol=1e-3)
    np.testing.assert_allclose(params["b"], reference.intercept_[0], atol=1e-3)
    assert np.all(np.diff(np.asarray(history.loss)) <= 1e-4)  # batch gradient descent on a convex loss


def test_fit_vmaps_over_keys_and_matches_the_loop():
    x, t = separable_data(0, n=20)
    keys = jax.random.split(jax.random.key(0), 3)
    run = lambda key: lu.fit(lu.perceptron, lu.init(2), x, t, learning_rate=0.5, epochs=5, key=key)  # noqa: E731
    batched_params, batched_history = jax.vmap(run)(keys)
    for i, key in enumerate(keys):
        params, history = run(key)
        np.testing.assert_array_equal(batched_params["w"][i], params["w"])
        np.testing.assert_array_equal(batched_history.mistakes[i], history.mistakes)


def test_fit_errors():
    with pytest.raises(ValueError, match=r"linear_units.fit\(perceptron\): expected x's examples and targets of the same shape"):
        lu.fit(lu.perceptron, lu.init(2), XOR_X, XOR_T[:3], learning_rate=1.0, epochs=1)
    with pytest.raises(ValueError, match=r"epochs to be an int >= 1, got 0"):
        lu.fit(lu.perceptron, lu.init(2), XOR_X, XOR_T, learning_rate=1.0, epochs=0)
    with pytest.raises(ValueError, match=r"expected params\['w'\] of shape \(2,\), got \(3,\)"):
        lu.fit(lu.delta_rule, lu.init(3), XOR_X, XOR_T, learning_rate=1.0, epochs=1)
