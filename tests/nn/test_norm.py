"""BatchNorm and LayerNorm against flax.linen (same weights, same running statistics)."""
import re

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn


def _bn_variables(params, state):
    return {"params": {"scale": params["gamma"], "bias": params["beta"]},
            "batch_stats": {"mean": state["mean"], "var": state["var"]}}


def _bn_setup(randn, random_params, shape, seed=0):
    """An input with non-zero mean and scale, random gamma/beta and non-trivial running stats."""
    x = randn(shape, seed, scale=2.0, mean=3.0)
    params = random_params(nn.BatchNorm(), x, seed=seed + 1)
    features = shape[-1]
    var = np.abs(np.asarray(randn((features,), seed + 3))) + 0.5
    return x, params, {"mean": randn((features,), seed + 2), "var": jnp.asarray(var)}


@pytest.mark.parametrize("shape, momentum, epsilon", [((8, 5), 0.9, 1e-5), ((4, 3, 5), 0.99, 1e-3)])
def test_batch_norm_train_matches_flax(shape, momentum, epsilon, randn, random_params, compare_with_flax,
                                       assert_trees_close):
    layer = nn.BatchNorm(momentum=momentum, epsilon=epsilon)
    module = fnn.BatchNorm(use_running_average=False, momentum=momentum, epsilon=epsilon)
    x, params, state = _bn_setup(randn, random_params, shape)
    jdl_params, jdl_state = layer.init(jax.random.key(0), x)
    flax_variables = module.init(jax.random.key(0), x)
    assert_trees_close(_bn_variables(jdl_params, jdl_state), flax_variables)  # gamma 1, beta 0, mean 0, var 1

    def flax_apply(p, v, s=state):
        return module.apply(_bn_variables(p, s), v, mutable=["batch_stats"])

    compare_with_flax(lambda p, v: layer.apply(p, state, v, train=True)[0], lambda p, v: flax_apply(p, v)[0],
                      params, x)
    # Two steps of running statistics, in flax's convention for momentum.
    jdl_step = jax.jit(lambda p, s, v: layer.apply(p, s, v, train=True))
    flax_step = jax.jit(flax_apply)
    for step in range(2):
        x_step = randn(shape, seed=10 + step, scale=3.0, mean=-1.0)
        y, new_state = jdl_step(params, state, x_step)
        y_ref, updates = flax_step(params, x_step, state)
        assert_trees_close(y, y_ref)
        assert_trees_close(new_state, dict(updates["batch_stats"]))
        rows = np.asarray(x_step, np.float64).reshape(-1, shape[-1])
        assert_trees_close(new_state, {"mean": momentum * np.asarray(state["mean"]) + (1 - momentum) * rows.mean(0),
                                       "var": momentum * np.asarray(state["var"]) + (1 - momentum) * rows.var(0)})
        state = new_state


