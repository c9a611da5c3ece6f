"""experiments/cnn_zoo.py on a toy budget: the table's counts and timings, the digits' training, its files."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import cnn_zoo
from experiments.common import digits_dataset
from jdl import count_params


def test_digits_are_the_real_scans_resized_and_split_by_class():
    data = digits_dataset()
    assert data["x_train"].shape == (1437, 32, 32, 1) and data["x_test"].shape == (360, 32, 32, 1)
    assert abs(float(data["x_train"].mean())) < 1e-5 and abs(float(data["x_train"].std()) - 1.0) < 1e-5
    # Stratified: every digit in both splits, in the proportions of the whole set (about 10% each).
    for labels in (data["y_train"], data["y_test"]):
        counts = np.bincount(labels, minlength=10)
        assert counts.min() > 0.08 * len(labels) and counts.max() < 0.12 * len(labels)


def test_toy_run_counts_times_trains_and_writes(tmp_path):
    results = cnn_zoo.main(["--zoo", "lenet5", "--timing-batch", "1", "--digits", "lenet5",
                            "--epochs", "2", "--num-seeds", "2", "--evals", "2", "--out", str(tmp_path),
                            "--no-progress"])
    with open(os.path.join(tmp_path, "cnn_zoo.json")) as f:
        saved = json.load(f)
    rows = {row["name"]: row for row in saved["zoo"]} | {"resnet20": cnn_zoo.zoo_row("resnet20", timing=False, batch=1)}
    assert rows["resnet20"]["params"] == rows["resnet20"]["published_params"] == 269_722
    assert rows["resnet20"]["state"] == 1_376  # batch norm's running statistics: state, not params
    assert rows["lenet5"]["params"] == 61_706 and rows["lenet5"]["published_params"] is None
    # LeNet-5's multiply-adds, layer by layer: C1 28*28*6*25, C3 10*10*16*150, C5 120*400, F6 120*84, out 84*10.
    assert rows["lenet5"]["multiply_adds"] == 28 * 28 * 6 * 25 + 10 * 10 * 16 * 150 + 120 * 400 + 120 * 84 + 840
    assert rows["lenet5"]["compile_seconds"] > 0 and rows["lenet5"]["step_ms"] > 0
    lenet = saved["digits"]["lenet5"]
    assert lenet["test_accuracy"] == pytest.approx(results["digits"]["lenet5"]["test_accuracy"])
    assert len(lenet["test_accuracy_per_seed"]) == 2 and lenet["test_accuracy"] > 0.5  # chance: 10%
    with open(os.path.join(tmp_path, "cnn_zoo_digits.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_every_network_has_its_published_count_or_says_why_not():
    """The table's published figures, each checked against the network's own count (traced: nothing allocated)."""
    for name, network in cnn_zoo.ZOO.items():
        example = jax.ShapeDtypeStruct((1, network.size, network.size, network.channels), jnp.float32)
        params, _ = jax.eval_shape(network.make().init, jax.random.key(0), example)
        if network.published is None:
            assert network.source.startswith(("LeCun", "the paper gives no", "Table 1")), name
        else:
            assert count_params(params) == network.published, name


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        cnn_zoo.parse_args(["--epochs", "0"])
    with pytest.raises(SystemExit):
        cnn_zoo.parse_args(["--zoo", "resnet7"])
