"""Activation layers against flax.linen's functions, PReLU against flax.linen.PReLU."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn

ACTIVATIONS = [
    pytest.param(nn.Sigmoid(), fnn.sigmoid, id="sigmoid"),
    pytest.param(nn.Tanh(), fnn.tanh, id="tanh"),
    pytest.param(nn.ReLU(), fnn.relu, id="relu"),
    pytest.param(nn.LeakyReLU(0.2), lambda x: fnn.leaky_relu(x, 0.2), id="leaky_relu"),
    pytest.param(nn.ELU(0.7), lambda x: fnn.elu(x, 0.7), id="elu"),
    pytest.param(nn.GELU(), fnn.gelu, id="gelu-tanh"),
    pytest.param(nn.GELU(approximate=False), lambda x: fnn.gelu(x, approximate=False), id="gelu-erf"),
    pytest.param(nn.Softmax(), fnn.softmax, id="softmax"),
    pytest.param(nn.Softmax(axis=0), lambda x: fnn.softmax(x, axis=0), id="softmax-axis0"),
    pytest.param(nn.LogSoftmax(), fnn.log_softmax, id="log_softmax"),
    pytest.param(nn.Softplus(), fnn.softplus, id="softplus"),
]


def _away_from_kinks(randn, shape, seed=0):
    # |x| >= 0.1, so finite differences never straddle the kink of ReLU and friends at 0.
    x = np.asarray(randn(shape, seed, scale=2.0))
    return jnp.asarray(x + 0.1 * np.sign(x))


@pytest.mark.parametrize("layer, reference", ACTIVATIONS)
def test_activation_matches_flax(layer, reference, randn, compare_with_flax, finite_differences):
    x = _away_from_kinks(randn, (3, 5))
    params, state = layer.init(jax.random.key(0), x)
    assert params == {} and state == {}
    compare_with_flax(lambda p, v: layer.apply(p, {}, v)[0], lambda p, v: reference(v), {}, x)
    finite_differences(lambda v: layer.apply({}, {}, v)[0], (x,))


def test_step():
    x = jnp.array([-2.0, -0.0, 0.0, 1e-6, 3.0])
    grad = jax.jit(jax.grad(lambda v: jnp.sum(nn.Step().apply({}, {}, v)[0] * jnp.arange(5.0))))(x)
    np.testing.assert_array_equal(nn.Step().apply({}, {}, x)[0], [0.0, 0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(grad, np.zeros(5))


def test_activations_are_stable_at_extremes():
    x = jnp.array([[-1e4, 0.0, 1e4], [-100.0, -50.0, 100.0]])
    weights = jnp.arange(6.0).reshape(2, 3)
    for layer, reference in [(nn.Softmax(), jax.nn.softmax), (nn.LogSoftmax(), jax.nn.log_softmax),
                             (nn.Sigmoid(), jax.nn.sigmoid), (nn.ELU(), jax.nn.elu)]:
        y, _ = jax.jit(layer.apply)({}, {}, x)
        grad = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply({}, {}, v)[0] * weights)))(x)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(grad)), layer
        np.testing.assert_allclose(y, reference(x), rtol=1e-6, atol=1e-6)


def test_activation_transforms(randn, check_transforms):
    x = _away_from_kinks(randn, (4, 3), seed=1)
    for layer, reference in [(nn.ReLU(), jax.nn.relu), (nn.LogSoftmax(), jax.nn.log_softmax), (nn.GELU(), jax.nn.gelu)]:
        y = check_transforms(layer, {}, {}, x)
        np.testing.assert_allclose(y, jax.jit(reference)(x), rtol=1e-6, atol=1e-6)


def test_prelu_matches_flax(randn, compare_with_flax, finite_differences):
    layer, module = nn.PReLU(0.2), fnn.PReLU(negative_slope_init=0.2)
    x = _away_from_kinks(randn, (3, 4))
    params, state = layer.init(jax.random.key(0), x)
    flax_params = module.init(jax.random.key(0), x)["params"]
    assert state == {}
    assert params["slope"].shape == flax_params["negative_slope"].shape == ()
    np.testing.assert_allclose(params["slope"], flax_params["negative_slope"])
    params = {"slope": jnp.array(-0.35)}  # a learned slope, not the initial one
    y = compare_with_flax(lambda p, v: layer.apply(p, {}, v)[0],
                          lambda p, v: module.apply({"params": {"negative_slope": p["slope"]}}, v), params, x)
    np.testing.assert_allclose(y, np.where(x >= 0, x, -0.35 * np.asarray(x)), rtol=1e-6)
    finite_differences(lambda p, v: layer.apply(p, {}, v)[0], (params, x))


def test_prelu_per_channel(randn, check_transforms, finite_differences):
    layer = nn.PReLU(0.1, per_channel=True)
    x = _away_from_kinks(randn, (5, 3))
    params, _ = layer.init(jax.random.key(0), x)
    np.testing.assert_allclose(params["slope"], np.full((3,), 0.1))
    slope = np.array([0.1, -0.5, 2.0], np.float32)
    params = {"slope": jnp.asarray(slope)}
    y = check_transforms(layer, params, {}, x)
    x_np = np.asarray(x)
    np.testing.assert_allclose(y, np.where(x_np >= 0, x_np, slope * x_np), rtol=1e-6)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(layer.apply(p, {}, x)[0])))(params)["slope"]
    np.testing.assert_allclose(grad, np.sum(np.minimum(x_np, 0), axis=0), rtol=1e-5)
    finite_differences(lambda p, v: layer.apply(p, {}, v)[0], (params, x))


def test_hard_tanh_matches_flax(randn, compare_with_flax, finite_differences):
    x = np.asarray(randn((4, 6), 3, scale=2.0))
    x = jnp.asarray(np.where(np.abs(np.abs(x) - 1.0) < 0.1, x + 0.3, x))  # off the kinks at +-1
    layer = nn.HardTanh()
    compare_with_flax(lambda p, v: layer.apply(p, {}, v)[0], lambda p, v: fnn.hard_tanh(v), {}, x)
    finite_differences(lambda v: layer.apply({}, {}, v)[0], (x,))
    y, _ = nn.HardTanh(0.0, 6.0).apply({}, {}, jnp.array([-1.0, 3.0, 7.0]))  # ReLU6's shape
    np.testing.assert_array_equal(y, [0.0, 3.0, 6.0])


def test_radial_basis_matches_scikit_learn_rbf_kernel(randn, finite_differences):
    """``exp(-||x - c||^2 / (2 sigma^2))`` is scikit-learn's ``rbf_kernel`` with ``gamma = 1 / (2 sigma^2)``."""
    from sklearn.metrics.pairwise import rbf_kernel

    layer = nn.RadialBasis(4)
    x = randn((5, 3), 0)
    params, state = layer.init(jax.random.key(1), x)
    assert params["centers"].shape == (3, 4) and params["widths"].shape == (4,) and state == {}
    widths = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
    params = {"centers": params["centers"], "widths": jnp.asarray(widths)}
    y, _ = jax.jit(layer.apply)(params, state, x)
    for unit, sigma in enumerate(widths):
        reference = rbf_kernel(np.asarray(x, np.float64), np.asarray(params["centers"][:, unit:unit + 1].T, np.float64),
                               gamma=1.0 / (2.0 * sigma**2))[:, 0]
        np.testing.assert_allclose(y[:, unit], reference, rtol=1e-5, atol=1e-7)
    at_centres, _ = layer.apply(params, state, params["centers"].T)
    np.testing.assert_allclose(np.diag(at_centres), np.ones(4), rtol=1e-6)  # 1 at its own centre
    finite_differences(lambda p, v: layer.apply(p, {}, v)[0], (params, x))


