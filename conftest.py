"""Test-session settings shared by every test file and doctest (``tests/`` and ``jdl/``).

One persistent XLA compilation cache per test session, shared by the pytest-xdist workers and
the subprocesses tests start: a program compiled once (the same initialiser drawn for the same
shape in another worker, a seed's run repeated to check that it repeats) is loaded instead of
compiled again. A cached executable is the same program, so it computes the same bits; the
directory is new for every session (a run starts cold, as CI does) and removed at its end,
and the variables that point at it are restored.

XLA compiles the tests' programs at LLVM optimisation level 1 instead of 3
(``--xla_backend_optimization_level=1``, added to any ``XLA_FLAGS`` the caller set): about a
third of the suite's time is compiling small programs once (a model's vmapped ``init`` compiles
3-4x faster), and level 1 computes the same bits as level 3 (checked on whole MNIST-1D runs of
all five models and on the models' initialisers; level 0 does not, so it is not used).
Benchmarks and experiments keep XLA's defaults.
"""
import os
import shutil
import sys
import tempfile

_SETTINGS = {
    "JAX_COMPILATION_CACHE_DIR": None,  # the session's directory
    # Only programs that took a while to compile are worth a file (a random draw's ~0.2 s is).
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.1",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    "XLA_FLAGS": "--xla_backend_optimization_level=1",  # appended to the caller's flags
}


def pytest_configure(config):
    if hasattr(config, "workerinput"):  # an xdist worker: it inherited the controller's variables
        return
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # the caller chose a cache: keep it
        return
    config._jdl_cache_dir = tempfile.mkdtemp(prefix="jdl-tests-xla-cache-")
    config._jdl_saved_environment = {name: os.environ.get(name) for name in _SETTINGS}
    for name, value in _SETTINGS.items():
        if name == "XLA_FLAGS":
            value = " ".join(filter(None, [os.environ.get(name), value]))
        os.environ[name] = config._jdl_cache_dir if value is None else value
    if "jax" in sys.modules:  # imported already (by a plugin): its flags have read the variables
        _set_jax_flags(config._jdl_cache_dir, float(_SETTINGS["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def _set_jax_flags(cache_dir, min_compile_time):
    jax = sys.modules["jax"]
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time)


def pytest_unconfigure(config):
    cache_dir = getattr(config, "_jdl_cache_dir", None)
    if cache_dir is None:
        return
    for name, value in config._jdl_saved_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    if "jax" in sys.modules:
        _set_jax_flags(None, 1.0)  # jax's defaults: no cache
    shutil.rmtree(cache_dir, ignore_errors=True)
