"""jdl.ensembles: stacked init and apply against members run one by one, averaging, bootstrap resamples, errors."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import ensembles, nn

MODEL = nn.Sequential([nn.Dense(8), nn.BatchNorm(), nn.ReLU(), nn.Dropout(0.5), nn.Dense(3)])
X = np.random.default_rng(0).standard_normal((6, 4)).astype(np.float32)
KEY = jax.random.key(7)
SIZE = 4


def _member(tree, m):
    return jax.tree.map(lambda leaf: leaf[m], tree)


def _assert_trees_equal(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    jax.tree.map(np.testing.assert_array_equal, a, b)


@jax.jit
def _one_member(params, state, x, key):
    """One member run on its own: eval outputs, and train outputs with its dropout key."""
    evaluated, _ = MODEL.apply(params, state, x)
    trained, new_state = MODEL.apply(params, state, x, key=key, train=True)
    return evaluated, trained, new_state


@jax.jit
def _ensemble(params, state, x, key):
    evaluated, _ = ensembles.ensemble_apply(MODEL, params, state, x)
    trained, new_state = ensembles.ensemble_apply(MODEL, params, state, x, key=key, train=True)
    per_member_x, _ = ensembles.ensemble_apply(MODEL, params, state, jnp.stack([x * (m + 1) for m in range(SIZE)]),
                                               stacked_inputs=True)
    averages = {kind: ensembles.average_predictions(evaluated, kind) for kind in ("probabilities", "logits", "mean")}
    return evaluated, trained, new_state, per_member_x, averages


@jax.jit
def _inits(key, x):
    """The ensemble of SIZE, the ensemble of 1, and the first and last members' own ``MODEL.init(fold_in(key, m), x)``."""
    return (ensembles.init_ensemble(MODEL, key, x, SIZE), ensembles.init_ensemble(MODEL, key, x, 1),
            {m: MODEL.init(jax.random.fold_in(key, m), x) for m in (0, SIZE - 1)})


@functools.cache
def _all_inits():
    return _inits(KEY, X)


def _stacked():
    return _all_inits()[0]


def test_init_stacks_each_members_own_init():
    (params, state), one, singles = _all_inits()
    assert params["dense_0"]["w"].shape == (SIZE, 4, 8) and state["batch_norm_1"]["mean"].shape == (SIZE, 8)
    for m, single in singles.items():
        _assert_trees_equal(_member((params, state), m), single)
    # size 1 is the model's own init with fold_in(key, 0), on a leading axis of 1; a larger ensemble keeps it.
    _assert_trees_equal(_member(one, 0), singles[0])
    assert one[0]["dense_4"]["b"].shape == (1, 3)
    assert not np.array_equal(params["dense_0"]["w"][0], params["dense_0"]["w"][1])  # members differ


