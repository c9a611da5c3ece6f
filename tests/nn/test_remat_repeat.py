"""Remat and Repeat against the plain layers they stand for: the same outputs and the same gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn
from jdl.nn.repeat import stack, unstack

BLOCK = nn.TransformerEncoderBlock(num_heads=2, mlp_features=16, dropout_rate=0.25)
X = jnp.asarray(np.random.default_rng(0).standard_normal((2, 5, 8)), jnp.float32)
MASK = nn.padding_mask(jnp.array([[True] * 5, [True, True, True, False, False]]))


def outputs_and_grads(layer, params, state, **kwargs):
    """Output and gradients (params and input) of ``sum(y * r)``, jitted once."""
    r = jnp.asarray(np.random.default_rng(1).standard_normal(X.shape), jnp.float32)

    @jax.jit
    def run(p, x):
        def total(p, x):
            y, _ = layer.apply(p, state, x, key=jax.random.key(3), train=True, **kwargs)
            return jnp.sum(y * r), y
        (_, y), grads = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(p, x)
        return y, grads

    return run(params, X)


def assert_close(a, b, tol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def test_remat_is_the_layer_recomputed():
    remat = nn.Remat(BLOCK, policy=jax.checkpoint_policies.dots_with_no_batch_dims_saveable)
    params, state = jax.jit(remat.init)(jax.random.key(0), X)
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(BLOCK.init, jax.random.key(0), X)[0])
    assert remat.name == BLOCK.name and repr(remat) == f"Remat({BLOCK})"
    assert_close(outputs_and_grads(remat, params, state, mask=MASK), outputs_and_grads(BLOCK, params, state, mask=MASK))
    # It really rematerialises: the backward pass of the jaxpr holds a remat (checkpoint) call.
    jaxpr = jax.make_jaxpr(jax.grad(lambda p: remat.apply(p, state, X)[0].sum()))(params)
    assert "remat" in str(jaxpr) or "checkpoint" in str(jaxpr)


def test_repeat_equals_the_sequential_of_its_blocks_dropout_included():
    repeat = nn.Repeat(BLOCK, 3)
    params, state = jax.jit(repeat.init)(jax.random.key(0), X)
    assert params["self_attention"]["query"]["w"].shape == (3, 8, 2, 4)
    blocks = unstack(params)
    assert len(blocks) == 3 and jax.tree.structure(stack(blocks)) == jax.tree.structure(params)
    # The same blocks one after another, block i with key fold_in(key, i), as Sequential would.
    def in_order(p, x):
        for i, block in enumerate(unstack(p)):
            x, _ = BLOCK.apply(block, {}, x, key=jax.random.fold_in(jax.random.key(3), i), train=True, mask=MASK)
        return x
    r = jnp.asarray(np.random.default_rng(1).standard_normal(X.shape), jnp.float32)
    y_ref, grads_ref = jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(in_order(p, x) * r), argnums=(0, 1)))(params, X)
    y, grads = outputs_and_grads(repeat, params, state, mask=MASK)
    assert_close(jnp.sum(y * r), y_ref)
    assert_close(grads, grads_ref)
    # The blocks differ (each drew its own init key).
    assert not np.allclose(blocks[0]["feed_forward"]["hidden"]["w"], blocks[1]["feed_forward"]["hidden"]["w"])


def test_repeat_of_remat_gives_the_same_gradients():
    plain, remat = nn.Repeat(BLOCK, 2), nn.Repeat(nn.Remat(BLOCK), 2)
    params, state = jax.jit(plain.init)(jax.random.key(0), X)
    assert_close(outputs_and_grads(remat, params, state), outputs_and_grads(plain, params, state))


def test_repeat_refuses_a_block_that_changes_the_shape_and_params_of_another_depth():
    with pytest.raises(ValueError, match=r"Repeat\(Dense\(features=3\), 2\): expected a block that keeps its "
                                         r"input's shape \(2, 4\)"):
        nn.Repeat(nn.Dense(3), 2).init(jax.random.key(0), jnp.ones((2, 4)))
    params, state = nn.Repeat(nn.Dense(4), 2).init(jax.random.key(0), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"Repeat\(Dense\(features=4\), 3\).*from another model"):
        nn.Repeat(nn.Dense(4), 3).apply(params, state, jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"keeps its input's shape \(2, 4\) and dtype bfloat16.*got \(2, 4\) float32"):
        nn.Repeat(nn.Dense(4), 2).apply(params, state, jnp.ones((2, 4), jnp.bfloat16))  # float32 params
    with pytest.raises(TypeError, match="Repeat: expected a jdl Layer to repeat"):
        nn.Repeat(jnp.tanh, 2)
