"""experiments/vanishing_gradients.py on a small budget: the decay it measures, and its files."""
import json
import os

import numpy as np

from experiments import vanishing_gradients


def test_measures_vanishing_and_the_open_forget_gate(tmp_path):
    results = vanishing_gradients.main(["--length", "30", "--hidden", "8", "--num-seeds", "1", "--batch", "4",
                                        "--out", str(tmp_path)])
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
