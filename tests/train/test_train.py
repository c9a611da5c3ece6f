"""jdl.train: steps against the hand-written step they replace, loops, fit's rules, logs, resume."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jdl
from jdl import nn, optim, train
from tests.train.helpers import bits

LOSS = jdl.losses.softmax_cross_entropy_with_integer_labels
MODEL = nn.Sequential([nn.Dense(16), nn.ReLU(), nn.Dropout(0.2), nn.Dense(3)])


def toy_data(n=48, seed=0):
    x = jax.random.normal(jax.random.key(seed), (n, 5))
    y = (x[:, 0] + x[:, 1] > 0).astype(jnp.int32) + (x[:, 2] > 1).astype(jnp.int32)
    return x, y


# ----------------------------------------------------------------------------- steps


def test_train_step_equals_the_hand_written_step():
    """The README's step before jdl.train (value_and_grad, update, apply_updates), with the same keys."""
    x, y = toy_data()
    optimizer = optim.adam(1e-2)
    ts = train.init(MODEL, optimizer, jax.random.key(3), x)
    step = jax.jit(train.train_step(MODEL, LOSS, optimizer))

    def loss_fn(params, state, key):
        logits, state = MODEL.apply(params, state, x, key=key, train=True)
        return LOSS(logits, y).mean(), state

    @jax.jit
    def hand_step(params, state, opt_state, key):
        (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, key)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optim.apply_updates(params, updates), state, opt_state, loss

    params, state, opt_state = ts.params, ts.state, ts.opt_state
    step_stream = jax.random.split(ts.key, 3)[0]
    for t in range(5):
        params, state, opt_state, hand_loss = hand_step(params, state, opt_state, jax.random.fold_in(step_stream, t))
        ts, metrics = step(ts, (x, y))
        assert float(metrics["loss"]) == float(hand_loss)
    assert bits(ts.params) == bits(params) and bits(ts.opt_state) == bits(opt_state)
    assert int(ts.step) == 5


def test_train_step_with_optax_and_metrics_and_augment():
    x, y = toy_data()
    optimizer = optax.sgd(0.1)
    ts = train.init(MODEL, optimizer, jax.random.key(0), x)
    flip = lambda key, inputs: inputs * jnp.where(jax.random.bernoulli(key, 0.5, (inputs.shape[0], 1)), -1.0, 1.0)  # noqa: E731
    step = jax.jit(train.train_step(MODEL, LOSS, optimizer, augment=flip, metrics={"accuracy": jdl.metrics.accuracy}))
    ts, metrics = step(ts, (x, y))
    assert set(metrics) == {"loss", "accuracy"} and 0.0 <= float(metrics["accuracy"]) <= 1.0
    # Augmentation draws from the step's key: the same state gives the same step.
    ts0 = train.init(MODEL, optimizer, jax.random.key(0), x)
    assert bits(step(ts0, (x, y))[0].params) == bits(ts.params)


def test_steps_vmap_over_an_ensemble_of_seeds():
    x, y = toy_data()
    optimizer = optim.sgd(0.1, momentum=0.9)
    keys = jax.random.split(jax.random.key(7), 3)
    stacked = jax.vmap(lambda k: train.init(MODEL, optimizer, k, x))(keys)
    step = train.train_step(MODEL, LOSS, optimizer)
    stacked, metrics = jax.jit(jax.vmap(step, in_axes=(0, None)))(stacked, (x, y))
    assert metrics["loss"].shape == (3,)
    for member, key in enumerate(keys):
        alone, alone_metrics = jax.jit(step)(train.init(MODEL, optimizer, key, x), (x, y))
        np.testing.assert_allclose(stacked.params["dense_3"]["w"][member], alone.params["dense_3"]["w"],
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(metrics["loss"][member], alone_metrics["loss"], rtol=1e-5)


def test_eval_step_uses_eval_mode():
    x, y = toy_data()
    ts = train.init(MODEL, optim.sgd(0.1), jax.random.key(0), x)
    metrics = jax.jit(train.eval_step(MODEL, LOSS, metrics={"accuracy": jdl.metrics.accuracy}))(ts, (x, y))
    logits, _ = MODEL.apply(ts.params, ts.state, x)
    np.testing.assert_allclose(metrics["loss"], LOSS(logits, y).mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], jdl.metrics.accuracy(logits, y))


