"""Embedding against flax.linen.Embed (same table), its initialiser, attend, errors."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn


def _ids(shape, num_embeddings, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, num_embeddings, shape), jnp.int32)


@pytest.mark.parametrize("shape", [(5,), (2, 3)])
def test_embedding_matches_flax(shape, random_params, compare_with_flax):
    layer, module = nn.Embedding(7, 4), fnn.Embed(7, 4)
    ids = _ids(shape, 7)
    params = random_params(layer, ids)
    assert params["embedding"].shape == (7, 4)
    y = compare_with_flax(lambda p, v: layer.apply(p, {}, v)[0],
                          lambda p, v: module.apply({"params": {"embedding": p["embedding"]}}, v), params, ids)
    assert y.shape == shape + (4,)
    np.testing.assert_array_equal(y, np.asarray(params["embedding"])[np.asarray(ids)])


def test_embedding_gradient_counts_repeated_ids(random_params):
    layer = nn.Embedding(5, 3)
    ids = jnp.array([[1, 3, 1], [1, 0, 4]])
    params = random_params(layer, ids)
    grad = jax.jit(jax.grad(lambda p: jnp.sum(layer.apply(p, {}, ids)[0])))(params)["embedding"]
    np.testing.assert_allclose(grad, np.array([1, 3, 0, 1, 1], np.float32)[:, None] * np.ones((1, 3)))


def test_embedding_default_init_is_flax_default():
    layer = nn.Embedding(300, 16)
    key = jax.random.key(4)
    params, state = layer.init(key, jnp.zeros((2, 3), jnp.int32))
    assert state == {}
    flax_default = fnn.Embed(300, 16).embedding_init  # variance_scaling(1, "fan_in", "normal", out_axis=0)
    np.testing.assert_allclose(params["embedding"], flax_default(key, (300, 16)), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jnp.std(params["embedding"]), 16 ** -0.5, rtol=0.05)


def test_embedding_out_of_range_ids_give_nan_rows_under_jit(random_params):
    layer = nn.Embedding(5, 2)
    ids = jnp.array([0, 4, 5, -1, -5, 100])
    params = random_params(layer, ids)
    y, _ = jax.jit(layer.apply)(params, {}, ids)  # traced ids cannot be checked by value
    np.testing.assert_array_equal(y[:2], params["embedding"][jnp.array([0, 4])])
    # Negative ids are not wrapped around Python-style to the last rows.
    assert bool(jnp.all(jnp.isnan(y[2:])))


def test_embedding_refuses_concrete_out_of_range_ids(random_params):
    layer = nn.Embedding(5, 2)
    params = random_params(layer, jnp.array([0]))
    with pytest.raises(ValueError, match=r"Embedding\(num_embeddings=5, features=2\): expected ids in \[0, 5\) "
                                         r"\(the vocabulary\), got ids from -1 to 4"):
        layer.apply(params, {}, jnp.array([0, 4, -1]))


def test_embedding_finite_differences(random_params, finite_differences):
    layer = nn.Embedding(6, 3)
    ids = _ids((2, 4), 6)
    params = random_params(layer, ids)
    finite_differences(lambda p: layer.apply(p, {}, ids)[0], (params,))


def test_embedding_transforms(random_params, check_transforms):
    layer = nn.Embedding(6, 3)
    ids = _ids((4, 2), 6, seed=1)
    params = random_params(layer, ids)
    y = check_transforms(layer, params, {}, ids)
    np.testing.assert_array_equal(y, np.take(np.asarray(params["embedding"]), np.asarray(ids), axis=0))


def test_attend_matches_flax(random_params, randn, compare_with_flax):
    layer = nn.Embedding(7, 4)
    params = random_params(layer, jnp.zeros((1,), jnp.int32))
    x = randn((3, 4))
    compare_with_flax(lambda p, v: nn.attend(p, v),
                      lambda p, v: fnn.Embed(7, 4).apply({"params": p}, v, method="attend"), params, x)
    with pytest.raises(ValueError, match=r"attend: expected x with last axis 4, got shape \(3, 5\)"):
        nn.attend(params, jnp.zeros((3, 5)))


def test_embedding_float_ids():
    layer = nn.Embedding(10, 4)
    params = {"embedding": jnp.zeros((10, 4))}
    with pytest.raises(TypeError, match=r"Embedding\(num_embeddings=10, features=4\): expected an integer ids, "
                                        r"got float32 ids of shape \(2, 3\)"):
        layer.apply(params, {}, jnp.ones((2, 3)))
    with pytest.raises(TypeError, match=r"Embedding\(num_embeddings=10, features=4\): expected an integer ids"):
        layer.init(jax.random.key(0), jnp.ones((2, 3)))


def test_embedding_table_of_wrong_shape():
    layer = nn.Embedding(10, 4)
    with pytest.raises(ValueError, match=r"Embedding\(num_embeddings=10, features=4\): expected params\['embedding'\] "
                                         r"of shape \(10, 4\), got \(12, 4\)"):
        layer.apply({"embedding": jnp.zeros((12, 4))}, {}, jnp.zeros((2,), jnp.int32))