def test_batch_norm_train_normalises_the_batch(randn, random_params):
    layer = nn.BatchNorm()
    x, _, state = _bn_setup(randn, random_params, (16, 4))
    params = {"gamma": jnp.ones(4), "beta": jnp.zeros(4)}
    y, _ = layer.apply(params, state, x, train=True)
    np.testing.assert_allclose(np.mean(y, axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(np.var(y, axis=0), 1.0, rtol=1e-4)


def test_batch_norm_eval_matches_flax(randn, random_params, compare_with_flax, assert_trees_close):
    layer = nn.BatchNorm(epsilon=1e-4)
    module = fnn.BatchNorm(use_running_average=True, epsilon=1e-4)
    x, params, state = _bn_setup(randn, random_params, (6, 3, 4))
    y = compare_with_flax(lambda p, v: layer.apply(p, state, v, train=False)[0],
                          lambda p, v: module.apply(_bn_variables(p, state), v), params, x)
    p, s = jax.tree.map(np.asarray, (params, state))
    expected = p["gamma"] * (np.asarray(x) - s["mean"]) / np.sqrt(s["var"] + 1e-4) + p["beta"]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    _, same_state = layer.apply(params, state, x, train=False)
    assert_trees_close(same_state, state, rtol=0, atol=0)


def test_batch_norm_vmap_with_axis_name_is_the_batched_call(randn, random_params, assert_trees_close):
    layer = nn.BatchNorm(momentum=0.8, axis_name="batch")
    x, params, state = _bn_setup(randn, random_params, (4, 3, 5))
    y, new_state = nn.BatchNorm(momentum=0.8).apply(params, state, x, train=True)
    y_vmap, states = jax.jit(jax.vmap(lambda v: layer.apply(params, state, v, train=True), axis_name="batch"))(x)
    assert_trees_close(y_vmap, y)
    assert_trees_close(jax.tree.map(lambda s: s[0], states), new_state)
    assert_trees_close(jax.tree.map(lambda s: s[-1], states), new_state)


def test_batch_norm_per_example_vmap_with_axis_name_is_the_batched_call(randn, random_params, assert_trees_close):
    """vmap over single examples (rank 1 inside): the batch statistics come from pmean alone."""
    layer = nn.BatchNorm(momentum=0.8, axis_name="batch")
    x, params, state = _bn_setup(randn, random_params, (6, 5))
    y, new_state = nn.BatchNorm(momentum=0.8).apply(params, state, x, train=True)
    y_vmap, states = jax.jit(jax.vmap(lambda v: layer.apply(params, state, v, train=True), axis_name="batch"))(x)
    assert_trees_close(y_vmap, y)
    assert_trees_close(jax.tree.map(lambda s: s[0], states), new_state)
    with pytest.raises(ValueError, match=r"BatchNorm\(momentum=0.99, epsilon=1e-05\): expected input of rank >= 2"):
        nn.BatchNorm().apply(params, state, x[0], train=True)


def test_batch_norm_transforms(randn, random_params, check_transforms):
    layer = nn.BatchNorm(momentum=0.9)
    x, params, state = _bn_setup(randn, random_params, (4, 3, 2))
    check_transforms(layer, params, state, x, train=False)
    y = check_transforms(layer, params, state, x, train=True, vmap=False)
    module = fnn.BatchNorm(use_running_average=False, momentum=0.9)
    y_ref, _ = jax.jit(lambda v: module.apply(_bn_variables(params, state), v, mutable=["batch_stats"]))(x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)


def test_batch_norm_finite_differences(randn, random_params, finite_differences):
    layer = nn.BatchNorm()
    x, params, state = _bn_setup(randn, random_params, (6, 3))
    for train in (True, False):
        finite_differences(lambda p, v: layer.apply(p, state, v, train=train)[0], (params, x))


@pytest.mark.parametrize("use_scale, use_bias", [(True, True), (False, True), (True, False)])
def test_layer_norm_matches_flax(use_scale, use_bias, randn, random_params, compare_with_flax):
    layer = nn.LayerNorm(use_scale=use_scale, use_bias=use_bias)
    module = fnn.LayerNorm(use_scale=use_scale, use_bias=use_bias)  # same default epsilon, 1e-6
    x = randn((3, 4, 6), scale=2.0, mean=1.0)
    params = random_params(layer, x)
    names = {"gamma": "scale", "beta": "bias"}
    assert sorted(params) == sorted(k for k, used in (("gamma", use_scale), ("beta", use_bias)) if used)
    y = compare_with_flax(lambda p, v: layer.apply(p, {}, v)[0],
                          lambda p, v: module.apply({"params": {names[k]: w for k, w in p.items()}}, v),
                          params, x)
    x, p = np.asarray(x, np.float64), jax.tree.map(np.asarray, params)
    expected = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-6)
    expected = expected * p.get("gamma", 1.0) + p.get("beta", 0.0)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_layer_norm_epsilon_matches_flax(randn, random_params, compare_with_flax):
    # A large epsilon makes a wrong epsilon visible.
    layer, module = nn.LayerNorm(epsilon=0.5), fnn.LayerNorm(epsilon=0.5)
    x = randn((4, 3))
    params = random_params(layer, x)
    compare_with_flax(lambda p, v: layer.apply(p, {}, v)[0],
                      lambda p, v: module.apply({"params": {"scale": p["gamma"], "bias": p["beta"]}}, v), params, x)


def test_layer_norm_transforms_and_finite_differences(randn, random_params, check_transforms, finite_differences):
    layer = nn.LayerNorm()
    x = randn((3, 5))
    params = random_params(layer, x)
    y = check_transforms(layer, params, {}, x)
    y_ref = jax.jit(fnn.LayerNorm().apply)({"params": {"scale": params["gamma"], "bias": params["beta"]}}, x)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    finite_differences(lambda p, v: layer.apply(p, {}, v)[0], (params, x))


def test_layer_norm_forward_mode_and_second_order_match_flax(randn, random_params):
    # The derivative is a custom JVP: forward mode (jvp, jacfwd) and the Hessian (jacfwd of
    # jacrev) must work and equal flax's autodiff of its own LayerNorm.
    layer, module = nn.LayerNorm(), fnn.LayerNorm()
    x = randn((2, 6), scale=2.0, mean=1.0)
    params = random_params(layer, x)
    ours = lambda v: layer.apply(params, {}, v)[0]  # noqa: E731
    theirs = lambda v: module.apply({"params": {"scale": params["gamma"], "bias": params["beta"]}}, v)  # noqa: E731
    tangent = randn((2, 6), seed=5)
    for transform in (lambda f: jax.jvp(f, (x,), (tangent,))[1], lambda f: jax.jacfwd(f)(x),
                      lambda f: jax.hessian(lambda v: jnp.sum(jnp.sin(f(v))))(x)):
        compare = jax.jit(lambda: (transform(ours), transform(theirs)))  # one program each, not one per op
        np.testing.assert_allclose(*compare(), rtol=1e-4, atol=1e-4)


def test_norm_errors():
    layer = nn.BatchNorm()
    params, state = {"gamma": jnp.ones(4), "beta": jnp.zeros(4)}, {"mean": jnp.zeros(4), "var": jnp.ones(4)}
    with pytest.raises(TypeError, match=r"BatchNorm\(momentum=0.99, epsilon=1e-05\): expected a floating-point input, "
                                        r"got int32"):
        layer.apply(params, state, jnp.ones((2, 4), jnp.int32), train=True)
    with pytest.raises(ValueError, match=r"BatchNorm\(.*\): expected state with keys \['mean', 'var'\], got keys \[\]"):
        layer.apply(params, {}, jnp.ones((2, 4)), train=True)
    with pytest.raises(ValueError, match=r"BatchNorm\(.*\): expected input of rank >= 2.*got rank 1"):
        layer.apply(params, state, jnp.ones((4,)), train=True)
    with pytest.raises(ValueError, match=r"BatchNorm\(.*\): expected params\['(?:beta|gamma)'\] of shape \(3,\), "
                                         r"got \(4,\)"):
        layer.apply(params, {"mean": jnp.zeros(3), "var": jnp.ones(3)}, jnp.ones((2, 3)), train=True)
    with pytest.raises(ValueError, match=r"BatchNorm\(.*\): expected state\['var'\] of shape \(4,\), got \(3,\); "
                                         r"is this state from another model\?"):
        layer.apply(params, {"mean": jnp.zeros(4), "var": jnp.ones(3)}, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"BatchNorm\(.*\): expected momentum in \[0, 1\], got 1.5"):
        nn.BatchNorm(momentum=1.5)
    with pytest.raises(ValueError, match=r"LayerNorm\(epsilon=1e-06\): expected params\['(?:beta|gamma)'\] "
                                         r"of shape \(3,\), got \(4,\)"):
        nn.LayerNorm().apply(params, {}, jnp.ones((2, 3)))


def test_batch_norm_refuses_an_empty_batch_in_training():
    """The statistics of zero examples are NaN, and used to be written into the running averages."""
    layer = nn.BatchNorm()
    params, state = layer.init(jax.random.key(0), jnp.zeros((2, 3)))
    # The message is this layer's or, first, check_array's generic one (no empty axis anywhere).
    for shape in [(0, 3), (2, 0, 3)]:
        with pytest.raises(ValueError, match=rf"^BatchNorm\(momentum=0.99, epsilon=1e-05\): expected .*empty.*shape "
                                             rf"{re.escape(str(shape))}"):
            jax.jit(lambda v: layer.apply(params, state, v, train=True))(jnp.zeros(shape))


def _standardized(x, axis):
    x = np.asarray(x, np.float64)
    return (x - x.mean(axis, keepdims=True)) / np.sqrt(x.var(axis, keepdims=True))


@pytest.mark.parametrize("offset, spread", [(1e4, 1.0), (1e19, 1e18), (0.0, 1e19), (-3e20, 1e20)])
def test_norms_have_a_stable_variance(offset, spread):
    """Two passes, not E[x^2] - E[x]^2: that was off by ~2e3 on 1e4 + N(0, 1) and all-NaN from |x| ~ 1e19.
    Corrected two-pass statistics, scaled by a power of two, are within ~2e-7 of float64 at every scale."""
    x = jnp.asarray(offset + spread * np.random.default_rng(0).standard_normal((16, 8)), jnp.float32)
    layer_norm, batch_norm = nn.LayerNorm(epsilon=1e-30), nn.BatchNorm(epsilon=1e-30, momentum=0.0)
    ln_params, _ = layer_norm.init(jax.random.key(0), x)
    bn_params, bn_state = batch_norm.init(jax.random.key(0), x)

    @jax.jit
    def run(v):
        ln = lambda u: layer_norm.apply(ln_params, {}, u)[0]  # noqa: E731
        bn = lambda u: batch_norm.apply(bn_params, bn_state, u, train=True)  # noqa: E731
        weights = jnp.arange(v.size, dtype=v.dtype).reshape(v.shape) / v.size
        grads = [jax.grad(lambda u, f=f: jnp.sum(f(u) * weights))(v) for f in (ln, lambda u: bn(u)[0])]
        return ln(v), bn(v), grads

    y_ln, (y_bn, state), grads = run(x)
    np.testing.assert_allclose(y_ln, _standardized(x, -1), atol=1e-5)  # the float64 reference
    np.testing.assert_allclose(y_bn, _standardized(x, 0), atol=1e-5)
    x64 = np.asarray(x, np.float64)
    np.testing.assert_allclose(state["mean"], x64.mean(0), rtol=1e-5)
    var = x64.var(0)
    np.testing.assert_allclose(state["var"], var if np.all(var < 3e38) else np.inf, rtol=1e-4)  # inf: beyond float32
    assert all(np.all(np.isfinite(g)) for g in grads)


def test_norms_of_bfloat16_keep_float32_statistics():
    x = jnp.asarray(100.0 + np.random.default_rng(1).standard_normal((8, 16)), jnp.bfloat16)
    for layer, axis in [(nn.LayerNorm(), -1), (nn.BatchNorm(), 0)]:
        params, state = layer.init(jax.random.key(0), x)
        y, _ = layer.apply(params, state, x, train=True)
        assert y.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(y, np.float32), _standardized(x, axis), atol=0.05)
