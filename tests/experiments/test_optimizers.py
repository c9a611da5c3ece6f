"""experiments/optimizers.py on a small budget: it descends, and writes its PNGs and JSON."""
import json
import os

import numpy as np
import pytest

from experiments import optimizers


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("optimizers")
    summary = optimizers.main(["--optimizers", "sgd", "adam", "--steps", "200", "--num-seeds", "1",
                               "--out", str(out)])
    return out, summary


def test_writes_two_pngs_and_json(small_run):
    out, summary = small_run
    for name in ("optimizers_surfaces.png", "optimizers_mnist1d.png"):
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "optimizers.json")) as f:
        written = json.load(f)
    assert set(written["surfaces"]) == {"quadratic", "rosenbrock", "saddle"}
    assert set(written["mnist1d_mlp"]) == {"sgd", "adam"}
    assert written["mnist1d_mlp"]["adam"]["test_accuracy"] == pytest.approx(summary["mnist1d_mlp"]["adam"]["test_accuracy"])


def test_descends(small_run):
    _, summary = small_run
    quadratic = summary["surfaces"]["quadratic"]
    start_loss = float(optimizers.quadratic(np.array([-4.0, 1.5])))
    for name in ("sgd", "adam"):
        assert quadratic[name]["final_loss"] < 1e-3 * start_loss
    # 200 steps of the MLP: far above chance (10%) on the test set.
    assert summary["mnist1d_mlp"]["adam"]["test_accuracy"] > 0.4
