"""experiments/vanishing_gradients.py on a small budget: the decay it measures, and its files."""
import json
import os

import numpy as np
import pytest

from experiments import vanishing_gradients


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("vanishing_gradients")
    results = vanishing_gradients.main(["--length", "30", "--hidden", "8", "--num-seeds", "1", "--batch", "4",
                                        "--depth", "10", "--width", "32", "--out", str(out)])
    return out, results


def test_measures_vanishing_and_the_open_forget_gate(small_run):
    tmp_path, results = small_run
    cells = results["cells"]
    # 30 steps back, the Elman RNN's gradient has shrunk by orders of magnitude ...
    assert cells["elman_rnn"]["first_over_last"] < 1e-2
    # ... while an LSTM whose forget gate starts open (sigmoid(3) = 0.95) still carries it.
    assert cells["lstm_forget_bias_3"]["first_over_last"] > 100 * cells["elman_rnn"]["first_over_last"]
    norms = np.asarray(cells["elman_rnn"]["gradient_norm"])
    assert norms.shape == (30,) and np.all(np.isfinite(norms)) and norms[-1] > norms[0]
    with open(os.path.join(tmp_path, "vanishing_gradients.json")) as f:
        assert set(json.load(f)["cells"]) == set(vanishing_gradients.CELLS)
    with open(os.path.join(tmp_path, "vanishing_gradients.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_deep_sigmoid_stack_vanishes_and_relu_he_does_not(small_run):
    tmp_path, results = small_run
    stacks = results["mlp"]["stacks"]
    assert set(stacks) == set(vanishing_gradients.STACKS)
    sigmoid, relu_he = stacks["sigmoid"], stacks["relu_he"]
    for run in stacks.values():
        norms = np.asarray(run["gradient_norm"])
        assert norms.shape == (10,) and np.all(np.isfinite(norms)) and np.all(norms > 0)
        assert norms[-1] == pytest.approx(np.sqrt(32), rel=1e-5)  # dL/dh_L = the signs, +-1 in each of 32 units
        # ||dL/dh_{k-1}|| <= max a' ||W_k||_2 ||dL/dh_k||: every measured factor under its bound.
        assert run["max_factor_over_bound"] <= 1.0 + 1e-5
        assert len(run["shrink_factor"]) == len(run["bound"]) == 9
    # Ten sigmoid layers: the first layer's gradient is orders of magnitude below the last's,
    # each layer shrinking it by about sigma'(f) ~ 0.2 (at most 1/4, the sigmoid's largest slope) ...
    assert sigmoid["first_over_last"] < 1e-4
    assert sigmoid["weight_first_over_last"] < 1e-4
    assert 0.15 < sigmoid["shrink_factor_geometric_mean"] < min(0.3, sigmoid["bound_geometric_mean"])
    assert max(sigmoid["mean_activation_derivative"]) <= 0.25
    # ... while ReLU with He's initialisation keeps it within a small factor, and the default
    # (variance 1 / fan_in, half of He's) loses about 1 / sqrt(2) a layer.
    assert 0.2 < relu_he["first_over_last"] < 5.0
    assert 0.8 < relu_he["shrink_factor_geometric_mean"] < 1.25
    assert stacks["relu"]["first_over_last"] < 0.2 * relu_he["first_over_last"]
    with open(os.path.join(tmp_path, "vanishing_gradients.json")) as f:
        written = json.load(f)
    assert written["mlp"]["depth"] == 10 and written["mlp"]["width"] == 32
    assert written["mlp"]["stacks"]["sigmoid"]["first_over_last"] == pytest.approx(sigmoid["first_over_last"])


def test_arguments_are_checked():
    for argv in (["--depth", "1"], ["--width", "0"], ["--num-seeds", "0"]):
        with pytest.raises(SystemExit):
            vanishing_gradients.parse_args(argv)
