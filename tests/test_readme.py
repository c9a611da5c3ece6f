"""The README's examples run as written and train."""
import math
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_train():
    text = README.read_text()
    first = re.search(r"## Example.*?```python\n(.*?)```", text, re.S).group(1)
    second = re.search(r"## Training loops.*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(first, str(README), "exec"), namespace)  # noqa: S102 - our own README
    # 100 Adam steps on one batch of 256 random examples: well below the chance-level
    # loss log(10) and well above chance accuracy (it memorises the batch).
    assert float(namespace["loss"]) < 0.6 * math.log(10)
    jdl = namespace["jdl"]
    accuracy = float(jdl.metrics.accuracy(namespace["logits"], namespace["y"]))
    assert accuracy > 0.5
    exec(compile(second, str(README), "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    assert result.best_step is not None and 1 <= len(result.history) <= 10
    assert result.history[0]["step"] == 2 * (256 // 32)  # two epochs of 8 steps per chunk
    summary = jdl.summary(namespace["model"], namespace["x"])
    assert summary.total_params == jdl.count_params(result.train_state.params)
