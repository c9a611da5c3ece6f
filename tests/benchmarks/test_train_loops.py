"""benchmarks/train_loops.py at a toy budget: both comparisons run and report their ratios."""
import json

from benchmarks import train_loops


def test_train_loops_benchmark_reports_speedup_and_overhead(tmp_path):
    path = tmp_path / "loops.json"
    # Two one-epoch chunks per fit call, not four of five: the same code, a tenth of the steps.
    records = train_loops.main(["--rounds", "3", "--models", "mlp", "--chunks", "2", "--epochs-per-chunk", "1",
                                "--json", str(path)])
    assert [r["case"] for r in records] == ["mlp_epoch", "mlp_fit"]
    epoch, fit = records
    assert epoch["speedup"] == epoch["compiled_steps_per_s"] / epoch["python_steps_per_s"] > 0
    assert fit["overhead"] > 0 and fit["backend"] == "cpu" and fit["steps_per_call"] == 2 * 1 * 40
    assert json.loads(path.read_text()) == records
