"""Test-session settings shared by every test file and doctest (``tests/`` and ``jdl/``).

One persistent XLA compilation cache per test session (and one folder for the datasets the
experiments build, ``JDL_DATA_CACHE``), shared by the pytest-xdist workers and
the subprocesses tests start: a program compiled once (the same initialiser drawn for the same
shape in another worker, a seed's run repeated to check that it repeats) is loaded instead of
compiled again. A cached executable is the same program, so it computes the same bits; the
directory is new for every session (a run starts cold, as CI does) and removed at its end,
and the variables that point at it are restored.

XLA compiles the tests' programs at LLVM optimisation level 0 instead of 3
(``--xla_backend_optimization_level=0``), with its CPU backend's older elemental emitters for
fusions (``--xla_cpu_use_fusion_emitters=false``) and with its fast-compile preset
(``--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE``), all added to any ``XLA_FLAGS`` the
caller set. Most of the suite's time is compiling small programs once (measured with
``jax.monitoring``: two thirds of a run of ``tests/models`` is XLA's backend compile). The
older emitters compile them about 1.6x faster (a LeNet-5 gradient 1.0 s against 1.7 s), and level
0 halves that again (0.5 s; a Transformer's gradient 2.8 s -> 1.1 s) at the price of slower
convolutions at run time (the experiments' toy runs on CNNs lose a few seconds); the whole suite
went from 854 s (defaults) to 560 s (level 1, older emitters) to 497 s (level 0) on 2 cores.
The preset took another ~15% off the compile time of four test-sized programs (LeNet-5,
Transformer, GoogLeNet and GRU gradients: 5.3-6.6 s -> 4.9-5.1 s) and no run time.
And XLA compiles each program's machine code in one piece (``--xla_cpu_parallel_codegen_split_count=1``)
instead of splitting the LLVM module to compile the parts on several threads: with two test
workers on two cores there is no idle core for the parts, and the split itself cost ~0.4 s of a
test-sized Transformer gradient's ~2.5 s compile (XLA's profile: ``SplitModule``, the modules'
clones). Measured on ``tests/models`` + ``tests/conformance`` (2 workers), alternated: 161 and
170 s without it, 138 and 154 s with it (user CPU 296, 315 -> 248, 283 s). LLVM then sees
other module boundaries, which can move a last bit: a gelu gradient's tanh rounded one ulp
apart (``tests/test_activations.py`` states the tolerance that float32 allows there).
These settings evaluate some elementwise functions with different rounding, so a result can differ from a default build's in its last
bits: every comparison in the suite has a tolerance, and none compares with a number computed
under other flags. (A comparison of rounding noise, such as the first bias-corrected step of
centred RMSProp, was rewritten to have teeth.) XLA aborts on a flag it does not know, so the
optional flags are tried in a subprocess first and left out if this XLA refuses them. Benchmarks and
experiments keep XLA's defaults.

After each test, jax's two caches of lowered programs are emptied (``jax._src.pjit._pjit_lower``
and ``jax._src.interpreters.pxla._cached_lowering_to_hlo``, private names: a jax without them is
left as it is). Each entry is an MLIR module with an MLIR context of its own, kept while the
function it came from lives: for every eager operation (``jnp.ones``, ``x + 1``, a layer called
without ``jit``: jax compiles each primitive for each shape once) that is the whole session, up
to 2,048 entries per cache. With thousands of contexts alive, making a new one and every MLIR
object in it gets slower: lowering one eager ``add`` took 8.6 ms in a worker's first fifth of the
suite and 39-43 ms in its last, and XLA's compile 21 -> 28 ms (a one-process loop of new shapes
shows the same, and holding 3,700 bare contexts alone slows lowering 9 -> 33 ms). The compiled
executables stay cached where jax's dispatch finds them, so a function called again with the same
shapes runs without being lowered again; only a new ``lower()`` of the same program lowers it
again. With the caches emptied, lowering stayed at 8-10 ms all session: the suite's MLIR lowering
time went from 316 s to 181 s (summed over the two workers; 8,015 and 8,125 compilations) and
the whole suite from 660 to 599 s, two runs within the hour that logged every compilation.

Python's cyclic garbage collector runs less often in every test process (``gc.set_threshold``, and
``gc.freeze`` of what collecting the tests made): at its defaults a worker ran ~3,000 collections,
and each full one scans every object JAX's caches hold, more of them as the session goes on. On
``tests/models``, ``tests/conformance`` and ``tests/nn`` (2 workers, 2 cores) that took 274 s -> 259 s,
user CPU time 481 s -> 453 s, and the workers' peak memory did not grow (3.4-3.5 GiB either way).
(Whole-suite runs on this machine vary more than that from hour to hour: 555 s and 680 s, the same
code.) Nothing a test computes depends on when garbage is collected.
"""
import atexit
import gc
import os
import shutil
import subprocess
import sys
import tempfile

_SETTINGS = {
    "JAX_COMPILATION_CACHE_DIR": None,  # the session's directory
    # Only programs that took a while to compile are worth a file (a random draw's ~0.2 s is).
    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.1",
    "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    "XLA_FLAGS": "--xla_backend_optimization_level=0",  # appended to the caller's flags
    # Datasets built once per session (experiments.common.mnist1d_dataset), not once per test file.
    "JDL_DATA_CACHE": "data",  # a folder inside the session's directory
}
# Appended too where this XLA knows them (newer ones may drop the older emitters or the preset).
_OPTIONAL_XLA_FLAGS = ("--xla_cpu_use_fusion_emitters=false", "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE",
                       "--xla_cpu_parallel_codegen_split_count=1")


