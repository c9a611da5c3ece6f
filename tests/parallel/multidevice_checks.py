"""Checks that need 8 devices, run by ``test_multidevice.py`` in a process of its own started with
``--xla_force_host_platform_device_count=8`` (a pytest file whose name the main run does not
collect: the main run's process has one CPU device).

Sharded training (data parallel, FSDP, tensor parallel, data x tensor, FSDP x tensor) of a
small Transformer equals single-device training; every param and optimizer-state leaf ends
with the sharding its rule asked for; sharded init holds only each device's shards; BatchNorm
with ``axis_name`` under ``shard_map`` equals the global batch's statistics; a checkpoint of an
FSDP-sharded train state restores onto a tensor-parallel mesh.
"""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

import jdl
from jdl import models, nn, sharding

CONFIG = models.TransformerConfig(16, 16, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                                  mlp_features=32, max_length=8, dropout_rate=0.0)
MODEL = models.Transformer(CONFIG)
# Momentum SGD, not Adam: the attention's key bias has a gradient of 0 up to rounding (a softmax
# ignores a constant added to every logit), which Adam's normalisation would blow up to full steps
# whose signs are rounding noise: a different partition of the sums then gives different params.
OPTIMIZER = jdl.optim.sgd(0.5, momentum=0.9)
STEPS, BATCH = 3, 8


def setup_module():
    assert jax.device_count() == 8, "run by test_multidevice.py with 8 forced host devices"


def batches():
    rng = np.random.default_rng(0)
    source = rng.integers(3, 16, (STEPS, BATCH, 8))
    source[:, :, 6:] = 0  # padding
    return jnp.asarray(source, jnp.int32), jnp.asarray(rng.integers(3, 16, (STEPS, BATCH, 8)), jnp.int32)


def objective(params, state, batch, key):
    source, target = batch
    return MODEL.loss(params, source, target), (state, {})


def train(mesh=None, rules=None, data_axis="data"):
    """STEPS Adam steps of the Transformer, on one device or sharded: the final train state."""
    init = functools.partial(jdl.train.init, MODEL, OPTIMIZER)
    example = tuple(jax.ShapeDtypeStruct((BATCH, 8), jnp.int32) for _ in range(2))
    run = jdl.train.batch_loop(jdl.train.gradient_step(objective, OPTIMIZER))
    data = batches()
    if mesh is None:
        return jdl.train.compile_loop(run)(init(jax.random.key(0), example), data)[0]
    state = sharding.init(init, mesh, rules, jax.random.key(0), example)
    shardings = sharding.train_state_shardings(rules, state, mesh)
    # The batches' axis 1 (examples) split along the data axis; axis 0 is the step.
    data = jax.device_put(data, NamedSharding(mesh, P(None, data_axis)))
    return jdl.train.compile_loop(run, shardings=shardings)(state, data)[0], shardings


@pytest.fixture(scope="module")
def single():
    return train()


LAYOUTS = {
    "data_parallel": ({"data": 8}, sharding.data_parallel()),
    "fsdp": ({"data": 8}, sharding.fsdp(min_size=1)),
    # Two heads: two devices on the model axis; the other axis holds replicas (the batch is not split).
    "tensor_parallel": ({"replica": 4, "model": 2}, sharding.tensor_parallel()),
    "data_x_tensor": ({"data": 4, "model": 2}, sharding.tensor_parallel()),
    "fsdp_x_tensor": ({"data": 4, "model": 2}, sharding.with_fsdp(sharding.tensor_parallel(), min_size=1)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_sharded_training_equals_one_device_and_keeps_its_shardings(layout, single):
    axes, rules = LAYOUTS[layout]
    mesh = sharding.make_mesh(axes)
    data_axis = "data" if "data" in axes else None
    state, shardings = train(mesh, rules, data_axis)
    for (path, got), want in zip(jax.tree_util.tree_flatten_with_path(state.params)[0],
                                 jax.tree.leaves(single.params), strict=True):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5,
                                   err_msg=f"{layout}: {sharding.path_name(path)}")
    # Every leaf of params and optimizer state is laid out as its rule asked (no silent replication).
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(shardings), strict=True):
        assert got.sharding.is_equivalent_to(want, got.ndim), (layout, got.sharding, want)
    specs = {s.spec for s in jax.tree.leaves(shardings.params)}
    assert (specs == {P()}) == (layout == "data_parallel")  # the other layouts really shard


