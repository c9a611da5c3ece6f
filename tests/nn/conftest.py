"""Shared checks for the layer tests, handed to tests as fixtures.

* ``assert_trees_close(actual, expected)``: same tree structure, same shapes, every leaf
  within ``rtol``/``atol`` (1e-5 by default, float32).
* ``compare_with_flax(jdl_fn, flax_fn, params, x)``: both functions map ``(params, x)``
  (params in jdl's naming) to the output; asserts equal outputs and equal gradients of
  ``sum(y * r)`` (``r`` a fixed random cotangent) w.r.t. params and input.
* ``finite_differences(fn, args)``: ``jax.test_util.check_grads`` in float64 (x64 enabled
  only inside the check), reverse mode, first order.
* ``check_transforms(layer, params, state, x)``: ``jit`` gives the same output and state
  as eager mode, ``vmap`` of the per-example call the batched call's output and, with
  ``grads=True``, ``grad`` inside ``jit`` the same as ``grad`` of the jitted apply. (Every
  layer's gradient is already taken inside ``jit`` by ``compare_with_flax`` and of a
  jitted function by ``finite_differences``; eager op-by-op gradients would be the costliest
  part of the suite on CPU.)
* ``randn(shape, seed)`` and ``random_params(layer, x, seed)``: random inputs and params
  drawn with NumPy (params shaped by ``jax.eval_shape(layer.init, ...)``), so the tests do
  not pay an XLA compilation for every new shape of ``jax.random`` draw.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

RTOL = 1e-5
ATOL = 1e-5


def _assert_trees_close(actual, expected, rtol=RTOL, atol=ATOL):
    assert jax.tree.structure(actual) == jax.tree.structure(expected), (
        f"tree structures differ: {jax.tree.structure(actual)} vs {jax.tree.structure(expected)}"
    )
    for got, want in zip(jax.tree.leaves(actual), jax.tree.leaves(expected)):
        assert np.shape(got) == np.shape(want), f"shapes differ: {np.shape(got)} vs {np.shape(want)}"
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=rtol, atol=atol)


def _randn(shape, seed=0, scale=1.0, mean=0.0, dtype=np.float32):
    # device_put, not jnp.asarray: in this JAX the latter compiles a copy for every new shape.
    return jax.device_put((np.random.default_rng(seed).standard_normal(shape) * scale + mean).astype(dtype))


def _random_params(layer, x, seed=0, scale=1.0):
    params_shapes, _ = jax.eval_shape(layer.init, jax.random.key(0), x)
    leaves, treedef = jax.tree.flatten(params_shapes)
    return treedef.unflatten([_randn(leaf.shape, seed + i, scale, dtype=leaf.dtype) for i, leaf in enumerate(leaves)])


def _cotangent(shape, dtype=jnp.float32):
    return _randn(shape, seed=12345, dtype=dtype)


def _is_float(x):
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def _value_and_grads(fn, params, x, r):
    """``fn(params, x)`` and the gradients of ``sum(fn(params, x) * r)``, in one compilation."""

    @jax.jit
    def run(p, v):
        if _is_float(v):
            y, pullback = jax.vjp(fn, p, v)
        else:  # integer ids: gradients w.r.t. params only
            y, pullback = jax.vjp(lambda q: fn(q, v), p)
        return y, pullback(r)

    return run(params, x)


def _compare_with_flax(jdl_fn, flax_fn, params, x, rtol=RTOL, atol=ATOL):
    # Jitted (XLA compiles each side once, which on CPU is much cheaper than dispatching the
    # backward pass op by op); eager and jit are compared with each other in check_transforms.
    out_shape = jax.eval_shape(jdl_fn, params, x)
    r = _cotangent(out_shape.shape, out_shape.dtype)
    y, grads = _value_and_grads(jdl_fn, params, x, r)
    y_ref, grads_ref = _value_and_grads(flax_fn, params, x, r)
    assert y.shape == y_ref.shape and y.dtype == y_ref.dtype
    _assert_trees_close(y, y_ref, rtol, atol)
    _assert_trees_close(grads, grads_ref, rtol, atol)
    # The gradients are not all zero, so the comparison above has teeth.
    assert any(np.max(np.abs(np.asarray(g))) > 1e-3 for g in jax.tree.leaves(grads))
    return y


def _finite_differences(fn, args, atol=1e-4, rtol=1e-4, eps=1e-4):
    with jax.enable_x64(True):
        # NumPy arrays, so that check_grads's perturbations (primal +- eps * tangent, leaf by leaf)
        # run in NumPy instead of compiling an XLA add and subtract for every leaf's shape.
        args64 = jax.tree.map(lambda a: np.asarray(a, np.float64) if _is_float(a) else a, args)
        compiled = jax.jit(fn)
        # A float64 output proves the check really ran in double precision.
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(compiled(*args64)) if _is_float(leaf))
        check_grads(compiled, args64, order=1, modes=["rev"], atol=atol, rtol=rtol, eps=eps)


def _check_transforms(layer, params, state, x, *, key=None, train=False, vmap=False, grads=False,
                      rtol=RTOL, atol=ATOL):
    """jit (and, with ``grads``, grad inside and outside jit) against eager. ``vmap`` is off by
    default: the conformance battery checks vmap against a loop for every public layer; a test
    asks for it where its configuration is one the battery's table does not hold."""
    y, new_state = layer.apply(params, state, x, key=key, train=train)
    apply = functools.partial(layer.apply, train=train)

    y_jit, state_jit = jax.jit(apply)(params, state, x, key=key)
    _assert_trees_close((y_jit, state_jit), (y, new_state), rtol, atol)

    if grads:
        # grad inside jit equals grad of the jitted apply. (Single layers get this for free:
        # compare_with_flax differentiates inside jit, finite_differences a jitted function.)
        r = _cotangent(y.shape, y.dtype)
        argnums = (0, 1) if _is_float(x) else 0

        def loss(apply_fn):
            return lambda p, v: jnp.sum(apply_fn(p, state, v, key=key)[0] * r)

        grads_inside = jax.jit(jax.grad(loss(apply), argnums=argnums))(params, x)
        grads_outside = jax.grad(loss(jax.jit(apply)), argnums=argnums)(params, x)
        _assert_trees_close(grads_inside, grads_outside, rtol, atol)

    if vmap:
        y_vmap = jax.jit(jax.vmap(lambda example: apply(params, state, example, key=key)[0]))(x)
        _assert_trees_close(y_vmap, y, rtol, atol)
    return y


@pytest.fixture
def randn():
    return _randn


@pytest.fixture
def random_params():
    return _random_params


@pytest.fixture
def assert_trees_close():
    return _assert_trees_close


@pytest.fixture
def compare_with_flax():
    return _compare_with_flax


@pytest.fixture
def finite_differences():
    return _finite_differences


@pytest.fixture
def check_transforms():
    return _check_transforms
