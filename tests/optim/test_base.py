"""jdl/optim/base.py: the optax interface, so jdl and optax transformations mix, and the step count.

* A jdl transformation inside ``optax.chain`` and an optax one inside :func:`jdl.optim.chain`
  match the all-optax result (200 steps on the random pytree of test_alias).
* The step count (``safe_increment``) saturates at the int32 maximum instead of wrapping.
* Where updates meet params (``apply_updates``, a stateless transformation given params)
  their trees and leaf shapes must agree, and integer params are refused, not truncated.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdl import optim
from tests.optim.test_alias import check_against_optax


def test_jdl_and_optax_transformations_mix_in_either_chain():
    check_against_optax([
        ("optax.chain(optax.clip_by_global_norm, jdl adam)",
         optax.chain(optax.clip_by_global_norm(1.0), optim.adam(1e-2)),
         optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))),
        ("optax.chain(jdl trace, optax rate)",
         optax.chain(optim.trace(0.9), optax.scale_by_learning_rate(0.05)), optax.sgd(0.05, 0.9)),
        ("jdl chain(optax.scale_by_adam, jdl decay, jdl rate)",
         optim.chain(optax.scale_by_adam(), optim.add_decayed_weights(1e-2), optim.scale_by_learning_rate(1e-2)),
         optax.adamw(1e-2, weight_decay=1e-2)),
    ])


def test_step_count_saturates_instead_of_wrapping():
    block = optim.scale_by_adam()
    state = block.init(jnp.zeros(2))._replace(count=jnp.array(jnp.iinfo(jnp.int32).max, jnp.int32))
    updates, state = block.update(jnp.ones(2), state)
    assert state.count == jnp.iinfo(jnp.int32).max and state.count.dtype == jnp.int32
    assert np.all(np.isfinite(updates))


# ---------------------------------------------------------------------------------------
# Updates meet params: the same tree and leaf shapes (nothing broadcast), floating params


def test_apply_updates_refuses_updates_of_other_leaf_shapes_naming_the_leaf():
    params = {"w": jnp.ones(2), "b": jnp.ones(())}
    with pytest.raises(ValueError, match=r"^apply_updates: expected updates\['w'\] of shape \(2,\) \(as params\), "
                                         r"got \(1, 2\)"):
        optim.apply_updates(params, {"w": jnp.ones((1, 2)), "b": jnp.ones(())})  # was broadcast to (1, 2)
    with pytest.raises(ValueError, match=r"^apply_updates: expected updates\['b'\] of shape \(\)"):
        optim.apply_updates(params, {"w": jnp.ones(2), "b": jnp.ones(1)})
    with pytest.raises(ValueError, match="^apply_updates: expected updates with the tree structure of params"):
        optim.apply_updates(params, {"w": jnp.ones(2)})


@pytest.mark.parametrize("name, transform", [
    ("identity", optim.identity()),
    ("scale", optim.scale(0.5)),
    ("scale", optim.scale_by_learning_rate(0.1)),
    ("scale_by_schedule", optim.scale_by_schedule(lambda count: 0.5)),
    ("scale_by_normalized_gradient", optim.scale_by_normalized_gradient()),
])
def test_stateless_transforms_given_params_refuse_updates_of_other_shapes(name, transform):
    params = {"w": jnp.ones(2)}
    state = transform.init(params)
    bad = {"w": jnp.ones((1, 2))}
    assert transform.update(bad, state)[0]["w"].shape == (1, 2)  # params=None: nothing to compare with
    message = rf"^{name}: expected updates\['w'\] of shape \(2,\) \(as params\), got \(1, 2\)"
    with pytest.raises(ValueError, match=message):
        transform.update(bad, state, params)


def test_integer_params_are_refused_not_truncated():
    params = {"w": jnp.array([1, 2]), "b": jnp.ones(2)}
    with pytest.raises(TypeError, match=r"^apply_updates: expected params\['w'\] to be floating-point .*got int32 of "
                                        r"shape \(2,\)"):
        optim.apply_updates(params, {"w": jnp.array([0.4, 0.4]), "b": jnp.ones(2)})  # was [1, 2]: the step lost
    with pytest.raises(TypeError, match=r"^scale_by_adam: expected params\['w'\] to be floating-point"):
        optim.adam(0.1).init(params)
    with pytest.raises(TypeError, match=r"^trace: expected params\[0\] to be floating-point .*got bool"):
        optim.sgd(0.1, momentum=0.9).init([jnp.array([True])])
