"""jdl's optimizers against their optax twins, leaf by leaf, at every one of 200 steps.

Each test runs every setting of one optimizer side by side with optax inside ONE jitted
function (a `lax.scan` over the steps per setting), on the same random pytree (nested
dicts, tuples and lists; scalar, vector and matrix leaves; float32 and bfloat16) with the
same random gradients (magnitudes from 0.05 to 7, 10% exact zeros), and compares every
leaf of the params after every step.

Tolerances: float32 rtol 1e-6 (atol 1e-7), bfloat16 rtol 1e-2 (atol 1e-3). jdl repeats
optax's order of operations, and on CPU both dtypes in fact agree bit for bit; the
bfloat16 slack only allows for a backend that fuses bfloat16 arithmetic differently.
"""
from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdl import optim

STEPS = 200
F32_TOLERANCE = dict(rtol=1e-6, atol=1e-7)
BF16_TOLERANCE = dict(rtol=1e-2, atol=1e-3)
# Compilation dominates these tests; LLVM's slower passes do not change IEEE results (no
# fast-math), and both sides are compiled alike, so the CPU runs skip them.
FAST_COMPILE = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None


# ---------------------------------------------------------------------------------------
# Shared by the optimizer tests (test_transform imports these)


def random_params(seed: int = 0):
    """A small pytree with every container kind, leaf rank and dtype the tests must cover."""
    rng = np.random.default_rng(seed)

    def normal(shape, dtype):
        return jnp.asarray(rng.normal(size=shape), dtype)

    # Four leaves only: compilation time grows with the number of leaves.
    return {
        "dense": {"w": normal((3, 4), jnp.float32), "b": normal((4,), jnp.bfloat16)},
        "extra": (normal((), jnp.float32), [normal((2, 3), jnp.bfloat16)]),
    }


def random_gradients(params, steps: int = STEPS, seed: int = 1):
    """Gradients for ``steps`` steps (leading axis), in each leaf's dtype."""
    rng = np.random.default_rng(seed)

    def leaf(p):
        shape = (steps,) + p.shape
        scale = np.exp(rng.uniform(-3.0, 2.0, size=(steps,) + (1,) * p.ndim))
        gradient = rng.normal(size=shape) * scale
        gradient[rng.uniform(size=shape) < 0.1] = 0.0
        return jnp.asarray(gradient, p.dtype)

    return jax.tree.map(leaf, params)


def side_by_side(pairs, params, gradients):
    """Run each ``(jdl_optimizer, optax_optimizer)`` pair over the gradients in one jit.

    Returns one ``(jdl_params_per_step, optax_params_per_step)`` per pair.
    """

    def run_pair(pair, params, gradients):
        mine, theirs = pair

        def step(carry, g):
            my_params, my_state, their_params, their_state = carry
            my_updates, my_state = mine.update(g, my_state, my_params)
            their_updates, their_state = theirs.update(g, their_state, their_params)
            my_params = optim.apply_updates(my_params, my_updates)
            their_params = optax.apply_updates(their_params, their_updates)
            return (my_params, my_state, their_params, their_state), (my_params, their_params)

        start = (params, mine.init(params), params, theirs.init(params))
        return jax.lax.scan(step, start, gradients)[1]

    @jax.jit(compiler_options=FAST_COMPILE)
    def run(params, gradients):
        return [run_pair(pair, params, gradients) for pair in pairs]

    return run(params, gradients)


def assert_same_trajectories(mine, theirs, label: str, start=None) -> None:
    """Every leaf at every step agrees; the runs are finite and actually moved."""
    their_leaves = jax.tree.leaves(theirs)
    for (path, my_leaf), their_leaf in zip(jax.tree_util.tree_leaves_with_path(mine), their_leaves, strict=True):
        where = f"{label}, leaf {jax.tree_util.keystr(path)}"
        assert my_leaf.dtype == their_leaf.dtype, where
        tolerance = BF16_TOLERANCE if my_leaf.dtype == jnp.bfloat16 else F32_TOLERANCE
        mine_np = np.asarray(my_leaf, np.float32)
        theirs_np = np.asarray(their_leaf, np.float32)
        assert np.all(np.isfinite(theirs_np)), f"{where}: the reference run is not finite"
        np.testing.assert_allclose(mine_np, theirs_np, err_msg=where, **tolerance)
    if start is not None:  # a comparison of two runs that never moved would prove nothing
        moved = [
            (np.max(np.abs(np.asarray(last, np.float32) - np.asarray(first, np.float32))), first.dtype)
            for first, last in zip(jax.tree.leaves(start), jax.tree.leaves(jax.tree.map(lambda x: x[-1], mine)))
        ]
        assert max(distance for distance, _ in moved) > 1e-3, f"{label}: the params hardly moved"
        # (bfloat16 leaves may legitimately stand still: a step below half an ulp rounds away)
        assert all(distance > 1e-6 for distance, dtype in moved if dtype == jnp.float32), label


