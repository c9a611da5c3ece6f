"""jdl.regions: region counts against the function's own slope changes, UDL's bounds and constructions."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn, regions


def _shallow(units: int) -> nn.Sequential:
    return nn.Sequential([nn.Dense(units), nn.ReLU(), nn.Dense(1)])


def _empty_state(model):
    return {name: {} for name, _ in model.layers}


def _slope_changes(model, params, start: float, end: float, num_points: int) -> int:
    """Linear pieces of the 1-D function itself, from its values: where the slope between
    neighbouring samples changes (independent of activation patterns)."""
    x = np.linspace(start, end, num_points, dtype=np.float64)
    with jax.enable_x64(True):
        params64 = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)
        y = np.asarray(jax.jit(lambda p, x: model.apply(p, _empty_state(model), x)[0][:, 0])(params64, x[:, None]))
    slopes = np.diff(y) / np.diff(x)
    same_as_next = np.abs(np.diff(slopes)) <= 1e-6 * (1 + np.abs(slopes[1:]))
    # A piece is a run of intervals with one slope; an interval that straddles a joint has a
    # slope of its own but is no piece, so runs of a single interval are not counted.
    run_starts = np.flatnonzero(np.r_[True, ~same_as_next[:-1]] & same_as_next)
    return len(run_starts)


def test_a_shallow_network_with_d_units_has_at_most_d_plus_one_regions_on_a_line():
    for units in [1, 3, 6]:
        model = _shallow(units)
        for seed in range(4):
            params, _ = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 1)))
            count = int(regions.count_regions_on_line(model, params, jnp.array([-50.0]), jnp.array([50.0])))
            assert 1 <= count <= units + 1 == regions.max_regions([units])
    # joints (where theta_0 + theta_1 x = 0) at -1, 0 and 1: all inside the segment, so D + 1 exactly
    params = {"dense_0": {"w": jnp.array([[1.0, 2.0, -1.0]]), "b": jnp.array([1.0, 0.0, 1.0])}, "relu_1": {},
              "dense_2": {"w": jnp.array([[1.0], [-1.0], [2.0]]), "b": jnp.zeros(1)}}
    assert int(regions.count_regions_on_line(_shallow(3), params, jnp.array([-3.0]), jnp.array([3.0]))) == 4
    assert _slope_changes(_shallow(3), params, -3.0, 3.0, 6001) == 4


@pytest.mark.parametrize("seed", [0, 1])
def test_pattern_count_equals_the_functions_own_linear_pieces(seed):
    """For random weights every pattern change bends the function: the counts agree."""
    model = nn.Sequential([nn.Dense(8), nn.ReLU(), nn.Dense(8), nn.ReLU(), nn.Dense(1)])
    params, _ = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1, 1)))
    params = jax.tree.map(lambda p: p + 0.3 * jax.random.normal(jax.random.key(seed + 10), p.shape), params)
    counted = int(regions.count_regions_on_line(model, params, jnp.array([-4.0]), jnp.array([4.0]), 20_001))
    assert counted == _slope_changes(model, params, -4.0, 4.0, 20_001)
    assert counted > 3  # the comparison is not between two trivial counts


def test_composing_two_three_unit_networks_makes_nine_regions_with_twenty_parameters():
    """UDL 4.1: network 1 folds [0, 1] onto itself three times, network 2 again: 3 x 3 = 9 pieces on [0, 1].

    Each folds with ``y = 3 relu(x + 0.05) - 6 relu(x - 1/3) + 6 relu(x - 2/3)`` (up, down, up
    between 0.15 and 1.15; the first joint sits outside, at -0.05, so that no output of network 1
    grazes a joint of network 2). Network 2 sees its two joints crossed three times each: 2 + 6
    joints, 9 pieces. A shallow network of six units (19 parameters) has at most 6 + 1 = 7.
    """
    fold = {"w": jnp.array([[1.0, 1.0, 1.0]]), "b": jnp.array([0.05, -1 / 3, -2 / 3])}
    mix = {"w": jnp.array([[3.0], [-6.0], [6.0]]), "b": jnp.zeros(1)}
    model = nn.Sequential([nn.Dense(3), nn.ReLU(), nn.Dense(1), nn.Dense(3), nn.ReLU(), nn.Dense(1)])
    params = {"dense_0": fold, "relu_1": {}, "dense_2": mix, "dense_3": fold, "relu_4": {}, "dense_5": mix}
    assert regions.dense_param_count([1, 3, 1]) * 2 == 20 == sum(p.size for p in jax.tree.leaves(params))
    on_unit_interval = int(regions.count_regions_on_line(model, params, jnp.array([1e-4]), jnp.array([1.0 - 1e-4]),
                                                         90_001))
    assert on_unit_interval == 9 == _slope_changes(model, params, 1e-4, 1.0 - 1e-4, 90_001)
    assert regions.dense_param_count([1, 6, 1]) == 19 and regions.max_regions([6]) == 7
    shallow = _shallow(6)
    for seed in range(4):
        shallow_params, _ = jax.jit(shallow.init)(jax.random.key(seed), jnp.zeros((1, 1)))
        assert int(regions.count_regions_on_line(shallow, shallow_params, jnp.array([-30.0]), jnp.array([30.0]))) <= 7


def test_udls_region_bounds():
    assert regions.dense_param_count([1] + [10] * 5 + [1]) == 471
    assert regions.max_regions([10] * 5, input_dim=1) == 11**5 == 161_051  # the slide prints 161,501
    assert regions.dense_param_count([10] + [50] * 5 + [1]) == 10_801
    assert regions.max_regions([50] * 5, input_dim=10) > 10**40
    assert regions.max_regions([3], input_dim=2) == 1 + 3 + 3  # three lines in general position: 7


def test_three_lines_in_general_position_cut_the_plane_into_seven_regions():
    """A shallow network of three units on two inputs: the joints are three lines forming a triangle."""
    model = nn.Sequential([nn.Dense(3), nn.ReLU(), nn.Dense(1)])
    params = {"dense_0": {"w": jnp.array([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]), "b": jnp.array([0.0, 0.0, -1.0])},
              "relu_1": {}, "dense_2": {"w": jnp.ones((3, 1)), "b": jnp.zeros(1)}}
    assert regions.count_regions_on_grid(model, params, (-2.0, -2.0), (2.0, 2.0), resolution=101) == 7
    assert regions.count_regions_on_grid(model, params, (0.1, 0.1), (0.3, 0.3), resolution=11) == 1


def test_activation_pattern_and_its_errors():
    model = nn.Sequential([nn.Dense(4), nn.ReLU(), nn.Dense(3), nn.LeakyReLU(), nn.Dense(1)])
    x = jax.random.normal(jax.random.key(0), (6, 2))
    params, state = model.init(jax.random.key(1), x)
    pattern = jax.jit(lambda p, x: regions.activation_pattern(model, p, x))(params, x)
    assert pattern.shape == (6, 7) and pattern.dtype == jnp.bool_
    first = x @ params["dense_0"]["w"] + params["dense_0"]["b"]
    np.testing.assert_array_equal(pattern[:, :4], first > 0)
    with pytest.raises(ValueError, match=r"activation_pattern: expected a model with ReLU or LeakyReLU layers"):
        regions.activation_pattern(nn.Dense(2), {"w": jnp.ones((2, 2)), "b": jnp.zeros(2)}, x)
    bn = nn.Sequential([nn.Dense(4), nn.BatchNorm(), nn.ReLU()])
    bn_params, _ = bn.init(jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"activation_pattern: expected the state of Sequential"):
        regions.activation_pattern(bn, bn_params, x)
    with pytest.raises(ValueError, match=r"num_points to be an int >= 2, got 1"):
        regions.count_regions_on_line(model, params, jnp.zeros(2), jnp.ones(2), num_points=1)
    with pytest.raises(ValueError, match=r"max_regions: expected every width to be an int >= 1, got 0"):
        regions.max_regions([3, 0])
