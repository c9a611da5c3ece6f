"""masked, multi_transform and set_to_zero against optax, step by step, every leaf of updates and state."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdl import optim

PARAMS = {"trunk": {"conv": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}, "scale": jnp.ones(())},
          "head": {"w": jnp.full((3, 2), 0.5), "b": jnp.zeros(2)}}


def grads_at(step):
    keys = jax.random.split(jax.random.key(step), len(jax.tree.leaves(PARAMS)))
    leaves = [jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, jax.tree.leaves(PARAMS))]
    return jax.tree.unflatten(jax.tree.structure(PARAMS), leaves)


def assert_same_run(jdl_opt, ref_opt, steps=4):
    """Updates and state leaves equal optax's at every step (state classes differ, leaves must not)."""
    params, ref_params = PARAMS, PARAMS
    state, ref_state = jdl_opt.init(params), ref_opt.init(ref_params)
    for step in range(steps):
        updates, state = jdl_opt.update(grads_at(step), state, params)
        ref_updates, ref_state = ref_opt.update(grads_at(step), ref_state, ref_params)
        assert jax.tree.structure(updates) == jax.tree.structure(ref_updates)
        for got, want in zip(jax.tree.leaves(updates), jax.tree.leaves(ref_updates)):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        got_state, want_state = jax.tree.leaves(state), jax.tree.leaves(ref_state)
        assert len(got_state) == len(want_state)
        for got, want in zip(got_state, want_state):
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
        params, ref_params = optim.apply_updates(params, updates), optax.apply_updates(ref_params, ref_updates)
    return params


def test_set_to_zero_freezes():
    params = assert_same_run(optim.set_to_zero(), optax.set_to_zero())
    assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), params, PARAMS))


@pytest.mark.parametrize("as_function", [False, True])
def test_masked_adam_on_the_head_passes_the_rest_through(as_function):
    mask = {"trunk": False, "head": True}  # a prefix of the params' tree
    spec = (lambda tree: mask) if as_function else mask
    assert_same_run(optim.masked(optim.adam(1e-2), spec), optax.masked(optax.adam(1e-2), spec))
    state = optim.masked(optim.adam(1e-2), spec).init(PARAMS)
    # Adam keeps moments for the head only: the trunk's leaves are empty MaskedNodes.
    assert len(jax.tree.leaves(state.inner_state[0].mu)) == 2


def test_multi_transform_freezes_the_trunk_and_trains_the_head():
    labels = {"trunk": {"conv": "frozen", "scale": "slow"}, "head": "trained"}
    transforms = {"frozen": optim.set_to_zero(), "slow": optim.sgd(1e-3, momentum=0.9), "trained": optim.adam(1e-2)}
    ref_transforms = {"frozen": optax.set_to_zero(), "slow": optax.sgd(1e-3, momentum=0.9),
                      "trained": optax.adam(1e-2)}
    params = assert_same_run(optim.multi_transform(transforms, labels), optax.multi_transform(ref_transforms, labels))
    np.testing.assert_array_equal(params["trunk"]["conv"]["w"], PARAMS["trunk"]["conv"]["w"])
    assert not np.array_equal(params["head"]["w"], PARAMS["head"]["w"])
    # Under jit, as a train step runs it.
    optimizer = optim.multi_transform(transforms, labels)
    updates, _ = jax.jit(optimizer.update)(grads_at(0), optimizer.init(PARAMS), PARAMS)
    assert float(jnp.abs(updates["trunk"]["conv"]["b"]).max()) == 0.0


def test_bad_labels_and_masks_are_named():
    with pytest.raises(ValueError, match=r"multi_transform: expected labels among the transforms' \['a'\], got \['b'\]"):
        optim.multi_transform({"a": optim.sgd(0.1)}, {"trunk": "a", "head": "b"}).init(PARAMS)
    with pytest.raises(ValueError, match="masked: expected mask with the params' tree structure"):
        optim.masked(optim.sgd(0.1), {"trunk": True}).init(PARAMS)
    with pytest.raises(TypeError, match="multi_transform: expected transforms as a non-empty dict"):
        optim.multi_transform([optim.sgd(0.1)], {})
    with pytest.raises(TypeError, match="masked: expected a gradient transformation"):
        optim.masked(lambda g: g, {"trunk": True, "head": False})
