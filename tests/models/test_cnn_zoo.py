"""The CNN zoo: parameter counts and sizes against the papers, seed 003 and torchvision (counted
with ``jax.eval_shape``: nothing is allocated), Inception's multiplies through ``jdl.summary``,
and the ResNet blocks and a VGG against flax.linen twins with copied weights."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from benchmarks.cnn_cases import FlaxBlock, FlaxVGG, to_flax
from jdl import count_params, models, nn, summary


def image(size, channels=3):
    return jax.ShapeDtypeStruct((1, size, size, channels), jnp.float32)


@functools.lru_cache(maxsize=None)
def init_shapes(model, example):
    """``(params, state)`` as ``jax.ShapeDtypeStruct``s: the counts without a single array (traced once
    per network and input: several tests count and measure the same one)."""
    return jax.eval_shape(model.init, jax.random.key(0), example)


def output_shapes(model, example):
    """Each layer of a layer-table network: its output's shape (``init`` inferred them already:
    ``output_shape`` finds them in its memo)."""
    params, state = init_shapes(model, example)
    shapes, x = {}, example
    for name, layer in model.layers:
        x = nn.output_shape(layer, params[name], state[name], x)
        shapes[name] = x.shape
    return shapes


def spatial_sizes(model, example, paths):
    shapes = output_shapes(model, example)
    return [shapes[path][1] for path in paths]


# ----------------------------------------------------------------------------- counts


def test_alexnet_is_seed_003s_table():
    model = models.alexnet()
    params, state = init_shapes(model, image(227))
    assert count_params(params) == 62_378_344 and state == {name: {} for name in params}
    weights = [params[name]["w"].size for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")]
    assert weights == [34_848, 614_400, 884_736, 1_327_104, 884_736, 37_748_736, 16_777_216, 4_096_000]
    assert [params[name]["w"].shape for name in ("conv1", "fc6")] == [(11, 11, 3, 96), (6 * 6 * 256, 4096)]
    rows = {row.path: row for row in summary(model, image(227), depth=1).rows}
    sizes = [rows[path].output.shape[1] for path in ("conv1", "pool1", "conv2", "pool2", "conv3", "pool5")]
    assert [227] + sizes == [227, 55, 27, 27, 13, 13, 6]


def test_zfnet_and_lenet5_sizes_and_counts():
    """ZFNet's figure 3 sizes (224, 110, 55, 26, 13, 13, 6); LeNet-5's 32, 28, 14, 10, 5, 1. Their
    counts are computed here (neither paper totals them): the AlexNet classifier on ZFNet's convolutions,
    and LeNet-5 with full C3 connections and a Dense output (the paper's 60,000: see lenet.py)."""
    zfnet, lenet = models.zfnet(), models.lenet5()
    assert spatial_sizes(zfnet, image(224), ["conv1", "pool1", "conv2", "pool2", "conv3", "pool5"]) == [
        110, 55, 26, 13, 13, 6]
    assert count_params(init_shapes(zfnet, image(224))[0]) == 62_357_608
    assert spatial_sizes(lenet, image(32, 1), ["c1", "s2", "c3", "s4", "c5"]) == [28, 14, 10, 5, 1]
    params, _ = init_shapes(lenet, image(32, 1))
    assert {name: count_params(p) for name, p in params.items() if p} == {
        "c1": 156, "c3": 2_416, "c5": 48_120, "f6": 10_164, "output": 850}
    assert count_params(params) == 61_706


@pytest.mark.parametrize("constructor, plain, with_batch_norm", [
    (models.vgg11, 132_863_336, 132_868_840), (models.vgg13, 133_047_848, 133_053_736),
    (models.vgg16, 138_357_544, 138_365_992), (models.vgg19, 143_667_240, 143_678_248)])
def test_vgg_counts_are_torchvisions(constructor, plain, with_batch_norm):
    """torchvision's vgg*/vgg*_bn (conv biases kept before batch norm, gamma and beta counted)."""
    params, state = init_shapes(constructor(), image(224))
    assert count_params(params) == plain and count_params(state) == 0
    params, state = init_shapes(constructor(batch_norm=True), image(224))
    conv_filters = sum(params[name]["b"].size for name in params if name.startswith("conv"))
    assert count_params(params) == with_batch_norm == plain + 2 * conv_filters
    assert count_params(state) == 2 * conv_filters  # running mean and variance: state, not params


@pytest.mark.parametrize("constructor, size, expected, running_stats", [
    (models.resnet18, 224, 11_689_512, 9_600), (models.resnet50, 224, 25_557_032, 53_120),
    (models.resnet20, 32, 269_722, 1_376), (models.resnet110, 32, 1_727_962, 8_096)])
def test_resnet_counts_are_torchvisions_and_he_et_als(constructor, size, expected, running_stats):
    """torchvision's resnet18/50 and He et al.'s CIFAR ResNet-20 (0.27M) and ResNet-110 (1.7M):
    batch norm's gamma and beta are params, its running mean and variance state, convolutions
    have no bias."""
    params, state = init_shapes(constructor(), image(size))
    gammas = [leaf.size for path, leaf in jax.tree_util.tree_leaves_with_path(params) if path[-1].key == "gamma"]
    assert count_params(params) == expected
    assert count_params(state) == running_stats == 2 * sum(gammas)


def test_the_other_resnets_have_the_documented_counts():
    """The rest of resnet.py's table: torchvision's 34/101/152, He et al.'s 32/44/56 (0.46M, 0.66M, 0.85M)."""
    counts = {constructor.__name__: count_params(init_shapes(constructor(), image(size))[0]) for constructor, size in [
        (models.resnet34, 224), (models.resnet101, 224), (models.resnet152, 224), (models.resnet32, 32),
        (models.resnet44, 32), (models.resnet56, 32)]}
    assert counts == {"resnet34": 21_797_672, "resnet101": 44_549_160, "resnet152": 60_192_808,
                      "resnet32": 464_154, "resnet44": 658_586, "resnet56": 853_018}


def test_resnet_stages_and_bottleneck_layout():
    """Table 1's sizes (112, 56, 56, 28, 14, 7) and torchvision's bottleneck: the stride on the 3 x 3."""
    model = models.resnet50()
    assert spatial_sizes(model, image(224), ["conv1", "maxpool", "layer1", "layer2", "layer3", "layer4"]) == [
        112, 56, 56, 28, 14, 7]
    block = model.layers[5][1].layers[0][1]  # layer2, block1
    assert (block.strides, [layer.strides for _, layer in block.residual(256).layer.layers[::3]]) == (2, [1, 2, 1])
    cifar = models.resnet56()
    assert [len(layer.layers) for name, layer in cifar.layers if name.startswith("layer")] == [9, 9, 9]
    assert spatial_sizes(models.resnet20(), image(32), ["conv1", "layer1", "layer2", "layer3"]) == [32, 32, 16, 8]


def test_googlenet_is_table_1():
    model = models.googlenet()
    assert count_params(init_shapes(model, image(224))[0]) == 6_998_552
    shapes = {name: shape[1:] for name, shape in output_shapes(model, image(224)).items() if "inception" in name}
    assert shapes == {
        "inception3a": (28, 28, 256), "inception3b": (28, 28, 480), "inception4a": (14, 14, 512),
        "inception4b": (14, 14, 512), "inception4c": (14, 14, 512), "inception4d": (14, 14, 528),
        "inception4e": (14, 14, 832), "inception5a": (7, 7, 832), "inception5b": (7, 7, 1024)}


# ----------------------------------------------------------------------------- multiplies


def test_inception_multiplies_on_28x28x256():
    """Seed 003's naive module costs 854,196,224 multiplies; its bottleneck module the six terms it
    lists, 271,351,808 (its "about 358M" counts the 3 x 3 term twice). FLOPs = 2 x multiply-adds."""
    example = image(28, 256)
    naive = summary(models.naive_inception(128, 192, 96), example)
    assert naive.total_flops // 2 == 28 * 28 * 256 * (128 + 9 * 192 + 25 * 96) == 854_196_224
    assert naive.rows[0].output.shape == (1, 28, 28, 672)

    bottleneck = summary(models.Inception(128, 64, 192, 64, 96, 64), example)
    convolutions = {row.path: row.flops // 2 for row in bottleneck.rows if row.path.endswith(("conv", "reduce",
                                                                                               "proj"))}
    assert convolutions == {"1x1/conv": 25_690_112, "3x3/reduce": 12_845_056, "5x5/reduce": 12_845_056,
                            "3x3/conv": 86_704_128, "5x5/conv": 120_422_400, "pool/proj": 12_845_056}
    assert bottleneck.total_flops // 2 == sum(convolutions.values()) == 271_351_808
    assert bottleneck.total_flops // 2 + convolutions["3x3/conv"] == 358_055_936  # the seed's "about 358M"
    assert bottleneck.rows[0].output.shape == (1, 28, 28, 480)


