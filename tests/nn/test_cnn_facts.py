"""The seeds' convolution facts, as tests: 1 x 1 convolutions, overlapping pooling, translation
equivariance, pooling's invariance to small shifts, SAME padding and the output-size formula."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import models, nn, summary
from jdl.nn.conv import conv_output_size


def randn(*shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def params_for(layer, x, seed=0):
    """Random params of ``layer``'s shapes, drawn with NumPy (no compilation per shape)."""
    shapes, _ = jax.eval_shape(layer.init, jax.random.key(0), x)
    return jax.tree.map(lambda leaf: randn(*leaf.shape, seed=seed), shapes)


def outputs(triples):
    """Each ``(layer, params, x)``'s output, all in one jitted program (compilation is the cost here)."""
    layers = [layer for layer, _, _ in triples]
    run = jax.jit(lambda trees: [layer.apply(p, {}, x)[0] for layer, (p, x) in zip(layers, trees)])
    return run([(p, x) for _, p, x in triples])


def test_a_1x1_convolution_is_a_dense_layer_at_every_pixel():
    x = randn(2, 5, 6, 3)
    conv = nn.Conv2D(4, 1)
    params = params_for(conv, x)
    dense_params = {"w": params["w"][0, 0], "b": params["b"]}  # (1, 1, 3, 4) -> (3, 4)
    y_conv, y_dense = outputs([(conv, params, x), (nn.Dense(4), dense_params, x)])  # Dense maps the last axis
    np.testing.assert_allclose(y_conv, y_dense, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(y_conv, np.einsum("bhwc,co->bhwo", x, dense_params["w"]) + dense_params["b"],
                               rtol=1e-5, atol=1e-5)


def test_overlapping_max_pooling_is_alexnets():
    """3 x 3 windows every 2 pixels (AlexNet's): neighbouring windows share a row or column, each
    output is the max of its window, and an input that is the max of two windows gets both gradients."""
    x = randn(1, 7, 7, 2, seed=1)
    pool = nn.MaxPool2D(3, strides=2)
    y, = outputs([(pool, {}, x)])
    expected = np.array([[[[np.max(x[0, 2 * i:2 * i + 3, 2 * j:2 * j + 3, c]) for c in range(2)]
                           for j in range(3)] for i in range(3)]])
    np.testing.assert_array_equal(y, expected)
    # A peak on the shared row and column 2 is the max of all four windows around it.
    peaked = x.at[0, 2, 2, 0].set(10.0)
    grad = jax.jit(jax.grad(lambda v: jnp.sum(pool.apply({}, {}, v)[0])))(peaked)
    assert grad[0, 2, 2, 0] == 4.0
    assert conv_output_size(55, 3, 2) == 27  # AlexNet's pool1: (55 - 3) / 2 + 1


def test_a_convolution_is_equivariant_to_translation():
    """conv(shift(x)) = shift(conv(x)) (seed 003: f(g(I)) = g(f(I))): a pattern away from the
    borders, shifted, gives the same feature map, shifted. With stride 2, a shift of 2 pixels
    shifts the output by 1."""
    image = jnp.zeros((1, 16, 16, 2)).at[:, 5:10, 4:9].set(randn(1, 5, 5, 2, seed=2))
    conv, strided = nn.Conv2D(3, 3), nn.Conv2D(3, 3, strides=2)
    params = params_for(conv, image)
    y, y_shifted, z, z_shifted = outputs([(conv, params, image), (conv, params, jnp.roll(image, (2, 3), axis=(1, 2))),
                                          (strided, params, image),
                                          (strided, params, jnp.roll(image, (2, 2), axis=(1, 2)))])
    np.testing.assert_allclose(y_shifted, jnp.roll(y, (2, 3), axis=(1, 2)), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(z_shifted, jnp.roll(z, (1, 1), axis=(1, 2)), rtol=1e-5, atol=1e-5)


def test_max_pooling_is_invariant_to_small_shifts():
    """A feature moved within its pooling window pools to the same value; moved into the next
    window it does not. Shifting a whole detector map by one step changes every detector value
    but leaves many pooled ones (Goodfellow et al., figure 9.8)."""
    pool = nn.MaxPool2D(2)
    feature = jnp.zeros((1, 8, 8, 1)).at[0, 4, 4, 0].set(1.0)
    moved = jnp.zeros((1, 8, 8, 1)).at[0, 5, 5, 0].set(1.0)  # same 2 x 2 window
    farther = jnp.zeros((1, 8, 8, 1)).at[0, 6, 6, 0].set(1.0)  # the next window
    detector = jnp.abs(randn(1, 64, 1, seed=3))
    shifted = jnp.roll(detector, 1, axis=1)
    wide = nn.MaxPool1D(3, strides=1, padding="SAME")
    *pooled, wide_pooled, wide_shifted = outputs([(pool, {}, v) for v in (feature, moved, farther)]
                                                 + [(wide, {}, detector), (wide, {}, shifted)])
    np.testing.assert_array_equal(pooled[0], pooled[1])
    assert not np.array_equal(pooled[0], pooled[2])
    assert not np.any(np.asarray(detector == shifted))
    assert np.mean(np.asarray(wide_pooled == wide_shifted)) > 0.45


def test_same_padding_is_half_the_kernel():
    """At stride 1, ``p = (f - 1) / 2`` keeps the size (seed 003), and is what "SAME" pads."""
    x = randn(1, 9, 9, 2, seed=4)
    triples = []
    for kernel_size in (1, 3, 5, 7):
        pad = (kernel_size - 1) // 2
        assert conv_output_size(9, kernel_size, 1, pad) == 9
        params = params_for(nn.Conv2D(3, kernel_size), x, seed=kernel_size)
        triples += [(nn.Conv2D(3, kernel_size, padding=padding), params, x) for padding in ("SAME", pad)]
    results = outputs(triples)
    for y_same, y_explicit in zip(results[::2], results[1::2]):
        assert y_same.shape == (1, 9, 9, 3)
        np.testing.assert_allclose(y_same, y_explicit, rtol=1e-6, atol=1e-6)


def test_padding_that_keeps_the_size_at_a_stride():
    """Seed 003: with stride ``s``, ``(n + 2p - f) / s + 1 = n`` needs ``p = (n s - (n + s) + f) / 2``."""
    n, s, f = 7, 2, 3
    p = (n * s - (n + s) + f) // 2
    assert (p, conv_output_size(n, f, s, p)) == (4, n)
    conv, x = nn.Conv2D(1, f, strides=s, padding=p), jax.ShapeDtypeStruct((1, n, n, 1), jnp.float32)
    assert nn.output_shape(conv, *jax.eval_shape(conv.init, jax.random.key(0), x), x).shape == (1, n, n, 1)


def test_output_size_formula_on_every_layer_of_alexnet():
    """``(N - F + 2P) / S + 1`` for each convolution and pooling of AlexNet, from each layer's own
    kernel, stride and padding, equals the size the layer gives; every division is exact."""
    model = models.alexnet()
    table = summary(model, jax.ShapeDtypeStruct((1, 227, 227, 3), jnp.float32), depth=1)
    layers = dict(model.layers)
    size, sizes = 227, []
    for row in table.rows[1:]:
        layer = layers[row.path]
        if isinstance(layer, (nn.Conv, nn.MaxPool)):
            kernel = (layer.kernel_size if isinstance(layer, nn.Conv) else layer.window_shape)[0]
            stride = layer.strides
            pad = 0 if layer.padding == "VALID" else layer.padding
            assert (size - kernel + 2 * pad) % stride == 0, row.path
            size = (size - kernel + 2 * pad) // stride + 1
            assert row.output.shape[1:3] == (size, size), row.path
            sizes.append(size)
    assert sizes == [55, 27, 27, 13, 13, 13, 13, 6]  # conv1, pool1, conv2, pool2, conv3-5, pool5


def test_auto_leaves_large_kernels_to_xla_on_cpu():
    """The gathered-windows matmul stops at 25 taps: AlexNet's 11 x 11 and the 7 x 7 stems go to XLA."""
    def uses_xla_conv(kernel_size, shape):
        conv = nn.Conv2D(8, kernel_size)
        example = jax.ShapeDtypeStruct(shape, jnp.float32)
        params, state = jax.eval_shape(conv.init, jax.random.key(0), example)
        return "conv_general_dilated" in str(jax.make_jaxpr(conv.apply)(params, state, example))

    if jax.default_backend() != "cpu":
        pytest.skip("the matmul form is a CPU choice")
    assert not uses_xla_conv(5, (2, 16, 16, 3))
    assert uses_xla_conv(7, (2, 16, 16, 3))
    assert uses_xla_conv(11, (2, 16, 16, 3))
