"""Conv against flax.linen.Conv (same weights and arguments), output sizes, gradients, errors."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn

# (kernel_size, strides, padding, kernel_dilation, feature_group_count, input shape); the
# input's last axis is the channel axis; every conv has 4 output features.
CASES_1D = [
    pytest.param((3,), 1, "SAME", 1, 1, (2, 9, 3), id="1d-same"),
    pytest.param((5,), 2, 1, 2, 1, (2, 14, 3), id="1d-int-padding-stride2-dilation2"),
    pytest.param((4,), 2, [(2, 1)], 1, 2, (2, 11, 4), id="1d-pair-padding-groups2"),
    pytest.param((3,), 1, "CAUSAL", 2, 1, (2, 8, 2), id="1d-causal-dilation2"),
]
CASES_2D = [
    pytest.param((3, 3), 1, "SAME", 1, 1, (2, 7, 6, 3), id="2d-same"),
    pytest.param((3, 2), (2, 1), "VALID", 1, 1, (2, 8, 7, 3), id="2d-valid-strides21"),
    pytest.param((3, 3), 1, (1, 2), (2, 1), 2, (1, 7, 6, 4), id="2d-ints-padding-dilation21-groups2"),
    pytest.param((2, 3), 2, ((1, 0), (2, 1)), 1, 1, (1, 6, 5, 2), id="2d-pairs-padding-stride2"),
    pytest.param((3, 3), 2, "SAME", (2, 1), 4, (1, 9, 8, 4), id="2d-same-stride2-dilation21-depthwise"),
    pytest.param((3, 3), 2, 1, 1, 1, (1, 8, 8, 2), id="2d-int-padding-stride2"),
]


def _flax_conv(features, kernel_size, strides, padding, dilation, groups, use_bias=True):
    module = fnn.Conv(features, kernel_size, strides=strides, padding=padding, kernel_dilation=dilation,
                      feature_group_count=groups, use_bias=use_bias)

    def apply(params, x):
        flax_params = {"kernel": params["w"]}
        if use_bias:
            flax_params["bias"] = params["b"]
        return module.apply({"params": flax_params}, x)

    return apply


@pytest.mark.parametrize("implementation", ["xla", "matmul"])
@pytest.mark.parametrize("kernel_size, strides, padding, dilation, groups, shape", CASES_1D + CASES_2D)
def test_conv_matches_flax(kernel_size, strides, padding, dilation, groups, shape, implementation, randn,
                           random_params, compare_with_flax):
    layer = nn.Conv(4, kernel_size, strides, padding, dilation, groups, implementation=implementation)
    x = randn(shape)
    params, state = random_params(layer, x, scale=0.5), {}
    assert params["w"].shape == kernel_size + (shape[-1] // groups, 4)
    flax_apply = _flax_conv(4, kernel_size, strides, padding, dilation, groups)
    y = compare_with_flax(lambda p, v: layer.apply(p, state, v)[0], flax_apply, params, x)
    # The parameter shapes flax would create are jdl's.
    flax_shapes = jax.eval_shape(
        fnn.Conv(4, kernel_size, strides=strides, padding=padding, kernel_dilation=dilation,
                 feature_group_count=groups).init, jax.random.key(0), x)["params"]
    assert flax_shapes["kernel"].shape == params["w"].shape
    assert y.shape[-1] == 4


def test_conv1d_and_conv2d_are_conv(randn, random_params):
    x1 = randn((2, 10, 3))
    x2 = randn((2, 6, 6, 3))
    for short, full, x, name in [
        (nn.Conv1D(4, 3, strides=2, padding=1), nn.Conv(4, (3,), 2, 1), x1, "conv1d"),
        (nn.Conv2D(4, 3, strides=(1, 2), padding="VALID"), nn.Conv(4, (3, 3), (1, 2), "VALID"), x2, "conv2d"),
    ]:
        assert short.name == name and full.name == "conv"
        shapes = jax.eval_shape(short.init, jax.random.key(0), x)
        assert jax.tree.map(lambda a: a.shape, shapes) == jax.tree.map(
            lambda a: a.shape, jax.eval_shape(full.init, jax.random.key(0), x))
        params = random_params(short, x)
        np.testing.assert_array_equal(jax.jit(short.apply)(params, {}, x)[0], jax.jit(full.apply)(params, {}, x)[0])


def test_conv_without_bias_matches_flax(randn, random_params, compare_with_flax):
    layer = nn.Conv2D(3, 2, use_bias=False)
    x = randn((2, 4, 4, 2))
    params, state = random_params(layer, x), {}
    assert sorted(params) == ["w"]
    compare_with_flax(lambda p, v: layer.apply(p, state, v)[0],
                      _flax_conv(3, (2, 2), 1, "SAME", 1, 1, use_bias=False), params, x)


def test_conv_any_number_of_batch_axes(randn, random_params):
    layer = nn.Conv1D(4, 3, padding="VALID")
    x = randn((2, 3, 7, 2))
    params, state = random_params(layer, x), {}
    apply = jax.jit(layer.apply)
    y = np.asarray(apply(params, state, x)[0])
    flat = apply(params, state, x.reshape(6, 7, 2))[0]
    single = apply(params, state, x[1, 2])[0]
    assert y.shape == (2, 3, 5, 4)
    np.testing.assert_allclose(y.reshape(6, 5, 4), flat, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y[1, 2], single, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(y, jax.jit(_flax_conv(4, (3,), 1, "VALID", 1, 1))(params, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n, f, s, p, expected", [
    (32, 5, 1, 0, 28), (32, 3, 1, 1, 32), (28, 5, 1, 2, 28), (7, 3, 2, 0, 3),
    (227, 11, 4, 0, 55), (40, 5, 2, 1, 19), (5, 3, 2, 1, 3),
])
def test_conv_output_size_is_the_course_formula(n, f, s, p, expected):
    assert nn.conv_output_size(n, f, s, p) == (n - f + 2 * p) // s + 1 == expected
    conv = nn.Conv1D(2, f, strides=s, padding=p)
    x = jax.ShapeDtypeStruct((1, n, 1), jnp.float32)
    params, state = jax.eval_shape(conv.init, jax.random.key(0), x)
    assert nn.output_shape(conv, params, state, x).shape == (1, expected, 2)


@pytest.mark.parametrize("n, f, s, padding, dilation", [
    (10, 3, 1, "SAME", 1), (10, 3, 3, "SAME", 1), (11, 4, 2, "SAME", 2), (9, 3, 2, "VALID", 1),
    (12, 3, 1, "VALID", 3), (13, 3, 2, (2, 1), 2), (8, 5, 3, 2, 1), (6, 2, 1, (0, 3), 1),
])
def test_conv_output_size_matches_conv_layer(n, f, s, padding, dilation):
    expected = nn.conv_output_size(n, f, s, padding, dilation)
    layer_padding = [padding] if isinstance(padding, tuple) else padding
    x = jnp.ones((1, n, 1))
    params = {"w": jnp.ones((f, 1, 1)), "b": jnp.zeros((1,))}
    for implementation in ["xla", "matmul"]:
        conv = nn.Conv1D(1, f, strides=s, padding=layer_padding, kernel_dilation=dilation,
                         implementation=implementation)
        assert jax.jit(conv.apply)(params, {}, x)[0].shape == (1, expected, 1)
    if padding == "SAME":
        assert expected == -(-n // s)
    elif padding == "VALID":
        assert expected == (n - dilation * (f - 1) - 1) // s + 1


@pytest.mark.parametrize("implementation", ["xla", "matmul"])
def test_conv_finite_differences(implementation, randn, random_params, finite_differences):
    layer = nn.Conv2D(4, (2, 3), strides=(2, 1), padding=((1, 0), (1, 1)), kernel_dilation=(1, 2),
                      feature_group_count=2, implementation=implementation)
    x = randn((2, 5, 6, 4))
    params = random_params(layer, x)
    finite_differences(lambda p, v: layer.apply(p, {}, v)[0], (params, x))


@pytest.mark.parametrize("implementation", ["xla", "matmul"])
def test_conv_transforms(implementation, randn, random_params, check_transforms):
    layer = nn.Conv1D(4, 3, strides=2, padding=1, feature_group_count=2, implementation=implementation)
    x = randn((3, 8, 2))
    params = random_params(layer, x)
    y = check_transforms(layer, params, {}, x)
    np.testing.assert_allclose(y, _flax_conv(4, (3,), 2, 1, 1, 2)(params, x), rtol=1e-5, atol=1e-5)


def test_conv_implementations_agree_and_auto_chooses_by_size(randn, random_params):
    layer = nn.Conv2D(6, 3, strides=(1, 2), padding="SAME", kernel_dilation=(2, 1), feature_group_count=3)
    x = randn((2, 9, 10, 6))
    params = random_params(layer, x)
    outputs = {implementation: jax.jit(nn.Conv2D(6, 3, strides=(1, 2), padding="SAME", kernel_dilation=(2, 1),
                                                 feature_group_count=3, implementation=implementation).apply)(
                                                     params, {}, x)[0]
               for implementation in ["xla", "matmul"]}
    np.testing.assert_allclose(outputs["matmul"], outputs["xla"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jax.jit(layer.apply)(params, {}, x)[0], outputs["xla"], rtol=1e-5, atol=1e-5)

    def uses_xla_conv(x_shape):
        conv = nn.Conv1D(8, 5)
        example = jax.ShapeDtypeStruct(x_shape, jnp.float32)
        params, state = jax.eval_shape(conv.init, jax.random.key(0), example)
        return "conv_general_dilated" in str(jax.make_jaxpr(conv.apply)(params, state, example))

    if jax.default_backend() == "cpu":
        assert not uses_xla_conv((4, 40, 8))  # small: im2col matmul
        assert uses_xla_conv((64, 1024, 64))  # 80 MiB of windows: XLA's convolution
    else:
        assert uses_xla_conv((4, 40, 8))


def test_conv2d_wrong_rank():
    layer = nn.Conv2D(8, 3)
    params, state = {"w": jnp.zeros((3, 3, 1, 8)), "b": jnp.zeros((8,))}, {}
    with pytest.raises(ValueError, match=r"Conv\(features=8, kernel_size=\(3, 3\).*expected input of rank >= 3 "
                                         r"\(\*batch, spatial_0, spatial_1, channels\), "
                                         r"got rank 2 with shape \(28, 28\)"):
        layer.apply(params, state, jnp.zeros((28, 28)))
    with pytest.raises(ValueError, match=r"Conv\(features=8.*expected input of rank >= 3.*got rank 2"):
        layer.init(jax.random.key(0), jnp.zeros((28, 28)))


def test_conv_wrong_channels():
    layer = nn.Conv2D(8, 3)
    params, state = {"w": jnp.zeros((3, 3, 1, 8)), "b": jnp.zeros((8,))}, {}
    with pytest.raises(ValueError, match=r"Conv\(features=8.*expected params\['w'\] of shape \(3, 3, 3, 8\), "
                                         r"got \(3, 3, 1, 8\)"):
        layer.apply(params, state, jnp.zeros((1, 6, 6, 3)))


@pytest.mark.parametrize("padding", ["FULL", "same-ish"])
def test_conv_unknown_padding_string(padding):
    with pytest.raises(ValueError, match=rf"Conv\(features=4.*expected padding in \('SAME', 'VALID', 'CAUSAL'\)"
                                         rf".*got '{padding}'"):
        nn.Conv2D(4, 3, padding=padding)


def test_conv_bad_arguments():
    with pytest.raises(ValueError, match=r"padding 'CAUSAL' is for 1-D inputs, got 2 spatial axes"):
        nn.Conv2D(4, 3, padding="CAUSAL")
    with pytest.raises(ValueError, match=r"Conv\(features=5.*expected features divisible by "
                                         r"feature_group_count=2, got 5"):
        nn.Conv1D(5, 3, feature_group_count=2)
    layer = nn.Conv1D(4, 3, feature_group_count=2)
    with pytest.raises(ValueError, match=r"Conv\(features=4.*expected input channels divisible by feature_group_count=2, "
                                         r"got 3 \(input of shape \(1, 5, 3\)\)"):
        layer.init(jax.random.key(0), jnp.zeros((1, 5, 3)))
    with pytest.raises(ValueError, match=r"Conv\(features=4.*expected strides to be an int or 2 ints, got \(1, 2, 3\)"):
        nn.Conv2D(4, 3, strides=(1, 2, 3))
    with pytest.raises(ValueError, match=r"Conv\(features=4.*expected implementation in \('auto', 'xla', 'matmul'\), "
                                         r"got 'cudnn'"):
        nn.Conv2D(4, 3, implementation="cudnn")


@pytest.mark.parametrize("implementation", ["xla", "matmul", "auto"])
def test_input_shorter_than_the_window_is_refused(implementation):
    """No silently empty output axis (which would init a Dense of zero inputs downstream)."""
    conv = nn.Conv1D(4, 5, padding="VALID", implementation=implementation)
    with pytest.raises(ValueError, match=r"Conv\(features=4, kernel_size=\(5,\).*\): expected spatial axis 0 of "
                                         r"at least 5 .* got 3"):
        conv.init(jax.random.key(0), jnp.zeros((2, 3, 1)))
    padded = nn.Conv1D(4, 5, padding=1, implementation=implementation)
    assert padded.init(jax.random.key(0), jnp.zeros((2, 3, 1)))[0]["w"].shape == (5, 1, 4)  # 3 + 2 >= 5
    with pytest.raises(ValueError, match=r"expected spatial axis 1 of at least 3 .* got 2"):
        nn.Conv2D(4, 3, padding="VALID", implementation=implementation).init(jax.random.key(0), jnp.zeros((1, 5, 2, 1)))
    with pytest.raises(ValueError, match=r"MaxPool\(window_shape=\(4,\).*\): expected spatial axis 0 of at least 4"):
        nn.MaxPool1D(4).apply({}, {}, jnp.zeros((2, 3, 1)))
    with pytest.raises(ValueError, match=r"Dense\(features=3\): expected input with (at least one feature|no empty "
                                         r"axis)"):
        nn.Dense(3).init(jax.random.key(0), jnp.zeros((2, 0)))


@pytest.mark.parametrize("padding", ["SAME", "VALID", 2, "CAUSAL"])
def test_an_empty_spatial_axis_is_refused_whatever_the_padding(padding):
    """SAME used to skip the size check and return an empty output (explicit padding: one of pure zeros)."""
    conv = nn.Conv1D(4, 3, padding=padding)
    # The message is this layer's or, first, check_array's generic one (no empty axis anywhere).
    with pytest.raises(ValueError, match=r"^Conv\(features=4.*\): expected (spatial axis 0 of at least 1 \(an empty "
                                         r"axis has no window to slide over, whatever the padding\), got 0|.*empty)"):
        conv.init(jax.random.key(0), jnp.zeros((2, 0, 1)))
    with pytest.raises(ValueError, match=r"^Conv\(features=4.*\): expected .*empty.* got (0|shape \(1, 5, 0, 1\))"):
        jax.jit(nn.Conv2D(4, 3).init)(jax.random.key(0), jnp.zeros((1, 5, 0, 1)))
