"""The run-time dependencies are what jdl imports: jax, numpy, scipy, safetensors and tqdm, nothing else.

flax and optax are references (tests, benchmarks): importing every jdl module must not
import them, or ``pip install jdl`` would break for a user without the extras.
"""
import pathlib
import subprocess
import sys

import jdl

REFERENCES = ("flax", "optax", "chex", "sacrebleu", "sklearn", "matplotlib", "mnist1d", "tensorboardX", "gensim")


def test_importing_every_jdl_module_imports_no_reference_library():
    root = pathlib.Path(jdl.__file__).parent
    modules = sorted("jdl." + ".".join(p.relative_to(root).with_suffix("").parts).replace(".__init__", "")
                     for p in root.rglob("*.py"))
    code = ("import importlib, sys\n"
            f"for name in {modules!r}:\n    importlib.import_module(name.rstrip('.'))\n"
            f"print(sorted(m for m in {REFERENCES!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", f"jdl imports reference libraries at run time: {out.strip()}"


def test_pyproject_lists_only_what_jdl_imports():
    text = (pathlib.Path(jdl.__file__).parent.parent / "pyproject.toml").read_text()
    core = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert not [name for name in REFERENCES if f'"{name}' in core], core