def _xla_accepts(flags: str) -> bool:
    """Whether a process with these XLA_FLAGS compiles and runs a program (XLA aborts on an unknown flag)."""
    environment = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    probe = "import jax.numpy as jnp; (jnp.ones(3) * 2).block_until_ready()"
    try:
        return subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True,
                              timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _accepted(flags: str, optional: tuple[str, ...]) -> list[str]:
    """The optional flags this XLA accepts beside ``flags``: all of them in one probe, else one by one,
    each with the ones already accepted."""
    if _xla_accepts(" ".join([flags, *optional])):
        return list(optional)
    accepted = []
    for flag in optional:
        if _xla_accepts(" ".join([flags, *accepted, flag])):
            accepted.append(flag)
    return accepted


# Python's cyclic garbage collector, tuned for a process that traces and compiles for ten minutes:
# collections of the youngest objects every 50,000 allocations instead of 700, of all of them
# rarely, and never of what the imports and the collection made (frozen once collected).
_GC_THRESHOLDS = (50_000, 20, 20)


def pytest_configure(config):
    config._jdl_saved_gc_thresholds = gc.get_threshold()
    gc.set_threshold(*_GC_THRESHOLDS)  # in every process: the controller and each xdist worker
    if hasattr(config, "workerinput"):  # an xdist worker: it inherited the controller's variables
        return
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:  # the caller chose a cache: keep it
        return
    config._jdl_cache_dir = tempfile.mkdtemp(prefix="jdl-tests-xla-cache-")
    config._jdl_saved_environment = {name: os.environ.get(name) for name in _SETTINGS}
    for name, value in _SETTINGS.items():
        if name == "XLA_FLAGS":
            value = " ".join(filter(None, [os.environ.get(name), value]))
            value = " ".join([value, *_accepted(value, _OPTIONAL_XLA_FLAGS)])
        if name == "JDL_DATA_CACHE":
            value = os.path.join(config._jdl_cache_dir, value)
        os.environ[name] = config._jdl_cache_dir if value is None else value
    if "jax" in sys.modules:  # imported already (by a plugin): its flags have read the variables
        _set_jax_flags(config._jdl_cache_dir, float(_SETTINGS["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))


def _lowering_caches() -> tuple:
    """jax's caches of lowered programs, by their private names (a jax without them: nothing to clear)."""
    if "jax" not in sys.modules:
        return ()
    from jax._src import pjit
    from jax._src.interpreters import pxla
    caches = (getattr(pjit, "_pjit_lower", None), getattr(pxla, "_cached_lowering_to_hlo", None))
    return tuple(cache for cache in caches if hasattr(cache, "cache_clear"))


def pytest_runtest_teardown(item, nextitem):
    # Each lowered program holds an MLIR context; see the module docstring for why they go after each test.
    for cache in _lowering_caches():
        cache.cache_clear()


def pytest_collection_finish(session):
    gc.collect()
    gc.freeze()  # the modules, the test items and their parameters: alive all session, never scanned again


def _set_jax_flags(cache_dir, min_compile_time):
    jax = sys.modules["jax"]
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_time)


def pytest_unconfigure(config):
    gc.unfreeze()
    gc.set_threshold(*config._jdl_saved_gc_thresholds)
    if hasattr(config, "workerinput"):
        # An xdist worker has reported everything by now; when its interpreter exits, it would free
        # every compiled program and cached trace one by one while the controller waits for it (2.5 s
        # after a 98-test run; the whole suite's controller ended 10.5 s after its last test).
        # Registered last, this handler runs first. A failed test still fails the run: the
        # controller decides the exit status from the reports.
        atexit.register(_exit_without_teardown)
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


def _exit_without_teardown():
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


# Test files that run long, started first: pytest-xdist hands out whole files (``--dist loadfile``)
# in collection order, and a long file handed out last keeps one worker busy while the other idles
# (a run with the 8-device checks near the end took 650 s, one with them earlier 562 s). pytest-xdist
# 3.8 hands the files out by their number of tests instead (most first: a one-test file that runs for
# a minute last) unless told ``--no-loadscope-reorder`` (pyproject's addopts), which keeps this order.
# The longest first (seconds per file on 2 cores, measured with a timeline of the whole suite:
# 40-72 s each, then 26-35 s), so that the short files fill the end.
_LONG_FILES_FIRST = ("tests/conformance/test_models.py", "tests/parallel/test_multidevice.py",
                     "tests/experiments/test_mnist1d.py", "tests/conformance/test_battery.py",
                     "tests/models/test_transformer.py", "tests/benchmarks/test_gpu_suite.py",
                     "tests/nn/test_precision.py", "tests/experiments/test_transfer.py",
                     "tests/models/test_sequence.py", "tests/models/test_seq2seq.py",
                     "tests/experiments/test_shallow_deep.py", "tests/experiments/test_translate_dates.py",
                     "tests/nn/test_recurrent.py", "tests/parallel/test_two_processes.py")


def pytest_collection_modifyitems(session, config, items):
    def rank(item):
        first = [index for index, prefix in enumerate(_LONG_FILES_FIRST) if item.nodeid.startswith(prefix)]
        return first[0] if first else len(_LONG_FILES_FIRST)

    items.sort(key=rank)  # stable: the rest keep their order
