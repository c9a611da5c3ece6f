"""jdl.init: fans, draw statistics against each formula, equality with jax.nn.initializers,
uniform bounds, orthogonality, errors."""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import init

DENSE = (256, 1024)  # 262,144 draws: fan_in 256, fan_out 1024
CONV_BIG = (3, 3, 128, 256)  # 294,912 draws: fan_in 3*3*128 = 1152, fan_out 3*3*256 = 2304
CONV = (3, 3, 16, 32)  # fan_in 3*3*16 = 144, fan_out 3*3*32 = 288
GAUSSIAN_STD = 0.05

# name: (initialiser, variance(fan_in, fan_out), uniform bound or None, plain normal?)
FORMULAS = {
    "gaussian": (init.normal(GAUSSIAN_STD), lambda fi, fo: GAUSSIAN_STD**2, None, True),
    "uniform_fan_in": (init.uniform_fan_in(), lambda fi, fo: 1 / (3 * fi), lambda fi, fo: 1 / math.sqrt(fi), False),
    "xavier_uniform": (init.xavier_uniform(), lambda fi, fo: 2 / (fi + fo),
                       lambda fi, fo: math.sqrt(6 / (fi + fo)), False),
    "xavier_normal": (init.xavier_normal(), lambda fi, fo: 2 / (fi + fo), None, True),
    "he_uniform": (init.he_uniform(), lambda fi, fo: 2 / fi, lambda fi, fo: math.sqrt(6 / fi), False),
    "he_normal": (init.he_normal(), lambda fi, fo: 2 / fi, None, True),
    "lecun_uniform": (init.lecun_uniform(), lambda fi, fo: 1 / fi, lambda fi, fo: math.sqrt(3 / fi), False),
    "lecun_normal": (init.lecun_normal(), lambda fi, fo: 1 / fi, None, False),  # truncated, as jax
}
SHAPES = {"dense": (DENSE, (256, 1024)), "conv": (CONV_BIG, (1152, 2304))}


@pytest.fixture(scope="module")
def draws():
    """Every initialiser's draws for both shapes, as float64 numpy (one eager call each)."""
    keys = {name: jax.random.key(i) for i, name in enumerate(FORMULAS)}
    return {shape_name: {name: np.asarray(fn(keys[name], shape), np.float64).ravel()
                         for name, (fn, *_) in FORMULAS.items()}
            for shape_name, (shape, _) in SHAPES.items()}


def test_compute_fans_exact():
    assert init.compute_fans((784, 256)) == (784, 256)
    assert init.compute_fans(CONV) == (3 * 3 * 16, 3 * 3 * 32)
    assert init.compute_fans(CONV_BIG) == (3 * 3 * 128, 3 * 3 * 256)
    assert init.compute_fans((5, 8, 4)) == (5 * 8, 5 * 4)  # 1-D conv
    assert init.compute_fans((2, 3, 3, 16, 32)) == (18 * 16, 18 * 32)  # 3-D conv
    # A PyTorch-layout kernel (out, in, kh, kw) with the axes named.
    assert init.compute_fans((32, 16, 3, 3), in_axis=1, out_axis=0) == (144, 288)


