"""Test-session settings shared by every test file and doctest (``tests/`` and ``jdl/``).

One persistent XLA compilation cache per test session, shared by the two pytest-xdist workers
and the subprocesses tests start: a program compiled once (the same model rebuilt by another
test, a seed's run repeated to check it repeats) is loaded instead of compiled again. A cached
executable is the same program, so it computes the same bits; the directory is new for every
session (a run starts cold, as CI does) and removed at its end.
"""
import os
import shutil
import sys
import tempfile

_CACHE_VARIABLE = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: the controller has set the variables
        return
    if _CACHE_VARIABLE not in os.environ:
        config._jdl_cache_dir = tempfile.mkdtemp(prefix="jdl-tests-xla-cache-")
        os.environ[_CACHE_VARIABLE] = config._jdl_cache_dir
        # Only programs that took a while to compile are worth a file.
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.1")
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
        if "jax" in sys.modules:  # imported already (by a plugin): its flags read the variables then
            sys.modules["jax"].config.update("jax_compilation_cache_dir", config._jdl_cache_dir)
            sys.modules["jax"].config.update("jax_persistent_cache_min_compile_time_secs", 0.1)


def pytest_unconfigure(config):
    cache_dir = getattr(config, "_jdl_cache_dir", None)
    if cache_dir is not None:
        shutil.rmtree(cache_dir, ignore_errors=True)
        del os.environ[_CACHE_VARIABLE]
