"""jdl.summary: rows and paths, params and bytes, FLOPs in closed form and against XLA's cost analysis."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.mnist1d import make_model
from jdl import models, nn
from jdl.nn.conv import conv_output_size
from jdl.nn.core import apply_hook
from jdl.summaries import count_params, flops, jaxpr_flops, summary


def struct(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def init_shapes(model, x):
    return jax.eval_shape(model.init, jax.random.key(0), x)


def row(table, path):
    (found,) = [r for r in table.rows if r.path == path]
    return found


def xla_flops(model, x) -> float:
    """XLA's count for the compiled forward pass (a list of dicts in older jax, a dict in newer)."""
    params, state = init_shapes(model, x)
    cost = jax.jit(lambda p, s, v: model.apply(p, s, v)[0]).lower(params, state, x).compile().cost_analysis()
    return (cost[0] if isinstance(cost, (list, tuple)) else cost)["flops"]


def tiny_transformer(**options):
    config = models.TransformerConfig(source_vocab_size=12, target_vocab_size=12, d_model=16, num_heads=2,
                                      num_encoder_layers=2, num_decoder_layers=1, mlp_features=32, max_length=8,
                                      **options)
    ids = struct(2, 6, dtype=jnp.int32)
    return models.Transformer(config), (ids, ids)


# ----------------------------------------------------------------------------- FLOPs in closed form


def test_dense_flops_are_two_batch_in_out():
    batch, features_in, features_out = 8, 40, 24
    table = summary(nn.Dense(features_out), struct(batch, features_in))
    assert table.total_flops == 2 * batch * features_in * features_out
    assert (table.total_params, table.total_bytes) == (features_in * features_out + features_out,
                                                       4 * (features_in * features_out + features_out))


CONVS = [  # (layer options, input shape); out positions from conv_output_size, per spatial axis
    (dict(features=6, kernel_size=5, strides=2, padding=1), (4, 40, 3)),
    (dict(features=8, kernel_size=3, padding="SAME", feature_group_count=2), (2, 17, 4)),
    (dict(features=6, kernel_size=(3, 2), strides=(2, 1), padding="VALID"), (2, 9, 7, 3)),
    (dict(features=4, kernel_size=(3, 3), strides=2, padding=1, feature_group_count=2), (2, 8, 8, 6)),
]


@pytest.mark.parametrize("implementation", ["xla", "matmul"])
@pytest.mark.parametrize("options, shape", CONVS)
def test_conv_flops_match_the_closed_form(options, shape, implementation):
    """``2 * out_positions * out_channels * prod(kernel) * in_channels / groups``, for either implementation."""
    layer = nn.Conv(**options, implementation=implementation)
    kernel, strides = layer.kernel_size, layer._window_strides
    positions = math.prod(conv_output_size(n, k, s, options["padding"])
                          for n, k, s in zip(shape[1:-1], kernel, strides))
    groups = options.get("feature_group_count", 1)
    expected = 2 * shape[0] * positions * options["features"] * math.prod(kernel) * shape[-1] // groups
    assert summary(layer, struct(*shape)).total_flops == expected


@pytest.mark.parametrize("implementation", ["fused", "autodiff"])
def test_a_recurrent_layer_counts_every_step(implementation):
    """A GRU over T steps: the input projection of all steps, then T recurrent ``[B, H] x [H, 3H]`` matmuls."""
    batch, steps, features, hidden = 2, 16, 3, 5
    table = summary(nn.GRU(hidden, implementation=implementation), struct(batch, steps, features))
    step = 2 * batch * hidden * 3 * hidden
    assert table.total_flops == 2 * batch * steps * features * 3 * hidden + steps * step
    assert table.flops_exact


def test_control_flow_scan_cond_and_while():
    a, w = struct(4, 8), struct(8, 8)
    matmul = 2 * 4 * 8 * 8
    scanned = lambda x, m: jax.lax.scan(lambda c, _: (c @ m, None), x, None, length=5)[0]  # noqa: E731
    assert flops(scanned, a, w) == 5 * matmul
    branches = lambda x, m: jax.lax.cond(True, lambda v: (v @ m) @ m, lambda v: v @ m, x)  # noqa: E731
    assert flops(branches, a, w) == 2 * matmul  # the costlier branch
    looped = lambda x, m: jax.lax.while_loop(lambda c: c[1] < 3, lambda c: (c[0] @ m, c[1] + 1), (x, 0))[0]  # noqa
    assert jaxpr_flops(jax.make_jaxpr(looped)(a, w)) == (matmul, False)  # once, flagged
    assert flops(jax.jit(lambda x, m: jax.checkpoint(jnp.matmul)(x, m)), a, w) == matmul


# ----------------------------------------------------------------------------- rows, params, totals


