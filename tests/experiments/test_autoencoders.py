"""experiments/autoencoders.py on a toy budget: files, linear AE against PCA, arguments."""
import json
import math
import os

import pytest

from experiments import autoencoders


def test_autoencoders_experiment(tmp_path):
    argv = ["--datasets", "digits", "--subset", "300", "--steps", "150", "--num-seeds", "2", "--batch-size", "64",
            "--learning-rate", "1e-2", "--sparse-units", "20", "--out", str(tmp_path)]
    results = autoencoders.main(argv)
    assert results["backend"] and results["seeds"] == [0, 1]
    digits = results["digits"]
    assert digits["inputs"] == 64 and digits["train"] == 300 and digits["code_size"] == 8
    table = digits["test_mse_per_input"]
    assert set(table) == {"pca", "linear", "deep", "denoising", "sparse", "deep_code_2"}
    for entry in list(table.values()) + list(digits["corrupted_test_mse_per_input"].values()):
        assert math.isfinite(entry["mean"]) and entry["mean"] >= 0
    assert table["linear"]["mean"] < 3 * table["pca"]["mean"]  # a loose factor: 150 steps only
    assert table["linear"]["mean"] >= 0.95 * table["pca"]["mean"]  # PCA is the best linear rank-8 reconstruction
    sparse = digits["sparse"]
    assert 0 < sparse["mean_activation"]["mean"] < 1 and 0 <= sparse["fraction_active_over_half"]["mean"] <= 1
    with open(os.path.join(tmp_path, "autoencoders.json")) as f:
        saved = json.load(f)
    assert saved["digits"]["test_mse_per_input"]["pca"] == table["pca"]
    assert {"backend", "seconds", "steps", "digits"} <= set(saved)
    with open(os.path.join(tmp_path, "autoencoders.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("bad", [["--steps", "0"], ["--num-seeds", "0"], ["--code-size", "0"], ["--batch-size", "0"],
                                 ["--rho", "1.5"], ["--noise-rate", "1"], ["--learning-rate", "0"],
                                 ["--sparse-beta", "-1"], ["--code-size", "40"], ["--subset", "1"],
                                 ["--datasets", "cifar"]])
def test_arguments_validated(bad):
    with pytest.raises(SystemExit):
        autoencoders.parse_args(bad)
