"""experiments/perceptron.py on a small budget: Novikoff's bound, XOR, and its files."""
import json
import os

from experiments import perceptron


def test_perceptron_experiment(tmp_path):
    argv = ["--num-seeds", "2", "--points", "30", "--epochs", "30", "--xor-steps", "300", "--out", str(tmp_path)]
    results = perceptron.main(argv)
    separable = results["separable"]
    assert separable["within_bound"] and all(epoch is not None for epoch in separable["first_mistake_free_epoch"])
    assert all(0 < total <= bound for total, bound in zip(separable["perceptron_total_mistakes"],
                                                          separable["novikoff_bound"]))
    assert min(results["xor"]["perceptron_min_mistakes_per_epoch"]) >= 1  # never a clean epoch on XOR
    assert results["xor"]["least_squares"] == {"w": [0.0, 0.0], "b": 0.5, "J": 0.25}
    assert results["xor"]["seed_002_network_outputs"] == [0.0, 1.0, 1.0, 0.0]
    assert results["xor_training"]["8 hidden ReLUs"]["solved"] == 2
    with open(os.path.join(tmp_path, "perceptron.json")) as f:
        saved = json.load(f)
    assert saved["separable"] == separable
    with open(os.path.join(tmp_path, "perceptron.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
