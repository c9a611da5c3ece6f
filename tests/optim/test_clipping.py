"""Clipping against optax and NumPy, leaf by leaf, for 200+ steps of random pytree gradients."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdl import optim

STEPS = 210
# vs optax: the same arithmetic in the same dtype (in practice bit-identical);
# vs NumPy (float64): float32 rounding, or bfloat16's 8-bit mantissa over a few operations
RTOL_OPTAX = {jnp.float32: 1e-6, jnp.bfloat16: 1e-6}
RTOL_NUMPY = {jnp.float32: 1e-5, jnp.bfloat16: 2e-2}

# nested dicts, lists and tuples; scalar, vector, matrix and 3-d leaves
SHAPES = {
    "encoder": {"w": (5, 4), "b": (4,)},
    "blocks": [{"scale": (), "pair": ((2, 3, 2), (6,))}],
    "head": ((4, 2),),
}
DTYPES = {
    "float32": lambda path_index: jnp.float32,
    "bfloat16": lambda path_index: jnp.bfloat16,
    "mixed": lambda path_index: (jnp.float32, jnp.bfloat16)[path_index % 2],
}

MAX_DELTA, MAX_NORM, LEAF_MAX_NORM, BLOCK_RMS = 0.6, 4.0, 1.5, 0.8


def _is_shape(x):
    return isinstance(x, tuple) and all(isinstance(n, int) for n in x)


def random_gradients(dtypes: str, seed: int = 0):
    """``STEPS`` random gradient pytrees stacked on a leading axis; per-step sizes span ~100x,
    so every rule clips at some steps and not at others."""
    rng = np.random.default_rng(seed)
    step_scale = np.exp(rng.uniform(np.log(0.1), np.log(10.0), size=STEPS))
    leaves, treedef = jax.tree.flatten(SHAPES, is_leaf=_is_shape)
    stacked = []
    for index, shape in enumerate(leaves):
        values = rng.normal(size=(STEPS, *shape)) * step_scale.reshape(-1, *[1] * len(shape))
        stacked.append(jnp.asarray(values, DTYPES[dtypes](index)))
    return jax.tree.unflatten(treedef, stacked)


PAIRS = {
    "clip": (optim.clip(MAX_DELTA), optax.clip(MAX_DELTA)),
    "global_norm": (optim.clip_by_global_norm(MAX_NORM), optax.clip_by_global_norm(MAX_NORM)),
    "block_rms": (optim.clip_by_block_rms(BLOCK_RMS), optax.clip_by_block_rms(BLOCK_RMS)),
}
LEAF_NORM = optim.clip_by_leaf_norm(LEAF_MAX_NORM)


@jax.jit
def run_all(grads):
    """One scan: every jdl rule and its optax twin on the same gradients, step by step."""
    example = jax.tree.map(lambda g: g[0], grads)
    states = {name: (ours.init(example), theirs.init(example)) for name, (ours, theirs) in PAIRS.items()}
    states["leaf_norm"] = LEAF_NORM.init(example)

    def step(states, g):
        outputs, new_states = {}, {}
        for name, (ours, theirs) in PAIRS.items():
            s_ours, s_theirs = states[name]
            u_ours, s_ours = ours.update(g, s_ours)
            u_theirs, s_theirs = theirs.update(g, s_theirs)
            outputs[name], new_states[name] = (u_ours, u_theirs), (s_ours, s_theirs)
        outputs["leaf_norm"], new_states["leaf_norm"] = LEAF_NORM.update(g, states["leaf_norm"])
        outputs["norms"] = (optim.global_norm(g), optax.tree.norm(g))
        return new_states, outputs

    return jax.lax.scan(step, states, grads)[1]


def _f64(x):
    return np.asarray(jnp.asarray(x, jnp.float32), np.float64)


def _assert_leaves_close(got_tree, expected_tree, rtol_of):
    assert jax.tree.structure(got_tree) == jax.tree.structure(expected_tree)
    for got, expected in zip(jax.tree.leaves(got_tree), jax.tree.leaves(expected_tree)):
        assert got.shape == expected.shape and got.dtype == expected.dtype
        rtol = rtol_of(got.dtype)
        np.testing.assert_allclose(_f64(got), _f64(expected), rtol=rtol, atol=rtol * 1e-3)


def _rtol(table):
    return lambda dtype: table[jnp.bfloat16 if dtype == jnp.bfloat16 else jnp.float32]


@pytest.fixture(scope="module", params=sorted(DTYPES))
def run(request):
    grads = random_gradients(request.param)
    return grads, run_all(grads)


def test_every_rule_matches_optax_leaf_by_leaf_at_every_step(run):
    grads, outputs = run
    for name in PAIRS:
        ours, theirs = outputs[name]
        # the trees hold all STEPS steps of every leaf
        _assert_leaves_close(ours, theirs, _rtol(RTOL_OPTAX))
        # guard: the rule clipped at some steps and left others alone
        changed = np.zeros(STEPS, bool)
        for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(ours)):
            changed |= np.any((_f64(g) != _f64(u)).reshape(STEPS, -1), axis=1)
        assert 0.1 < changed.mean() < 0.9, (name, changed.mean())


def test_global_norm_matches_optax_and_numpy(run):
    grads, outputs = run
    ours, theirs = outputs["norms"]
    np.testing.assert_allclose(_f64(ours), _f64(theirs), rtol=1e-6)
    flat = np.concatenate([_f64(g).reshape(STEPS, -1) for g in jax.tree.leaves(grads)], axis=1)
    bf16 = any(g.dtype == jnp.bfloat16 for g in jax.tree.leaves(grads))
    np.testing.assert_allclose(_f64(ours), np.linalg.norm(flat, axis=1), rtol=1e-2 if bf16 else 1e-6)


def test_global_norm_clipping_is_the_seed_rule(run):
    """Seed 002: g <- c g / ||g|| if ||g|| >= c, in float64 NumPy, for every leaf and step."""
    grads, outputs = run
    ours = outputs["global_norm"][0]
    flat = np.concatenate([_f64(g).reshape(STEPS, -1) for g in jax.tree.leaves(grads)], axis=1)
    norm = np.linalg.norm(flat, axis=1)
    factor = np.where(norm >= MAX_NORM, MAX_NORM / norm, 1.0)
    # one norm for all leaves: a bfloat16 leaf's sum of squares (bfloat16, as optax) sets its precision
    rtol = max(_rtol(RTOL_NUMPY)(g.dtype) for g in jax.tree.leaves(grads))
    for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(ours)):
        expected = _f64(g) * factor.reshape(-1, *[1] * (g.ndim - 1))
        np.testing.assert_allclose(_f64(u), expected, rtol=rtol, atol=rtol * 1e-2)
    clipped = np.concatenate([_f64(u).reshape(STEPS, -1) for u in jax.tree.leaves(ours)], axis=1)
    assert np.all(np.linalg.norm(clipped, axis=1) <= MAX_NORM * 1.02)


def test_leaf_norm_clipping_against_numpy(run):
    """Each leaf on its own: g_i <- c g_i / ||g_i|| if ||g_i|| >= c (float64 NumPy)."""
    grads, outputs = run
    ours = outputs["leaf_norm"]
    assert jax.tree.structure(ours) == jax.tree.structure(grads)
    clipped_leaves = 0
    for g, u in zip(jax.tree.leaves(grads), jax.tree.leaves(ours)):
        assert u.dtype == g.dtype and u.shape == g.shape
        values = _f64(g).reshape(STEPS, -1)
        norm = np.linalg.norm(values, axis=1, keepdims=True)
        expected = np.where(norm >= LEAF_MAX_NORM, values * LEAF_MAX_NORM / np.maximum(norm, 1e-300), values)
        rtol = 1e-2 if u.dtype == jnp.bfloat16 else 1e-6
        np.testing.assert_allclose(_f64(u).reshape(STEPS, -1), expected, rtol=rtol, atol=rtol * 1e-3)
        clipped_leaves += int(np.sum(norm >= LEAF_MAX_NORM))
    assert 0.1 < clipped_leaves / (STEPS * len(jax.tree.leaves(grads))) < 0.9


def test_leaf_norm_equals_block_rms_on_equal_sized_leaves():
    """The documented mapping: clip_by_leaf_norm(c) == optax.clip_by_block_rms(c / sqrt(n))."""
    rng = np.random.default_rng(1)
    n = 6
    both = jax.jit(lambda g: (optim.clip_by_leaf_norm(2.0).update(g, optim.EmptyState())[0],
                              optax.clip_by_block_rms(2.0 / np.sqrt(n)).update(g, optax.EmptyState())[0]))
    clipped = 0
    for scale in (0.1, 1.0, 10.0):
        grads = {"a": jnp.asarray(rng.normal(size=(2, 3)) * scale, jnp.float32),
                 "b": [jnp.asarray(rng.normal(size=(6,)) * scale * 3, jnp.float32)]}
        ours, theirs = both(grads)
        _assert_leaves_close(ours, theirs, lambda dtype: 1e-6)
        clipped += sum(not np.array_equal(u, g) for u, g in zip(jax.tree.leaves(ours), jax.tree.leaves(grads)))
    assert 0 < clipped < 6


def test_worked_examples():
    @jax.jit  # one compilation for all the examples
    def examples(grads):
        def apply(rule, g):
            return rule.update(g, rule.init(g))[0]

        return dict(
            norm=optim.global_norm(grads),
            clipped=apply(optim.clip_by_global_norm(1.0), grads),
            unchanged=apply(optim.clip_by_global_norm(5.5), grads),
            zeros=apply(optim.clip_by_global_norm(1.0), jax.tree.map(jnp.zeros_like, grads)),
            leafwise=apply(optim.clip_by_leaf_norm(2.0), grads),
            by_value=apply(optim.clip(1.0), grads),
        )

    grads = {"w": jnp.array([3.0, 0.0]), "b": [jnp.array([4.0])]}  # global norm 5
    out = examples(grads)
    assert float(out["norm"]) == 5.0
    np.testing.assert_allclose(out["clipped"]["w"], [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out["clipped"]["b"][0], [0.8], rtol=1e-6)
    np.testing.assert_array_equal(out["unchanged"]["w"], grads["w"])
    np.testing.assert_array_equal(out["zeros"]["w"], np.zeros(2))  # no 0/0
    np.testing.assert_allclose(out["leafwise"]["w"], [2.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(out["leafwise"]["b"][0], [2.0], rtol=1e-6)
    np.testing.assert_array_equal(out["by_value"]["w"], [1.0, 0.0])
    np.testing.assert_array_equal(out["by_value"]["b"][0], [1.0])


def test_clipping_inside_a_jdl_chain_matches_optax():
    rng = np.random.default_rng(2)
    params = {"w": jnp.asarray(rng.normal(size=(3, 3)), jnp.float32)}
    grads = {"w": jnp.asarray(rng.normal(size=(3, 3)) * 5, jnp.float32)}
    ours = optim.chain(optim.clip_by_global_norm(1.0), optim.scale_by_learning_rate(0.1))
    theirs = optax.chain(optax.clip_by_global_norm(1.0), optax.scale_by_learning_rate(0.1))
    u_ours, _ = ours.update(grads, ours.init(params), params)
    u_theirs, _ = theirs.update(grads, theirs.init(params), params)
    np.testing.assert_allclose(u_ours["w"], u_theirs["w"], rtol=1e-6)
    assert float(optim.global_norm(u_ours)) == pytest.approx(0.1, rel=1e-6)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: optim.clip(-1.0), "clip: expected max_delta >= 0, got -1.0"),
        (lambda: optim.clip_by_global_norm(-1.0), "clip_by_global_norm: expected max_norm > 0, got -1.0"),
        (lambda: optim.clip_by_global_norm(0.0), "clip_by_global_norm: expected max_norm > 0, got 0.0"),
        (lambda: optim.clip_by_leaf_norm(-2), "clip_by_leaf_norm: expected max_norm > 0, got -2"),
        (lambda: optim.clip_by_block_rms(0), "clip_by_block_rms: expected threshold > 0, got 0"),
    ],
)
def test_bad_thresholds_raise_naming_the_function(make, message):
    with pytest.raises(ValueError, match=message):
        make()


@pytest.mark.parametrize("name", ["clip", "clip_by_global_norm", "clip_by_leaf_norm", "clip_by_block_rms"])
def test_given_params_updates_of_other_shapes_are_refused(name):
    clipper = getattr(optim, name)(1.0)
    params = {"w": jnp.ones(2), "b": jnp.ones(())}
    bad = {"w": jnp.ones((1, 2)), "b": jnp.ones(())}  # was clipped and returned as (1, 2)
    message = rf"^{name}: expected updates\['w'\] of shape \(2,\) \(as params\), got \(1, 2\)"
    with pytest.raises(ValueError, match=message):
        clipper.update(bad, clipper.init(params), params)
    with pytest.raises(ValueError, match=rf"^{name}: expected updates with the tree structure of params"):
        clipper.update({"w": jnp.ones(2)}, clipper.init(params), params)
