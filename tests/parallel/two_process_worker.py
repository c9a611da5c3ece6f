"""One of the two processes ``test_two_processes.py`` starts: ``python -m
tests.parallel.two_process_worker PROCESS_ID PORT OUT_DIR``.

Joins a two-process run on 127.0.0.1 (two CPU devices each, gloo collectives), trains the
small Transformer of ``multidevice_checks.py`` data-parallel over the four devices with its
params and optimizer state sharded along ``data`` (FSDP: every param split across the two
processes), each process feeding only its own rows of every batch; saves a checkpoint (each
process writes its own shards); restores it onto another layout (every param replicated);
and writes what it ends with to ``OUT_DIR/process_<id>.npz`` for the test to compare.
"""
import functools
import os
import sys

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

import jdl
from jdl import sharding
from tests.parallel.multidevice_checks import BATCH, MODEL, OPTIMIZER, batches, objective


def main(process_id: int, port: int, out_dir: str) -> None:
    sharding.initialize_distributed(f"127.0.0.1:{port}", 2, process_id, local_device_count=2,
                                    initialization_timeout=120)
    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 4, 2)
    mesh, rules = sharding.make_mesh({"data": 4}), sharding.fsdp(min_size=1)
    init = functools.partial(jdl.train.init, MODEL, OPTIMIZER)
    example = tuple(jax.ShapeDtypeStruct((BATCH, 8), np.int32) for _ in range(2))
    state = sharding.init(init, mesh, rules, jax.random.key(0), example)
    shardings = sharding.train_state_shardings(rules, state, mesh)
    # This process's rows of every step's batch (axis 1: axis 0 is the step).
    rows = sharding.process_rows(mesh, BATCH)
    local = tuple(np.asarray(part)[:, rows] for part in batches())
    data = tuple(jax.make_array_from_process_local_data(NamedSharding(mesh, P(None, "data")), part) for part in local)
    run = jdl.train.compile_loop(jdl.train.batch_loop(jdl.train.gradient_step(objective, OPTIMIZER)),
                                 shardings=shardings)
    state, _ = run(state, data)
    big = state.params["encoder"]["block_0"]["feed_forward"]["hidden"]["w"]
    assert not big.is_fully_addressable  # split across the processes, as FSDP asked

    checkpoints = os.path.join(out_dir, "checkpoints")
    # Beside the sharded state, leaves process 0 stores whole (a "#" in a name is no shard index).
    jdl.checkpoint.save(checkpoints, {"train_state": state, "lr#1": 0.5, "table": np.arange(3)}, step=int(state.step))
    # Restore onto another layout: every leaf replicated over the four devices.
    replicated = NamedSharding(mesh, P())
    like = jax.tree.map(lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=replicated), state)
    everything = jdl.checkpoint.restore(checkpoints, {"train_state": like, "lr#1": 0.0, "table": np.zeros(3, int)})
    assert everything["lr#1"] == 0.5 and everything["table"].tolist() == [0, 1, 2]
    restored = everything["train_state"]
    assert all(leaf.sharding.is_equivalent_to(replicated, leaf.ndim) for leaf in jax.tree.leaves(restored))
    leaves = jax.tree_util.tree_flatten_with_path(restored.params)[0]
    np.savez(os.path.join(out_dir, f"process_{process_id}.npz"),
             rows=np.array([rows.start, rows.stop]),
             **{sharding.path_name(path): np.asarray(leaf) for path, leaf in leaves})


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