def test_mnist1d_cnn_rows_shapes_params_and_flops():
    batch = 8
    model = make_model("cnn")
    table = summary(model, struct(batch, 40))
    assert [(r.path, r.depth, r.output.shape) for r in table.rows] == [
        ("", 0, (batch, 10)), ("channels", 1, (batch, 40, 1)),
        ("conv_1", 1, (batch, 19, 25)), ("relu_1", 1, (batch, 19, 25)),
        ("conv_2", 1, (batch, 10, 25)), ("relu_2", 1, (batch, 10, 25)),
        ("conv_3", 1, (batch, 5, 25)), ("relu_3", 1, (batch, 5, 25)),
        ("flatten", 1, (batch, 125)), ("output", 1, (batch, 10))]
    assert [row(table, p).params for p in ("conv_1", "conv_2", "conv_3", "output")] == [
        5 * 25 + 25, 3 * 25 * 25 + 25, 3 * 25 * 25 + 25, 125 * 10 + 10]
    per_layer = [2 * batch * 19 * 25 * 5, 2 * batch * 10 * 25 * 3 * 25, 2 * batch * 5 * 25 * 3 * 25,
                 2 * batch * 125 * 10]
    assert [row(table, p).flops for p in ("conv_1", "conv_2", "conv_3", "output")] == per_layer
    assert table.total_flops == row(table, "").flops == sum(per_layer)
    assert "Conv(features=25, kernel_size=(5,), strides=2, padding=1)" in row(table, "conv_1").layer


def _children_sum(table, field):
    return sum(getattr(r, field) for r in table.rows if r.depth == 1)


def test_totals_are_the_params_tree_and_children_add_up():
    model = make_model("transformer")  # a Sequential holding an encoder block (attention, feed-forward, norms)
    x = struct(4, 40)
    params, _ = init_shapes(model, x)
    table = summary(model, x)
    leaves = jax.tree.leaves(params)
    assert table.total_params == count_params(params) == sum(leaf.size for leaf in leaves) == row(table, "").params
    assert table.total_bytes == sum(leaf.size * leaf.dtype.itemsize for leaf in leaves)
    assert _children_sum(table, "params") == table.total_params
    assert _children_sum(table, "bytes") == table.total_bytes
    block = row(table, "encoder")
    assert block.params == sum(r.params for r in table.rows if r.path.startswith("encoder/") and r.depth == 2)


def test_bfloat16_params_count_two_bytes():
    table = summary(make_model("mlp", param_dtype=jnp.bfloat16), struct(4, 40))
    assert table.total_bytes == 2 * table.total_params


def test_transformer_rows_for_blocks_and_attention():
    model, example = tiny_transformer()
    table = summary(model, example)
    paths = [r.path for r in table.rows]
    for path in ("encoder/block_0", "encoder/block_1", "encoder/block_0/self_attention",
                 "encoder/block_1/feed_forward", "decoder/block_0/cross_attention", "source_embedding"):
        assert path in paths
    assert row(table, "decoder/block_0").output.shape == (2, 6, 16) and row(table, "").output.shape == (2, 6, 12)
    assert _children_sum(table, "params") == table.total_params == count_params(init_shapes(model, example)[0])
    # The root's FLOPs are its children's plus the tied output projection h E^T (not a layer call).
    assert table.total_flops == _children_sum(table, "flops") + 2 * 2 * 6 * 16 * 12
    shallow = summary(model, example, depth=1)
    assert max(r.depth for r in shallow.rows) == 1 and shallow.total_flops == table.total_flops


def test_apply_keywords_and_attention_flops():
    """``context=`` reaches the block's apply; cross-attention over ``[B, S, d]`` from ``[B, T, d]`` is
    the projections (``2 B T d^2`` for query and output, ``2 B S d^2`` for key and value) plus
    ``2 B T S d`` for the scores and again for the weighted sum."""
    batch, target, source, d_model = 2, 3, 6, 4
    table = summary(nn.TransformerDecoderBlock(2, 8), struct(batch, target, d_model),
                    context=struct(batch, source, d_model))
    projections = 2 * 2 * batch * target * d_model ** 2 + 2 * 2 * batch * source * d_model ** 2
    assert row(table, "cross_attention").flops == projections + 2 * 2 * batch * target * source * d_model
    assert row(table, "feed_forward").flops == 2 * 2 * batch * target * d_model * 8
    assert [r.path for r in summary(nn.TransformerDecoderBlock(2, 8), struct(batch, target, d_model), depth=0,
                                    context=struct(batch, source, d_model)).rows] == [""]


def test_shared_params_count_once():
    model, example = tiny_transformer(share_embeddings=True)
    table = summary(model, example)
    assert row(table, "embedding").params == 12 * 16 and row(table, "embedding#2").params == 0
    assert _children_sum(table, "params") == table.total_params


def test_table_and_dicts():
    table = summary(make_model("mlp"), struct(100, 40))
    text = str(table)
    assert text == table.table() and "15,210" in text and "3,000,000" in text  # 2 * 100 * (40*100 + 100*100 + 100*10)
    assert text.splitlines()[-1].split() == ["total", "15,210", "60,840", "3,000,000"]
    dicts = table.as_dicts()
    assert dicts[1]["path"] == "hidden_1" and dicts[1]["output"] == "float32[100,100]" and dicts[1]["params"] == 4100


