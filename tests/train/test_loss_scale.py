"""Dynamic loss scaling: the rule, exact unscaling, float16 gradients rescued from underflow."""
import jax
import jax.numpy as jnp
import numpy as np

from jdl import nn
from jdl.train import loss_scale

X = jnp.asarray(np.random.default_rng(0).standard_normal((16, 5)), jnp.float32)


def test_the_dynamic_rule():
    scale = loss_scale.DynamicLossScale.create(8.0)
    halved = loss_scale.adjust(scale, jnp.array(False))
    assert float(halved.scale) == 4.0 and int(halved.good_steps) == 0
    assert float(loss_scale.adjust(loss_scale.DynamicLossScale.create(1.0), jnp.array(False)).scale) == 1.0  # floor
    state = scale
    for _ in range(2):
        state = loss_scale.adjust(state, jnp.array(True), period=3)
    assert float(state.scale) == 8.0 and int(state.good_steps) == 2
    state = loss_scale.adjust(state, jnp.array(True), period=3)
    assert float(state.scale) == 16.0 and int(state.good_steps) == 0
    assert bool(loss_scale.all_finite({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.inf])})) is False
    kept = loss_scale.select_finite(jnp.array(False), {"w": jnp.zeros(2)}, {"w": jnp.ones(2)})
    np.testing.assert_array_equal(kept["w"], [1.0, 1.0])


def test_float32_gradients_are_exactly_unscaled():
    model = nn.Sequential([nn.Dense(8), nn.Tanh(), nn.Dense(1)])
    params, state = model.init(jax.random.key(0), X)
    loss = lambda p: jnp.mean(model.apply(p, state, X)[0] ** 2)  # noqa: E731
    value, grads, finite = loss_scale.value_and_grad(loss, loss_scale.DynamicLossScale.create(2.0 ** 10))(params)
    value_ref, grads_ref = jax.value_and_grad(loss)(params)
    assert bool(finite) and float(value) == float(value_ref)
    for g, g_ref in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        np.testing.assert_array_equal(g, g_ref)  # a power-of-two scale divides back exactly


def test_float16_gradients_underflow_without_scaling_and_match_float32_with_it():
    model = nn.Sequential([nn.Dense(8), nn.Tanh(), nn.Dense(1)])
    params, state = model.init(jax.random.key(0), X)
    half = nn.MixedPrecision(model, nn.Policy(jnp.float32, jnp.float16, jnp.float32))
    # A small loss (a model already close to its targets), whose gradients fall under float16's range.
    loss = lambda layer: lambda p: 1e-8 * jnp.mean(layer.apply(p, state, X)[0] ** 2)  # noqa: E731
    grads_ref = jax.grad(loss(model))(params)
    plain = jax.grad(loss(half))(params)
    zeros = sum(int(jnp.sum(g == 0)) for g in jax.tree.leaves(plain))
    assert zeros > 0.5 * sum(g.size for g in jax.tree.leaves(plain))  # most underflowed
    _, scaled, finite = loss_scale.value_and_grad(loss(half), loss_scale.DynamicLossScale.create(2.0 ** 24))(params)
    assert bool(finite)
    for g, g_ref in zip(jax.tree.leaves(scaled), jax.tree.leaves(grads_ref)):
        np.testing.assert_allclose(g, g_ref, rtol=0.05, atol=0.02 * float(jnp.max(jnp.abs(g_ref))))
    # Too large a scale overflows: reported, so the step can be skipped and the scale halved.
    _, _, finite = loss_scale.value_and_grad(loss(half), loss_scale.DynamicLossScale.create(2.0 ** 60))(params)
    assert not bool(finite)
