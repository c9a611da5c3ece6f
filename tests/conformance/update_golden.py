"""Write the golden params trees: ``python -m tests.conformance.update_golden`` (commit the diff)."""
import json

import jax

from tests.conformance.descriptors import CASES
from tests.conformance.test_battery import GOLDEN, params_tree

if __name__ == "__main__":
    GOLDEN.mkdir(exist_ok=True)
    for case in CASES:
        x, _ = case.example(0)
        params, _ = jax.eval_shape(case.make().init, jax.random.key(1), x)
        (GOLDEN / f"{case.name}.json").write_text(json.dumps(params_tree(params), indent=1, sort_keys=True) + "\n")
    print(f"wrote {len(CASES)} golden files to {GOLDEN}")
