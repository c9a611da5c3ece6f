"""Max and average pooling against flax.linen.max_pool / avg_pool, global pools against jnp."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn

# (window, strides, jdl padding, flax padding, input shape)
CASES = [
    pytest.param((2,), None, "VALID", "VALID", (2, 8, 3), id="1d-default-strides"),
    pytest.param((3,), (2,), "SAME", "SAME", (2, 9, 2), id="1d-same-stride2"),
    pytest.param((3,), (1,), 1, [(1, 1)], (2, 7, 2), id="1d-int-padding"),
    pytest.param((2, 2), None, "VALID", "VALID", (2, 6, 4, 3), id="2d-default-strides"),
    pytest.param((3, 3), (2, 2), "SAME", "SAME", (2, 7, 6, 2), id="2d-same-stride2"),
    pytest.param((3, 2), (1, 2), ((1, 1), (0, 1)), [(1, 1), (0, 1)], (1, 5, 5, 2), id="2d-pairs-padding"),
    pytest.param((3, 3), (2, 1), (1, 2), [(1, 1), (2, 2)], (1, 6, 5, 2), id="2d-ints-padding"),
]


def _flax_strides(window, strides):
    # jdl's strides default to the window (non-overlapping); flax's default to 1.
    return window if strides is None else strides


@pytest.mark.parametrize("window, strides, padding, flax_padding, shape", CASES)
def test_max_pool_matches_flax(window, strides, padding, flax_padding, shape, randn, compare_with_flax):
    layer = nn.MaxPool(window, strides, padding)
    x = randn(shape)
    y = compare_with_flax(
        lambda p, v: layer.apply(p, {}, v)[0],
        lambda p, v: fnn.max_pool(v, window, _flax_strides(window, strides), flax_padding),
        {}, x,
    )
    assert y.shape[-1] == shape[-1]


@pytest.mark.parametrize("count_include_pad", [True, False])
@pytest.mark.parametrize("window, strides, padding, flax_padding, shape", CASES)
def test_avg_pool_matches_flax(window, strides, padding, flax_padding, shape, count_include_pad, randn,
                               compare_with_flax):
    layer = nn.AvgPool(window, strides, padding, count_include_pad=count_include_pad)
    x = randn(shape)
    compare_with_flax(
        lambda p, v: layer.apply(p, {}, v)[0],
        lambda p, v: fnn.avg_pool(v, window, _flax_strides(window, strides), flax_padding, count_include_pad),
        {}, x,
    )


def test_count_include_pad_by_hand():
    x = jnp.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 4, 1)
    with_pad = nn.AvgPool1D(3, strides=1, padding=1).apply({}, {}, x)[0].ravel()
    without_pad = nn.AvgPool1D(3, strides=1, padding=1, count_include_pad=False).apply({}, {}, x)[0].ravel()
    np.testing.assert_allclose(with_pad, [3 / 3, 6 / 3, 9 / 3, 7 / 3], rtol=1e-6)
    np.testing.assert_allclose(without_pad, [3 / 2, 6 / 3, 9 / 3, 7 / 2], rtol=1e-6)
    max_pooled = nn.MaxPool1D(3, strides=1, padding=1).apply({}, {}, -x)[0].ravel()
    np.testing.assert_allclose(max_pooled, [-1.0, -1.0, -2.0, -3.0])  # padding never wins a max


def test_named_pools_are_pool(randn):
    x1, x2 = randn((2, 6, 3)), randn((2, 6, 6, 3))
    pairs = [
        (nn.MaxPool1D(2), nn.MaxPool((2,)), x1, "max_pool1d"),
        (nn.AvgPool1D(3, strides=1, padding="SAME"), nn.AvgPool((3,), (1,), "SAME"), x1, "avg_pool1d"),
        (nn.MaxPool2D(2), nn.MaxPool((2, 2)), x2, "max_pool2d"),
        (nn.AvgPool2D((3, 2), strides=1, count_include_pad=False, padding=1),
         nn.AvgPool((3, 2), 1, 1, count_include_pad=False), x2, "avg_pool2d"),
    ]
    for short, full, x, name in pairs:
        assert short.name == name
        np.testing.assert_array_equal(short.apply({}, {}, x)[0], full.apply({}, {}, x)[0])
    assert nn.MaxPool2D(2).apply({}, {}, x2)[0].shape == (2, 3, 3, 3)
    assert nn.AvgPool1D(2).apply({}, {}, x1)[0].shape == (2, 3, 3)


@pytest.mark.parametrize("num_spatial", [1, 2])
def test_global_pools(num_spatial, randn, compare_with_flax):
    x = randn((2,) + (5,) * num_spatial + (3,))
    axes = tuple(range(1, 1 + num_spatial))
    for layer, reference in [(nn.GlobalAvgPool(num_spatial), jnp.mean), (nn.GlobalMaxPool(num_spatial), jnp.max)]:
        y = compare_with_flax(lambda p, v: layer.apply(p, {}, v)[0], lambda p, v: reference(v, axis=axes), {}, x)
        assert y.shape == (2, 3)
    # Any number of leading batch axes.
    x = randn((2, 4, 6, 3))
    np.testing.assert_allclose(nn.GlobalAvgPool(1).apply({}, {}, x)[0], jnp.mean(x, axis=2), rtol=1e-6)


def test_pool_finite_differences(randn, finite_differences):
    x = randn((2, 6, 5, 2))
    for layer in [nn.MaxPool2D((2, 2), strides=1, padding=((1, 0), (0, 1))),
                  nn.AvgPool2D(3, strides=2, padding="SAME", count_include_pad=False),
                  nn.GlobalAvgPool(2), nn.GlobalMaxPool(2)]:
        finite_differences(lambda v: layer.apply({}, {}, v)[0], (x,))


def test_pool_transforms(randn, check_transforms):
    x = randn((3, 6, 2))
    for layer, reference in [
        (nn.MaxPool1D(2), fnn.max_pool(x, (2,), (2,))),
        (nn.AvgPool1D(3, strides=1, padding="SAME", count_include_pad=False),
         fnn.avg_pool(x, (3,), (1,), "SAME", count_include_pad=False)),
        (nn.GlobalMaxPool(1), jnp.max(x, axis=1)),
    ]:
        y = check_transforms(layer, {}, {}, x)
        np.testing.assert_allclose(y, reference, rtol=1e-6)


def test_pool_errors():
    with pytest.raises(ValueError, match=r"MaxPool\(window_shape=\(2, 2\).*expected padding 'SAME', 'VALID', "
                                         r"an int or pairs, got 'FULL'"):
        nn.MaxPool2D(2, padding="FULL")
    with pytest.raises(ValueError, match=r"AvgPool\(window_shape=\(2, 2\).*expected input of rank >= 3 "
                                         r"\(\*batch, spatial_0, spatial_1, channels\), got rank 2"):
        nn.AvgPool2D(2).apply({}, {}, jnp.zeros((4, 4)))
    with pytest.raises(TypeError, match=r"MaxPool\(window_shape=\(2,\).*expected a floating-point input, got int32"):
        nn.MaxPool1D(2).apply({}, {}, jnp.zeros((1, 4, 1), jnp.int32))
    with pytest.raises(ValueError, match=r"MaxPool\(window_shape=\(2, 2\).*expected padding for 2 spatial axes"):
        nn.MaxPool2D(2, padding=[(1, 1)])
    with pytest.raises(ValueError, match=r"GlobalAvgPool\(num_spatial=2\).*expected input of rank >= 3.*got rank 2"):
        nn.GlobalAvgPool(2).apply({}, {}, jnp.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"MaxPool\(window_shape=\(2,\).*expected params with keys \[\], "
                                         r"got keys \['w'\]"):
        nn.MaxPool1D(2).apply({"w": jnp.zeros(2)}, {}, jnp.zeros((1, 4, 1)))


def test_an_empty_spatial_axis_is_refused():
    """SAME pooling used to return an empty output, global average pooling NaN, global max pooling jax's error."""
    for layer in [nn.MaxPool1D(2, padding="SAME"), nn.AvgPool1D(2, padding=1)]:
        # The message is this layer's or, first, check_array's generic one (no empty axis anywhere).
        with pytest.raises(ValueError, match=r"^(Max|Avg)Pool\(window_shape=\(2,\).*: expected .*empty"):
            layer.apply({}, {}, jnp.zeros((2, 0, 3)))
    with pytest.raises(ValueError, match=r"^GlobalAvgPool\(num_spatial=1\): expected .*empty.* shape \(2, 0, 3\)"):
        jax.jit(nn.GlobalAvgPool(1).apply)({}, {}, jnp.zeros((2, 0, 3)))
    with pytest.raises(ValueError, match=r"^GlobalMaxPool\(num_spatial=2\): expected .*empty.* shape \(2, 4, 0, 3\)"):
        nn.GlobalMaxPool(2).apply({}, {}, jnp.zeros((2, 4, 0, 3)))
