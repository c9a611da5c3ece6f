"""experiments/char_lm.py in --quick mode: the corpus it records, the numbers it reports, its JSON."""
import json
import math
import os

import numpy as np

from experiments import char_lm


def test_quick_run_learns_and_writes_its_json(tmp_path):
    result = char_lm.main(["--quick", "--seed", "3", "--out", str(tmp_path), "--no-progress"])
    with open(os.path.join(tmp_path, "char_lm.json")) as f:
        saved = json.load(f)
    assert saved["valid_bits_per_char"] == result["valid_bits_per_char"]
    config = char_lm.QUICK

    # The corpus: whole stdlib files, split by file, cut at the budgets, every file recorded.
    corpus = saved["corpus"]
    assert corpus["train_chars"] == sum(corpus["train_files"].values()) == config.train_chars
    assert corpus["valid_chars"] == sum(corpus["valid_files"].values()) == config.valid_chars
    assert not set(corpus["train_files"]) & set(corpus["valid_files"])
    assert all(name.endswith(".py") for name in list(corpus["train_files"]) + list(corpus["valid_files"]))

    # The numbers: bits per char is the validation loss in nats over ln 2, and 30 steps already
    # beat the uniform distribution; the unigram entropy lies below log2 of the vocabulary.
    assert math.isclose(saved["valid_bits_per_char"], saved["valid_loss_nats"] / math.log(2), rel_tol=1e-9)
    assert saved["uniform_bits_per_char"] == math.log2(saved["vocab_size"]) == math.log2(len(saved["vocabulary"]))
    assert 2.0 < saved["unigram_entropy_bits"] < saved["uniform_bits_per_char"]
    assert saved["valid_bits_per_char"] < saved["uniform_bits_per_char"] - 0.5
    curve = saved["curve"]["train_bits_per_char"]
    assert len(curve) == config.evals and np.all(np.isfinite(curve)) and curve[-1] < curve[0]
    assert saved["curve"]["step"][-1] == config.steps
    assert saved["valid_chars_predicted"] == config.valid_chars - config.eval_streams

    # Samples: the prompt, then sample_length characters, at every temperature.
    assert len(saved["samples"]) == len(char_lm.PROMPTS) * len(config.temperatures)
    for name, text in saved["samples"].items():
        prompt = next(p for p in char_lm.PROMPTS if name.endswith(f"prompt={p!r}"))
        assert text.startswith(prompt) and len(text) == len(prompt) + config.sample_length
    assert saved["config"]["hidden"] == config.hidden and saved["seed"] == 3 and saved["quick"] is True
    assert set(saved["seconds"]) >= {"train", "evaluate", "sample", "load", "total"}


def test_vocabulary_and_unigram_baseline():
    vocabulary = char_lm.make_vocabulary("ab" * 20 + "c")  # "c" is rare: unknown
    assert vocabulary == [char_lm.UNKNOWN, "a", "b"]
    ids = char_lm.encode("abcz", vocabulary)
    np.testing.assert_array_equal(ids, [1, 2, 0, 0])
    assert char_lm.decode(ids, vocabulary) == "ab" + 2 * char_lm.UNKNOWN
    baseline = char_lm.unigram_baseline(np.array([1, 2, 1, 2]), np.array([1, 1]), 3)
    p = np.array([1, 3, 3]) / 7  # add-one counts
    assert math.isclose(baseline["unigram_entropy_bits"], float(-(p * np.log2(p)).sum()))
    assert math.isclose(baseline["unigram_valid_bits_per_char"], -math.log2(3 / 7))