def test_bad_arguments_name_the_function():
    with pytest.raises(TypeError, match="jdl.train.train_step: expected a jdl.nn.Layer as model"):
        train.train_step(lambda x: x, LOSS, optim.sgd(0.1))
    with pytest.raises(TypeError, match="jdl.train.train_step: expected metrics as a dict"):
        train.train_step(MODEL, LOSS, optim.sgd(0.1), metrics=[jdl.metrics.accuracy])
    with pytest.raises(ValueError, match="batch_size"):
        train.epoch_loop(train.train_step(MODEL, LOSS, optim.sgd(0.1)), batch_size=0, num_epochs=1)
    x, y = toy_data(8)
    run = train.epoch_loop(train.train_step(MODEL, LOSS, optim.sgd(0.1)), batch_size=16, num_epochs=1)
    with pytest.raises(ValueError, match="at least batch_size=16 examples, got 8"):
        run(train.init(MODEL, optim.sgd(0.1), jax.random.key(0), x), (x, y))
    with pytest.raises(ValueError, match="one leading example axis"):
        run(train.init(MODEL, optim.sgd(0.1), jax.random.key(0), x), (x, y[:4]))


def test_with_lr_factor_divides_the_learning_rate():
    """Adam with its updates scaled by 0.1 is Adam at a tenth of the rate (optax)."""
    params = {"w": jnp.array([1.0, -2.0, 3.0])}
    grads = [{"w": jnp.array([0.3, -0.1, 0.5])}, {"w": jnp.array([-0.2, 0.4, 0.1])}]
    optimizer = train.with_lr_factor(optim.adam(0.1))
    state = train.scale_lr_factor(optimizer.init(params), 0.1)
    reference = optax.adam(0.01)
    ref_state = reference.init(params)
    for g in grads:
        updates, state = optimizer.update(g, state, params)
        ref_updates, ref_state = reference.update(g, ref_state, params)
        np.testing.assert_allclose(updates["w"], ref_updates["w"], rtol=1e-6)
    np.testing.assert_allclose(train.lr_factor(state), 0.1, rtol=1e-7)
    with pytest.raises(ValueError, match="with_lr_factor"):
        train.scale_lr_factor(optim.adam(0.1).init(params), 0.1)


# ----------------------------------------------------------------------------- loops


def _recording_step(ts, batch):
    """A step that only counts and reports which examples it saw."""
    return ts._replace(step=ts.step + 1), {"ids": batch[1]}


def _index_state(key=0):
    return train.TrainState({}, {}, (), jnp.zeros((), jnp.int32), jax.random.key(key))


def test_epoch_loop_shuffles_each_epoch_on_device_and_compiles_once():
    n, batch = 10, 3
    data = (jnp.zeros((n, 2)), jnp.arange(n))
    run = train.compile_loop(train.epoch_loop(_recording_step, batch, num_epochs=2))
    ts, metrics = run(_index_state(), data)
    ids = np.asarray(metrics["ids"])  # (epochs, steps, batch)
    assert ids.shape == (2, 3, 3) and int(ts.step) == 6
    for epoch in ids:
        assert len(set(epoch.ravel().tolist())) == 9  # a permutation, the last partial batch dropped
    assert not np.array_equal(ids[0], ids[1])
    # Calls continue the run: two calls of 2 epochs equal one call of 4; one compilation.
    ts2, more = run(ts, data)
    whole = train.compile_loop(train.epoch_loop(_recording_step, batch, num_epochs=4))(_index_state(), data)[1]
    np.testing.assert_array_equal(np.concatenate([ids, np.asarray(more["ids"])]), whole["ids"])
    assert run._cache_size() == 1


def test_sampled_loop_draws_batches_from_the_state():
    data = jnp.arange(100)
    sample = lambda key, d: (None, jax.random.choice(key, d, (4,)))  # noqa: E731
    run = train.compile_loop(train.sampled_loop(_recording_step, sample, num_steps=5))
    ts, metrics = run(_index_state(), data)
    assert metrics["ids"].shape == (5, 4) and int(ts.step) == 5
    again = run(_index_state(), data)[1]
    np.testing.assert_array_equal(metrics["ids"], again["ids"])


# ----------------------------------------------------------------------------- fit


def scripted(values):
    """An evaluate whose eval/loss at the k-th evaluation is values[k-1] (k = step / 1)."""
    return lambda ts: {"loss": jnp.asarray(values)[ts.step - 1]}


