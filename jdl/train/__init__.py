"""Training from the library: a train state, pure steps, compiled loops and the host loop ``fit``.

Everything is a function over plain pytrees; there is no hidden state.

* :class:`TrainState` ``(params, state, opt_state, step, key)`` and :func:`init`;
* :func:`train_step` (a model and a per-example loss), :func:`gradient_step` (any
  objective), :func:`eval_step`: pure ``(train_state, batch) -> ...`` functions that jit,
  scan and vmap (an ensemble of seeds in one program);
* :func:`epoch_loop`, :func:`sampled_loop`, :func:`batch_loop`, :func:`compile_loop`: many steps per call
  inside ``lax.scan``, shuffled on the device, the train state donated, compiled once;
* :func:`fit`: the host loop: progress bar, evaluation, history, early stopping that
  restores the best state, the learning rate divided on a plateau (:func:`with_lr_factor`),
  checkpoints and resume (:mod:`jdl.checkpoint`), JSON-lines and TensorBoard logs;
* :mod:`jdl.train.loss_scale`: dynamic loss scaling for float16 training.

Example:
    >>> import jax, jax.numpy as jnp, jdl
    >>> from jdl import nn, optim
    >>> model = nn.Sequential([nn.Dense(16), nn.ReLU(), nn.Dense(2)])
    >>> x = jax.random.normal(jax.random.key(0), (128, 3)); y = (x.sum(-1) > 0).astype(jnp.int32)
    >>> optimizer, loss = optim.adam(1e-2), jdl.losses.softmax_cross_entropy_with_integer_labels
    >>> step = jdl.train.train_step(model, loss, optimizer)
    >>> run = jdl.train.compile_loop(jdl.train.epoch_loop(step, batch_size=32, num_epochs=10))
    >>> ts, metrics = run(jdl.train.init(model, optimizer, jax.random.key(1), x), (x, y))
    >>> bool(metrics["loss"][-1].mean() < metrics["loss"][0].mean())
    True
"""
from jdl.train import loss_scale
from jdl.train.fit import FitResult, Watch, fit
from jdl.train.loops import batch_loop, compile_loop, epoch_loop, num_examples, sampled_loop
from jdl.train.state import (
    LrFactorState, Streams, TrainState, init, lr_factor, scale_lr_factor, streams, with_lr_factor,
)
from jdl.train.steps import eval_step, gradient_step, step_key, train_step

__all__ = [
    "FitResult", "LrFactorState", "Streams", "TrainState", "Watch", "batch_loop", "compile_loop", "epoch_loop", "eval_step",
    "fit", "gradient_step", "loss_scale", "init", "lr_factor", "num_examples", "sampled_loop", "scale_lr_factor", "step_key",
    "streams", "train_step", "with_lr_factor",
]
