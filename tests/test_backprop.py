"""jdl.backprop against jax.grad (float64), and the course's matrix calculus against jax.jacobian / jax.hessian.

Parameter counts and the permutation symmetry of hidden units are checked here too: they are
facts about the same networks.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import backprop, count_params, nn, regions


def _relu_network(depth: int, width: int = 5) -> nn.Sequential:
    layers = []
    for _ in range(depth):
        layers += [nn.Dense(width, param_dtype=jnp.float64, bias_init=nn.dense.initializers.normal(0.5)), nn.ReLU()]
    return nn.Sequential(layers + [nn.Dense(2, param_dtype=jnp.float64)])


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5])
def test_hand_backprop_equals_jax_grad_for_relu_networks(depth):
    """Equation 7.13, for hidden layers 1 to 5, against ``jax.grad`` of the same ``jdl.nn`` network."""
    with jax.enable_x64(True):
        model = _relu_network(depth)
        x_key, y_key, init_key = jax.random.split(jax.random.key(depth), 3)
        x = jax.random.normal(x_key, (7, 3), jnp.float64)
        y = jax.random.normal(y_key, (7, 2), jnp.float64)
        params, state = jax.jit(model.init)(init_key, x)

        def loss(params):
            return jnp.sum((model.apply(params, state, x)[0] - y) ** 2)

        @jax.jit  # the hand-written pass and jax.grad in one program
        def both(params):
            weights, biases = backprop.from_dense(params)
            out, memo = backprop.forward(weights, biases, x)
            d_weights, d_biases = backprop.backward(weights, memo, 2.0 * (out - y))
            return (out, model.apply(params, state, x)[0], memo, backprop.to_dense(params, d_weights, d_biases),
                    jax.grad(loss)(params))

        out, model_out, memo, by_hand, expected = both(params)
        np.testing.assert_allclose(out, model_out, rtol=1e-12)
        for name in expected:
            for leaf in expected[name]:
                np.testing.assert_allclose(by_hand[name][leaf], expected[name][leaf], atol=1e-6, rtol=1e-6)
        # some units are off for some examples, so the indicator in eq. 7.13 is exercised
        off = np.asarray(memo.pre_activations[0] <= 0)
        assert off.any() and not off.all()


def test_the_toy_functions_eight_derivatives():
    """UDL 7.3: ``f = beta_3 + omega_3 cos(beta_2 + omega_2 exp(beta_1 + omega_1 sin(beta_0 + omega_0 x)))``."""
    with jax.enable_x64(True):
        beta = jnp.array([0.1, -0.4, 0.3, 0.2], jnp.float64)
        omega = jnp.array([1.3, 0.7, -0.9, 1.1], jnp.float64)
        x = jnp.linspace(-2.0, 2.0, 9, dtype=jnp.float64)
        y = jnp.sin(x)

        def loss(beta, omega):
            return jnp.sum((backprop.toy_forward(beta, omega, x)[0] - y) ** 2)

        @jax.jit
        def by_hand_and_by_autodiff(beta, omega):
            f, memo = backprop.toy_forward(beta, omega, x)
            direct = beta[3] + omega[3] * jnp.cos(beta[2] + omega[2] * jnp.exp(
                beta[1] + omega[1] * jnp.sin(beta[0] + omega[0] * x)))
            return f, direct, backprop.toy_backward(omega, memo, y), jax.grad(loss, argnums=(0, 1))(beta, omega)

        f, direct, (d_beta, d_omega), (ref_beta, ref_omega) = by_hand_and_by_autodiff(beta, omega)
        np.testing.assert_allclose(f, direct, rtol=1e-14)
        np.testing.assert_allclose(d_beta, ref_beta, atol=1e-6, rtol=1e-9)
        np.testing.assert_allclose(d_omega, ref_omega, atol=1e-6, rtol=1e-9)
        assert np.all(np.abs(ref_omega) > 1e-3)  # all eight are exercised


def test_chain_rule_over_two_paths():
    with jax.enable_x64(True):
        for x in [-1.3, 0.4, 2.0]:
            x = jnp.float64(x)
            k, dk_dx = backprop.chain_rule_two_paths(x)
            np.testing.assert_allclose(dk_dx, jax.grad(lambda v: backprop.chain_rule_two_paths(v)[0])(x), rtol=1e-12)


# ----------------------------------------------------------------------------- matrix calculus


def test_jacobian_is_in_numerator_layout():
    """``y in R^m``, ``x in R^n``: ``dy/dx`` is ``m x n`` with ``J_ij = dy_i/dx_j`` (seed 003).

    Seed 002 says ``J in R^{m x n}`` for ``f: R^m -> R^n`` while defining ``J_ij = df_i/dx_j``, which
    makes it ``n x m``: the definition is the one that holds, as here.
    """
    a = jnp.arange(12.0).reshape(4, 3) / 10.0

    def f(x):  # R^3 -> R^4
        return jnp.tanh(a @ x) + x[0] * x[1]

    x = jnp.array([0.3, -0.2, 0.5])
    jacobian = jax.jit(jax.jacobian(f))(x)
    f = jax.jit(f)
    assert jacobian.shape == (4, 3)
    eps = 1e-3
    for j in range(3):
        step = jnp.zeros(3).at[j].set(eps)
        np.testing.assert_allclose(jacobian[:, j], (f(x + step) - f(x - step)) / (2 * eps), rtol=1e-2, atol=1e-3)


def test_identities_of_seed_003():
    key_a, key_z = jax.random.split(jax.random.key(0))
    a = jax.random.normal(key_a, (3, 4))
    z = jax.random.normal(key_z, (2,))

    def x_of(z):  # x: R^2 -> R^4
        return jnp.stack([jnp.sin(z[0]), z[0] * z[1], jnp.exp(z[1]), z[0] ** 2])

    def y_of(z):
        return jnp.stack([jnp.cos(z[1]), z[0] + z[1], z[0] * 3.0, jnp.tanh(z[0] * z[1])])

    @jax.jit  # both sides of every identity in one program
    def sides(a, z):
        x, y, dx_dz, dy_dz = x_of(z), y_of(z), jax.jacobian(x_of)(z), jax.jacobian(y_of)(z)
        return {"dAx/dx": (jax.jacobian(lambda x: a @ x)(x), a),
                "dAx/dz": (jax.jacobian(lambda z: a @ x_of(z))(z), a @ dx_dz),
                "dy.x/dz": (jax.grad(lambda z: y_of(z) @ x_of(z))(z), x @ dy_dz + y @ dx_dz)}

    for name, (autodiff, identity) in sides(a, z).items():
        np.testing.assert_allclose(autodiff, identity, rtol=1e-5, err_msg=name)


def test_the_jacobians_of_a_layer():
    """ReLU: ``diag(I[b > 0])``; ``f = beta + Omega h``: ``df/dh = Omega``, ``df/dbeta = I`` (numerator layout).

    UDL writes ``df/dh = Omega^T``: the same matrix in the denominator layout it uses for backprop.
    """
    b = jnp.array([1.5, -0.3, 0.0, 2.0, -4.0])
    np.testing.assert_array_equal(jax.jacobian(nn.ReLU().fn)(b), np.diag(np.asarray(b > 0, np.float32)))
    omega = jax.random.normal(jax.random.key(1), (3, 5))
    beta = jnp.array([0.1, 0.2, 0.3])
    np.testing.assert_allclose(jax.jacobian(lambda h: beta + omega @ h)(b), omega)
    np.testing.assert_allclose(jax.jacobian(lambda beta: beta + omega @ b)(beta), np.eye(3))


def test_critical_points_of_x4_plus_4x3():
    """Seed 002: ``f = x^4 + 4x^3``, ``f' = 4x^2 (x + 3)``: a minimum at -3 (``f'' = 36``), an inflection at 0."""
    f = lambda x: x**4 + 4 * x**3  # noqa: E731
    d1, d2, d3 = (jax.vmap(jax.grad(f)), jax.vmap(jax.grad(jax.grad(f))),
                  jax.vmap(jax.grad(jax.grad(jax.grad(f)))))
    g = lambda v: v[0] ** 2 * v[1] + jnp.sin(v[2]) * v[0]  # noqa: E731

    @jax.jit  # every derivative in one program: eager, each small op would compile on its own
    def derivatives(x):
        return (d1(x), d2(x), d3(x), jax.vmap(jax.hessian(f))(x)), jax.hessian(g)(jnp.array([1.0, 2.0, 0.5]))

    (slope, curvature, third, hessian), h = derivatives(jnp.array([-3.0, 0.0]))
    assert slope.tolist() == [0.0, 0.0]
    assert curvature.tolist() == [36.0, 0.0] and float(third[1]) == 24.0  # f'' changes sign at 0: inflection
    assert float(hessian[0]) == 36.0
    np.testing.assert_allclose(h, h.T)  # symmetric, as the course's matrix of second derivatives
    np.testing.assert_allclose(h, [[4.0, 2.0, np.cos(0.5)], [2.0, 0.0, 0.0], [np.cos(0.5), 0.0, -np.sin(0.5)]],
                               rtol=1e-6)


