"""experiments/translate_dates.py in its --quick mode: both models train a few steps, decode
the held-out dates and write the JSON and the attention PNG."""
import datetime
import json
import os

from experiments import translate_dates
from experiments.dates import date_pairs, make_split


def test_quick_run_writes_its_outputs(tmp_path):
    results = translate_dates.main(["--quick", "--out", str(tmp_path)])
    with open(os.path.join(tmp_path, "translate_dates.json")) as f:
        written = json.load(f)
    for name in ("transformer", "gru_attention"):
        assert 0.0 <= written[name]["exact_match"] <= 1.0 and 0.0 <= written[name]["bleu"] <= 100.0
        assert written[name]["exact_match"] == results[name]["exact_match"]
        assert written[name]["num_params"] > 0 and len(written[name]["loss_curve"]) > 0
    assert os.path.getsize(os.path.join(tmp_path, "translate_dates_attention.png")) > 10_000


def test_split_is_by_date_and_reproducible():
    split = make_split(30, 5, seed=3)
    again = make_split(30, 5, seed=3)
    assert split == again
    assert not set(split.train_targets) & set(split.test_targets)  # no test date is seen in training
    assert len(split.train_sources) == 30 * 8 * 3 and len(set(split.test_targets)) == 5
    sources, targets = date_pairs([datetime.date(2026, 11, 21)])
    assert {"samedi 21 novembre 2026", "21. November 2026", "Nov 21, 2026"} <= set(sources)
    assert set(targets) == {"2026-11-21"}
