"""Schedules against optax at every step, the seed's linear decay, worked examples, errors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdl import optim

RTOL = 1e-6  # float32; the arithmetic mirrors optax's, so most steps agree exactly
STEPS = 260  # every setting below ends (or shows its behaviour) well before this


def _values(schedule, steps=STEPS):
    """The schedule at steps 0..steps-1, each evaluated on its own int32 scalar count."""
    return np.asarray(jax.vmap(schedule)(jnp.arange(steps, dtype=jnp.int32)))


# (jdl schedule, optax schedule) pairs: the same constructor name and arguments on both sides
SETTINGS = {
    "constant": ("constant_schedule", dict(value=0.3)),
    "linear": ("linear_schedule", dict(init_value=0.1, end_value=0.001, transition_steps=200)),
    "linear_begin": (
        "linear_schedule", dict(init_value=1.0, end_value=0.01, transition_steps=77, transition_begin=40)),
    "linear_up": ("linear_schedule", dict(init_value=0.0, end_value=3e-4, transition_steps=13)),
    "linear_zero_steps": ("linear_schedule", dict(init_value=0.5, end_value=0.1, transition_steps=0)),
    "polynomial": (
        "polynomial_schedule",
        dict(init_value=1.0, end_value=1e-3, power=2.5, transition_steps=150, transition_begin=7)),
    "exponential": ("exponential_decay", dict(init_value=0.2, transition_steps=30, decay_rate=0.7)),
    "exponential_begin": (
        "exponential_decay", dict(init_value=0.2, transition_steps=17, decay_rate=0.9, transition_begin=25)),
    "staircase": (
        "exponential_decay", dict(init_value=1.0, transition_steps=20, decay_rate=0.5, staircase=True)),
    "exponential_floor": (
        "exponential_decay", dict(init_value=1.0, transition_steps=10, decay_rate=0.8, end_value=0.05)),
    "exponential_growth_cap": (
        "exponential_decay",
        dict(init_value=1e-3, transition_steps=10, decay_rate=1.3, end_value=0.02, staircase=True)),
    "cosine": ("cosine_decay_schedule", dict(init_value=0.1, decay_steps=200)),
    "cosine_alpha_exponent": (
        "cosine_decay_schedule", dict(init_value=2.0, decay_steps=123, alpha=0.05, exponent=2.0)),
    "warmup_cosine": (
        "warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=1e-3, warmup_steps=20, decay_steps=220)),
    "warmup_cosine_end": (
        "warmup_cosine_decay_schedule",
        dict(init_value=1e-4, peak_value=0.5, warmup_steps=33, decay_steps=180, end_value=0.01, exponent=1.5)),
    "warmup_cosine_no_warmup": (
        "warmup_cosine_decay_schedule", dict(init_value=0.0, peak_value=0.1, warmup_steps=0, decay_steps=100)),
    "piecewise": (
        "piecewise_constant_schedule", dict(init_value=0.1, boundaries_and_scales={50: 0.5, 120: 0.1, 200: 0.3})),
    "piecewise_unsorted": (
        "piecewise_constant_schedule", dict(init_value=1.0, boundaries_and_scales={150: 0.1, 0: 2.0, 75: 0.25})),
    "piecewise_none": ("piecewise_constant_schedule", dict(init_value=0.7)),
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_schedule_matches_optax_at_every_step(name):
    maker, kwargs = SETTINGS[name]
    ours = getattr(optim, maker)(**kwargs)
    theirs = getattr(optax, maker)(**kwargs)
    got, expected = _values(ours), _values(theirs)
    assert got.shape == expected.shape == (STEPS,)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=0)
    # Python-int steps (optax treats these differently from int32 ones in places).
    for step in (0, 1, 19, 20, 21, 199, 200, 201, 10_000):
        np.testing.assert_allclose(np.float32(ours(step)), np.float32(theirs(step)), rtol=RTOL, atol=0)


def test_settings_change_over_the_steps():
    """Guard: every non-constant setting takes several values in the compared range."""
    constant = {"constant", "linear_zero_steps", "piecewise_none"}
    for name, (maker, kwargs) in SETTINGS.items():
        distinct = len(np.unique(_values(getattr(optim, maker)(**kwargs))))
        assert (distinct == 1) if name in constant else (distinct >= 3), name


def test_join_schedules_matches_optax():
    def parts(lib):
        return [lib.constant_schedule(0.5), lib.linear_schedule(0.5, 0.1, 40), lib.exponential_decay(0.1, 10, 0.8)]

    ours = optim.join_schedules(parts(optim), [30, 100])
    theirs = optax.join_schedules(parts(optax), [30, 100])
    np.testing.assert_allclose(_values(ours), _values(theirs), rtol=RTOL, atol=0)


# ---------------------------------------------------------------------------------------
# The seed's linear decay: eps_k = (1 - k/T) eps_0 + (k/T) eps_T, held at eps_T after T


def seed_linear_decay(eps_0, eps_T, T, k, begin=0):
    """Seed 003 transcribed in float64: alpha = k/T, eps_k = (1-alpha) eps_0 + alpha eps_T, k > T held."""
    k = np.maximum(np.asarray(k, np.float64) - begin, 0.0)
    alpha = np.minimum(k / T, 1.0)
    return (1.0 - alpha) * eps_0 + alpha * eps_T


@pytest.mark.parametrize(
    "eps_0, eps_T, T, begin",
    [(0.1, 0.001, 200, 0), (0.5, 1e-4, 37, 0), (1.0, 0.0, 150, 20), (0.01, 0.05, 64, 3), (3e-4, 3e-5, 1, 0)],
)
def test_linear_schedule_is_the_seed_formula(eps_0, eps_T, T, begin):
    steps = np.arange(STEPS)
    expected = seed_linear_decay(eps_0, eps_T, T, steps, begin)
    got = _values(optim.linear_schedule(eps_0, eps_T, T, transition_begin=begin))
    # float32 rounding of k/T is ~6e-8 of the range |eps_0 - eps_T|, not of the value
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=2**-23 * max(abs(eps_0), abs(eps_T)))
    # at and past T the value is held at eps_T, exactly
    past_end = steps >= begin + T
    assert past_end.sum() > 10
    assert np.all(got[past_end] == np.float32(eps_T))
    if begin:  # held at eps_0 up to the start ((eps_0 - eps_T) + eps_T: one float32 rounding)
        np.testing.assert_allclose(got[: begin + 1], eps_0, rtol=RTOL)


# ---------------------------------------------------------------------------------------
# Worked examples


def _at(schedule, steps):
    return [round(float(schedule(k)), 6) for k in steps]


def test_worked_examples():
    assert _at(optim.constant_schedule(0.25), (0, 7, 10**6)) == [0.25, 0.25, 0.25]
    assert _at(optim.linear_schedule(1.0, 0.01, 100), (0, 25, 50, 100, 150)) == [1.0, 0.7525, 0.505, 0.01, 0.01]
    delayed = optim.linear_schedule(0.0, 1.0, 4, transition_begin=2)
    assert _at(delayed, (0, 2, 3, 5, 6, 9)) == [0.0, 0.0, 0.25, 0.75, 1.0, 1.0]
    assert _at(optim.exponential_decay(1.0, 10, 0.5), (0, 10, 20, 30)) == [1.0, 0.5, 0.25, 0.125]
    assert _at(optim.exponential_decay(1.0, 10, 0.5), (5,)) == [round(0.5**0.5, 6)]
    assert _at(optim.exponential_decay(1.0, 10, 0.5, staircase=True), (9, 10, 19, 20)) == [1.0, 0.5, 0.5, 0.25]
    assert _at(optim.exponential_decay(1.0, 10, 0.5, end_value=0.2), (10, 20, 30, 100)) == [0.5, 0.25, 0.2, 0.2]
    assert _at(optim.exponential_decay(2.0, 5, 0.5, transition_begin=10), (0, 10, 15)) == [2.0, 2.0, 1.0]
    assert _at(optim.cosine_decay_schedule(1.0, 100), (0, 50, 100, 1000)) == [1.0, 0.5, 0.0, 0.0]
    assert _at(optim.cosine_decay_schedule(2.0, 100, alpha=0.5), (50,)) == [1.5]  # 2 * (0.5 * 0.5 + 0.5)
    assert _at(optim.cosine_decay_schedule(1.0, 100, exponent=2.0), (50,)) == [0.25]
    warmup = optim.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=10, decay_steps=110, end_value=0.1)
    assert _at(warmup, (0, 5, 10, 60, 110, 500)) == [0.0, 0.5, 1.0, 0.55, 0.1, 0.1]
    piecewise = optim.piecewise_constant_schedule(1.0, {100: 0.1, 200: 0.01})
    assert _at(piecewise, (0, 99, 100, 199, 200, 10**6)) == [1.0, 1.0, 0.1, 0.1, 0.001, 0.001]


def test_schedules_work_under_jit_with_large_python_steps():
    cosine = optim.cosine_decay_schedule(1.0, 3_000_000_000)  # more steps than int32 holds
    assert float(cosine(1_500_000_000)) == pytest.approx(0.5, rel=1e-6)
    linear = jax.jit(optim.linear_schedule(1.0, 0.0, 100))
    assert float(linear(jnp.int32(25))) == pytest.approx(0.75, rel=1e-6)


def test_cosine_decay_holds_its_initial_value_at_negative_steps_like_the_others():
    """A negative count (as a joined schedule's shifted count can be) is clamped at 0 by
    every schedule; the cosine used to mirror it (cos is even) and decay backwards."""
    cosine = optim.cosine_decay_schedule(1.0, 10, alpha=0.1)
    assert _at(cosine, (-5, -10, -1000, 0)) == [1.0, 1.0, 1.0, 1.0]
    assert float(cosine(jnp.int32(-5))) == 1.0
    linear = optim.linear_schedule(1.0, 0.0, 10)
    assert _at(linear, (-5,)) == [1.0]


BIG = 2**40  # far beyond int32

BIG_STEP_SCHEDULES = {
    "constant": (optim.constant_schedule(0.5), 0.5),
    "linear": (optim.linear_schedule(1.0, 0.0, transition_steps=2 * BIG), 0.5),
    "linear_begin": (optim.linear_schedule(1.0, 0.0, transition_steps=10, transition_begin=2 * BIG), 1.0),
    "polynomial": (optim.polynomial_schedule(1.0, 0.0, power=2, transition_steps=2 * BIG), 0.25),
    "exponential": (optim.exponential_decay(1.0, transition_steps=BIG, decay_rate=0.5), 0.5),
    "staircase": (optim.exponential_decay(1.0, transition_steps=3, decay_rate=0.5, staircase=True, end_value=0.1), 0.1),
    "cosine": (optim.cosine_decay_schedule(1.0, decay_steps=2 * BIG), 0.5),
    "cosine_done": (optim.cosine_decay_schedule(1.0, decay_steps=100, alpha=0.25), 0.25),
    "warmup_cosine": (
        optim.warmup_cosine_decay_schedule(0.0, 1.0, warmup_steps=BIG // 2, decay_steps=3 * BIG // 2), 0.5),
    "piecewise": (optim.piecewise_constant_schedule(1.0, {BIG // 2: 0.5, 2 * BIG: 0.5}), 0.5),
    "join": (optim.join_schedules([optim.constant_schedule(1.0), optim.linear_schedule(1.0, 0.0, 2 * BIG)], [BIG // 2]),
             0.75),
}


@pytest.mark.parametrize("name", sorted(BIG_STEP_SCHEDULES))
def test_schedules_are_right_at_python_int_steps_beyond_int32(name):
    """count = 2**40 as a Python int (and step constants beyond int32) used to overflow on the
    way into jnp; an optimizer's int32 count must still mix with step constants beyond int32."""
    schedule, expected = BIG_STEP_SCHEDULES[name]
    assert float(schedule(BIG)) == pytest.approx(expected, rel=1e-6)
    assert np.isfinite(float(schedule(jnp.int32(7))))  # int32 count with constants beyond int32


def test_non_finite_schedule_values_are_rejected():
    with pytest.raises(ValueError, match="^linear_schedule: expected init_value to be a finite number, got inf"):
        optim.linear_schedule(float("inf"), 0.0, 10)
    with pytest.raises(ValueError, match="^cosine_decay_schedule: expected alpha to be a finite number, got nan"):
        optim.cosine_decay_schedule(1.0, 10, alpha=float("nan"))
    with pytest.raises(ValueError, match="^exponential_decay: expected decay_rate to be a finite number, got inf"):
        optim.exponential_decay(1.0, 10, float("inf"))
    with pytest.raises(ValueError, match="^piecewise_constant_schedule: expected the scale at step 5 to be a finite"):
        optim.piecewise_constant_schedule(1.0, {5: float("inf")})
    with pytest.raises(ValueError, match="^constant_schedule: expected value to be a finite number, got nan"):
        optim.constant_schedule(float("nan"))


# ---------------------------------------------------------------------------------------
# Schedules as learning rates, through scale_by_learning_rate, against optax


@pytest.mark.parametrize(
    "maker, kwargs",
    [SETTINGS["linear_begin"], SETTINGS["warmup_cosine_end"], SETTINGS["staircase"], SETTINGS["piecewise"]],
    ids=["linear", "warmup_cosine", "staircase", "piecewise"],
)
def test_schedule_as_learning_rate_matches_optax(maker, kwargs):
    ours = optim.chain(optax.scale_by_adam(), optim.scale_by_learning_rate(getattr(optim, maker)(**kwargs)))
    theirs = optax.chain(optax.scale_by_adam(), optax.scale_by_learning_rate(getattr(optax, maker)(**kwargs)))
    rng = np.random.default_rng(0)
    params = {"w": jnp.asarray(rng.normal(size=(3, 2)), jnp.float32), "b": jnp.zeros(2, jnp.float32)}
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(220, *p.shape)), jnp.float32), params)

    @jax.jit
    def run(params, grads):
        def step(carry, g):
            (p_ours, s_ours), (p_theirs, s_theirs) = carry
            u_ours, s_ours = ours.update(g, s_ours, p_ours)
            u_theirs, s_theirs = theirs.update(g, s_theirs, p_theirs)
            p_ours, p_theirs = optim.apply_updates(p_ours, u_ours), optax.apply_updates(p_theirs, u_theirs)
            return ((p_ours, s_ours), (p_theirs, s_theirs)), (u_ours, u_theirs)

        init = ((params, ours.init(params)), (params, theirs.init(params)))
        return jax.lax.scan(step, init, grads)

    ((p_ours, s_ours), (p_theirs, s_theirs)), (u_ours, u_theirs) = run(params, grads)
    for got, expected in zip(jax.tree.leaves((u_ours, p_ours)), jax.tree.leaves((u_theirs, p_theirs))):
        np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=RTOL, atol=1e-9)
    assert int(s_ours[1].count) == int(s_theirs[1].count) == 220
    assert np.abs(np.asarray(u_ours["w"])).max() > 0  # the schedule did not zero every step


