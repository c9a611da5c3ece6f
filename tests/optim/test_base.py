"""jdl/optim/base.py: the optax interface, so jdl and optax transformations mix, and the step count.

* A jdl transformation inside ``optax.chain`` and an optax one inside :func:`jdl.optim.chain`
  match the all-optax result (200 steps on the random pytree of test_alias).
* The step count (``safe_increment``) saturates at the int32 maximum instead of wrapping.
"""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax

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
