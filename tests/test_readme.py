"""The README's example runs as written and trains."""
import math
import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_example_trains():
    text = README.read_text()
    code = re.search(r"## Example.*?```python\n(.*?)```", text, re.S).group(1)
    namespace: dict = {}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    # 100 Adam steps on one batch of 256 random examples: well below the chance-level
    # loss log(10) and well above chance accuracy (it memorises the batch).
    assert float(namespace["loss"]) < 0.6 * math.log(10)
    logits = namespace["logits"]
    accuracy = float(namespace["jdl"].metrics.accuracy(logits, namespace["y"]))
    assert accuracy > 0.5