def test_count_params_skips_keys_and_is_the_models_one():
    tree = {"w": jnp.zeros((3, 4)), "b": struct(4), "key": jax.random.key(0), "empty": {}}
    assert count_params(tree) == 16
    assert models.count_params is count_params


# ----------------------------------------------------------------------------- XLA and errors


def test_flops_agree_with_xla_cost_analysis():
    """XLA counts 2 per multiply-add too: equal on bias-free Dense and unpadded convolutions. It also
    counts elementwise ops (bias, ReLU: a few % more here) and skips the taps that fall on padding
    (a few % less), so on the MNIST-1D models the two agree within 5%."""
    exact = [(nn.Sequential([nn.Dense(64, use_bias=False), nn.Dense(10, use_bias=False)]), struct(32, 128)),
             (nn.Sequential([nn.Conv1D(8, 5, strides=2, padding="VALID", use_bias=False, implementation="xla"),
                             nn.Conv1D(8, 3, padding="VALID", feature_group_count=4, use_bias=False,
                                       implementation="xla")]), struct(4, 32, 4)),
             (nn.Conv2D(8, 3, strides=2, padding="VALID", feature_group_count=2, use_bias=False,
                        implementation="xla"), struct(2, 12, 12, 4))]
    for model, x in exact:
        assert summary(model, x).total_flops == xla_flops(model, x)
    for model in (make_model("mlp"), make_model("cnn", conv_implementation="xla")):
        ours, theirs = summary(model, struct(16, 40)).total_flops, xla_flops(model, struct(16, 40))
        assert abs(theirs - ours) <= 0.05 * ours


def test_bad_inputs_name_jdl_summary():
    with pytest.raises(TypeError, match=r"^jdl\.summary: expected a jdl Layer .* got function"):
        summary(lambda x: x, struct(2, 3))
    with pytest.raises(ValueError, match=r"^jdl\.summary: tracing the model on the example float32\[8,41\] "
                                         r"failed: Sequential\[channels\] Reshape"):
        summary(make_model("cnn"), struct(8, 41))
    with pytest.raises(TypeError, match=r"^jdl\.summary: .*int32\[8,40\].*Sequential\[conv_1\] Conv.*floating"):
        summary(make_model("cnn"), struct(8, 40, dtype=jnp.int32))
    with pytest.raises(ValueError, match=r"^jdl\.summary: expected depth to be an int >= 0 or None, got -1"):
        summary(make_model("mlp"), struct(8, 40), depth=-1)
    assert apply_hook.get() is None  # the recorder is gone after a failure too


def test_dropout_with_train_and_key():
    table = summary(nn.Sequential([nn.Dense(4), nn.Dropout(0.5)]), struct(2, 3), train=True, key=jax.random.key(0))
    assert [r.path for r in table.rows] == ["", "dense_0", "dropout_1"]


# ----------------------------------------------------------------------------- capture_intermediates


def test_capture_intermediates_returns_every_layers_output_by_summary_path():
    from jdl import capture_intermediates

    model = nn.Sequential([nn.Dense(6), nn.ReLU(), nn.Residual(nn.Dense(6)), nn.Dense(2)])
    x = jax.random.normal(jax.random.key(0), (3, 4))
    params, state = model.init(jax.random.key(1), x)
    y, new_state, hidden = jax.jit(lambda p, x: capture_intermediates(model, p, state, x))(params, x)
    assert set(hidden) == {r.path or "sequential" for r in summary(model, x).rows}
    first = x @ params["dense_0"]["w"] + params["dense_0"]["b"]
    np.testing.assert_allclose(hidden["dense_0"], first, rtol=1e-6)
    np.testing.assert_allclose(hidden["relu_1"], np.maximum(first, 0), rtol=1e-6)
    np.testing.assert_allclose(hidden["sequential"], y)
    np.testing.assert_allclose(y, model.apply(params, state, x)[0], rtol=1e-6)
    assert new_state == state
    # filters: a class, a tuple of classes, a function of (path, layer)
    assert set(capture_intermediates(model, params, state, x, filter=nn.ReLU)[2]) == {"relu_1"}
    assert set(capture_intermediates(model, params, state, x, filter=(nn.ReLU, nn.Residual))[2]) == {"relu_1",
                                                                                                     "residual_2"}
    kept = capture_intermediates(model, params, state, x, filter=lambda path, layer: path.startswith("residual_2/"))[2]
    assert set(kept) == {"residual_2/main"}
    with pytest.raises(TypeError, match=r"jdl.capture_intermediates: expected filter"):
        capture_intermediates(model, params, state, x, filter="relu")


def test_capture_intermediates_skips_calls_inside_a_layers_own_scan():
    """A recurrent layer runs its cell inside ``lax.scan``: the cell's per-step outputs stay there."""
    from jdl import capture_intermediates

    model = nn.RNN(nn.SimpleRNNCell(3))
    x = jnp.ones((2, 5, 4))
    params, state = model.init(jax.random.key(0), x)
    y, _, hidden = jax.jit(lambda p: capture_intermediates(model, p, state, x))(params)
    assert list(hidden) == ["rnn"]
    jax.tree.map(np.testing.assert_array_equal, hidden["rnn"], y)