def test_sigmoid_and_tanh_derivatives_peak_at_zero():
    """``sigmoid' <= 1/4`` and ``tanh' <= 1``, the maxima at 0 (the vanishing-gradient argument)."""
    z = jnp.linspace(-8.0, 8.0, 1601)
    sigmoid_slope, tanh_slope = jax.jit(lambda z: (jax.vmap(jax.grad(nn.Sigmoid().fn))(z),
                                                   jax.vmap(jax.grad(nn.Tanh().fn))(z)))(z)
    assert float(sigmoid_slope.max()) <= 0.25 and abs(float(z[jnp.argmax(sigmoid_slope)])) < 0.01
    assert float(tanh_slope.max()) <= 1.0 and abs(float(z[jnp.argmax(tanh_slope)])) < 0.01
    assert float(jax.grad(nn.Sigmoid().fn)(0.0)) == 0.25 and float(jax.grad(nn.Tanh().fn)(0.0)) == 1.0
    assert float(sigmoid_slope.min()) > 0  # (tanh' at +-8 rounds to 0 in float32)


# ----------------------------------------------------------------------------- counts and symmetry


@pytest.mark.parametrize("sizes, expected", [
    ([1, 3, 1], 10),  # UDL's shallow network
    ([3, 3, 2], 20),  # "three inputs, three hidden units, two outputs"
    ([1, 10, 10, 10, 10, 10, 1], 471),  # five layers of ten units
    ([10, 50, 50, 50, 50, 50, 1], 10_801),
    ([40, 298, 10], 15_208), ([40, 100, 100, 10], 15_210), ([40, 75, 75, 75, 10], 15_235),
    ([40, 63, 63, 63, 63, 10], 15_319),  # seed 001 prints 15,139 for this one: a slip
])
def test_parameter_counts(sizes, expected):
    assert regions.dense_param_count(sizes) == expected
    layers = [layer for width in sizes[1:-1] for layer in (nn.Dense(width), nn.ReLU())] + [nn.Dense(sizes[-1])]
    params, _ = jax.eval_shape(nn.Sequential(layers).init, jax.random.key(0), jax.ShapeDtypeStruct((1, sizes[0]), jnp.float32))
    assert count_params(params) == expected