def check_against_optax(settings, seed: int = 0, params=None):
    """``settings``: a list of ``(label, jdl_optimizer, optax_optimizer)``."""
    params = random_params(seed) if params is None else params
    gradients = random_gradients(params, seed=seed + 1)
    results = side_by_side([(mine, theirs) for _, mine, theirs in settings], params, gradients)
    for (label, _, _), (mine, theirs) in zip(settings, results):
        assert_same_trajectories(mine, theirs, label, start=params)


def both(name, *args, **kwargs):
    """``(label, jdl.optim.<name>(...), optax.<name>(...))`` with the same arguments."""
    label = f"{name}({', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])})"
    return label, getattr(optim, name)(*args, **kwargs), getattr(optax, name)(*args, **kwargs)


SCHEDULE = optax.linear_schedule(init_value=0.1, end_value=0.001, transition_steps=150)


def bias_free_mask(params):
    return jax.tree.map(lambda x: x.ndim > 1, params)


# ---------------------------------------------------------------------------------------
# Every optimizer against optax


def test_sgd_matches_optax():
    check_against_optax([
        both("sgd", 0.1),
        both("sgd", 0.05, momentum=0.9),
        both("sgd", 0.05, momentum=0.9, nesterov=True),
        both("sgd", SCHEDULE, momentum=0.5),
        both("sgd", 0.05, momentum=0.9, accumulator_dtype=jnp.bfloat16),
    ])


def test_moving_average_momentum_is_optax_ema():
    """seeds/001's m = b m + (1 - b) g is optax's ema without debiasing, then the rate."""
    settings = []
    for learning_rate, decay in [(0.1, 0.9), (SCHEDULE, 0.5)]:
        settings.append((
            f"sgd({learning_rate}, {decay}, moving_average=True)",
            optim.sgd(learning_rate, decay, moving_average=True),
            optax.chain(optax.ema(decay, debias=False), optax.scale_by_learning_rate(learning_rate)),
        ))
    check_against_optax(settings)


def test_adagrad_matches_optax():
    check_against_optax([
        both("adagrad", 0.1),
        both("adagrad", 0.5, initial_accumulator_value=0.0, eps=1e-10),
        both("adagrad", SCHEDULE, initial_accumulator_value=1.0, eps=1e-3),
    ])


def test_rmsprop_matches_optax():
    check_against_optax([
        both("rmsprop", 0.01),
        both("rmsprop", 0.01, decay=0.95, eps=1e-6, initial_scale=1.0, eps_in_sqrt=False),
        both("rmsprop", 0.01, centered=True),
        both("rmsprop", 0.01, momentum=0.9, nesterov=True, bias_correction=True),
        # Centred with bias correction (or eps outside the root) gives NaN on bfloat16 leaves in
        # both libraries: rounding makes E[g^2] - E[g]^2 < 0. test_transform covers it in float32.
        both("rmsprop", SCHEDULE, centered=True, momentum=0.5, eps=1e-6),
    ])


def test_adadelta_matches_optax():
    check_against_optax([
        both("adadelta", 1.0),
        both("adadelta", 0.5, rho=0.95, eps=1e-4, weight_decay=1e-2, weight_decay_mask=bias_free_mask),
        both("adadelta", SCHEDULE, rho=0.5, eps=1e-5),
        ("adadelta() vs optax.adadelta(1.0)", optim.adadelta(), optax.adadelta(1.0)),
    ])


def test_adadelta_without_learning_rate_descends_where_optax_ascends():
    """The documented difference: optax's adadelta(None) drops the minus sign."""
    params = jnp.array([1.0, -2.0])
    gradient = 2 * params  # of sum(w^2)
    mine, theirs = optim.adadelta(), optax.adadelta()
    my_updates, _ = mine.update(gradient, mine.init(params), params)
    their_updates, _ = theirs.update(gradient, theirs.init(params), params)
    assert np.all(np.sign(my_updates) == -np.sign(gradient))
    np.testing.assert_array_equal(my_updates, -their_updates)


def test_adam_matches_optax():
    check_against_optax([
        both("adam", 1e-2),
        both("adam", SCHEDULE, b1=0.5, b2=0.9, eps=1e-6, eps_root=1e-8),
        both("adam", 1e-2, b1=0.0, b2=0.99),
        both("adam", 1e-2, mu_dtype=jnp.bfloat16),
    ])