def test_sharded_init_holds_only_each_devices_shards():
    mesh = sharding.make_mesh({"data": 8})
    rules = sharding.fsdp(min_size=1)
    example = tuple(jax.ShapeDtypeStruct((BATCH, 8), jnp.int32) for _ in range(2))
    params, _ = sharding.init(MODEL.init, mesh, rules, jax.random.key(0), example)

    def compiled_init(out_shardings):
        return jax.jit(MODEL.init, out_shardings=out_shardings).lower(jax.random.key(0), example).compile()

    one_device_init = compiled_init(None)  # its numbers and, below, its memory plan: one compilation for both
    full, _ = one_device_init(jax.random.key(0), example)
    total = sum(leaf.nbytes for leaf in jax.tree.leaves(full))
    for leaf, reference in zip(jax.tree.leaves(params), jax.tree.leaves(full)):
        # The same numbers, in place, up to float32 rounding: the sharded program is fused differently,
        # and under the test session's XLA flags (conftest.py) that moves some draws by an ulp.
        np.testing.assert_allclose(np.asarray(leaf), np.asarray(reference), rtol=1e-6, atol=1e-7)
        for shard in leaf.addressable_shards:
            assert shard.data.size == leaf.size // 8 or leaf.sharding.spec == P()
    # What one device holds: about an eighth of the params (the replicated scalars aside).
    per_device = sum(shard.data.nbytes for leaf in jax.tree.leaves(params) for shard in leaf.addressable_shards
                     if shard.device == jax.devices()[0])
    assert per_device <= total / 8 * 1.05, (per_device, total)
    # And the compiled init never materialises the full params on a device: what it plans per device
    # (outputs and temporaries: the random bits, the truncated normal's steps) is less than one copy
    # of the params, and a fraction of what the same init plans on one device (17,348 bytes against
    # 62,692 measured: the per-leaf key splits and the smallest leaves do not shrink with the mesh).
    def planned(compiled):
        memory = compiled.memory_analysis()
        return memory.output_size_in_bytes + memory.temp_size_in_bytes

    sharded_init = compiled_init((sharding.named_shardings(rules, full, mesh), None))
    one_device, sharded = planned(one_device_init), planned(sharded_init)
    assert sharded < total and sharded <= one_device / 3, (sharded, one_device, total)


def test_batch_norm_with_axis_name_under_shard_map_equals_global_statistics():
    mesh = sharding.make_mesh({"data": 8})
    layer = nn.BatchNorm(axis_name="data")
    x = jnp.asarray(np.random.default_rng(0).standard_normal((32, 5)) * 3 + 1, jnp.float32)
    params, state = layer.init(jax.random.key(0), x)

    def local(p, s, v):
        return layer.apply(p, s, v, train=True)

    y, new_state = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(), P("data")), out_specs=(P("data"), P()))(
        params, state, sharding.shard_batch(x, mesh))
    # Jitted: one compilation, not one per operation of an eager apply.
    y_ref, state_ref = jax.jit(functools.partial(nn.BatchNorm().apply, train=True))(params, state, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(y_ref), rtol=1e-5, atol=1e-5)
    for got, want in zip(jax.tree.leaves(new_state), jax.tree.leaves(state_ref)):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_a_checkpoint_of_a_sharded_state_restores_onto_another_mesh(tmp_path):
    """Saved from FSDP over 8 devices, restored under tensor x data parallelism (4 x 2): the same
    numbers, each leaf with the new layout (``like``'s shardings; jdl.checkpoint places them)."""
    fsdp_mesh, fsdp_rules = sharding.make_mesh({"data": 8}), sharding.fsdp(min_size=1)
    state, _ = train(fsdp_mesh, fsdp_rules)
    jdl.checkpoint.save(tmp_path, state, step=int(state.step))
    mesh, rules = sharding.make_mesh({"data": 4, "model": 2}), sharding.tensor_parallel()
    like = jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s), state,
                        sharding.train_state_shardings(rules, state, mesh))
    restored = jdl.checkpoint.restore(tmp_path, like)
    for got, want, target in zip(jax.tree.leaves(restored), jax.tree.leaves(state), jax.tree.leaves(like)):
        if jnp.issubdtype(got.dtype, jax.dtypes.prng_key):
            got, want = jax.random.key_data(got), jax.random.key_data(want)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
        assert got.sharding.is_equivalent_to(target.sharding, got.ndim)
