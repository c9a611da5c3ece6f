"""experiments/word_vectors.py on a toy budget: every row, the JSON and PNG, arguments."""
import json
import math
import os

import pytest

pytest.importorskip("gensim")
from experiments import word_vectors  # noqa: E402


def test_word_vectors_experiment(tmp_path):
    argv = ["--max-tokens", "30000", "--num-seeds", "1", "--epochs", "1", "--dim", "16", "--out", str(tmp_path)]
    results = word_vectors.main(argv)
    assert results["corpus"]["tokens"] == 30000 and results["backend"]
    methods = results["methods"]
    assert set(methods) == set(word_vectors.METHODS)
    for name, row in methods.items():
        libraries = ("jdl",) if name.startswith("ppmi") else ("jdl", "gensim")
        for library in libraries:
            summary = row[library]["summary"]
            for key in ("wordsim353", "simlex999"):
                assert -1 <= summary[key]["mean"] <= 1 and 0 < summary[key]["coverage"] <= 1
            assert 0 <= summary["analogies"]["coverage"] <= 1
        if library == "gensim":
            assert summary["words_per_second"] > 0 and math.isfinite(summary["seconds"])
    assert "| PPMI + SVD | jdl |" in results["table"]
    with open(os.path.join(tmp_path, "word_vectors.json")) as f:
        assert json.load(f)["methods"]["sgns"]["jdl"]["summary"] == methods["sgns"]["jdl"]["summary"]
    with open(os.path.join(tmp_path, "word_vectors.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("bad", [["--dim", "0"], ["--epochs", "0"], ["--max-tokens", "10"], ["--sample", "-1"],
                                 ["--learning-rate", "0"], ["--methods", "glove"]])
def test_arguments_validated(bad):
    with pytest.raises(SystemExit):
        word_vectors.parse_args(bad)
