"""Sharding rules on an abstract mesh (no devices needed): which spec each param gets, and refusals."""
import jax
import jax.numpy as jnp
import pytest
from jax.sharding import AbstractMesh, PartitionSpec as P

from jdl import models, sharding

MESH = AbstractMesh((4, 2), ("data", "model"))
CONFIG = models.TransformerConfig(16, 16, d_model=16, num_heads=2, num_encoder_layers=1, num_decoder_layers=1,
                                  mlp_features=32, max_length=8)


@pytest.fixture(scope="module")
def params():
    example = (jax.ShapeDtypeStruct((2, 8), jnp.int32),) * 2
    return jax.eval_shape(models.Transformer(CONFIG).init, jax.random.key(0), example)[0]


def flat(specs):
    return {sharding.path_name(path): spec for path, spec in
            jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0]}


def test_path_names_are_the_readable_keys(params):
    names = flat(sharding.partition_specs(sharding.data_parallel(), params, MESH))
    assert "decoder/block_0/cross_attention/query/w" in names and "encoder/block_0/norm_1/gamma" in names
    assert set(names.values()) == {P()}  # data parallel: everything replicated


def test_tensor_parallel_is_megatrons_layout(params):
    specs = flat(sharding.partition_specs(sharding.tensor_parallel(), params, MESH))
    block = "encoder/block_0/"
    assert specs[block + "self_attention/query/w"] == P(None, "model")  # (in, heads, head_dim): by heads
    assert specs[block + "self_attention/value/b"] == P("model")
    assert specs[block + "self_attention/out/w"] == P("model")  # (heads, head_dim, out): by heads, input side
    assert specs[block + "self_attention/out/b"] == P()
    assert specs[block + "feed_forward/hidden/w"] == P(None, "model")  # columns
    assert specs[block + "feed_forward/hidden/b"] == P("model")
    assert specs[block + "feed_forward/output/w"] == P("model")  # rows
    assert specs["decoder/block_0/cross_attention/key/w"] == P(None, "model")
    assert specs[block + "norm_1/gamma"] == P() and specs["source_embedding/embedding"] == P()


def test_fsdp_splits_the_largest_even_axis_and_leaves_small_params(params):
    specs = flat(sharding.partition_specs(sharding.fsdp(min_size=64), params, MESH))
    assert specs["encoder/block_0/feed_forward/hidden/w"] == P(None, "data")  # (16, 32): the 32
    assert specs["encoder/block_0/feed_forward/output/w"] == P("data")  # (32, 16)
    assert specs["encoder/block_0/norm_1/gamma"] == P()  # 16 elements < 64
    both = flat(sharding.partition_specs(sharding.with_fsdp(sharding.tensor_parallel(), min_size=64), params, MESH))
    assert both["encoder/block_0/feed_forward/hidden/w"] == P("data", "model")
    assert both["encoder/block_0/self_attention/query/w"] == P("data", "model")  # (16, 2, 8): 16 and 8 free
    assert both["encoder/block_0/norm_1/gamma"] == P()


def test_a_rule_that_does_not_fit_is_refused_naming_the_param(params):
    with pytest.raises(ValueError, match=r"sharding rule for 'encoder/block_0/feed_forward/hidden/b'.*divisible"):
        sharding.partition_specs(((r"hidden/b$", P("data")), (r"hidden/b", P())), {"encoder": {"block_0": {
            "feed_forward": {"hidden": {"b": jax.ShapeDtypeStruct((6,), jnp.float32)}}}}}, MESH)
    with pytest.raises(ValueError, match=r"no axis \['tensor'\]"):
        sharding.partition_specs(((r".", P("tensor")),), params, MESH)
    with pytest.raises(ValueError, match="at most 1 entries"):
        sharding.partition_specs(((r"gamma$", P(None, "data")),), params, MESH)


def test_make_mesh_checks_the_device_count():
    with pytest.raises(ValueError, match="product is the 1 devices"):
        sharding.make_mesh({"data": 2, "model": 2}, jax.devices()[:1])


def test_stacked_rules_keep_the_layer_axis_whole_and_split_the_rest_as_for_one_block():
    """Scanned stacks (``scan_layers``: leaves ``[layers, ...]`` under ``blocks/``) get the
    per-block spec shifted one axis right; the same rules on the unrolled model are unchanged."""
    example = (jax.ShapeDtypeStruct((2, 8), jnp.int32),) * 2
    config = models.TransformerConfig(16, 16, d_model=16, num_heads=2, num_encoder_layers=3, num_decoder_layers=2,
                                      mlp_features=32, max_length=8, scan_layers=True)
    scanned = jax.eval_shape(models.Transformer(config).init, jax.random.key(0), example)[0]
    rules = sharding.stacked(sharding.tensor_parallel())
    specs = flat(sharding.partition_specs(rules, scanned, MESH))
    assert scanned["encoder"]["blocks"]["self_attention"]["query"]["w"].shape == (3, 16, 2, 8)
    assert specs["encoder/blocks/self_attention/query/w"] == P(None, None, "model")
    assert specs["decoder/blocks/cross_attention/out/w"] == P(None, "model")
    assert specs["encoder/blocks/feed_forward/output/w"] == P(None, "model")
    assert specs["encoder/blocks/norm_1/gamma"] == P() and specs["source_embedding/embedding"] == P()
    # Without `stacked`, the per-block specs would split the layer axis: refused, naming the param.
    with pytest.raises(ValueError, match="encoder/blocks/feed_forward/hidden/b.*3 across 2 devices"):
        sharding.partition_specs(sharding.tensor_parallel(), scanned, MESH)
    # Unstacked params keep the plain rules' specs: the unrolled Transformer (block_<i>) and the
    # unrolled GPT, whose blocks sit under "blocks/block_<i>/".
    example_params = jax.eval_shape(models.Transformer(CONFIG).init, jax.random.key(0), example)[0]
    gpt = models.GPT(models.GPTConfig(32, d_model=16, num_heads=2, num_layers=2, max_length=8))
    gpt_params = jax.eval_shape(gpt.init, jax.random.key(0), example[0])[0]
    for unstacked in (example_params, gpt_params):
        assert (flat(sharding.partition_specs(rules, unstacked, MESH))
                == flat(sharding.partition_specs(sharding.tensor_parallel(), unstacked, MESH)))
    assert flat(sharding.partition_specs(rules, gpt_params, MESH))["blocks/block_1/feed_forward/hidden/b"] == P("model")
