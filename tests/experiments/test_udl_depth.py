"""experiments/udl_depth.py on a toy budget (256 signals, 20 epochs, depths 1 and 2): learning, determinism, files."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdl
from experiments import udl_depth

# 256 signals with a rate of 0.004 on the summed loss: a mean-loss rate of 1, as the default.
TOY = ["--num-train", "256", "--epochs", "20", "--evals", "1", "--record-every", "5", "--num-seeds", "2",
       "--depths", "1", "2", "--learning-rate", "0.004"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The toy run twice with the same seeds (the second run reuses the dataset and the compilations)."""
    outs = [tmp_path_factory.mktemp("udl_depth") for _ in range(2)]
    return [(udl_depth.main(TOY + ["--out", str(out)]), out) for out in outs]


def test_parameter_counts_are_the_books_but_for_its_slip():
    # 15,319 for four layers of 63, where the book prints 15,139.
    assert udl_depth.PARAM_COUNTS == {1: 15_208, 2: 15_210, 3: 15_235, 4: 15_319}
    x = jax.ShapeDtypeStruct((8, 40), jnp.float32)
    for depth, width in udl_depth.WIDTHS.items():
        params, _ = jax.eval_shape(udl_depth.make_model(depth, width).init, jax.random.key(0), x)
        assert jdl.count_params(params) == udl_depth.param_count(depth, width) == udl_depth.PARAM_COUNTS[depth]


def test_loss_decreases_and_the_curves_are_recorded(runs):
    results, _ = runs[0]
    assert list(results["depths"]) == ["1", "2"]
    for entry in results["depths"].values():
        loss = np.asarray(entry["curves"]["train_loss"])  # (records, seeds)
        assert entry["curves"]["epoch"] == [0, 5, 10, 15, 20] and loss.shape == (5, 2)
        assert np.all(loss[-1] < 0.8 * loss[0])  # per seed
        assert np.all(np.asarray(entry["curves"]["train_accuracy"])[-1] > 0.2)  # chance is 0.1
        assert len(entry["epochs_to_fit"]) == 2
        assert entry["num_params"] == udl_depth.PARAM_COUNTS[entry["hidden_layers"]]


def test_same_seed_same_numbers_and_seeds_differ(runs):
    (first, _), (second, _) = runs
    for depth in first["depths"]:
        a, b = first["depths"][depth], second["depths"][depth]
        assert a["curves"] == b["curves"] and a["final_loss"] == b["final_loss"]
        assert a["final_loss"][0] != a["final_loss"][1]  # each seed has its own init and labels


def test_random_labels_come_from_the_seed():
    labels = np.asarray(udl_depth.random_labels(0, 4000))
    assert np.array_equal(labels, np.asarray(udl_depth.random_labels(0, 4000)))
    assert not np.array_equal(labels, np.asarray(udl_depth.random_labels(1, 4000)))
    assert set(np.unique(labels)) == set(range(10)) and np.bincount(labels).min() > 300


def test_first_epoch_and_json_safe_losses():
    accuracy = np.array([[0.5, 1.0, 0.9, 1.0], [0.5, 0.6, 0.99, 0.99]])
    assert udl_depth.first_epoch(accuracy, 1.0) == [1, None]
    assert udl_depth.first_epoch(accuracy, 0.99) == [1, 2]
    assert udl_depth.finite_or_none(np.array([[1.0, np.nan], [np.inf, 2.0]])) == [[1.0, None], [None, 2.0]]


def test_writes_the_json_and_the_figure(runs):
    _, out = runs[0]
    with open(os.path.join(out, "udl_depth.json")) as f:
        written = json.load(f)
    assert {"num_train", "epochs", "learning_rate", "book_learning_rate", "seeds", "backend", "depths"} <= set(written)
    assert {"epochs_to_fit", "epochs_to_fit_mean", "epochs_to_99", "final_loss", "curves"} <= set(
        written["depths"]["2"])
    with open(os.path.join(out, "udl_depth.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_rejects_bad_budgets():
    for argv in (["--epochs", "0"], ["--num-seeds", "0"], ["--learning-rate", "0"], ["--depths", "5"]):
        with pytest.raises(SystemExit):
            udl_depth.parse_args(argv)