# ----------------------------------------------------------------------------- flax twins (benchmarks/cnn_cases.py)


def random_variables(layer, x, seed=0):
    """Random params and running statistics (a variance stays positive), drawn with NumPy."""
    rng = np.random.default_rng(seed)
    params, state = jax.eval_shape(layer.init, jax.random.key(0), x)
    # In NumPy, float32 like jnp's, then device_put: eager jnp ops compile once per leaf shape.
    draw = lambda leaf: np.asarray(rng.standard_normal(leaf.shape) * 0.5, np.float32)  # noqa: E731
    state = jax.tree_util.tree_map_with_path(
        lambda path, leaf: np.abs(draw(leaf)) + np.float32(0.5) if path[-1].key == "var" else draw(leaf), state)
    return jax.device_put((jax.tree.map(draw, params), state))


def outputs_gradients_and_statistics(forward, params, x, cotangent):
    """For eval and train mode, in one program: the output, the gradients of ``sum(y * cotangent)``
    with respect to params and input, and the running statistics after the step (flax's naming)."""
    def one_mode(train):
        y, pullback, statistics = jax.vjp(lambda p, v: forward(p, v, train), params, x, has_aux=True)
        return y, pullback(cotangent), statistics
    return jax.jit(lambda: (one_mode(False), one_mode(True)))()


