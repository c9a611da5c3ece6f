"""Checkpoints: exact round trips, clear errors for every fault, atomic saves, the manager.

Round trips are checked bit for bit (arrays compared as their unsigned-int bits, so NaN
payloads count) for every dtype, 0-d arrays, typed PRNG keys, Python scalars, NamedTuple
optimizer states (jdl's and optax's) and a TrainState-like tuple; each fault names the file
or the path; a save that fails midway leaves the previous checkpoint and nothing visible;
the manager keeps the last N and the best, across managers and threads.
"""
import hashlib
import json
import os
import threading
from typing import NamedTuple

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
import safetensors.numpy

import jdl
from jdl import checkpoint


class TrainState(NamedTuple):
    params: dict
    state: dict
    opt_state: tuple
    step: int
    key: jax.Array


def _bits(x):
    """An array's raw bits as unsigned ints (bytes on a last axis for 16-byte dtypes)."""
    x = np.asarray(x)
    if x.dtype.itemsize in (1, 2, 4, 8):
        return x.view(f"uint{8 * x.dtype.itemsize}")
    return x.reshape(x.shape + (1,)).view(np.uint8)


def _assert_identical(got, want):
    """Same tree structure, same leaf types, and bit-identical values."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        assert type(a) is type(b) or (isinstance(a, jax.Array) and isinstance(b, jax.Array)), (type(a), type(b))
        if isinstance(b, (bool, int, float)):
            assert _bits(np.float64(a) if isinstance(b, float) else a).tobytes() == _bits(
                np.float64(b) if isinstance(b, float) else b).tobytes()
        elif jax.dtypes.issubdtype(b.dtype, jax.dtypes.prng_key):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert np.array_equal(jax.random.key_data(a), jax.random.key_data(b))
        else:
            assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
            assert np.array_equal(_bits(a), _bits(b))


def _nan_with_payload(dtype, bits):
    return np.array(bits, dtype=f"uint{8 * np.dtype(dtype).itemsize}").view(dtype)


def _transformer_params(seed):
    """A nested params dict shaped like jdl's Transformer's (small), without building the model."""
    rng = np.random.default_rng(seed)  # NumPy: no compilation per shape

    def dense(i, o):
        return {"w": jnp.asarray(rng.standard_normal((i, o), np.float32)), "b": jnp.zeros(o)}

    def attention():
        return {name: dense(8, 8) for name in ("query", "key", "value", "out")}

    def block(cross):
        out = {"self_attention": attention(), "norm_0": {"gamma": jnp.ones(8), "beta": jnp.zeros(8)},
               "mlp": {"dense_0": dense(8, 16), "dense_1": dense(16, 8)}}
        return {**out, "cross_attention": attention()} if cross else out

    return {"embedding": jnp.asarray(rng.standard_normal((12, 8), np.float32)), "encoder": {"block_0": block(False)},
            "decoder": {"block_0": block(True), "block_1": block(True)}}


def _files(path):
    return sorted(os.listdir(path))


# ----------------------------------------------------------------------------- round trips

def test_transformer_params_round_trip_with_readable_keys(tmp_path):
    params = _transformer_params(0)
    path = checkpoint.save(tmp_path, {"params": params}, step=10)
    assert path == str(tmp_path / "step_10") and _files(path) == ["arrays.safetensors", "checkpoint.json"]
    _assert_identical(checkpoint.restore(tmp_path), {"params": params})
    # The file is plain safetensors: another reader sees every leaf under its tree path.
    stored = safetensors.numpy.load_file(os.path.join(path, "arrays.safetensors"))
    names = {"/".join(str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", None)))) for k in p)
             for p, _ in jax.tree_util.tree_flatten_with_path({"params": params})[0]}
    assert set(stored) == names and "params/encoder/block_0/self_attention/query/w" in stored
    np.testing.assert_array_equal(stored["params/decoder/block_1/mlp/dense_0/w"],
                                  params["decoder"]["block_1"]["mlp"]["dense_0"]["w"])


def test_every_dtype_and_0d_round_trips_bit_for_bit(tmp_path):
    tree = {
        "bf16": jnp.asarray(np.concatenate([_nan_with_payload(ml_dtypes.bfloat16, [0x7FC1, 0xFF81]),
                                            np.array([1.5, -0.0], ml_dtypes.bfloat16)])),
        "f16": jnp.asarray(_nan_with_payload(np.float16, [0x7E01, 0x3C00])),
        "f32": jnp.asarray(_nan_with_payload(np.float32, [0x7FC00001, 0xFF800000, 0x00000001])),
        "f8": jnp.asarray(np.array([0.5, -2.0], ml_dtypes.float8_e4m3fn)),
        "i4": jnp.asarray(np.array([-8, 7], ml_dtypes.int4)),
        "c64": jnp.asarray(np.array([1 + 2j, np.nan], np.complex64)),
        "bool": jnp.array([True, False]),
        "scalar_bf16": jnp.asarray(_nan_with_payload(ml_dtypes.bfloat16, 0x7FC3)),
        "scalar_i32": jnp.array(-7, jnp.int32),
        **{name: jnp.asarray(np.arange(-3, 3).astype(name) if name.startswith("i") else np.arange(6).astype(name))
           for name in ("int8", "int16", "int32", "uint8", "uint16", "uint32")},
    }
    checkpoint.save(tmp_path, tree, step=0)
    _assert_identical(checkpoint.restore(tmp_path), tree)
    stored = safetensors.numpy.load_file(str(tmp_path / "step_0" / "arrays.safetensors"))
    assert stored["bf16"].dtype == np.uint16 and stored["scalar_bf16"].shape == ()  # bits, dtype in the JSON


def test_64_bit_numpy_arrays_round_trip_into_numpy_like(tmp_path):
    tree = {"f64": _nan_with_payload(np.float64, [0x7FF8000000000001, 0x3FF0000000000000]),
            "i64": np.array([-2**63, 2**63 - 1]), "u64": np.array([2**64 - 1], np.uint64),
            "c128": np.array([1 + 1j, np.nan], np.complex128)}
    checkpoint.save(tmp_path, tree, step=1)
    _assert_identical(checkpoint.restore(tmp_path, like=tree), tree)
    with pytest.raises(TypeError, match=r"expected a dtype JAX holds at f64, got float64 \(enable jax_enable_x64"):
        checkpoint.restore(tmp_path)  # jax without x64 would narrow them silently
    with jax.enable_x64(True):
        restored = checkpoint.restore(tmp_path)
        assert all(isinstance(leaf, jax.Array) for leaf in restored.values())
        _assert_identical(jax.tree.map(np.asarray, restored), tree)


def test_typed_prng_keys_round_trip_for_every_impl(tmp_path):
    tree = {impl: jax.random.split(jax.random.key(7, impl=impl), 3) for impl in ("threefry2x32", "rbg", "unsafe_rbg")}
    tree["one"] = jax.random.key(0)
    checkpoint.save(tmp_path, tree, step=3)
    restored = checkpoint.restore(tmp_path)
    _assert_identical(restored, tree)
    assert str(jax.random.key_impl(restored["rbg"])) == "rbg"
    like = jax.eval_shape(lambda: tree)
    _assert_identical(checkpoint.restore(tmp_path, like), tree)
    assert jax.random.normal(restored["one"]) == jax.random.normal(tree["one"])


def test_python_scalars_stay_python_scalars(tmp_path):
    tree = {"epoch": 3, "big": -2**63, "lr": 0.1, "nan": float("nan"), "inf": float("-inf"), "flag": True,
            "values": [1, 2.5, False]}
    checkpoint.save(tmp_path, tree, step=2)
    restored = checkpoint.restore(tmp_path)
    _assert_identical(restored, tree)
    assert type(restored["epoch"]) is int and type(restored["flag"]) is bool and type(restored["lr"]) is float
    stored = safetensors.numpy.load_file(str(tmp_path / "step_2" / "arrays.safetensors"))
    assert stored["epoch"].dtype == np.int64 and stored["lr"].dtype == np.float64 and stored["flag"].shape == ()
    with pytest.raises(ValueError, match=r"\): expected Python ints that fit int64, got 18446744073709551616 at n"):
        checkpoint.save(tmp_path, {"n": 2**64}, step=3)


def test_containers_none_and_int_keys_round_trip(tmp_path):
    tree = {"list": [jnp.ones(2), None, (jnp.zeros(()), [])], "tuple": (), "empty": {}, "none": None,
            "by_id": {7: jnp.arange(3), 5: {"x": 1}}, "nested": {"b": 1.0, "a": [{"z": jnp.ones((1, 2))}]}}
    checkpoint.save(tmp_path, tree, step=4)
    restored = checkpoint.restore(tmp_path)
    _assert_identical(restored, tree)
    assert list(restored) == list(tree) and list(restored["by_id"]) == [7, 5]
    assert restored["by_id"][7].dtype == jnp.int32


def test_optimizer_states_round_trip(tmp_path):
    params = {"dense": {"w": jnp.ones((3, 2)), "b": jnp.zeros(2)}}
    rng = np.random.default_rng(0)
    for step, optimizer in enumerate([jdl.optim.adam(1e-3), optax.adam(1e-3)]):
        adam, rest = optimizer.init(params)  # moments filled as after some steps, without compiling an update
        moments = [jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape, np.float32)), params) for _ in "mv"]
        state = (adam._replace(count=jnp.asarray(7, jnp.int32), mu=moments[0], nu=moments[1]), rest)
        checkpoint.save(tmp_path, {"opt_state": state}, step=step)
        restored = checkpoint.restore(tmp_path, step=step)["opt_state"]
        _assert_identical(restored, state)
        assert type(restored[0]) is type(state[0]) and type(restored[1]) is type(state[1])
        assert int(restored[0].count) == 7


def test_train_state_namedtuple_round_trips_with_and_without_like(tmp_path):
    params = _transformer_params(1)
    optimizer = jdl.optim.adam(1e-3)
    train_state = TrainState(params, {"bn": {"mean": jnp.zeros(4)}}, optimizer.init(params), 17,
                             jax.random.key(3))
    checkpoint.save(tmp_path, train_state, step=17, metadata={"model": "transformer", "sizes": [8, 16]})
    restored = checkpoint.restore(tmp_path)
    assert type(restored) is TrainState and restored.step == 17
    _assert_identical(restored, train_state)
    like = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype) if hasattr(x, "dtype") else x, train_state)
    _assert_identical(checkpoint.restore(tmp_path, like), train_state)
    assert checkpoint.read_metadata(tmp_path) == {"step": 17, "metadata": {"model": "transformer", "sizes": [8, 16]},
                                                 "metrics": None, "jdl_version": jdl.__version__}


def test_restore_into_like_keeps_likes_containers_and_numpy_leaves(tmp_path):
    checkpoint.save(tmp_path, {"b": jnp.ones(2), "a": jnp.zeros(3)}, step=1)
    restored = checkpoint.restore(tmp_path, {"a": np.empty(3, np.float32), "b": jnp.empty(2)})
    assert isinstance(restored["a"], np.ndarray) and restored["a"].flags.writeable
    assert isinstance(restored["b"], jax.Array) and np.array_equal(restored["b"], [1.0, 1.0])


# ----------------------------------------------------------------------------- faults

@pytest.fixture
def saved(tmp_path):
    """A directory with steps 1 and 10 of a small model."""
    tree = {"params": {"dense": {"w": jnp.ones((3, 4)), "b": jnp.zeros(4)}}, "step": 1}
    checkpoint.save(tmp_path, tree, step=1)
    checkpoint.save(tmp_path, tree, step=10)
    return tmp_path, tree


@pytest.mark.parametrize("damage", ["truncate", "flip_data_byte", "garbage_with_matching_checksum"])
def test_damaged_arrays_file_is_named(saved, damage):
    directory, tree = saved
    arrays, info = directory / "step_10" / "arrays.safetensors", directory / "step_10" / "checkpoint.json"
    data = arrays.read_bytes()
    if damage == "truncate":
        arrays.write_bytes(data[:len(data) // 2])
    elif damage == "flip_data_byte":
        arrays.write_bytes(data[:-3] + bytes([data[-3] ^ 0x01]) + data[-2:])
    else:  # a file that is not safetensors at all, with a JSON that agrees: the parser names it
        arrays.write_bytes(b"\xff" * 64)
        meta = json.loads(info.read_text())
        meta["arrays_sha256"] = hashlib.sha256(b"\xff" * 64).hexdigest()
        info.write_text(json.dumps(meta))
    message = "unreadable" if damage.startswith("garbage") else "truncated or corrupted"
    with pytest.raises(ValueError, match=f"{message}") as error:
        checkpoint.restore(directory)
    assert str(arrays) in str(error.value)
    _assert_identical(checkpoint.restore(directory, step=1), tree)  # the other step is untouched


def test_missing_metadata_json_is_named(saved):
    directory, _ = saved
    os.remove(directory / "step_10" / "checkpoint.json")
    with pytest.raises(FileNotFoundError, match="expected the metadata file .*step_10/checkpoint.json, got none"):
        checkpoint.restore(directory)


def test_metadata_json_that_does_not_match_the_arrays_is_named(saved):
    directory, _ = saved
    info = directory / "step_10" / "checkpoint.json"
    info.write_text(info.read_text().replace('"params/dense/w"', '"params/dense/kernel"'))
    with pytest.raises(ValueError, match=r"arrays.safetensors to hold exactly the arrays checkpoint.json lists, got "
                                         r"missing \['params/dense/kernel'\], unexpected \['params/dense/w'\]"):
        checkpoint.restore(directory)
    info.write_text("{not json")
    with pytest.raises(ValueError, match="expected JSON in .*step_10/checkpoint.json"):
        checkpoint.restore(directory)


def test_like_of_another_model_wrong_shape_and_wrong_dtype_name_the_path(saved):
    directory, tree = saved
    step_dir = str(directory / "step_10")
    like = jax.eval_shape(lambda: tree["params"])
    wrong_shape = {"params": {"dense": {"w": jax.ShapeDtypeStruct((3, 5), jnp.float32), "b": like["dense"]["b"]}},
                   "step": 0}
    with pytest.raises(ValueError) as error:
        checkpoint.restore(directory, wrong_shape)
    assert str(error.value) == (f"jdl.checkpoint.restore({step_dir}): expected params/dense/w of shape (3, 5) float32 "
                                f"(from like), got (3, 4) float32")
    wrong_dtype = {"params": {"dense": {**like["dense"], "b": jnp.zeros(4, jnp.bfloat16)}}, "step": 0}
    with pytest.raises(ValueError, match=r"expected params/dense/b of shape \(4,\) bfloat16 \(from like\), got "
                                         r"\(4,\) float32"):
        checkpoint.restore(directory, wrong_dtype)
    other_model = {"params": {"conv": like["dense"]}, "step": 0}
    with pytest.raises(ValueError, match=r"expected params to be a dict with keys \['conv'\] \(from like\), got a dict "
                                         r"with keys \['dense'\]; is this a checkpoint of another model\?"):
        checkpoint.restore(directory, other_model)
    with pytest.raises(ValueError, match=r"expected step to be a Python float \(from like\), got a Python int"):
        checkpoint.restore(directory, {"params": like, "step": 0.0})
    with pytest.raises(ValueError, match=r"expected the tree to be a list of length 2 \(from like\), got a dict"):
        checkpoint.restore(directory, [like, 0])


def test_missing_step_and_empty_directory_list_what_exists(saved, tmp_path_factory):
    directory, _ = saved
    with pytest.raises(FileNotFoundError, match=r"expected step 5 in .*, got only steps \[1, 10\]"):
        checkpoint.restore(directory, step=5)
    empty = tmp_path_factory.mktemp("empty")
    assert checkpoint.latest_step(empty) is None and checkpoint.all_steps(empty / "absent") == []
    with pytest.raises(FileNotFoundError, match=r"expected a checkpoint \(a step_<N> directory\) in .*, got none"):
        checkpoint.restore(empty)


def test_unimportable_namedtuple_is_named_and_like_still_restores(tmp_path):
    state = jdl.optim.adam(1e-3).init({"w": jnp.ones(2)})
    checkpoint.save(tmp_path, state, step=1)
    info = tmp_path / "step_1" / "checkpoint.json"
    info.write_text(info.read_text().replace('"jdl.optim.transform"', '"gone.module"'))
    with pytest.raises(ImportError, match=r"cannot import the NamedTuple gone.module.ScaleByAdamState at 0 .*like="):
        checkpoint.restore(tmp_path)
    _assert_identical(checkpoint.restore(tmp_path, like=state), state)
    # NamedTuples match by fields: optax's adam state restores into jdl's and the other way round.
    assert type(checkpoint.restore(tmp_path, like=optax.adam(1e-3).init({"w": jnp.ones(2)}))[0]).__module__ == \
        "optax._src.transform"


@pytest.mark.parametrize("leaf, got", [("relu", "str at config/activation"),
                                       (object(), "object at config/activation"),
                                       (np.array(["a"]), "a <U1 array at config/activation"),
                                       (jax.ShapeDtypeStruct((2,), jnp.float32),
                                        "a ShapeDtypeStruct at config/activation")])
def test_leaves_that_cannot_be_stored_are_refused_with_their_path(tmp_path, leaf, got):
    with pytest.raises(TypeError, match=f"save\\({tmp_path}\\): expected .*, got {got}"):
        checkpoint.save(tmp_path, {"w": jnp.ones(2), "config": {"activation": leaf}}, step=1)
    assert _files(tmp_path) == []


def test_non_json_metadata_and_bad_step_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError, match="finite numbers"):
        checkpoint.save(tmp_path, {"w": jnp.ones(2)}, step=1, metadata={"lr": float("nan")})
    with pytest.raises(ValueError, match=r"save\(.*\): expected step to be an int >= 0, got -1"):
        checkpoint.save(tmp_path, {"w": jnp.ones(2)}, step=-1)
    with pytest.raises(ValueError, match=r"expected overwrite to be a bool, got 1"):
        checkpoint.save(tmp_path, {"w": jnp.ones(2)}, step=1, overwrite=1)
    with pytest.raises(ValueError, match="distinct leaf paths, got two leaves at 'a/b'"):
        checkpoint.save(tmp_path, {"a/b": jnp.ones(1), "a": {"b": jnp.ones(1)}}, step=2)
    assert _files(tmp_path) == []


# ----------------------------------------------------------------------------- atomicity

@pytest.mark.parametrize("failing", ["arrays_write", "rename"])
def test_failed_save_leaves_previous_checkpoint_and_nothing_visible(saved, monkeypatch, failing):
    directory, tree = saved

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if failing == "arrays_write":
        monkeypatch.setattr(checkpoint, "atomic_write_bytes", fail)
    else:
        monkeypatch.setattr(os, "rename", fail)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save(directory, tree, step=20)
    monkeypatch.undo()
    assert _files(directory) == ["step_1", "step_10"]  # no partial step_20, no hidden debris
    assert checkpoint.latest_step(directory) == 10
    _assert_identical(checkpoint.restore(directory), tree)


def test_existing_step_is_refused_unless_overwrite_and_a_failed_swap_puts_it_back(saved, monkeypatch):
    directory, tree = saved
    new = {**tree, "step": 2}
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        checkpoint.save(directory, new, step=10)
    rename, calls = os.rename, []

    def fail_second(src, dst):  # the old step goes aside, then the new one fails to move in
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        rename(src, dst)

    monkeypatch.setattr(os, "rename", fail_second)
    with pytest.raises(OSError, match="Input/output error"):
        checkpoint.save(directory, new, step=10, overwrite=True)
    monkeypatch.undo()
    assert _files(directory) == ["step_1", "step_10"] and checkpoint.restore(directory)["step"] == 1
    checkpoint.save(directory, new, step=10, overwrite=True)
    assert _files(directory) == ["step_1", "step_10"] and checkpoint.restore(directory)["step"] == 2


def test_readers_ignore_what_a_crashed_save_left(saved):
    directory, tree = saved
    debris = directory / ".tmp-0123456789abcdef-step_30"
    debris.mkdir()
    (debris / "arrays.safetensors").write_bytes(b"\x00" * 10)
    assert checkpoint.all_steps(directory) == [1, 10] and checkpoint.latest_step(directory) == 10
    _assert_identical(checkpoint.restore(directory), tree)


def test_concurrent_saves_of_one_step_publish_exactly_one(tmp_path):
    errors, barrier = [], threading.Barrier(4)

    def writer(value):
        barrier.wait()
        try:
            checkpoint.save(tmp_path, {"w": np.full(1000, value, np.float32)}, step=5)
        except FileExistsError as error:
            errors.append(error)

    threads = [threading.Thread(target=writer, args=(v,)) for v in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(errors) == 3 and _files(tmp_path) == ["step_5"]
    w = checkpoint.restore(tmp_path)["w"]
    assert np.all(w == w[0])  # one writer's values, whole


# ----------------------------------------------------------------------------- the manager

def test_manager_keeps_last_n_and_the_best(tmp_path):
    manager = checkpoint.CheckpointManager(tmp_path, max_to_keep=2, best_metric="val_loss", keep_best=1)
    losses = {1: 0.9, 2: 0.2, 3: 0.5, 4: 0.6, 5: 0.7}
    for step, loss in losses.items():
        manager.save(step, {"w": jnp.full(2, step)}, metrics={"val_loss": loss, "acc": 1 - loss})
    assert manager.steps() == [2, 4, 5] and _files(tmp_path) == ["step_2", "step_4", "step_5"]
    assert manager.best_step() == 2 and manager.latest_step() == 5
    np.testing.assert_array_equal(manager.restore(step=2)["w"], [2, 2])
    assert manager.read_metadata(2)["metrics"] == {"val_loss": 0.2, "acc": 0.8}
    # A new manager over the same directory knows the metrics from the JSON.
    reopened = checkpoint.CheckpointManager(tmp_path, max_to_keep=1, best_metric="acc", best_mode="max", keep_best=2)
    assert reopened.best_step() == 2
    reopened.save(6, {"w": jnp.full(2, 6)}, metrics={"val_loss": 0.1, "acc": 0.9})
    assert reopened.steps() == [2, 6] and reopened.best_step() == 6  # the last one, and the best two by acc
    assert checkpoint.CheckpointManager(tmp_path, best_metric="val_loss").best_step() == 6


def test_manager_without_metric_keeps_last_n_and_checks_its_settings(tmp_path):
    manager = checkpoint.CheckpointManager(tmp_path, max_to_keep=3)
    for step in range(0, 60, 10):
        manager.save(step, {"w": np.ones(1)})
    assert manager.steps() == [30, 40, 50] and manager.best_step() is None
    with pytest.raises(ValueError, match="expected max_to_keep to be a positive int, got 0"):
        checkpoint.CheckpointManager(tmp_path, max_to_keep=0)
    with pytest.raises(ValueError, match="best_mode in"):
        checkpoint.CheckpointManager(tmp_path, best_mode="median")
    # A step without the metric (no evaluation yet, a NaN one) is never the best; it goes when it is not among the last.
    ranked = checkpoint.CheckpointManager(tmp_path, max_to_keep=1, best_metric="loss")
    ranked.save(60, {"w": np.ones(1)}, metrics={"loss": 0.5})
    ranked.save(70, {"w": np.ones(1)})
    assert ranked.best_step() == 60 and ranked.steps() == [60, 70]
    ranked.save(80, {"w": np.ones(1)}, metrics={"loss": 0.7})
    assert ranked.steps() == [60, 80]
    assert checkpoint.CheckpointManager(tmp_path, max_to_keep=None).steps() == [60, 80]


def test_two_managers_saving_concurrently_leave_only_complete_steps(tmp_path):
    managers = [checkpoint.CheckpointManager(tmp_path, max_to_keep=3, best_metric="loss") for _ in range(2)]
    barrier, failures = threading.Barrier(2), []

    def run(index):
        barrier.wait()
        try:
            for step in range(index, 24, 2):
                managers[index].save(step, {"w": np.full(500, step, np.float32), "step": step},
                                     metrics={"loss": 1.0 / (1 + step) + (step == 7)})
        except Exception as error:  # noqa: BLE001 - reported below, in the main thread
            failures.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert failures == []
    assert all(name.startswith("step_") for name in _files(tmp_path))  # no hidden debris either
    steps = checkpoint.all_steps(tmp_path)
    assert steps[-3:] == [21, 22, 23] and len(steps) <= 5
    for step in steps:
        restored = checkpoint.restore(tmp_path, step=step)
        assert restored["step"] == step and np.all(np.asarray(restored["w"]) == step)
    assert managers[0].best_step() == 23
