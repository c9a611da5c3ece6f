"""Scaling benchmarks: scan over layers (compile time), remat (memory), data parallelism on 8 CPU devices.

* ``repeat_compile``: the train step (loss, gradients) of a 24-block Transformer encoder,
  unrolled (``nn.Sequential`` of 24 blocks) against ``nn.Repeat(block, 24)`` (one
  ``lax.scan``): compile seconds (``jax.jit(...).lower(...).compile()``, tracing included),
  same shapes, the median of alternated compiles after a warm-up one (a process's first
  compile pays XLA's own set-up). On CPU the same case runs again in a process of its own
  with XLA's fast-compile settings (``FAST_COMPILE_FLAGS``, as the test suite's): the ratio
  depends on them. With its default fusion emitters XLA's CPU backend compiles each distinct
  fusion kernel once per program, so the 23 further unrolled blocks reuse the first one's
  kernels (a 4-block stack: 401 fusions, 47 kernels compiled; one block: 92 and 40) and cost
  only their thunks and HLO passes, while the scan's loop bodies are kernels of their own
  (84, slicing the stacked params and residuals); the older emitters compile every fusion
  but each much faster.
* ``remat_memory``: the temporary memory XLA plans for the train step of a 12-block encoder
  (``compiled.memory_analysis().temp_size_in_bytes``): plain blocks against ``nn.Remat``
  blocks, and ``Repeat(block, 12)`` against ``Repeat(Remat(block), 12)``, batch 8, length 512.
* ``data_parallel``: one process with 8 forced CPU devices: the same train step on one
  device and data-parallel over 8 (``jdl.sharding``), seconds per example, median of timed
  runs. On CPU the 8 "devices" share the machine's cores, so this measures the cost of the
  sharded program's partitioning and collectives, not a speed-up.

Run: ``python -m benchmarks.scaling [--json PATH]``. The data-parallel case and the fast-compile
one start a process of their own (the device count and XLA's flags are fixed when JAX starts).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from benchmarks.harness import time_alternating
from benchmarks.report import provenance
from jdl import nn

BLOCK = nn.TransformerEncoderBlock(num_heads=8, mlp_features=1024)
# XLA's settings for the fastest compiles on CPU (LLVM at -O0, the older elemental emitters, the
# fast-compile preset), as conftest.py gives the test suite; it also keeps each program's codegen in
# one piece, which pays on two busy cores, not in this one-process measurement.
FAST_COMPILE_FLAGS = ("--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false "
                      "--xla_cpu_opt_preset=CPU_OPT_PRESET_FAST_COMPILE")


def _loss(model, state):
    def loss(params, x):
        return jnp.mean(model.apply(params, state, x)[0] ** 2)
    return jax.value_and_grad(loss)


def _compiled(model, x):
    params, state = jax.eval_shape(model.init, jax.random.key(0), x)  # the blocks' states are empty dicts
    start = time.perf_counter()
    compiled = jax.jit(_loss(model, state)).lower(params, x).compile()
    return compiled, time.perf_counter() - start


def repeat_compile(layers: int = 24, shape: tuple[int, ...] = (8, 128, 256), block: nn.Layer = BLOCK,
                   rounds: int = 3) -> dict:
    x = jax.ShapeDtypeStruct(shape, jnp.float32)
    _compiled(block, x)  # warm-up: the process's first compile sets XLA up
    models = {"unrolled": nn.Sequential([block] * layers), "repeat": nn.Repeat(block, layers)}
    seconds = {name: [] for name in models}
    for _ in range(rounds):  # alternated, so a slow minute of the machine hits both
        for name, model in models.items():
            jax.clear_caches()  # compiled anew, not fetched
            seconds[name].append(_compiled(model, x)[1])
    unrolled, scanned = (statistics.median(seconds[name]) for name in models)
    return {"layers": layers, "rounds": rounds, "unrolled_compile_s": unrolled, "repeat_compile_s": scanned,
            "speedup": unrolled / scanned}


def _in_child(case: str, xla_flags: str) -> dict:
    """``case`` in a fresh process with ``xla_flags`` added (XLA reads its flags once, at start)."""
    environment = dict(os.environ, JAX_PLATFORMS="cpu")
    environment["XLA_FLAGS"] = " ".join(filter(None, [os.environ.get("XLA_FLAGS"), xla_flags]))
    out = subprocess.run([sys.executable, "-m", "benchmarks.scaling", "--child", case], env=environment,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def repeat_compile_fast_flags() -> dict:
    """``repeat_compile`` under ``FAST_COMPILE_FLAGS`` (CPU only: they are CPU backend flags)."""
    return {"xla_flags": FAST_COMPILE_FLAGS, **_in_child("repeat_compile", FAST_COMPILE_FLAGS)}


def remat_memory(layers: int = 12) -> dict:
    x = jax.ShapeDtypeStruct((8, 512, 256), jnp.float32)
    record = {"layers": layers}
    for name, model in (("plain", nn.Sequential([BLOCK] * layers)),
                        ("remat", nn.Sequential([nn.Remat(BLOCK)] * layers)),
                        ("repeat", nn.Repeat(BLOCK, layers)),
                        ("repeat_remat", nn.Repeat(nn.Remat(BLOCK, prevent_cse=False), layers))):
        compiled, _ = _compiled(model, x)
        record[f"{name}_temp_bytes"] = compiled.memory_analysis().temp_size_in_bytes
    record["reduction"] = record["plain_temp_bytes"] / record["remat_temp_bytes"]
    record["repeat_remat_reduction"] = record["plain_temp_bytes"] / record["repeat_remat_temp_bytes"]
    # What remat itself buys inside the scan: the same Repeat without it.
    record["remat_in_repeat_reduction"] = record["repeat_temp_bytes"] / record["repeat_remat_temp_bytes"]
    return record


def data_parallel_child(rounds: int = 7) -> dict:
    """Runs with 8 devices: the encoder's Adam step on one device and data-parallel over 8."""
    import functools

    import numpy as np

    import jdl
    from jdl import sharding

    model = nn.Sequential([BLOCK] * 2)
    optimizer = jdl.optim.adam(1e-3)
    batch = 64
    x = jnp.asarray(np.random.default_rng(0).standard_normal((4, batch, 64, 256)), jnp.float32)

    def objective(params, state, xs, key):
        y, state = model.apply(params, state, xs)
        return jnp.mean((y - xs) ** 2), (state, {})

    run = jdl.train.batch_loop(jdl.train.gradient_step(objective, optimizer))
    init = functools.partial(jdl.train.init, model, optimizer)
    example = jax.ShapeDtypeStruct(x.shape[1:], x.dtype)
    mesh = sharding.make_mesh({"data": 8})
    rules = sharding.data_parallel()
    states = {"one_device": (jax.jit(init)(jax.random.key(0), example), jdl.train.compile_loop(run), x)}
    sharded = sharding.init(init, mesh, rules, jax.random.key(0), example)
    states["data_parallel_8"] = (sharded, jdl.train.compile_loop(
        run, shardings=sharding.train_state_shardings(rules, sharded, mesh)),
        jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "data"))))

    def call(name):
        def one():
            state, loop, data = states[name]
            states[name] = (loop(state, data)[0], loop, data)
            return states[name][0]
        return one

    times, _ = time_alternating({name: call(name) for name in states}, rounds=rounds)
    per_example = {name: timed.median_s / (x.shape[0] * batch) for name, timed in times.items()}
    return {"devices": jax.device_count(), "examples_per_call": x.shape[0] * batch,
            **{f"{name}_s_per_example": value for name, value in per_example.items()},
            "ratio": per_example["data_parallel_8"] / per_example["one_device"]}


def data_parallel() -> dict:
    return _in_child("data_parallel", "--xla_force_host_platform_device_count=8")


_CHILD_CASES = {"repeat_compile": repeat_compile, "data_parallel": data_parallel_child}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", choices=_CHILD_CASES, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_CHILD_CASES[args.child]()))
        return {}
    results = {"backend": jax.default_backend(), **provenance()}
    cases = {"repeat_compile": repeat_compile, "repeat_compile_fast_flags": repeat_compile_fast_flags,
             "remat_memory": remat_memory, "data_parallel": data_parallel}
    for name, case in cases.items():
        results[name] = case()
        print(name, json.dumps(results[name]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    main()