def test_nadam_matches_optax():
    check_against_optax([
        both("nadam", 1e-2),
        both("nadam", SCHEDULE, b1=0.8, b2=0.99, eps=1e-6, eps_root=1e-8),
        ("adam(nesterov=True) vs optax", optim.adam(1e-2, nesterov=True), optax.adam(1e-2, nesterov=True)),
    ])


def test_adamw_matches_optax():
    prefix_mask = {"dense": {"w": True, "b": False}, "extra": (False, True)}  # a prefix of the params tree
    check_against_optax([
        both("adamw", 1e-2),
        both("adamw", 1e-2, weight_decay=0.1, mask=bias_free_mask),
        both("adamw", SCHEDULE, b1=0.8, weight_decay=optax.linear_schedule(0.1, 0.0, 100), mask=prefix_mask),
        both("adamw", 1e-2, weight_decay=0.05, nesterov=True),
    ])


def test_normalized_sgd_is_adam_without_averaging():
    """seeds/001's normalized gradients m / (sqrt(v) + eps), m = g, v = g^2: optax.adam(b1=b2=0)."""
    check_against_optax([
        ("normalized_sgd(0.01)", optim.normalized_sgd(0.01), optax.adam(0.01, b1=0.0, b2=0.0)),
        ("normalized_sgd(schedule, eps=0.1)", optim.normalized_sgd(SCHEDULE, eps=0.1),
         optax.adam(SCHEDULE, b1=0.0, b2=0.0, eps=0.1)),
    ])


# ---------------------------------------------------------------------------------------
# Same names, arguments and defaults as optax: switching is one import

OPTAX_TWINS = ["sgd", "adagrad", "adadelta", "rmsprop", "adam", "nadam", "adamw"]


@pytest.mark.parametrize("name", OPTAX_TWINS)
def test_signature_mirrors_optax(name):
    mine = inspect.signature(getattr(optim, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    theirs = {key: value for key, value in theirs.items() if not (name == "nadam" and key == "nesterov")}
    positional = [key for key, p in theirs.items() if p.kind == p.POSITIONAL_OR_KEYWORD]
    assert [key for key, p in mine.items() if p.kind == p.POSITIONAL_OR_KEYWORD] == positional
    for key, parameter in theirs.items():
        assert key in mine, f"{name} lacks optax's argument {key}"
        assert mine[key].default == parameter.default, f"{name}({key}=...) default differs from optax's"


def test_optimizers_run_under_jit_with_a_traced_learning_rate():
    """A learning rate given as a scalar array (e.g. from a hyperparameter sweep under vmap)."""
    params = {"w": jnp.ones(3)}

    @jax.jit
    def step(learning_rate):
        optimizer = optim.adam(learning_rate)
        updates, _ = optimizer.update({"w": jnp.ones(3)}, optimizer.init(params), params)
        return updates["w"]

    np.testing.assert_allclose(step(jnp.float32(0.5)), -0.5 * jnp.ones(3), rtol=1e-5)


# ---------------------------------------------------------------------------------------
# Bad input: a ValueError that names the optimizer, raised when the optimizer is built or
# (structure) when update is traced

BUILDERS = {
    "sgd": lambda **kw: optim.sgd(kw.pop("learning_rate", 0.1), momentum=kw.pop("momentum", 0.9), **kw),
    "nesterov_lookahead": lambda **kw: optim.nesterov_lookahead(kw.pop("learning_rate", 0.1), **kw),
    "normalized_sgd": lambda **kw: optim.normalized_sgd(kw.pop("learning_rate", 0.1), **kw),
    "adagrad": lambda **kw: optim.adagrad(kw.pop("learning_rate", 0.1), **kw),
    "adadelta": lambda **kw: optim.adadelta(kw.pop("learning_rate", 0.1), **kw),
    "rmsprop": lambda **kw: optim.rmsprop(kw.pop("learning_rate", 0.1), **kw),
    "adam": lambda **kw: optim.adam(kw.pop("learning_rate", 0.1), **kw),
    "nadam": lambda **kw: optim.nadam(kw.pop("learning_rate", 0.1), **kw),
    "adamw": lambda **kw: optim.adamw(kw.pop("learning_rate", 0.1), **kw),
}


@pytest.mark.parametrize("name", BUILDERS)
def test_negative_learning_rate_is_rejected(name):
    with pytest.raises(ValueError, match=rf"^{name}: .*expected learning_rate >= 0, got -0.1"):
        BUILDERS[name](learning_rate=-0.1)


@pytest.mark.parametrize("value", [float("inf"), float("nan"), jnp.array(jnp.inf)])
def test_non_finite_hyperparameters_are_rejected(value):
    """inf or nan as a learning rate (or any other hyperparameter) would only fill the params
    with inf or nan at the first step: refused when built, naming the setting."""
    message = f"to be a finite number, got {float(value)}"
    with pytest.raises(ValueError, match=rf"^adam: scale_by_learning_rate: expected learning_rate {message}"):
        optim.adam(value)
    with pytest.raises(ValueError, match=rf"^adam: scale_by_adam: expected eps {message}"):
        optim.adam(0.1, eps=value)
    with pytest.raises(ValueError, match=rf"^sgd: trace: expected decay {message}"):
        optim.sgd(0.1, momentum=value)
    with pytest.raises(ValueError, match=rf"^adamw: add_decayed_weights: expected weight_decay {message}"):
        optim.adamw(0.1, weight_decay=value)
    with pytest.raises(ValueError, match=rf"^clip_by_global_norm: expected max_norm {message}"):
        optim.clip_by_global_norm(value)


def test_adam_with_eps_zero_gives_nan_on_a_zero_gradient_as_documented():
    """eps = eps_root = 0 is allowed (the course's forms use it; optax allows it), and a
    coordinate whose gradients have all been 0 then gives 0 / 0 = NaN, which is shown, not
    hidden (apply_if_finite would skip the step). Any eps > 0 gives 0."""
    grads = jnp.array([0.0, 2.0])
    for eps, expected in [(0.0, [np.nan, -0.1]), (1e-8, [0.0, -0.1])]:
        optimizer = optim.adam(0.1, eps=eps)
        updates, _ = optimizer.update(grads, optimizer.init(jnp.zeros(2)))
        np.testing.assert_allclose(np.asarray(updates), expected, rtol=1e-5)


@pytest.mark.parametrize("name", ["adam", "nadam", "adamw"])
@pytest.mark.parametrize("argument", ["b1", "b2"])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5])
def test_adam_decay_rates_outside_unit_interval_are_rejected(name, argument, value):
    with pytest.raises(ValueError, match=rf"^{name}: .*expected {argument} in \[0, 1\), got {value}"):
        BUILDERS[name](**{argument: value})


