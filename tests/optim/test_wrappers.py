"""Gradient accumulation and skipping non-finite steps, against optax over 200+ steps."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdl import optim

STEPS = 210
# float32. Not bit-exact: XLA fuses the same arithmetic differently in different programs
# (optax.MultiSteps(adam, 1) and optax.adam already differ in the last bit), and the
# params feed back into the gradients, so last-bit differences travel along the 210 steps.
RTOL = 1e-6


def random_params(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "dense": {"w": jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)},
        "extra": [jnp.asarray(rng.normal(size=(5,)), jnp.bfloat16), (jnp.asarray(0.5, jnp.float32),)],
    }


def random_noise(params, steps=STEPS, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=(steps, *p.shape)), p.dtype), params)


def gradient(params, noise):
    """A gradient that depends on the params (a quadratic pull to 0 plus noise), so any
    difference in the updates would grow along the trajectory."""
    return jax.tree.map(lambda p, n: (0.5 * p + n).astype(p.dtype), params, noise)


def run_side_by_side(pairs, params, noise):
    """One jitted scan for several (jdl, optax) pairs, each pair on the same gradients, each
    optimizer on its own copy of the params; per pair, per-step (updates, params, state)."""

    @jax.jit
    def run(params, noise):
        def step(carry, n):
            new_carry, outputs = [], []
            for (ours, theirs), ((p_ours, s_ours), (p_theirs, s_theirs)) in zip(pairs, carry):
                u_ours, s_ours = ours.update(gradient(p_ours, n), s_ours, p_ours)
                u_theirs, s_theirs = theirs.update(gradient(p_theirs, n), s_theirs, p_theirs)
                p_ours, p_theirs = optim.apply_updates(p_ours, u_ours), optax.apply_updates(p_theirs, u_theirs)
                new_carry.append(((p_ours, s_ours), (p_theirs, s_theirs)))
                outputs.append(((u_ours, p_ours, s_ours), (u_theirs, p_theirs, s_theirs)))
            return new_carry, outputs

        init = [((params, ours.init(params)), (params, theirs.init(params))) for ours, theirs in pairs]
        return jax.lax.scan(step, init, noise)[1]

    return run(params, noise)


def assert_leaves_close(got_tree, expected_tree, rtol=RTOL):
    """Every leaf within ``rtol`` of the reference, relative to the value or to the leaf's
    largest magnitude (a param crossing zero has no relative precision of its own)."""
    got, expected = jax.tree.leaves(got_tree), jax.tree.leaves(expected_tree)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, a.dtype, b.shape, b.dtype)
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = np.nanmax(np.abs(np.where(np.isfinite(b), b, 0)), initial=0.0)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


# ---------------------------------------------------------------------------------------
# Gradient accumulation against optax.MultiSteps


def _every_other_then_three(gradient_step):
    return jnp.where(gradient_step < 10, 2, 3)


@pytest.mark.parametrize("k", [1, 3, 4, "schedule"])
def test_multi_steps_matches_optax(k):
    """use_grad_mean True and False, side by side in one scan."""
    if k == "schedule":  # k from a function of the step; a jdl inner optimizer vs its optax twin
        every_k = _every_other_then_three
        inner = {
            lib: lib.chain(
                lib.clip_by_global_norm(1.0), lib.scale_by_learning_rate(lib.linear_schedule(0.1, 0.01, 50))
            )
            for lib in (optim, optax)
        }
    else:  # the same inner optimizer on both sides: this compares the wrappers
        every_k = k
        inner = {optim: optax.adam(1e-2), optax: optax.adam(1e-2)}
    pairs = [
        (optim.MultiSteps(inner[optim], every_k, use_grad_mean=mean).gradient_transformation(),
         optax.MultiSteps(inner[optax], every_k, use_grad_mean=mean).gradient_transformation())
        for mean in (True, False)
    ]
    params = random_params()
    for ours, theirs in run_side_by_side(pairs, params, random_noise(params)):
        (u_ours, p_ours, s_ours), (u_theirs, p_theirs, s_theirs) = ours, theirs
        assert_leaves_close(u_ours, u_theirs)
        assert_leaves_close(p_ours, p_theirs)
        # the states field by field: counters, inner state and accumulator at every step
        np.testing.assert_array_equal(s_ours.mini_step, s_theirs.mini_step)
        np.testing.assert_array_equal(s_ours.gradient_step, s_theirs.gradient_step)
        assert_leaves_close(s_ours.inner_opt_state, s_theirs.inner_opt_state)
        assert_leaves_close(s_ours.acc_grads, s_theirs.acc_grads)
        # guard: the inner optimizer stepped exactly on the k-th micro-steps and moved the params
        if k != "schedule":
            assert int(s_ours.gradient_step[-1]) == STEPS // k
            stepped = np.asarray(optim.has_updated(s_ours))
            np.testing.assert_array_equal(stepped, (np.arange(1, STEPS + 1) % k) == 0)
        w = np.asarray(p_ours["dense"]["w"])
        assert np.all(np.abs(w[-1] - np.asarray(params["dense"]["w"])) > 1e-4)


@pytest.mark.parametrize("k, use_grad_mean", [(3, True), (4, False)])
def test_k_micro_batches_make_one_big_batch_step(k, use_grad_mean):
    """Equal micro-batches of a mean loss average to the big batch's gradient (a sum loss:
    add up to it), so k micro-steps with accumulation are one step on the big batch."""
    rng = np.random.default_rng(3)
    batches, batch_size = 5, 12
    x = jnp.asarray(rng.normal(size=(batches, batch_size, 4)), jnp.float32)
    y = jnp.asarray(rng.normal(size=(batches, batch_size)), jnp.float32)
    reduce = jnp.mean if use_grad_mean else jnp.sum

    def loss(params, x, y):
        return reduce((x @ params["w"] + params["b"] - y) ** 2)

    params = {"w": jnp.asarray(rng.normal(size=(4,)), jnp.float32), "b": jnp.zeros((), jnp.float32)}
    inner = optim.chain(optax.scale_by_adam(), optim.scale_by_learning_rate(0.05))

    accumulating = optim.multi_steps(inner, k, use_grad_mean=use_grad_mean)

    def train(optimizer, x, y):
        def step(carry, batch):
            params, state = carry
            updates, state = optimizer.update(jax.grad(loss)(params, *batch), state, params)
            params = optim.apply_updates(params, updates)
            return (params, state), (params, state)

        return jax.lax.scan(step, (params, optimizer.init(params)), (x, y))[1]

    big_path, _ = jax.jit(train, static_argnums=0)(inner, x, y)
    # the same examples, each big batch cut into k micro-batches, one after another
    micro_x = x.reshape(batches * k, batch_size // k, 4)
    micro_y = y.reshape(batches * k, batch_size // k)
    micro_path, state = jax.jit(train, static_argnums=0)(accumulating, micro_x, micro_y)
    for step in range(batches * k):
        if step % k != k - 1:  # still accumulating: params unchanged
            previous = params if step == 0 else jax.tree.map(lambda p: p[step - 1], micro_path)
            assert_leaves_close(jax.tree.map(lambda p: p[step], micro_path), previous, rtol=0)
    # after every k-th micro-step, the params of the big-batch step (float32 rounding apart)
    assert_leaves_close(jax.tree.map(lambda p: p[k - 1 :: k], micro_path), big_path, rtol=1e-5)
    state = jax.tree.map(lambda s: s[-1], state)
    assert int(state.gradient_step) == batches
    assert float(jnp.abs(big_path["w"][-1] - params["w"]).max()) > 0.05  # the steps did move the params


def test_multi_steps_worked_example_and_class_api():
    opt = optim.scale_by_learning_rate(1.0)
    wrapper = optim.MultiSteps(opt, every_k_schedule=2)
    assert wrapper.inner_opt is opt
    params = jnp.zeros(2)
    state = wrapper.init(params)
    updates, state = wrapper.update(jnp.array([1.0, 2.0]), state, params)
    np.testing.assert_array_equal(updates, [0.0, 0.0])
    assert not bool(wrapper.has_updated(state))
    np.testing.assert_array_equal(state.acc_grads, [1.0, 2.0])
    updates, state = wrapper.update(jnp.array([3.0, 4.0]), state, params)
    np.testing.assert_array_equal(updates, [-2.0, -3.0])
    assert bool(wrapper.has_updated(state)) and int(state.gradient_step) == 1
    np.testing.assert_array_equal(state.acc_grads, [0.0, 0.0])
    summed = optim.multi_steps(opt, 2, use_grad_mean=False)
    s = summed.init(params)
    _, s = summed.update(jnp.array([1.0, 2.0]), s, params)
    updates, _ = summed.update(jnp.array([3.0, 4.0]), s, params)
    np.testing.assert_array_equal(updates, [-4.0, -6.0])


def test_a_schedule_k_below_one_is_an_error_when_known_and_one_under_jit():
    """A schedule that returns 0 used to leave multi_steps accumulating forever (it never
    stepped again). A k known at trace time must be a whole number >= 1; a traced one is taken
    as max(1, floor(k)), so k = 0 steps on every call."""
    sgd = optim.scale_by_learning_rate(1.0)
    params = jnp.zeros(2)
    for k in (0, 2.5):
        wrapper = optim.multi_steps(sgd, lambda step, k=k: k)
        with pytest.raises(ValueError, match=rf"^multi_steps: expected every_k_schedule to return a whole number >= 1 "
                                             rf"\(k micro-batches per step\), got {k}"):
            wrapper.update(jnp.ones(2), wrapper.init(params), params)
    wrapper = optim.multi_steps(sgd, lambda step: jnp.where(step < 2, 0.0, 2.0))  # 0 for the first two steps
    update = jax.jit(wrapper.update)
    state = wrapper.init(params)
    stepped = []
    for i in range(4):
        updates, state = update(jnp.full(2, float(i + 1)), state, params)
        stepped.append(bool(optim.has_updated(state)))
    assert stepped == [True, True, False, True]  # k = 1, 1, then 2
    np.testing.assert_array_equal(updates, [-3.5, -3.5])  # the mean of the last two gradients, 3 and 4


# ---------------------------------------------------------------------------------------
# Skipping non-finite steps against optax.apply_if_finite


def _inject_non_finite(noise, bad_steps):
    """NaN into one leaf and Inf into another at the given steps."""
    nan_at = np.zeros(STEPS, bool)
    inf_at = np.zeros(STEPS, bool)
    for i, step in enumerate(bad_steps):
        (nan_at if i % 2 == 0 else inf_at)[step] = True
    noise = jax.tree.map(lambda n: n, noise)
    w = noise["dense"]["w"]
    noise["dense"]["w"] = w.at[:, 1, 2].set(jnp.where(jnp.asarray(nan_at), jnp.nan, w[:, 1, 2]))
    e = noise["extra"][0]
    noise["extra"][0] = e.at[:, 3].set(jnp.where(jnp.asarray(inf_at), -jnp.inf, e[:, 3]).astype(e.dtype))
    return noise


# runs of 1, 2 and 3 consecutive bad steps: with max_consecutive_errors=3 all are skipped;
# with 1 the second of a run is applied (optax's give-up rule), so the NaN entry of the
# params stays NaN from then on (and with it that entry of every later gradient)
SKIPPED = [5, 17, 18, 40, 41, 42, 77, 120, 121, 199, 200, 201]


@pytest.mark.parametrize(
    "max_errors, bad_steps", [(3, SKIPPED), (1, [30, 60, 61, 62])], ids=["all_skipped", "gives_up"]
)
def test_apply_if_finite_matches_optax(max_errors, bad_steps):
    ours = optim.apply_if_finite(optax.adam(1e-2), max_errors)
    theirs = optax.apply_if_finite(optax.adam(1e-2), max_errors)
    params = random_params()
    noise = _inject_non_finite(random_noise(params), bad_steps)
    [(ours_out, theirs_out)] = run_side_by_side([(ours, theirs)], params, noise)
    (u_ours, p_ours, s_ours), (u_theirs, p_theirs, s_theirs) = ours_out, theirs_out
    assert_leaves_close(u_ours, u_theirs)  # NaN == NaN where both gave up
    assert_leaves_close(p_ours, p_theirs)
    np.testing.assert_array_equal(s_ours.notfinite_count, s_theirs.notfinite_count)
    np.testing.assert_array_equal(s_ours.last_finite, s_theirs.last_finite)
    np.testing.assert_array_equal(s_ours.total_notfinite, s_theirs.total_notfinite)
    assert_leaves_close(s_ours.inner_state, s_theirs.inner_state)

    bad = np.zeros(STEPS, bool)
    bad[bad_steps] = True
    w = np.asarray(p_ours["dense"]["w"])
    if max_errors == 3:
        np.testing.assert_array_equal(np.asarray(s_ours.last_finite), ~bad)
        assert int(s_ours.total_notfinite[-1]) == len(bad_steps)
        assert np.all(np.isfinite(w))
        for step in bad_steps:  # a skipped step leaves the params exactly as they were
            np.testing.assert_array_equal(w[step], w[step - 1])
        assert int(s_ours.inner_state[0].count[-1]) == STEPS - len(bad_steps)
    else:  # step 61, the second bad step in a row, is applied: NaN params, NaN gradients after
        np.testing.assert_array_equal(np.asarray(s_ours.last_finite[:62]), ~bad[:62])
        assert np.all(np.isfinite(w[:61])) and not np.any(np.isfinite(w[61:, 1, 2]))  # the NaN entry
        assert not np.any(np.asarray(s_ours.last_finite[61:]))
        np.testing.assert_array_equal(s_ours.notfinite_count[59:64], [0, 1, 2, 3, 4])


def test_non_finite_step_leaves_params_and_inner_state_unchanged():
    inner = optim.chain(optax.scale_by_adam(), optim.scale_by_learning_rate(0.1))
    optimizer = optim.apply_if_finite(inner, max_consecutive_errors=2)
    update = jax.jit(optimizer.update)  # one compilation instead of many eager ops
    apply_updates = jax.jit(optim.apply_updates)
    params = {"w": jnp.array([1.0, -2.0]), "b": jnp.array(0.5)}
    state = optimizer.init(params)
    updates, state = update({"w": jnp.array([0.3, 0.1]), "b": jnp.array(1.0)}, state, params)
    params = apply_updates(params, updates)
    inner_before = state.inner_state
    for count, bad in enumerate([jnp.array([jnp.nan, 0.1]), jnp.array([0.2, jnp.inf])], start=1):
        updates, state = update({"w": bad, "b": jnp.array(1.0)}, state, params)
        new_params = apply_updates(params, updates)
        assert_leaves_close(new_params, params, rtol=0)
        assert_leaves_close(state.inner_state, inner_before, rtol=0)
        assert int(state.notfinite_count) == count and int(state.total_notfinite) == count
        assert not bool(state.last_finite)
    updates, state = update({"w": jnp.array([0.3, 0.1]), "b": jnp.array(1.0)}, state, params)
    assert int(state.notfinite_count) == 0 and int(state.total_notfinite) == 2 and bool(state.last_finite)
    assert int(state.inner_state[0].count) == 2
    assert float(jnp.abs(updates["w"]).min()) > 0


# ---------------------------------------------------------------------------------------
# Bad input


def test_bad_input_raises_naming_the_function():
    sgd = optim.scale_by_learning_rate(0.1)
    with pytest.raises(ValueError, match=r"multi_steps: expected every_k_schedule \(k micro-batches .*\) >= 1, got 0"):
        optim.multi_steps(sgd, 0)
    with pytest.raises(ValueError, match="multi_steps: expected every_k_schedule .* >= 1, got -2"):
        optim.MultiSteps(sgd, -2)
    with pytest.raises(TypeError, match="multi_steps: expected every_k_schedule to be a whole number"):
        optim.multi_steps(sgd, 2.5)
    with pytest.raises(TypeError, match="multi_steps: expected a gradient transformation"):
        optim.multi_steps(lambda g: g, 2)
    with pytest.raises(ValueError, match="apply_if_finite: expected max_consecutive_errors >= 0, got -1"):
        optim.apply_if_finite(sgd, -1)
    with pytest.raises(TypeError, match="apply_if_finite: expected a gradient transformation"):
        optim.apply_if_finite(None, 3)

    wrapper = optim.multi_steps(sgd, 3)
    params = {"w": jnp.ones(2), "b": jnp.ones(())}
    state = wrapper.init(params)
    with pytest.raises(ValueError, match="multi_steps: expected updates with the tree structure of the params"):
        wrapper.update({"w": jnp.ones(2)}, state, params)
    with pytest.raises(ValueError, match="multi_steps: expected updates with the tree structure"):
        jax.jit(wrapper.update)([jnp.ones(2), jnp.ones(())], state, params)
    with pytest.raises(ValueError, match=r"multi_steps: expected updates\['w'\] of shape \(2,\) .*got \(1, 2\)"):
        wrapper.update({"w": jnp.ones((1, 2)), "b": jnp.ones(())}, state, params)  # was broadcast