def test_apply_and_averages_equal_the_members_run_one_by_one():
    params, state = _stacked()
    dropout_key = jax.random.key(3)
    evaluated, trained, new_state, per_member_x, averages = _ensemble(params, state, X, dropout_key)
    assert evaluated.shape == (SIZE, 6, 3)
    singles = [_one_member(*_member((params, state), m), X, jax.random.fold_in(dropout_key, m)) for m in range(SIZE)]
    for m, (single_eval, single_train, single_state) in enumerate(singles):
        np.testing.assert_allclose(evaluated[m], single_eval, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(trained[m], single_train, rtol=1e-6, atol=1e-6)  # member m's own dropout key
        jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-6), _member(new_state, m),
                     single_state)
        single_scaled = _one_member(*_member((params, state), m), X * (m + 1), dropout_key)[0]
        np.testing.assert_allclose(per_member_x[m], single_scaled, rtol=1e-6, atol=1e-6)
    assert not np.array_equal(trained[0] != 0, trained[1] != 0)  # different dropout masks
    logits = np.stack([single[0] for single in singles])
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    np.testing.assert_allclose(averages["probabilities"], probabilities.mean(0), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(averages["logits"], logits.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(averages["mean"], logits.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(averages["probabilities"].sum(-1), 1.0, rtol=1e-6)


def test_average_of_a_nan_member_is_nan():
    outputs = jnp.array([[[0.0, 1.0]], [[jnp.nan, 1.0]]])
    assert np.isnan(np.asarray(ensembles.average_predictions(outputs))).all()


N, MEMBERS = 2000, 50


@jax.jit
def _bootstrap(key, data):
    boot = ensembles.bootstrap_samples(key, data, MEMBERS)
    return boot, ensembles.out_of_bag(boot.indices, N), ensembles.bootstrap_indices(key, N, 3)


def test_bootstrap_resamples_with_replacement_of_the_same_size():
    data = {"x": np.arange(2 * N, dtype=np.float32).reshape(N, 2), "y": np.arange(N, dtype=np.int32)}
    boot, out_of_bag, first_three = jax.tree.map(np.asarray, _bootstrap(KEY, data))
    indices = boot.indices
    assert indices.shape == (MEMBERS, N) and indices.dtype == np.int32
    assert indices.min() >= 0 and indices.max() < N
    np.testing.assert_array_equal(boot.data["y"], indices)  # y is the example's index: labels follow their inputs
    np.testing.assert_array_equal(boot.data["x"], data["x"][indices])
    unique = np.array([len(np.unique(row)) / N for row in indices])
    assert (unique < 1).all()  # duplicates in every resample
    # E[unique fraction] = 1 - (1 - 1/n)^n = 0.6322 for n = 2000; the mean of 50 has a standard error ~0.001.
    assert abs(unique.mean() - (1 - (1 - 1 / N) ** N)) < 0.006
    for m in (0, MEMBERS - 1):
        expected = np.ones(N, bool)
        expected[indices[m]] = False
        np.testing.assert_array_equal(out_of_bag[m], expected)
    # Member m's resample depends on fold_in(key, m) only: three members are the first three of fifty.
    np.testing.assert_array_equal(first_three, indices[:3])
    assert not np.array_equal(indices[0], indices[1])
    again, _, _ = _bootstrap(KEY, data)
    np.testing.assert_array_equal(again.indices, indices)
    other, _, _ = _bootstrap(jax.random.key(8), data)
    assert not np.array_equal(other.indices, indices)


@pytest.mark.parametrize("call, error, message", [
    (lambda: ensembles.init_ensemble(lambda x: x, KEY, X, 2), TypeError,
     r"^init_ensemble: expected model to be a jdl.nn.Layer, got function"),
    (lambda: ensembles.init_ensemble(MODEL, KEY, X, 0), ValueError, r"^init_ensemble: expected size to be a positive int, got 0"),
    (lambda: ensembles.init_ensemble(MODEL, None, X, 2), TypeError, r"^init_ensemble: expected key to be one PRNG key"),
    (lambda: ensembles.ensemble_apply(MODEL, *_stacked(), X, train=True), ValueError,
     r"Dropout\(rate=0.5\): train=True needs a PRNG key"),  # the model's own check, per member
    (lambda: ensembles.ensemble_apply(nn.ReLU(), {}, {}, X), ValueError,
     r"^ensemble_apply: expected stacked params or state .*got no arrays"),
    (lambda: ensembles.ensemble_apply(nn.Dense(2), {"w": jnp.ones((2, 4, 2)), "b": jnp.ones((3, 2))}, {}, X),
     ValueError, r"^ensemble_apply: expected every params and state leaf with the same leading member axis.*\[2, 3\]"),
    (lambda: ensembles.ensemble_apply(nn.Dense(2), {"w": jnp.ones((2, 4, 2)), "b": jnp.ones((2, 2))}, {}, X,
                                      stacked_inputs=True),
     ValueError, r"^ensemble_apply: expected inputs stacked on a leading member axis of size 2"),
    (lambda: ensembles.ensemble_apply(nn.Dense(2), {"w": jnp.ones((2, 5, 2)), "b": jnp.ones((2, 2))}, {}, X),
     ValueError, r"Dense\(features=2\)"),  # the model's own check, per member
    (lambda: ensembles.average_predictions(jnp.ones((2, 3)), "median"), ValueError,
     r"^average_predictions: expected kind in \('probabilities', 'logits', 'mean'\), got 'median'"),
    (lambda: ensembles.average_predictions(jnp.ones((2, 3), int)), TypeError,
     r"^average_predictions: expected a floating-point outputs, got int32"),
    (lambda: ensembles.average_predictions(jnp.ones((2,))), ValueError,
     r"^average_predictions: expected outputs of rank >= 2 \(members, ..., classes\)"),
    (lambda: ensembles.bootstrap_indices(KEY, 0, 3), ValueError,
     r"^bootstrap_indices: expected num_examples to be a positive int, got 0"),
    (lambda: ensembles.bootstrap_samples(KEY, {"x": jnp.ones((5, 2)), "y": jnp.ones(4)}, 3), ValueError,
     r"^bootstrap_samples: expected data arrays with the same number of examples .*got leading axes \[4, 5\]"),
    (lambda: ensembles.bootstrap_samples(KEY, {}, 3), ValueError, r"^bootstrap_samples: expected data with at least one array"),
    (lambda: ensembles.out_of_bag(jnp.ones((2, 3)), 3), TypeError, r"^out_of_bag: expected integer indices"),
])
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
