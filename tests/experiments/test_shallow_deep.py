"""experiments/shallow_deep.py on a toy budget: approximation improving with width, region counts within their bounds, its files."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import shallow_deep

TOY = ["--widths", "1", "32", "--steps", "500", "--num-seeds", "2", "--max-depth", "2", "--budget", "60",
       "--count-points", "2001", "--points", "128", "--plane-budget", "60", "--plane-depth", "2", "--resolution", "40"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shallow_deep")
    return out, shallow_deep.main(TOY + ["--out", str(out)])


def test_wider_shallow_networks_fit_better(toy_run):
    _, results = toy_run
    ua = results["universal_approximation"]
    assert ua["widths"] == [1, 32] and ua["params"] == [4, 97]
    mse = np.asarray(ua["mse"])
    assert mse.shape == (2, 2) and np.all(np.isfinite(mse))
    # One unit is a hinge: a flat piece and a sloped one, at best MSE 0.048 on this target (a search over
    # the joint's position); 32 units, even after 500 steps, far below.
    assert mse[0].min() > 0.04 and mse[1].max() < 0.05 * mse[0].min()
    assert ua["best_uniform_fit_mse"][1] < 1e-5 < ua["best_uniform_fit_mse"][0]


def test_region_counts_respect_their_bounds(toy_run):
    _, results = toy_run
    ua = results["universal_approximation"]
    for width, counts in zip(ua["widths"], ua["regions"]):
        assert all(1 <= count <= width + 1 for count in counts)  # one joint per unit, at most
    sweep = results["depth_sweep"]
    assert sweep["depths"] == [1, 2]
    for bound, random_counts, trained_counts in zip(sweep["max_regions"], sweep["random_regions"],
                                                    sweep["trained_regions"]):
        assert max(random_counts + trained_counts) <= bound
    assert sweep["max_regions"][0] == sweep["widths"][0] + 1
    # Random first-layer joints are drawn inside [0, 1]: a random shallow network has nearly all D + 1 regions there.
    assert min(sweep["random_regions"][0]) >= sweep["widths"][0] - 2
    plane = results["plane"]
    for name in ("shallow", "deep"):
        assert all(1 < count <= plane[name]["max_regions"] for count in plane[name]["regions"])


def test_folding_construction_and_udl_counts(toy_run):
    _, results = toy_run
    folding = results["folding"]
    assert (folding["params"], folding["regions"]) == (20, 9)
    assert (folding["shallow_params"], folding["shallow_max_regions"]) == (19, 7)
    assert max(folding["shallow_fit_regions"]) <= 7 and min(folding["shallow_fit_mse"]) > 0.0
    one_input, ten_inputs = results["udl"]
    assert (one_input["params"], one_input["max_regions"]) == (471, 161_051)  # the slide prints 161,501
    assert ten_inputs["params"] == 10_801 and ten_inputs["max_regions"] > 10**40
    assert ten_inputs["shallow_max_regions"] < 10**30 < ten_inputs["max_regions"]


def test_padded_shallow_network_is_the_narrow_one():
    """The dead units of padded_shallow change neither the function nor the activation pattern's changes."""
    keys = shallow_deep.seed_keys([0], 1)
    narrow = jax.tree.map(lambda leaf: leaf[0], shallow_deep.random_networks((3,), keys, 1, shallow_deep.LINE))
    padded = jax.tree.map(lambda leaf: leaf[0], shallow_deep.padded_shallow(3, 7, keys))
    x = np.linspace(-0.5, 1.5, 201)
    padded_y, padded_pieces = shallow_deep.on_line(shallow_deep.mlp((7,)), padded, x)
    narrow_y, narrow_pieces = shallow_deep.on_line(shallow_deep.mlp((3,)), narrow, x)
    np.testing.assert_allclose(padded_y, narrow_y, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(padded_pieces, narrow_pieces)
    assert narrow_pieces.max() == 3  # the three joints drawn inside [0, 1]
    assert float(jnp.max(padded["dense_0"]["b"][3:])) == -1.0


def test_files_and_same_seed_same_numbers(toy_run, tmp_path):
    out, results = toy_run
    with open(os.path.join(out, "shallow_deep.json")) as f:
        saved = json.load(f)
    assert {"universal_approximation", "depth_sweep", "folding", "udl", "plane", "bound_curves", "backend",
            "seeds"} <= set(saved)
    assert saved["backend"] == jax.default_backend()
    with open(os.path.join(out, "shallow_deep.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # A second run (its compiled programs cached) gives the same numbers; only the timings differ.
    shallow_deep.main(TOY + ["--out", str(tmp_path)])
    with open(os.path.join(tmp_path, "shallow_deep.json")) as f:
        again = json.load(f)
    saved.pop("seconds"), again.pop("seconds")
    assert again == saved
