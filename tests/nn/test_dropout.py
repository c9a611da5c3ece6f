"""Inverted dropout: keep fraction, scaling, identity in eval, determinism, keys, errors."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.8])
def test_dropout_keep_fraction_and_scaling(rate, randn):
    n = 200_000
    x = np.abs(np.asarray(randn((n // 100, 100)))) + 1.0  # no zeros in x, so a zero in y is a dropped entry
    y, state = nn.Dropout(rate).apply({}, {}, jnp.asarray(x), key=jax.random.key(0), train=True)
    assert state == {}
    y = np.asarray(y)
    kept = y != 0
    keep_fraction = float(np.mean(kept))
    standard_error = (rate * (1 - rate) / n) ** 0.5
    assert abs(keep_fraction - (1 - rate)) < 4 * standard_error
    np.testing.assert_allclose(y[kept], x[kept] / (1 - rate), rtol=1e-6)
    # Inverted dropout keeps the mean: E[y] = x.
    mean_error = float(np.std(y)) / n**0.5
    assert abs(float(np.mean(y)) - float(np.mean(x))) < 4 * mean_error


def test_dropout_eval_is_identity(randn):
    x = randn((4, 5))
    layer = nn.Dropout(0.5)
    for key in (None, jax.random.key(0)):
        y, _ = layer.apply({}, {}, x, key=key, train=False)
        np.testing.assert_array_equal(y, x)
    # Rate 0 is the identity in training too, and needs no key.
    np.testing.assert_array_equal(nn.Dropout(0.0).apply({}, {}, x, train=True)[0], x)


def test_dropout_same_key_same_mask(randn):
    x = randn((8, 16))
    layer = nn.Dropout(0.5)
    y1, _ = layer.apply({}, {}, x, key=jax.random.key(3), train=True)
    y2, _ = layer.apply({}, {}, x, key=jax.random.key(3), train=True)
    y3, _ = layer.apply({}, {}, x, key=jax.random.key(4), train=True)
    np.testing.assert_array_equal(y1, y2)
    assert bool(jnp.any((y1 == 0) != (y3 == 0)))
    keep = np.asarray(jax.random.bernoulli(jax.random.key(3), 0.5, x.shape))
    np.testing.assert_allclose(y1, np.where(keep, np.asarray(x) / 0.5, 0.0), rtol=1e-6)


@pytest.mark.parametrize("rate, broadcast_dims", [(0.3, ()), (0.5, (-2,))])
def test_dropout_matches_flax_with_the_same_key(rate, broadcast_dims, randn, compare_with_flax):
    x = randn((3, 4, 5))
    key = jax.random.key(7)
    layer = nn.Dropout(rate, broadcast_dims=broadcast_dims)
    module = fnn.Dropout(rate, broadcast_dims=broadcast_dims, deterministic=False)
    compare_with_flax(lambda p, v: layer.apply(p, {}, v, key=key, train=True)[0],
                      lambda p, v: module.apply({}, v, rng=key), {}, x)


def test_dropout_broadcast_dims(randn):
    x = jnp.asarray(np.abs(np.asarray(randn((4, 6, 8)))) + 1.0)
    y, _ = nn.Dropout(0.5, broadcast_dims=(-2,)).apply({}, {}, x, key=jax.random.key(1), train=True)
    dropped = np.asarray(y) == 0
    # One mask per (example, channel), shared along the length axis.
    np.testing.assert_array_equal(dropped, np.broadcast_to(dropped[:, :1, :], dropped.shape))
    assert 0 < float(np.mean(dropped)) < 1


def test_dropout_gradient_is_the_mask(randn, finite_differences):
    x = randn((5, 7))
    key = jax.random.key(2)
    layer = nn.Dropout(0.3)
    y, _ = layer.apply({}, {}, x, key=key, train=True)
    grad = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply({}, {}, v, key=key, train=True)[0])))(x)
    np.testing.assert_allclose(grad, np.where(np.asarray(y) != 0, 1 / 0.7, 0.0), rtol=1e-6)
    finite_differences(lambda v: layer.apply({}, {}, v, key=key, train=True)[0], (x,))


def test_dropout_transforms(randn, check_transforms):
    x = randn((4, 6))
    layer = nn.Dropout(0.5)
    key = jax.random.key(5)
    check_transforms(layer, {}, {}, x)  # eval mode: identity, vmap included
    y = check_transforms(layer, {}, {}, x, key=key, train=True, vmap=False)
    np.testing.assert_allclose(y, layer.apply({}, {}, x, key=key, train=True)[0])
    # vmap over keys: each row of the result is the call with that key.
    keys = jax.random.split(key, 3)
    batched = jax.jit(jax.vmap(lambda k: layer.apply({}, {}, x, key=k, train=True)[0]))(keys)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], layer.apply({}, {}, x, key=keys[i], train=True)[0])


def test_dropout_missing_key():
    layer = nn.Dropout(0.5)
    with pytest.raises(ValueError, match=r"Dropout\(rate=0.5\): train=True needs a PRNG key, got key=None"):
        layer.apply({}, {}, jnp.ones((2, 3)), train=True)
    with pytest.raises(ValueError, match=r"Dropout\(rate=0.5\): train=True needs a PRNG key"):
        jax.jit(lambda v: layer.apply({}, {}, v, train=True))(jnp.ones((2, 3)))


def test_dropout_bad_arguments():
    with pytest.raises(ValueError, match=r"Dropout\(.*\): expected rate in \[0, 1\), got 1.0"):
        nn.Dropout(1.0)
    with pytest.raises(TypeError, match=r"Dropout\(rate=0.5\): expected a floating-point input, got int32"):
        nn.Dropout(0.5).apply({}, {}, jnp.ones((2, 3), jnp.int32), key=jax.random.key(0), train=True)


def test_dropout_refuses_a_bad_key_and_a_traced_train_flag():
    layer = nn.Dropout(0.5)
    with pytest.raises(TypeError, match=r"Dropout\(rate=0.5\): expected key to be one PRNG key "
                                        r"\(jax.random.key\(seed\)\), got int32 of shape \(3,\)"):
        layer.apply({}, {}, jnp.ones(3), key=jnp.array([1, 2, 3]), train=True)
    traced = jax.jit(lambda x, train: layer.apply({}, {}, x, key=jax.random.key(0), train=train)[0])
    with pytest.raises(TypeError, match=r"Dropout\(rate=0.5\): expected train to be a Python bool \(under jit, make "
                                        r"it static"):
        traced(jnp.ones(3), True)


def test_dropout_keeps_nan_where_it_drops():
    x = jnp.full((64,), jnp.nan)
    apply = lambda x, key: nn.Dropout(0.5).apply({}, {}, x, key=key, train=True)[0]  # noqa: E731
    for run in (apply, jax.jit(apply)):  # under jit XLA turned a product with the mask into a select
        assert bool(jnp.all(jnp.isnan(run(x, jax.random.key(0)))))
