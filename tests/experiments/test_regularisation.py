"""experiments/regularisation.py on a toy budget (1 seed, 100 steps, a few rows): outputs, sanity, L1's weights."""
import json
import math
import os

import pytest

from experiments import regularisation

ROWS = ["none", "l1", "l2", "early_stopping", "bagging"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("regularisation")
    results = regularisation.main(["--rows", *ROWS, "--num-seeds", "1", "--steps", "100", "--evals", "2",
                                   "--out", str(out)])
    return results, out


def test_writes_the_json_and_the_figure(run):
    results, out = run
    with open(os.path.join(out, "regularisation.json")) as f:
        written = json.load(f)
    assert {"seeds", "train_examples", "test_examples", "steps", "backend", "rows", "seconds"} <= set(written)
    assert written["seeds"] == [0] and written["train_examples"] == 1000 and written["test_examples"] == 1000
    assert list(written["rows"]) == [name for name in regularisation.ROWS if name in ROWS]  # the table's order
    for row in written["rows"].values():
        assert {"test_accuracy", "test_accuracy_std", "train_accuracy", "gap", "fraction_below_1e-3",
                "fraction_below_1e-6", "curves", "regulariser"} <= set(row)
    with open(os.path.join(out, "regularisation.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_accuracies_are_finite_and_in_range(run):
    for row in run[0]["rows"].values():
        for key in ("test_accuracy", "train_accuracy"):
            assert math.isfinite(row[key]) and 0.0 <= row[key] <= 1.0
        assert row["gap"] == pytest.approx(row["train_accuracy"] - row["test_accuracy"])
        assert all(0.0 <= a <= 1.0 for per_eval in row["curves"]["test_accuracy"] for a in per_eval)
    rows = run[0]["rows"]
    assert rows["none"]["test_accuracy"] > 0.2  # well above chance (0.1) even after 100 steps
    assert rows["bagging"]["networks"] == 5 and rows["none"]["networks"] == 1
    assert rows["early_stopping"]["train_examples"] == 800 and len(rows["early_stopping"]["stopped_at_step"]) == 1


def test_l1_leaves_more_small_weights_than_l2_or_none(run):
    rows = run[0]["rows"]
    assert rows["l1"]["fraction_below_1e-3"] > rows["l2"]["fraction_below_1e-3"]
    assert rows["l1"]["fraction_below_1e-3"] > rows["none"]["fraction_below_1e-3"]
    assert rows["l1"]["mean_abs_weight"] < rows["none"]["mean_abs_weight"]


@pytest.mark.parametrize("bad", [["--num-seeds", "0"], ["--steps", "0"], ["--batch-size", "0"],
                                 ["--batch-size", "900"], ["--learning-rate", "0"], ["--evals", "0"],
                                 ["--rows", "nonsense"]])
def test_rejects_bad_arguments(bad):
    with pytest.raises(SystemExit):
        regularisation.parse_args(bad)
