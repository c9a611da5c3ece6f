"""benchmarks/harness.py, report.py and the train-step cases, at toy sizes: no timing is asserted.

The timer's bookkeeping (how many calls, in which order, the check before any later call),
the markdown tables, and that a train-step case times the experiment's own model against a
flax twin that computes the same losses.
"""
from __future__ import annotations

import jax
import pytest

from benchmarks import cases, harness, report
from experiments.mnist1d import make_model


def test_time_alternating_counts_rounds_and_checks_first_outputs():
    log = []

    def call(name):
        def run():
            log.append(name)
            return len(log)
        return run

    def check(first):
        log.append("check")
        return first

    times, checked = harness.time_alternating({"a": call("a"), "b": call("b")}, rounds={"a": 3, "b": 1},
                                              warmup={"a": 0, "b": 2}, check=check)
    assert checked == {"a": 1, "b": 2}  # the outputs of the first calls, checked before any other call
    assert log == ["a", "b", "check", "b", "b", "a", "b", "a", "a"]  # first calls, warm-up, rounds alternating
    assert (times["a"].rounds, times["b"].rounds) == (3, 1)
    assert all(t.min_s <= t.median_s and t.iqr_s >= 0 and t.compile_s >= 0 for t in times.values())


def test_compare_reports_per_step_times():
    timing = harness.compare(lambda: 1, lambda: 2, rounds=2, steps_per_call=4, warmup=1,
                             check=lambda jdl_out, ref_out: (jdl_out, ref_out))
    assert timing.check == (1, 2) and timing.rounds == 2 and timing.steps_per_call == 4
    assert timing.baseline_s is None and timing.ratio == timing.jdl_s / timing.ref_s
    with pytest.raises(ValueError, match="time_alternating: expected rounds >= 1"):
        harness.compare(lambda: 1, lambda: 2, rounds=0)


def test_markdown_table():
    records = [{"case": "mlp", "jdl_s": 0.00125}, {"case": "cnn", "jdl_s": 0.5}]
    table = report.markdown_table({"case": report.cell("case"), "jdl ms": report.cell("jdl_s", ".2f", 1e3)},
                                  records, text_columns=1)
    assert table.splitlines() == ["| case | jdl ms |", "| --- | ---: |", "| mlp | 1.25 |", "| cnn | 500.00 |"]


def test_mlp_case_times_the_experiments_model_against_an_equal_twin():
    case = cases.CASES["mlp_train_step"]
    built = case.build(cases.Config(steps_per_call=2, rounds=1))
    params = built["jdl_call"].train_state[0]
    expected = jax.eval_shape(make_model("mlp").init, jax.random.key(0), jax.ShapeDtypeStruct((1, 40), "float32"))[0]
    assert jax.tree.map(lambda a: a.shape, params) == jax.tree.map(lambda a: a.shape, expected)
    agreement = built["check"](built["jdl_call"](), built["ref_call"]())
    assert agreement["max_abs_loss_diff"] <= 1e-4


def test_run_prints_and_writes_its_report(tmp_path, capsys):
    """The command line end to end on the smallest case: the table printed, the JSON and markdown written."""
    from benchmarks import run

    json_path, markdown_path = tmp_path / "mlp.json", tmp_path / "mlp.md"
    records = run.main(["--only", "mlp_train_step", "--steps-per-call", "2", "--repeats", "1",
                        "--json", str(json_path), "--markdown", str(markdown_path)])
    assert [r["case"] for r in records] == ["mlp_train_step"] and records[0]["ratio"] > 0
    assert "| mlp_train_step |" in capsys.readouterr().out
    assert "mlp_train_step" in json_path.read_text() and markdown_path.read_text().startswith("# Benchmarks")
