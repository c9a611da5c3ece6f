"""experiments/he_init.py on a small budget (10 layers of 100 units, 256 inputs, one seed): UDL figure 7.4's trends."""
import json
import os

import numpy as np
import pytest

from experiments import he_init


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("he_init")
    results = he_init.main(["--layers", "10", "--hidden", "100", "--batch", "256", "--num-seeds", "1",
                            "--out", str(out)])
    return results, out


def ratio(setting, direction):
    """How much the variance grows over the 9 layers, in the direction the signal travels."""
    first, last = setting[f"{direction}_first"], setting[f"{direction}_last"]
    return last / first if direction == "forward" else first / last


def test_he_keeps_the_variance_and_the_others_vanish_or_explode(run):
    settings = run[0]["settings"]
    assert list(settings) == ["0.001", "0.01", "0.02", "0.1", "1"]
    assert [s["he"] for s in settings.values()] == [False, False, True, False, False]
    for direction in ("forward", "backward"):
        assert 1 / 4 <= ratio(settings["0.02"], direction) <= 4
        assert ratio(settings["0.01"], direction) < 1e-2 and ratio(settings["0.001"], direction) < 1e-10
        assert ratio(settings["0.1"], direction) > 1e4 and ratio(settings["1"], direction) > 1e13
    for setting in settings.values():
        for key in ("forward_variance", "backward_variance"):
            values = np.asarray(setting[key])
            assert values.shape == (10,) and np.all(np.isfinite(values)) and np.all(values > 0)


def test_per_layer_growth_is_the_courses_factor(run):
    # Var(f_{k+1}) = D_h sigma^2 Var(f_k) / 2, and the same factor per layer going back.
    for setting in run[0]["settings"].values():
        theory = 100 * setting["sigma2"] / 2
        assert setting["theory_factor_per_layer"] == pytest.approx(theory)
        assert setting["forward_factor_per_layer"] == pytest.approx(theory, rel=0.2)
        assert setting["backward_factor_per_layer"] == pytest.approx(theory, rel=0.2)
    # The first layer sees x ~ N(0, I) without a ReLU: Var(f_1) = D_in sigma^2.
    assert run[0]["settings"]["0.02"]["forward_first"] == pytest.approx(2.0, rel=0.1)


def test_writes_the_json_and_the_figure(run):
    results, out = run
    assert results["dtype"] == "float64" and results["layers"] == 10 and results["seeds"] == [0]
    with open(os.path.join(out, "he_init.json")) as f:
        written = json.load(f)
    assert {"layers", "hidden", "batch", "seeds", "backend", "settings"} <= set(written)
    assert {"forward_first", "forward_last", "backward_first", "backward_last", "forward_variance",
            "backward_variance"} <= set(written["settings"]["0.02"])
    with open(os.path.join(out, "he_init.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rejects_an_empty_network():
    with pytest.raises(SystemExit):
        he_init.parse_args(["--layers", "0"])
    with pytest.raises(SystemExit):
        he_init.parse_args(["--variances", "0.02", "0"])