@pytest.mark.parametrize("shape_name", sorted(SHAPES))
@pytest.mark.parametrize("name", list(FORMULAS))
def test_mean_and_variance_match_formula(draws, name, shape_name):
    _, variance_of, bound_of, plain_normal = FORMULAS[name]
    shape, (fan_in, fan_out) = SHAPES[shape_name]
    assert init.compute_fans(shape) == (fan_in, fan_out)
    w = draws[shape_name][name]
    n = w.size
    assert n > 250_000
    variance = variance_of(fan_in, fan_out)
    std = math.sqrt(variance)
    # Standard errors: of the mean, std/sqrt(n); of the sample variance,
    # sqrt((mu4 - sigma^4) / n), mu4 = 3 sigma^4 for a normal (a bound for the
    # truncated normal too) and 9/5 sigma^4 for a uniform. Allow 5 standard errors.
    excess = 0.8 if bound_of else 2.0
    assert abs(w.mean()) < 5 * std / math.sqrt(n), (w.mean(), std)
    assert abs(w.var() - variance) < 5 * variance * math.sqrt(excess / n), (w.var(), variance)
    if bound_of:
        bound = bound_of(fan_in, fan_out)
        assert np.abs(w).max() <= bound * (1 + 1e-6)
        assert np.abs(w).max() > 0.999 * bound  # the whole interval is used
    elif plain_normal:
        # A plain normal reaches beyond a normal truncated at 2 sigma (4+ sigma at this n).
        assert np.abs(w).max() > 4 * std
    else:
        # Truncated at two of the underlying normal's standard deviations.
        assert np.abs(w).max() <= 2 * std / 0.87962566103423978 * (1 + 1e-6)


def test_uniform_init_bounds_and_bias_initialisers():
    key = jax.random.key(0)
    w = np.asarray(init.uniform(0.1)(key, (1000,)))
    assert w.min() >= 0 and w.min() < 0.01 and 0.09 < w.max() <= 0.1
    np.testing.assert_allclose(w, jax.nn.initializers.uniform(0.1)(key, (1000,)), rtol=1e-6)
    np.testing.assert_array_equal(init.zeros(key, (2, 3)), np.zeros((2, 3)))
    np.testing.assert_array_equal(init.ones(key, (3,)), np.ones(3))
    np.testing.assert_array_equal(init.constant(0.5)(key, (2,)), [0.5, 0.5])
    assert init.zeros(key, (2,), jnp.bfloat16).dtype == jnp.bfloat16


# Same key, same (scale, mode, distribution) as jax.nn.initializers: the same numbers.
# Every mode x distribution; the scale varies with the mode (it only multiplies the draws).
VS_SETTINGS = [(scale, mode, dist)
               for scale, mode in ((0.5, "fan_in"), (2.0, "fan_out"), (1.3, "fan_avg"))
               for dist in ("normal", "truncated_normal", "uniform")]
NAMED_TWINS = {
    "xavier_uniform": (init.xavier_uniform(), jax.nn.initializers.glorot_uniform()),
    "glorot_uniform": (init.glorot_uniform(), jax.nn.initializers.glorot_uniform()),
    "he_uniform": (init.he_uniform(), jax.nn.initializers.he_uniform()),
    "lecun_normal": (init.lecun_normal(), jax.nn.initializers.lecun_normal()),
    "lecun_uniform": (init.lecun_uniform(), jax.nn.initializers.lecun_uniform()),
    # jax's glorot_normal / he_normal are truncated; the course's are plain normals:
    "xavier_normal": (init.xavier_normal(), jax.nn.initializers.variance_scaling(1.0, "fan_avg", "normal")),
    "he_normal": (init.he_normal(), jax.nn.initializers.variance_scaling(2.0, "fan_in", "normal")),
    "uniform_fan_in": (init.uniform_fan_in(), jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")),
    "gaussian": (init.normal(0.3), jax.nn.initializers.normal(0.3)),
    "named_axes": (init.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=0),
                     jax.nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=1, out_axis=0)),
}


# The statistics shapes: their samplers are already compiled, and big arrays compare cheaply.
@pytest.mark.parametrize("shape", [DENSE, CONV_BIG])
def test_equal_to_jax_initializers(shape):
    key = jax.random.key(7)
    pairs = {f"variance_scaling{setting}": (init.variance_scaling(*setting),
                                             jax.nn.initializers.variance_scaling(*setting))
             for setting in VS_SETTINGS}
    pairs.update(NAMED_TWINS)

    # Eager: the jax.random samplers compile once per shape and serve every pair.
    results = {name: (ours(key, shape), theirs(key, shape, jnp.float32)) for name, (ours, theirs) in pairs.items()}
    for name, (ours, theirs) in results.items():
        assert ours.shape == theirs.shape == shape and ours.dtype == theirs.dtype, name
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-7, err_msg=name)
        assert np.std(np.asarray(ours)) > 0, name  # not trivially equal


