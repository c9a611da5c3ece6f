"""fit with checkpoints: resuming in a fresh process continues bit for bit; best states come back."""
import json
import subprocess
import sys
import textwrap

import jax
import pytest

from jdl import checkpoint, train
from tests.train.helpers import bits

# The run both processes build: an MLP with dropout, Adam whose rate the plateau rule cuts.
RUN = textwrap.dedent("""
    import jax, jax.numpy as jnp, jdl
    from jdl import nn, optim, train

    model = nn.Sequential([nn.Dense(16), nn.ReLU(), nn.Dropout(0.3), nn.Dense(3)])
    x = jax.random.normal(jax.random.key(0), (40, 5))
    y = (x[:, 0] > 0).astype(jnp.int32) + (x[:, 1] > 0.5).astype(jnp.int32)
    loss = jdl.losses.softmax_cross_entropy_with_integer_labels
    optimizer = train.with_lr_factor(optim.adam(0.05))
    run = train.compile_loop(train.epoch_loop(train.train_step(model, loss, optimizer), 8, 2))
    evaluate = jax.jit(lambda ts: train.eval_step(model, loss)(ts, (x[:16], y[:16])))

    def fit(chunks, directory, log):
        ts = train.init(model, optimizer, jax.random.key(1), x)
        return train.fit(ts, run, (x, y), chunks=chunks, evaluate=evaluate, plateau_patience=1, min_delta=0.1,
                         checkpoint_dir=directory, log_path=log, progress=False)
""")


def records(path):
    return [{k: v for k, v in json.loads(line).items() if k != "seconds"} for line in open(path)]


def test_resume_in_a_fresh_process_is_bit_identical(tmp_path):
    namespace: dict = {}
    exec(RUN, namespace)  # noqa: S102 - the test's own code
    whole = namespace["fit"](6, str(tmp_path / "whole"), str(tmp_path / "whole.jsonl"))
    namespace["fit"](3, str(tmp_path / "split"), str(tmp_path / "split.jsonl"))
    # The second half in another process: it finds step 3's checkpoint and continues.
    second = RUN + textwrap.dedent(f"""
        result = fit(6, {str(tmp_path / 'split')!r}, {str(tmp_path / 'split.jsonl')!r})
        jdl.checkpoint.save({str(tmp_path / 'final')!r}, result.train_state, step=int(result.train_state.step))
    """)
    subprocess.run([sys.executable, "-c", second], check=True, capture_output=True, text=True)
    resumed = checkpoint.restore(str(tmp_path / "final"), like=whole.train_state)
    assert int(resumed.step) == int(whole.train_state.step) == 6 * 2 * 5
    assert bits(resumed) == bits(whole.train_state)  # params, state, opt_state (with its LR factor), step, key
    assert records(tmp_path / "split.jsonl") == records(tmp_path / "whole.jsonl")
    assert min(whole.series("lr_factor")) < 1  # the plateau rule acted, and its count survived the resume


def test_fit_restores_the_best_checkpointed_state_after_a_resume(tmp_path):
    values = [5.0, 3.0, 4.0, 4.5, 6.0, 7.0]
    evaluate = lambda ts: {"loss": jax.numpy.asarray(values)[ts.step - 1]}  # noqa: E731
    run = lambda ts, d: (ts._replace(step=ts.step + 1, params={"w": ts.params["w"] + 1.0}),  # noqa: E731
                         {"loss": jax.numpy.zeros(())})
    start = lambda: train.TrainState({"w": jax.numpy.zeros(())}, {}, (), jax.numpy.zeros((), jax.numpy.int32),  # noqa: E731
                                     jax.random.key(0))
    directory = str(tmp_path / "ckpt")
    first = train.fit(start(), run, None, chunks=3, evaluate=evaluate, patience=3, checkpoint_dir=directory,
                      keep_checkpoints=1, progress=False)
    assert not first.stopped_early and first.best_step == 2
    result = train.fit(start(), run, None, chunks=6, evaluate=evaluate, patience=3, checkpoint_dir=directory,
                       keep_checkpoints=1, progress=False)
    assert result.stopped_early and len(result.history) == 5 and result.best_step == 2
    assert float(result.train_state.params["w"]) == 2.0  # the state after the best evaluation, from its checkpoint
    assert 2 in checkpoint.all_steps(directory)  # the manager keeps the best beside the last


def test_fit_refuses_a_checkpoint_of_another_model(tmp_path):
    directory = str(tmp_path / "ckpt")
    state = lambda w: train.TrainState({"w": w}, {}, (), jax.numpy.zeros((), jax.numpy.int32), jax.random.key(0))  # noqa: E731
    run = lambda ts, d: (ts._replace(step=ts.step + 1), {"loss": jax.numpy.zeros(())})  # noqa: E731
    train.fit(state(jax.numpy.zeros(3)), run, None, chunks=1, checkpoint_dir=directory, progress=False)
    with pytest.raises(ValueError, match="params/w"):
        train.fit(state(jax.numpy.zeros(4)), run, None, chunks=2, checkpoint_dir=directory, progress=False)


def test_fit_without_resume_refuses_a_used_directory(tmp_path):
    directory = str(tmp_path / "ckpt")
    state = lambda: train.TrainState({"w": jax.numpy.zeros(3)}, {}, (), jax.numpy.zeros((), jax.numpy.int32),  # noqa: E731
                                     jax.random.key(0))
    run = lambda ts, d: (ts._replace(step=ts.step + 1), {"loss": jax.numpy.zeros(())})  # noqa: E731
    train.fit(state(), run, None, chunks=2, checkpoint_dir=directory, progress=False)
    with pytest.raises(FileExistsError, match=r"resume=False .* got steps \[1, 2\]"):
        train.fit(state(), run, None, chunks=2, checkpoint_dir=directory, resume=False, progress=False)