def test_activation_errors():
    with pytest.raises(TypeError, match=r"ReLU\(\): expected a floating-point input, got int32"):
        nn.ReLU().apply({}, {}, jnp.ones((2,), jnp.int32))
    with pytest.raises(TypeError, match=r"Softmax\(axis=-1\): expected a floating-point input, got int32"):
        nn.Softmax().init(jax.random.key(0), jnp.ones((2,), jnp.int32))
    with pytest.raises(ValueError, match=r"ReLU\(\): expected params with keys \[\], got keys \['slope'\]"):
        nn.ReLU().apply({"slope": jnp.zeros(())}, {}, jnp.ones(2))
    with pytest.raises(ValueError, match=r"PReLU\(negative_slope_init=0.01, per_channel=True\): expected "
                                         r"params\['slope'\] of shape \(3,\), got \(\)"):
        nn.PReLU(per_channel=True).apply({"slope": jnp.zeros(())}, {}, jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"RadialBasis\(features=4\): expected params\['centers'\] of shape \(3, 4\)"):
        nn.RadialBasis(4).apply({"centers": jnp.zeros((2, 4)), "widths": jnp.ones(4)}, {}, jnp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"HardTanh\(min_value=1.0, max_value=-1.0\): expected min_value < max_value"):
        nn.HardTanh(1.0, -1.0)


def _all_activation_layers():
    """One of every activation layer (every subclass of the shared base, and PReLU)."""
    pending, layers = list(nn.activation._Activation.__subclasses__()), []
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        layers.append(cls())
    return layers + [nn.PReLU(0.1, per_channel=True)]


@pytest.mark.parametrize("layer", _all_activation_layers(), ids=repr)
def test_nan_in_gives_nan_out(layer):
    """A NaN input reaches the output as NaN (ReLU and Step used to turn it into 0)."""
    x = jnp.array([[jnp.nan, 2.0, -2.0], [1.0, -1.0, 0.5]])
    params, state = layer.init(jax.random.key(0), x)
    y = np.asarray(layer.apply(params, state, x)[0])
    assert np.isnan(y[0, 0]) and np.all(np.isfinite(y[1])), y