@pytest.mark.parametrize("name, arguments, message", [
    ("sgd", dict(momentum=1.0), "decay in"),
    ("nesterov_lookahead", dict(momentum=-0.5), "decay in"),
    ("rmsprop", dict(decay=1.0), "decay in"),
    ("rmsprop", dict(momentum=1.2), "decay in"),
    ("adadelta", dict(rho=1.0), "rho in"),
    ("adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value >= 0"),
    ("adagrad", dict(eps=-1e-7), "eps >= 0"),
    ("adam", dict(eps_root=-1.0), "eps_root >= 0"),
    ("adam", dict(nesterov_form="keras"), "nesterov_form in"),
    ("adamw", dict(weight_decay=-1e-4), "weight_decay >= 0"),
    ("normalized_sgd", dict(eps=-1.0), "eps >= 0"),
])
def test_other_bad_hyperparameters_are_rejected(name, arguments, message):
    with pytest.raises(ValueError, match=rf"^{name}: .*{message}"):
        BUILDERS[name](**arguments)


def test_nesterov_without_momentum_is_rejected():
    with pytest.raises(ValueError, match=r"^sgd: expected a momentum value with nesterov=True"):
        optim.sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"^rmsprop: expected a momentum value with nesterov=True"):
        optim.rmsprop(0.1, nesterov=True)


def test_learning_rate_of_the_wrong_type_is_rejected():
    with pytest.raises(TypeError, match=r"^adam: .*expected learning_rate to be a number or a schedule"):
        optim.adam("0.1")


@pytest.mark.parametrize("name", [name for name in BUILDERS if name != "normalized_sgd"])
def test_gradients_with_another_tree_structure_are_rejected(name):
    params = {"w": jnp.ones((2, 3)), "b": jnp.zeros(3)}
    optimizer = BUILDERS[name]()
    state = optimizer.init(params)
    wrong_structure = {"w": jnp.ones((2, 3)), "bias": jnp.zeros(3)}
    with pytest.raises(ValueError, match=rf"^{name}: .*expected updates with the tree structure"):
        optimizer.update(wrong_structure, state, params)
    with pytest.raises(ValueError, match=rf"^{name}: .*expected updates\['w'\] of shape \(2, 3\).*got \(3,\)"):
        optimizer.update({"w": jnp.ones(3), "b": jnp.zeros(3)}, state, params)
    with pytest.raises(ValueError, match=rf"^{name}: .*tree structure"):  # also at trace time under jit
        jax.jit(optimizer.update)(wrong_structure, state, params)


def test_normalized_sgd_checks_gradients_against_params():
    optimizer = optim.normalized_sgd(0.1)
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match=r"^normalized_sgd: .*tree structure of params"):
        optimizer.update({"v": jnp.ones(3)}, optimizer.init(params), params)