def test_permuting_hidden_units_leaves_the_output_unchanged():
    """Each layer of ``n`` units has ``n!`` equivalent orderings, ``(n!)^l`` for ``l`` layers (seed 002 prints ``n!l``)."""
    model = nn.Sequential([nn.Dense(6), nn.ReLU(), nn.Dense(6), nn.ReLU(), nn.Dense(2)])
    x = jax.random.normal(jax.random.key(0), (5, 3))
    params, state = jax.jit(model.init)(jax.random.key(1), x)
    first, second = np.array([3, 0, 5, 1, 4, 2]), np.array([5, 4, 3, 2, 1, 0])
    permuted = {
        "dense_0": {"w": params["dense_0"]["w"][:, first], "b": params["dense_0"]["b"][first]},
        "relu_1": {},
        "dense_2": {"w": params["dense_2"]["w"][first][:, second], "b": params["dense_2"]["b"][second]},
        "relu_3": {},
        "dense_4": {"w": params["dense_4"]["w"][second], "b": params["dense_4"]["b"]},
    }
    apply = jax.jit(lambda p: model.apply(p, state, x)[0])
    np.testing.assert_allclose(apply(permuted), apply(params), rtol=1e-6)
    assert not np.allclose(permuted["dense_0"]["w"], params["dense_0"]["w"])
    assert math.factorial(6) ** 2 == 518_400  # equivalent settings of this network's hidden units
