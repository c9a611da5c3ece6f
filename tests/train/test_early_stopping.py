"""fit's early stopping on a run that overfits: MNIST-1D's MLP on 500 training examples."""
import jax
import jax.numpy as jnp
import numpy as np

import jdl
from experiments.common import mnist1d_dataset
from experiments.mnist1d import make_model


def test_early_stopping_on_an_overfitting_run_restores_the_best_params():
    data = mnist1d_dataset()
    train_data = (jnp.asarray(data["x_train"][:500]), jnp.asarray(data["y_train"][:500]))
    test_data = (jnp.asarray(data["x_test"]), jnp.asarray(data["y_test"]))
    model, optimizer = make_model("mlp"), jdl.optim.adam(1e-2)
    loss = jdl.losses.softmax_cross_entropy_with_integer_labels
    run = jdl.train.compile_loop(jdl.train.epoch_loop(jdl.train.train_step(model, loss, optimizer), 100, 4))
    evaluate = jax.jit(lambda ts: jdl.train.eval_step(model, loss, metrics={"accuracy": jdl.metrics.accuracy})(
        ts, test_data))
    result = jdl.train.fit(jdl.train.init(model, optimizer, jax.random.key(0), train_data[0]), run, train_data,
                           chunks=40, evaluate=evaluate, patience=4, progress=False)
    eval_loss = result.series("eval/loss")
    assert result.stopped_early and len(result.history) < 40
    best = int(np.argmin(eval_loss))
    assert len(result.history) == best + 1 + 4  # four evaluations without beating the best, then stop
    assert result.best_step == result.history[best]["step"] and result.best_value == eval_loss[best]
    assert eval_loss[-1] > eval_loss[best] and result.history[-1]["train/loss"] < result.history[best]["train/loss"]
    # The params returned are the best evaluation's: evaluating them gives its numbers exactly.
    restored = evaluate(result.train_state)
    assert int(result.train_state.step) == result.best_step
    assert float(restored["loss"]) == result.best_value
    assert float(restored["accuracy"]) == result.history[best]["eval/accuracy"]