# ---------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize(
    "maker, args, kwargs, message",
    [
        ("linear_schedule", (1.0, 0.0), dict(transition_steps=-5), "expected transition_steps >= 0, got -5"),
        ("linear_schedule", (1.0, 0.0, 10), dict(transition_begin=-1), "expected transition_begin >= 0, got -1"),
        ("polynomial_schedule", (1.0, 0.0, 2), dict(transition_steps=-1), "expected transition_steps >= 0"),
        ("exponential_decay", (1.0, -10, 0.5), {}, "expected transition_steps >= 0, got -10"),
        ("exponential_decay", (1.0, 10, 0.0), {}, "expected decay_rate > 0, got 0.0"),
        ("exponential_decay", (1.0, 10, -0.5), {}, "expected decay_rate > 0, got -0.5"),
        ("cosine_decay_schedule", (1.0, 0), {}, "expected decay_steps > 0, got 0"),
        ("warmup_cosine_decay_schedule", (0.0, 1.0, 100, 50), {}, r"expected decay_steps .* > warmup_steps"),
        ("warmup_cosine_decay_schedule", (0.0, 1.0, -1, 50), {}, "expected warmup_steps >= 0, got -1"),
        ("piecewise_constant_schedule", (1.0, {10: -0.1}), {}, "expected scales >= 0, got -0.1 at step 10"),
        ("join_schedules", ([optim.constant_schedule(1.0)] * 2, []), {}, "expected one boundary fewer"),
    ],
)
def test_bad_values_raise_naming_the_function(maker, args, kwargs, message):
    with pytest.raises(ValueError, match=f"{maker}: {message}"):
        getattr(optim, maker)(*args, **kwargs)


def test_fractional_step_counts_raise():
    with pytest.raises(TypeError, match="linear_schedule: expected transition_steps to be a whole number"):
        optim.linear_schedule(1.0, 0.0, 10.5)