def counting_run(ts, data):
    return ts._replace(step=ts.step + 1), {"loss": jnp.zeros(())}


@pytest.mark.parametrize("rule, values, stop_after, best", [
    ("best", [5, 4, 4.5, 3, 3.5, 3.2, 3.1, 6], 7, 4),  # best at eval 4; 3 evaluations without beating it
    ("previous", [5, 4, 4.5, 3, 3.5, 3.2, 3.1, 6, 7, 8], 10, 4),  # rises at 5; falls 6, 7; rises 8, 9, 10: stop
])
def test_early_stopping_counts_patience_and_restores_the_best(rule, values, stop_after, best):
    result = train.fit(_index_state(), counting_run, None, chunks=len(values), evaluate=scripted(values),
                       patience=3, stopping_rule=rule, progress=False)
    assert result.stopped_early and len(result.history) == stop_after
    assert result.best_step == best and result.best_value == 3.0
    assert result.restored_best and int(result.train_state.step) == best


def test_plateau_divides_the_learning_rate_by_ten():
    params = {"w": jnp.ones(2)}
    optimizer = train.with_lr_factor(optim.sgd(0.1))
    ts = train.TrainState(params, {}, optimizer.init(params), jnp.zeros((), jnp.int32), jax.random.key(0))
    values = [5, 4, 4, 4, 3, 3, 3, 3, 3]
    result = train.fit(ts, counting_run, None, chunks=len(values), evaluate=scripted(values), plateau_patience=2,
                       progress=False)
    factors = result.series("lr_factor")
    # Two evaluations without improvement (steps 3, 4) cut at step 4; then steps 6, 7 cut again; 8, 9 again.
    np.testing.assert_allclose(factors, [1, 1, 1, 1, 0.1, 0.1, 0.1, 0.01, 0.01], rtol=1e-6)
    assert float(train.lr_factor(result.train_state.opt_state)) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="with_lr_factor"):
        train.fit(train.TrainState(params, {}, optim.sgd(0.1).init(params), jnp.zeros((), jnp.int32),
                                   jax.random.key(0)), counting_run, None, chunks=1, evaluate=scripted([1]),
                  plateau_patience=2, progress=False)


def test_fit_needs_an_evaluation_to_watch_and_stops_on_nan(tmp_path):
    with pytest.raises(ValueError, match="evaluate=... to watch 'eval/loss'"):
        train.fit(_index_state(), counting_run, None, chunks=2, patience=1, progress=False)
    nan_run = lambda ts, d: (ts._replace(step=ts.step + 1), {"loss": jnp.where(ts.step >= 1, jnp.nan, 1.0)})  # noqa: E731
    with pytest.raises(FloatingPointError, match="training loss is nan .* step 2"):
        train.fit(_index_state(), nan_run, None, chunks=3, progress=False)
    with pytest.raises(KeyError, match="'eval/accuracy'"):
        train.fit(_index_state(), counting_run, None, chunks=1, evaluate=scripted([1.0]), monitor="eval/accuracy",
                  patience=2, progress=False)


def test_fit_writes_json_lines(tmp_path):
    log = str(tmp_path / "metrics.jsonl")
    values = [3.0, float("nan"), 1.0]
    train.fit(_index_state(), counting_run, None, chunks=3, evaluate=scripted(values), log_path=log, progress=False)
    records = [json.loads(line) for line in open(log)]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert records[1]["eval/loss"] == "NaN" and records[2]["eval/loss"] == 1.0  # strict JSON: NaN stays not-a-number


def test_fit_writes_tensorboard_scalars(tmp_path):
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    train.fit(_index_state(), counting_run, None, chunks=3, evaluate=scripted([3.0, 2.0, 1.0]),
              tensorboard_dir=str(tmp_path), progress=False)
    (path,) = tmp_path.iterdir()
    data, scalars = path.read_bytes(), {}
    while data:  # TFRecord: length (8 bytes), its CRC (4), the event, its CRC (4)
        length = int.from_bytes(data[:8], "little")
        event = event_pb2.Event.FromString(data[12:12 + length])
        for value in event.summary.value:
            scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
        data = data[16 + length:]
    assert scalars["eval/loss"] == [(1, 3.0), (2, 2.0), (3, 1.0)]
    assert [v for _, v in scalars["lr_factor"]] == [1.0, 1.0, 1.0] and "train/loss" in scalars
