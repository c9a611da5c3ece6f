"""Flatten and Reshape against jnp.reshape; errors."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn


def test_flatten(randn):
    x = randn((2, 3, 4, 5))
    np.testing.assert_array_equal(nn.Flatten().apply({}, {}, x)[0], x.reshape(2, 60))
    np.testing.assert_array_equal(nn.Flatten(start_axis=2).apply({}, {}, x)[0], x.reshape(2, 3, 20))
    np.testing.assert_array_equal(nn.Flatten(start_axis=0).apply({}, {}, x)[0], x.reshape(120))
    # Order is row-major, as flax's x.reshape((x.shape[0], -1)) in its CNN example.
    np.testing.assert_array_equal(nn.Flatten().apply({}, {}, jnp.arange(6.0).reshape(1, 2, 3))[0],
                                  [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])


def test_reshape(randn):
    x = randn((2, 12))
    np.testing.assert_array_equal(nn.Reshape((3, 4)).apply({}, {}, x)[0], x.reshape(2, 3, 4))
    np.testing.assert_array_equal(nn.Reshape((-1, 2)).apply({}, {}, x)[0], x.reshape(2, 6, 2))
    np.testing.assert_array_equal(nn.Reshape((4, 6), start_axis=0).apply({}, {}, x)[0], x.reshape(4, 6))


def test_reshape_transforms_and_gradients(randn, check_transforms, finite_differences):
    x = randn((3, 2, 4))
    for layer, expected in [(nn.Flatten(), x.reshape(3, 8)), (nn.Reshape((4, 2)), x.reshape(3, 4, 2))]:
        # vmap: the per-example call sees (2, 4); start_axis=1 then keeps its first axis, so
        # compare the per-example form (start_axis=0) under vmap with the batched call.
        y = check_transforms(layer, {}, {}, x, vmap=False)
        np.testing.assert_array_equal(y, expected)
        finite_differences(lambda v: layer.apply({}, {}, v)[0], (x,))
    per_example = nn.Flatten(start_axis=0)
    y_vmap = jax.vmap(lambda v: per_example.apply({}, {}, v)[0])(x)
    np.testing.assert_array_equal(y_vmap, nn.Flatten().apply({}, {}, x)[0])
    y_vmap = jax.vmap(lambda v: nn.Reshape((4, 2), start_axis=0).apply({}, {}, v)[0])(x)
    np.testing.assert_array_equal(y_vmap, x.reshape(3, 4, 2))


def test_reshape_errors():
    with pytest.raises(ValueError, match=r"Reshape\(shape=\(5, 5\), start_axis=1\): cannot reshape axes \(12,\) "
                                         r"of input \(2, 12\) \(12 elements\) to \(5, 5\)"):
        nn.Reshape((5, 5)).apply({}, {}, jnp.zeros((2, 12)))
    with pytest.raises(ValueError, match=r"Reshape\(shape=\(-1, 5\), start_axis=1\): cannot reshape"):
        nn.Reshape((-1, 5)).apply({}, {}, jnp.zeros((2, 12)))
    with pytest.raises(ValueError, match=r"Reshape\(shape=\(-1, -1\), start_axis=1\): expected positive sizes "
                                         r"and at most one -1"):
        nn.Reshape((-1, -1))
    with pytest.raises(ValueError, match=r"Flatten\(start_axis=1\): expected input of rank >= 2.*got rank 1"):
        nn.Flatten().apply({}, {}, jnp.zeros((4,)))