ORTHOGONAL_CASES = [
    ((64, 32), -1),  # tall: orthonormal columns
    ((32, 64), -1),  # wide: orthonormal rows
    ((16, 16), -1),
    (CONV, -1),  # (3*3*16, 32): tall
    ((1, 1, 8, 32), -1),  # (8, 32): wide
    ((32, 64), 0),  # columns along axis 0
]
ORTHOGONAL_SCALE = 2.0


@pytest.fixture(scope="module")
def orthogonal_draws():
    # One jit for every case (one QR compilation each would dominate the test's time).
    return jax.jit(lambda: [init.orthogonal(ORTHOGONAL_SCALE, column_axis)(jax.random.key(3), shape)
                            for shape, column_axis in ORTHOGONAL_CASES])()


@pytest.mark.parametrize("case", range(len(ORTHOGONAL_CASES)))
def test_orthogonal(orthogonal_draws, case):
    shape, column_axis = ORTHOGONAL_CASES[case]
    w = np.asarray(orthogonal_draws[case], np.float64)
    assert w.shape == shape
    matrix = np.moveaxis(w, column_axis, -1).reshape(-1, shape[column_axis]) / ORTHOGONAL_SCALE
    rows, cols = matrix.shape
    if rows >= cols:
        np.testing.assert_allclose(matrix.T @ matrix, np.eye(cols), atol=2e-5)
    if rows <= cols:
        np.testing.assert_allclose(matrix @ matrix.T, np.eye(rows), atol=2e-5)


def test_orthogonal_empty_shape_gives_zeros():
    assert init.orthogonal()(jax.random.key(0), (5, 0)).shape == (5, 0)


def test_bad_inputs_are_errors():
    with pytest.raises(ValueError, match=r"^variance_scaling: expected mode in .*got 'fan_sum'"):
        init.variance_scaling(1.0, "fan_sum", "normal")
    with pytest.raises(ValueError, match=r"^variance_scaling: expected distribution in .*got 'gaussian'"):
        init.variance_scaling(1.0, "fan_in", "gaussian")
    with pytest.raises(ValueError, match=r"^variance_scaling: expected scale > 0, got 0"):
        init.variance_scaling(0.0, "fan_in", "normal")
    with pytest.raises(ValueError, match=r"^normal: expected stddev >= 0"):
        init.normal(-1.0)
    with pytest.raises(ValueError, match=r"^uniform: expected scale >= 0"):
        init.uniform(-1.0)
    key = jax.random.key(0)
    with pytest.raises(ValueError, match=r"^compute_fans: expected a kernel shape of rank >= 2 .*got \(10,\)"):
        init.he_normal()(key, (10,))
    with pytest.raises(ValueError, match=r"^compute_fans: .*got \(10,\)"):
        init.compute_fans((10,))
    with pytest.raises(ValueError, match=r"^orthogonal: expected a shape of rank >= 2, got \(10,\)"):
        init.orthogonal()(key, (10,))


def test_equal_arguments_give_the_same_initialiser_so_layers_compare_equal():
    from jdl import nn

    assert init.he_normal() is init.he_normal() and init.normal(0.1) is init.normal(0.1)
    assert init.he_normal() is not init.he_uniform() and init.normal(0.1) is not init.normal(0.2)
    assert nn.Dense(3, kernel_init=init.he_normal()) == nn.Dense(3, kernel_init=init.he_normal())
    assert hash(nn.Dense(3, kernel_init=init.xavier_uniform())) == hash(nn.Dense(3, kernel_init=init.xavier_uniform()))