@pytest.mark.parametrize("layer, module, shape", [
    (models.BasicBlock(6, strides=2), FlaxBlock(6, 2), (3, 6, 6, 4)),
    (models.BasicBlock(6, strides=2, shortcut="zero_pad"), FlaxBlock(6, 2, zero_pad=True), (3, 6, 6, 4)),
    (models.Bottleneck(3, strides=2), FlaxBlock(3, 2, bottleneck=True), (3, 6, 6, 4)),
    (models.Bottleneck(2), FlaxBlock(2, bottleneck=True), (3, 5, 5, 8)),  # identity shortcut
    (models.VGG(((4,), (6, 6)), 3, batch_norm=True, hidden_features=5, dropout_rate=0.0),
     FlaxVGG(((4,), (6, 6)), 5, 3), (3, 8, 8, 3)),
], ids=["basic", "basic-zero-pad", "bottleneck", "bottleneck-identity", "vgg-bn"])
def test_matches_the_flax_twin(layer, module, shape):
    """Same weights and running statistics in both: outputs, gradients (params and input) and the
    updated statistics agree in evaluation and in training (batch statistics, momentum 0.9)."""
    x = jax.device_put(np.random.default_rng(1).standard_normal(shape).astype(np.float32))
    params, state = random_variables(layer, x)
    out_shape = jax.eval_shape(lambda: layer.apply(params, state, x)[0]).shape
    cotangent = jax.device_put(np.random.default_rng(2).standard_normal(out_shape).astype(np.float32))

    def jdl_forward(p, v, train):
        y, new_state = layer.apply(p, state, v, train=train)
        return y, to_flax(new_state)

    def flax_forward(p, v, train):
        variables = {"params": to_flax(p), "batch_stats": to_flax(state)}
        y, updates = module.apply(variables, v, train, mutable=["batch_stats"])
        return y, updates["batch_stats"]

    ours = outputs_gradients_and_statistics(jdl_forward, params, x, cotangent)
    theirs = outputs_gradients_and_statistics(flax_forward, params, x, cotangent)
    for got, want in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    (y_eval, (grads, _), stats_eval), (y_train, _, stats_train) = ours
    # The comparison has teeth: the modes differ, training moves the statistics, and no gradient is
    # zero (in evaluation: in training a bias before batch norm has none, the batch mean cancels it).
    assert not np.allclose(y_eval, y_train)
    assert not np.allclose(jax.tree.leaves(stats_train)[0], jax.tree.leaves(stats_eval)[0])
    assert all(np.max(np.abs(g)) > 1e-4 for g in jax.tree.leaves(grads))
