"""Compiled loops: many train steps per call, inside ``lax.scan``, compiled once.

A per-step Python loop pays the host's dispatch for every step, which dominates small
models. These loops run whole epochs (or a fixed number of sampled batches) in one XLA
program; the host is visited once per call.

* :func:`epoch_loop`: ``num_epochs`` shuffled passes over ``data`` (a pytree of arrays
  sharing a leading example axis, e.g. ``(x_train, y_train)``): epoch ``e``'s order is
  ``permutation(fold_in(streams(key).order, e), n)``, in batches of ``batch_size``, the
  last partial batch dropped (the epoch's batches are gathered at once: one copy of the
  data per epoch on the device). The epoch number is ``step // steps_per_epoch``, so a run
  split into calls (or resumed from a checkpoint) sees the same orders as one long call.
* :func:`sampled_loop`: ``num_steps`` steps, each on ``sample_batch(key, data)`` with
  ``key = fold_in(streams(key).sample, step)`` (random windows of a text, random rows).
* :func:`batch_loop`: one step per batch of a stack of batches (every leaf with a leading
  steps axis): data prepared elsewhere, e.g. a chunk of batches streamed from the host.
* :func:`compile_loop`: ``jax.jit`` with the train state donated (XLA updates params and
  optimizer state in place), optionally ``vmap``-ed over a stack of train states (an
  ensemble: every member sees the same data, each with its own key). Each distinct
  ``num_epochs`` is its own compilation; calls with the same shapes reuse it.

Example:
    >>> import jax, jax.numpy as jnp, jdl
    >>> from jdl import nn, optim
    >>> model, optimizer = nn.Dense(2), optim.sgd(0.1)
    >>> x, y = jnp.ones((10, 3)), jnp.zeros(10, jnp.int32)
    >>> step = jdl.train.train_step(model, jdl.losses.softmax_cross_entropy_with_integer_labels, optimizer)
    >>> run = jdl.train.compile_loop(jdl.train.epoch_loop(step, batch_size=4, num_epochs=3))
    >>> ts, metrics = run(jdl.train.init(model, optimizer, jax.random.key(0), x), (x, y))
    >>> int(ts.step), metrics["loss"].shape   # 3 epochs of 2 steps (the last 2 examples dropped)
    (6, (3, 2))
"""
from __future__ import annotations

from typing import Any, Callable

import jax

from jdl._checks import PositiveInt, check_that, checks_arguments
from jdl.train.state import TrainState, streams

__all__ = ["batch_loop", "epoch_loop", "sampled_loop", "compile_loop", "num_examples"]

Step = Callable[[TrainState, Any], tuple[TrainState, dict]]


def num_examples(where: str, data: Any) -> int:
    """The common leading size of ``data``'s leaves (checked: every leaf has it)."""
    sizes = {leaf.shape[0] if getattr(leaf, "ndim", 0) else None for leaf in jax.tree.leaves(data)}
    check_that(len(sizes) == 1 and None not in sizes, where,
               "data as a pytree of arrays with one leading example axis", f"leading sizes {sizes or 'none'}")
    return sizes.pop()


def _take(data: Any, index: jax.Array) -> Any:
    return jax.tree.map(lambda leaf: leaf[index], data)


@checks_arguments
def epoch_loop(step: Step, batch_size: PositiveInt, num_epochs: PositiveInt) -> Callable:
    """``run(train_state, data) -> (train_state, metrics)``: ``num_epochs`` shuffled epochs.

    ``metrics`` holds each step's metrics with shape ``(num_epochs, steps_per_epoch)``.
    """

    def run(train_state: TrainState, data: Any) -> tuple[TrainState, dict]:
        n = num_examples("jdl.train.epoch_loop", data)
        steps_per_epoch = n // batch_size
        check_that(steps_per_epoch > 0, "jdl.train.epoch_loop", f"at least batch_size={batch_size} examples",
                   n)

        def one_epoch(train_state, _):
            epoch = train_state.step // steps_per_epoch
            order = jax.random.permutation(jax.random.fold_in(streams(train_state.key).order, epoch), n)
            order = order[: steps_per_epoch * batch_size].reshape(steps_per_epoch, batch_size)
            # One gather per epoch, then a scan over ready batches: gathering inside each step
            # makes XLA's loop about twice as slow on CPU (benchmarks/train_loops.py).
            return jax.lax.scan(step, train_state, _take(data, order))

        return jax.lax.scan(one_epoch, train_state, None, length=num_epochs)

    return run


@checks_arguments
def sampled_loop(step: Step, sample_batch: Callable[[jax.Array, Any], Any], num_steps: PositiveInt) -> Callable:
    """``run(train_state, data) -> (train_state, metrics)``: ``num_steps`` steps on drawn batches.

    Step ``t`` trains on ``sample_batch(fold_in(streams(key).sample, t), data)``; ``metrics``
    has shape ``(num_steps,)``.
    """

    def one_step(data, train_state, _):
        key = jax.random.fold_in(streams(train_state.key).sample, train_state.step)
        return step(train_state, sample_batch(key, data))

    def run(train_state: TrainState, data: Any) -> tuple[TrainState, dict]:
        return jax.lax.scan(lambda ts, unused: one_step(data, ts, unused), train_state, None, length=num_steps)

    return run


def batch_loop(step: Step) -> Callable:
    """``run(train_state, batches) -> (train_state, metrics)``: one step per batch, along axis 0 of ``batches``."""

    def run(train_state: TrainState, batches: Any) -> tuple[TrainState, dict]:
        num_examples("jdl.train.batch_loop", batches)  # one steps axis shared by every leaf
        return jax.lax.scan(step, train_state, batches)

    return run


def compile_loop(run: Callable, *, ensemble: bool = False, shardings: Any = None) -> Callable:
    """``run`` jitted with its train state donated; with ``ensemble``, vmapped over the states' axis 0.

    The data argument is shared by every member (``in_axes=(0, None)``). A donated train
    state must not be used after the call: keep the returned one. ``shardings``: the train
    state's shardings on a device mesh (:func:`jdl.sharding.train_state_shardings`); the state
    goes in and comes out with exactly these (the data keeps the sharding it was placed with,
    :func:`jdl.sharding.shard_batch`), and XLA partitions the loop across the mesh.
    """
    check_that(not (ensemble and shardings is not None), "compile_loop", "ensemble or shardings (a sharded "
               "ensemble would need its members' axis in the shardings)", "both")
    if ensemble:
        run = jax.vmap(run, in_axes=(0, None))
    if shardings is not None:
        run = _pinned(run, shardings)
    return jax.jit(run, donate_argnums=0)


def _pinned(run: Callable, shardings: Any) -> Callable:
    """``run`` whose train state enters and leaves with ``shardings`` (XLA lays out the rest)."""

    def pinned_run(train_state, data):
        train_state = jax.lax.with_sharding_constraint(train_state, shardings)
        train_state, metrics = run(train_state, data)
        return jax.lax.with_sharding_constraint(train_state, shardings), metrics

    return pinned_run
