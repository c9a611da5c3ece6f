"""Two real processes on 127.0.0.1 (``jax.distributed``, gloo collectives on CPU), two devices
each: data-parallel training gives both processes the params one process computes on the full
batch, and a checkpoint the two processes wrote (each its own shards) restores in this one."""
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from safetensors import safe_open

import jdl
from jdl import sharding
from tests.parallel import multidevice_checks as setup

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("two_processes")
    environment = dict(os.environ, JAX_PLATFORMS="cpu")
    port = _free_port()
    workers = [subprocess.Popen([sys.executable, "-m", "tests.parallel.two_process_worker", str(rank), str(port),
                                 str(out)], env=environment, cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for rank in range(2)]
    logs = []
    for worker in workers:
        try:
            logs.append(worker.communicate(timeout=300)[0])
        except subprocess.TimeoutExpired:
            for other in workers:
                other.kill()
            raise
    for worker, log in zip(workers, logs):
        assert worker.returncode == 0, log[-5000:]
    return out, [dict(np.load(out / f"process_{rank}.npz")) for rank in range(2)]


def test_each_process_fed_its_own_half_of_every_batch(two_process_run):
    _, results = two_process_run
    assert [result.pop("rows").tolist() for result in results] == [[0, 4], [4, 8]]


def test_data_parallel_training_over_two_processes_equals_one_process_on_the_full_batch(two_process_run):
    _, results = two_process_run
    reference = setup.train()  # one process, one device, the full batch
    want = {sharding.path_name(path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(reference.params)[0]}
    for result in results:
        got = {name: value for name, value in result.items() if name != "rows"}
        assert got.keys() == want.keys()
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_the_two_processes_checkpoint_restores_in_one_process(two_process_run):
    out, results = two_process_run
    directory = out / "checkpoints"
    step_dir = directory / f"step_{setup.STEPS}"
    files = sorted(os.listdir(step_dir))
    assert files == ["arrays.process_0.safetensors", "arrays.process_1.safetensors", "checkpoint.json"]
    like = {"train_state": jax.eval_shape(lambda: setup.train()), "lr#1": 0.0, "table": np.zeros(3, int)}
    everything = jdl.checkpoint.restore(directory, like)
    assert everything["lr#1"] == 0.5 and everything["table"].tolist() == [0, 1, 2]
    restored = everything["train_state"]
    assert int(restored.step) == setup.STEPS
    for path, leaf in jax.tree_util.tree_flatten_with_path(restored.params)[0]:
        np.testing.assert_array_equal(np.asarray(leaf), results[0][sharding.path_name(path)])


def test_each_process_wrote_only_its_own_shards(two_process_run):
    out, _ = two_process_run
    step_dir = out / "checkpoints" / f"step_{setup.STEPS}"
    name = "train_state/params/encoder/block_0/feed_forward/hidden/w"  # (16, 32), FSDP: the 32 split over 4 devices
    for rank in range(2):
        with safe_open(str(step_dir / f"arrays.process_{rank}.safetensors"), "np") as stored:
            shards = sorted(key.rpartition("#")[2] for key in stored.keys() if key.startswith(name + "#"))
        assert shards == [f"0:16,{start}:{start + 8}" for start in (16 * rank, 16 * rank + 8)]
