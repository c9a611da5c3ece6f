"""experiments/transfer.py on a toy budget, and the pieces it rests on: the few-shot draw, the frozen trunk."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jdl
from experiments import transfer
from jdl import models


def test_shots_are_that_many_distinct_examples_of_each_class():
    labels = jnp.asarray(np.random.default_rng(0).integers(0, 5, 200), jnp.int32)
    picks = np.asarray(transfer.draw_shots(jax.random.key(3), labels, 4))
    assert len(set(picks.tolist())) == 20
    assert np.bincount(np.asarray(labels)[picks], minlength=5).tolist() == [4] * 5
    assert not np.array_equal(picks, np.asarray(transfer.draw_shots(jax.random.key(4), labels, 4)))


def test_frozen_trunk_moves_only_the_head():
    model = models.lenet5(5)
    x, y = jnp.ones((3, 32, 32, 1)), jnp.array([0, 1, 2])
    optimizer = transfer.optimizer_for("frozen", 1e-2, 1e-4)
    step = jdl.train.train_step(model, jdl.losses.softmax_cross_entropy_with_integer_labels, optimizer)
    before = jdl.train.init(model, optimizer, jax.random.key(0), x)
    after, _ = jax.jit(step)(before, (x, y))
    for name in before.params:
        changed = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before.params[name]),
                                                           jax.tree.leaves(after.params[name]))]
        assert all(changed) if name == transfer.HEAD else not any(changed), name


def test_the_trunk_is_the_pretrained_one_and_the_head_is_new():
    model = models.lenet5(5)
    x = jnp.ones((2, 32, 32, 1))
    optimizer = jdl.optim.adam(1e-3)
    fresh = jdl.train.init(model, optimizer, jax.random.key(0), x)
    pretrained = jdl.train.init(model, optimizer, jax.random.key(1), x).params
    start = transfer.with_pretrained_trunk(fresh, pretrained, fresh.state, optimizer)
    for name in fresh.params:
        source = fresh.params if name == transfer.HEAD else pretrained
        assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(start.params[name]),
                                                        jax.tree.leaves(source[name]))), name
    assert jax.tree.structure(start.opt_state) == jax.tree.structure(fresh.opt_state)


def test_toy_run_writes_its_table(tmp_path):
    output = transfer.main(["--pretrain-epochs", "2", "--steps", "20", "--evals", "4", "--num-seeds", "2",
                            "--shots", "5", "--out", str(tmp_path), "--no-progress"])
    with open(os.path.join(tmp_path, "transfer.json")) as f:
        saved = json.load(f)
    assert set(saved["ways"]) == {"scratch", "frozen", "fine_tune"}
    assert saved["pretrain_test_accuracy"] == pytest.approx(output["pretrain_test_accuracy"])
    assert saved["pretrain_test_accuracy"] > 0.5  # five classes: chance is 20%
    for way in saved["ways"].values():
        accuracy = np.asarray(way["curves"]["test_accuracy"])  # (evaluations, seeds)
        assert accuracy.shape == (4, 2) and way["test_accuracy_per_seed"] == accuracy[-1].tolist()
        assert way["test_accuracy"] == pytest.approx(accuracy[-1].mean())
    with open(os.path.join(tmp_path, "transfer.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_more_shots_than_images_are_refused():
    with pytest.raises(SystemExit, match="only"):
        transfer.main(["--shots", "1000", "--no-progress"])
