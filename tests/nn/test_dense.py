"""Dense against flax.linen.Dense (same weights), finite differences, transforms, errors."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn


def _flax_dense(features, use_bias=True):
    module = fnn.Dense(features, use_bias=use_bias)

    def apply(params, x):
        flax_params = {"kernel": params["w"]}
        if use_bias:
            flax_params["bias"] = params["b"]
        return module.apply({"params": flax_params}, x)

    return apply


@pytest.mark.parametrize("shape, use_bias", [((4, 6), True), ((2, 3, 6), True), ((6,), False)])
def test_dense_matches_flax(shape, use_bias, randn, random_params, compare_with_flax):
    layer = nn.Dense(5, use_bias=use_bias)
    x = randn(shape)
    params = random_params(layer, x)
    assert params["w"].shape == (6, 5)
    assert sorted(params) == (["b", "w"] if use_bias else ["w"])
    y = compare_with_flax(lambda p, v: layer.apply(p, {}, v)[0], _flax_dense(5, use_bias), params, x)
    assert y.shape == shape[:-1] + (5,)


def test_dense_init_matches_flax_init():
    # flax's default kernel initialiser (LeCun normal, truncated) and a zero bias; jdl draws
    # the kernel from the first half of split(key).
    x = jnp.zeros((1, 400))
    key = jax.random.key(1)
    params, state = nn.Dense(64).init(key, x)
    flax_params = fnn.Dense(64).init(key, x)["params"]
    assert state == {}
    assert params["w"].shape == flax_params["kernel"].shape == (400, 64)
    expected = fnn.Dense(64).kernel_init(jax.random.split(key)[0], (400, 64))
    np.testing.assert_allclose(params["w"], expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jnp.std(params["w"]), (1 / 400) ** 0.5, rtol=0.05)
    np.testing.assert_array_equal(params["b"], flax_params["bias"])


def test_dense_finite_differences(randn, random_params, finite_differences):
    layer = nn.Dense(3)
    x = randn((2, 4))
    params = random_params(layer, x)
    finite_differences(lambda p, v: layer.apply(p, {}, v)[0], (params, x))


def test_dense_transforms(randn, random_params, check_transforms):
    layer = nn.Dense(3)
    x = randn((4, 5))
    params = random_params(layer, x)
    y = check_transforms(layer, params, {}, x)
    np.testing.assert_allclose(y, np.asarray(x) @ np.asarray(params["w"]) + np.asarray(params["b"]),
                               rtol=1e-5, atol=1e-5)


def test_dense_wrong_feature_size():
    layer = nn.Dense(10)
    params, state = jax.eval_shape(layer.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 784), jnp.float32))
    params = jax.tree.map(lambda p: jnp.zeros(p.shape, p.dtype), params)
    with pytest.raises(ValueError, match=r"Dense\(features=10\): expected input with last axis 784.*"
                                         r"got input of shape \(2, 28\)"):
        layer.apply(params, state, jnp.zeros((2, 28)))
    # Under jit the same message comes at trace time, not from XLA.
    with pytest.raises(ValueError, match=r"Dense\(features=10\): expected input with last axis 784"):
        jax.jit(layer.apply)(params, state, jnp.zeros((2, 28)))


def test_dense_integer_input():
    layer = nn.Dense(10)
    params = {"w": jnp.zeros((4, 10)), "b": jnp.zeros((10,))}
    with pytest.raises(TypeError, match=r"Dense\(features=10\): expected a floating-point input, got int32"):
        layer.apply(params, {}, jnp.ones((2, 4), jnp.int32))
    with pytest.raises(TypeError, match=r"Dense\(features=10\): expected a floating-point input, got int32"):
        layer.init(jax.random.key(0), jnp.ones((2, 4), jnp.int32))


def test_dense_params_of_wrong_shape():
    layer = nn.Dense(10)
    x = jnp.zeros((2, 784))
    with pytest.raises(ValueError, match=r"Dense\(features=10\): expected params\['w'\] of shape \(784, 10\), "
                                         r"got \(784, 5\)"):
        layer.apply({"w": jnp.zeros((784, 5)), "b": jnp.zeros((10,))}, {}, x)
    with pytest.raises(ValueError, match=r"Dense\(features=10\): expected params\['b'\] of shape \(10,\), got \(5,\)"):
        layer.apply({"w": jnp.zeros((784, 10)), "b": jnp.zeros((5,))}, {}, x)
    with pytest.raises(ValueError, match=r"Dense\(features=10\): expected params with keys \['b', 'w'\], "
                                         r"got keys \['kernel'\]"):
        layer.apply({"kernel": jnp.zeros((784, 10))}, {}, x)
