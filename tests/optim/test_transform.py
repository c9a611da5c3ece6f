"""The building blocks against optax's, the course's formulas in NumPy, and the mappings.

* Each block runs alone (its updates added to the params) beside its optax twin for 200
  steps on the random pytree of test_alias (float32 rtol 1e-6, bfloat16 rtol 1e-2).
* Where optax has no twin (the course's velocity and moving-average momentum, Nesterov's
  look-ahead form, AdaGrad from 0, Adam with eps inside the root, seeds/002's NAdam,
  normalized gradients) jdl runs in float64 beside a NumPy float64 transcription of the
  seed's formula: rtol 1e-10 (the order of operations differs, so not bit for bit, but
  only by rounding at 1e-16). The mappings between forms are checked the same way.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jdl import optim
from tests.optim.test_alias import FAST_COMPILE, SCHEDULE, bias_free_mask, check_against_optax, random_params

FLOAT64_TOLERANCE = dict(rtol=1e-10, atol=1e-12)
SEED_STEPS = 100


# ---------------------------------------------------------------------------------------
# Blocks against optax's blocks


def test_blocks_match_optax():
    check_against_optax([
        ("trace(0.9, accumulator_dtype=float32)", optim.trace(0.9, accumulator_dtype=jnp.float32),
         optax.trace(0.9, accumulator_dtype=jnp.float32)),
        ("trace(0.5, nesterov=True)", optim.trace(0.5, nesterov=True), optax.trace(0.5, nesterov=True)),
        ("ema(0.9)", optim.ema(0.9), optax.ema(0.9)),
        ("ema(0.8, debias=False, bfloat16)", optim.ema(0.8, debias=False, accumulator_dtype=jnp.bfloat16),
         optax.ema(0.8, debias=False, accumulator_dtype=jnp.bfloat16)),
        ("trace(0.7, moving_average=True)", optim.trace(0.7, moving_average=True), optax.ema(0.7, debias=False)),
        ("scale_by_rss(0.5, 1e-3)", optim.scale_by_rss(0.5, 1e-3), optax.scale_by_rss(0.5, 1e-3)),
        ("scale_by_rms(bias_correction)", optim.scale_by_rms(0.9, 1e-8, bias_correction=True),
         optax.scale_by_rms(0.9, 1e-8, bias_correction=True)),
        ("scale_by_stddev(0.8, 1e-3, 0.5, eps_in_sqrt=False)", optim.scale_by_stddev(0.8, 1e-3, 0.5, eps_in_sqrt=False),
         optax.scale_by_stddev(0.8, 1e-3, 0.5, eps_in_sqrt=False)),
        ("scale_by_adam(nesterov, mu_dtype=bfloat16)",
         optim.scale_by_adam(0.8, 0.95, eps_root=1e-6, mu_dtype=jnp.bfloat16, nesterov=True),
         optax.scale_by_adam(0.8, 0.95, eps_root=1e-6, mu_dtype=jnp.bfloat16, nesterov=True)),
        ("scale_by_adadelta(0.8, 1e-4)", optim.scale_by_adadelta(0.8, 1e-4), optax.scale_by_adadelta(0.8, 1e-4)),
        ("add_decayed_weights(schedule, mask)", optim.add_decayed_weights(SCHEDULE, bias_free_mask),
         optax.add_decayed_weights(SCHEDULE, bias_free_mask)),
        ("scale_by_normalized_gradient(1e-3)", optim.scale_by_normalized_gradient(1e-3),
         optax.scale_by_adam(b1=0.0, b2=0.0, eps=1e-3)),
    ])


def test_centred_scaling_with_bias_correction_matches_optax_in_float32():
    """With ``initial_scale = 0`` the first bias-corrected step divides by ``sqrt(v - m^2)``, which is
    exactly 0 (``v_hat = g^2``, ``m_hat = g``): both libraries then return rounding noise, whose
    value depends on how XLA fuses the expression, not a figure to compare. A positive
    ``initial_scale`` keeps ``v_hat - m_hat^2 = decay v_0 / (1 - decay)`` away from 0, so the
    comparison has teeth. (In bfloat16 both libraries give NaN: rounding makes it negative.)"""
    params = jax.tree.map(lambda x: x.astype(jnp.float32), random_params(3))
    check_against_optax([
        ("scale_by_stddev(bias_correction)", optim.scale_by_stddev(0.9, initial_scale=0.5, bias_correction=True),
         optax.scale_by_stddev(0.9, initial_scale=0.5, bias_correction=True)),
        ("scale_by_stddev(bias_correction, eps outside)",
         optim.scale_by_stddev(0.9, 1e-6, initial_scale=0.5, eps_in_sqrt=False, bias_correction=True),
         optax.scale_by_stddev(0.9, 1e-6, initial_scale=0.5, eps_in_sqrt=False, bias_correction=True)),
    ], params=params)


@pytest.mark.parametrize("name", [
    "TraceState", "EmaState", "ScaleByRssState", "ScaleByRmsState", "ScaleByRmsWithCountState",
    "ScaleByRStdDevState", "ScaleByRStdDevWithCountState", "ScaleByAdamState", "ScaleByAdaDeltaState",
])
def test_states_have_optax_field_names(name):
    from optax._src import transform as optax_transform  # the *WithCount states are not exported

    theirs = getattr(optax, name, None) or getattr(optax_transform, name)
    assert getattr(optim, name)._fields == theirs._fields


# ---------------------------------------------------------------------------------------
# The course's formulas, transcribed in NumPy (float64)


def seed_gradients(steps=SEED_STEPS, size=5, seed=7):
    """Nonzero gradients (several rules divide by |g| with eps = 0) of varied magnitude."""
    rng = np.random.default_rng(seed)
    magnitude = np.exp(rng.uniform(-2, 1.5, size=(steps, size)))
    return rng.choice([-1.0, 1.0], size=(steps, size)) * magnitude


W0 = np.linspace(-1.0, 1.0, 5)


def run_jdl_float64(optimizers, gradients, w0=W0):
    """The params after every step of each optimizer, in float64, in one jit."""
    with jax.enable_x64(True):
        w0 = jnp.asarray(w0, jnp.float64)
        gradients = jnp.asarray(gradients, jnp.float64)

        def trajectory(optimizer):
            def step(carry, g):
                w, state = carry
                updates, state = optimizer.update(g, state, w)
                w = optim.apply_updates(w, updates)
                return (w, state), w
            return jax.lax.scan(step, (w0, optimizer.init(w0)), gradients)[1]

        run = jax.jit(lambda: [trajectory(optimizer) for optimizer in optimizers], compiler_options=FAST_COMPILE)
        return [np.asarray(t) for t in run()]


def numpy_rule(update):
    """Turn ``update(w, g, t, memory) -> (w, memory)`` into a trajectory over the gradients."""

    def run(gradients, w0=W0):
        w, memory, out = np.array(w0, np.float64), {}, []
        for t, g in enumerate(gradients, start=1):
            w, memory = update(w, g, t, memory)
            out.append(w)
        return np.stack(out)

    return run


def seed_sgd(lr):
    # seeds/000: w_t = w_{t-1} - eta g_t
    return numpy_rule(lambda w, g, t, mem: (w - lr * g, mem))


def seed_velocity_momentum(lr, mu):
    # seeds/003: v <- alpha v - eps g, theta <- theta + v (seeds/000, /002 with v -> -v)
    def update(w, g, t, mem):
        v = mu * mem.get("v", 0.0) - lr(t - 1) * g
        return w + v, {"v": v}
    return numpy_rule(update)


def seed_moving_average_momentum(lr, beta):
    # seeds/001: m <- beta m + (1 - beta) g, phi <- phi - alpha m
    def update(w, g, t, mem):
        m = beta * mem.get("m", 0.0) + (1 - beta) * g
        return w - lr * m, {"m": m}
    return numpy_rule(update)


def seed_adagrad(lr, eps):
    # seeds/002 2.5.3: G <- G + g^2, w <- w - lr / sqrt(G + eps) g   (G_0 = 0)
    def update(w, g, t, mem):
        big_g = mem.get("G", 0.0) + g**2
        return w - lr / np.sqrt(big_g + eps) * g, {"G": big_g}
    return numpy_rule(update)


def seed_adadelta(rho, eps):
    # seeds/002 2.5.4: E[g^2] = rho E + (1 - rho) g^2; dw = -sqrt(E[dw^2] + eps) / sqrt(E[g^2] + eps) g
    def update(w, g, t, mem):
        e_g = rho * mem.get("e_g", 0.0) + (1 - rho) * g**2
        dw = -np.sqrt(mem.get("e_x", 0.0) + eps) / np.sqrt(e_g + eps) * g
        e_x = rho * mem.get("e_x", 0.0) + (1 - rho) * dw**2
        return w + dw, {"e_g": e_g, "e_x": e_x}
    return numpy_rule(update)


def seed_rmsprop(lr, gamma, eps, eps_inside=True):
    # seeds/000: eta' = eta / sqrt(eda_t + eps), eda_t = gamma eda + (1 - gamma) g^2
    # seeds/003: theta <- theta - eta g / sqrt(s_t) (eps = 0)
    def update(w, g, t, mem):
        eda = gamma * mem.get("eda", 0.0) + (1 - gamma) * g**2
        denominator = np.sqrt(eda + eps) if eps_inside else np.sqrt(eda) + eps
        return w - lr * g / denominator, {"eda": eda}
    return numpy_rule(update)


def seed_adam(lr, b1, b2, eps, eps_inside=False):
    # seeds/001: phi <- phi - alpha m~ / (sqrt(v~) + eps); seeds/000: w - alpha m^ / sqrt(v^ + eps)
    def update(w, g, t, mem):
        m = b1 * mem.get("m", 0.0) + (1 - b1) * g
        v = b2 * mem.get("v", 0.0) + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        denominator = np.sqrt(v_hat + eps) if eps_inside else np.sqrt(v_hat) + eps
        return w - lr * m_hat / denominator, {"m": m, "v": v}
    return numpy_rule(update)


def seed_nadam(lr, b1, b2, eps):
    # seeds/002 2.5.6: theta - lr / (sqrt(v^) + eps) (b1 m^ + (1 - b1) g / (1 - b1^t))
    def update(w, g, t, mem):
        m = b1 * mem.get("m", 0.0) + (1 - b1) * g
        v = b2 * mem.get("v", 0.0) + (1 - b2) * g**2
        m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
        step = (b1 * m_hat + (1 - b1) * g / (1 - b1**t)) / (np.sqrt(v_hat) + eps)
        return w - lr * step, {"m": m, "v": v}
    return numpy_rule(update)


def seed_normalized(lr, eps):
    # seeds/001: m <- g, v <- g^2, phi <- phi - alpha m / (sqrt(v) + eps)
    return numpy_rule(lambda w, g, t, mem: (w - lr * g / (np.sqrt(g**2) + eps), mem))


def test_course_formulas_in_numpy():
    gradients = seed_gradients()
    decaying = lambda count: 0.1 * 0.98**count  # noqa: E731  (a schedule)
    cases = [
        ("sgd", optim.sgd(0.1), seed_sgd(0.1)),
        ("velocity momentum", optim.sgd(0.1, momentum=0.9), seed_velocity_momentum(lambda _: 0.1, 0.9)),
        # with a schedule the velocity keeps each step's rate: the look-ahead optimizer's update
        ("velocity momentum, schedule", optim.nesterov_lookahead(decaying, 0.9),
         seed_velocity_momentum(decaying, 0.9)),
        ("moving-average momentum", optim.sgd(0.1, momentum=0.8, moving_average=True),
         seed_moving_average_momentum(0.1, 0.8)),
        ("adagrad from 0", optim.adagrad(0.5, initial_accumulator_value=0.0, eps=1e-7), seed_adagrad(0.5, 1e-7)),
        ("adadelta", optim.adadelta(rho=0.9, eps=1e-6), seed_adadelta(0.9, 1e-6)),
        ("rmsprop, eps in root (seeds/000)", optim.rmsprop(0.01, 0.95, eps=1e-4), seed_rmsprop(0.01, 0.95, 1e-4)),
        ("rmsprop, no eps (seeds/003)", optim.rmsprop(0.01, 0.9, eps=0.0), seed_rmsprop(0.01, 0.9, 0.0)),
        ("rmsprop, eps outside", optim.rmsprop(0.01, 0.9, eps=1e-3, eps_in_sqrt=False),
         seed_rmsprop(0.01, 0.9, 1e-3, eps_inside=False)),
        ("adam (seeds/001)", optim.adam(0.01, 0.9, 0.99, eps=1e-3), seed_adam(0.01, 0.9, 0.99, 1e-3)),
        ("adam, eps in root (seeds/000)", optim.adam(0.01, 0.9, 0.99, eps=0.0, eps_root=1e-3),
         seed_adam(0.01, 0.9, 0.99, 1e-3, eps_inside=True)),
        ("nadam (seeds/002)", optim.nadam(0.01, 0.9, 0.99, eps=1e-3, nesterov_form="textbook"),
         seed_nadam(0.01, 0.9, 0.99, 1e-3)),
        ("normalized gradients", optim.normalized_sgd(0.01, eps=1e-3), seed_normalized(0.01, 1e-3)),
    ]
    trajectories = run_jdl_float64([optimizer for _, optimizer, _ in cases], gradients)
    for (label, _, seed_rule), mine in zip(cases, trajectories):
        expected = seed_rule(gradients)
        assert np.max(np.abs(expected[-1] - W0)) > 1e-2, label  # the rule did something
        np.testing.assert_allclose(mine, expected, err_msg=label, **FLOAT64_TOLERANCE)


def test_course_options_differ_from_optax_defaults():
    """The options are not no-ops: each course form departs from optax's default form."""
    gradients = seed_gradients()
    pairs = [
        (optim.adagrad(0.5, initial_accumulator_value=0.0), optim.adagrad(0.5)),
        (optim.adam(0.01, eps=0.0, eps_root=1e-3), optim.adam(0.01, eps=1e-3)),
        (optim.nadam(0.01, nesterov_form="textbook"), optim.nadam(0.01)),
        (optim.rmsprop(0.01, eps=1e-2, eps_in_sqrt=False), optim.rmsprop(0.01, eps=1e-2)),
    ]
    trajectories = run_jdl_float64([optimizer for pair in pairs for optimizer in pair], gradients)
    for index in range(len(pairs)):
        course, default = trajectories[2 * index], trajectories[2 * index + 1]
        assert np.max(np.abs(course - default)) > 1e-5, index  # float64 rounding is ~1e-15


def test_seed_worked_example_of_normalized_gradients():
    """seeds/001: m = (3, -2, 5), v = (9, 4, 25) gives m / (sqrt(v) + eps) = (1, -1, 1)."""
    normalize = optim.scale_by_normalized_gradient(eps=1e-12)
    updates, _ = normalize.update(jnp.array([3.0, -2.0, 5.0]), normalize.init(jnp.zeros(3)))
    np.testing.assert_allclose(updates, [1.0, -1.0, 1.0], rtol=1e-6)


# ---------------------------------------------------------------------------------------
# Mappings between the course's forms and optax's


def test_moving_average_momentum_is_trace_momentum_with_a_scaled_rate():
    gradients = seed_gradients()
    lr, beta = 0.1, 0.8
    a, b, c, d = run_jdl_float64([
        optim.sgd(lr, beta, moving_average=True), optim.sgd(lr * (1 - beta), beta),
        optim.sgd(lr, beta, nesterov=True, moving_average=True), optim.sgd(lr * (1 - beta), beta, nesterov=True),
    ], gradients)
    np.testing.assert_allclose(a, b, **FLOAT64_TOLERANCE)
    np.testing.assert_allclose(c, d, **FLOAT64_TOLERANCE)


def quadratic_gradients():
    """The gradient of 0.5 (w - w*)^T H (w - w*) (condition number 30), in NumPy and in JAX."""
    rng = np.random.default_rng(11)
    q, _ = np.linalg.qr(rng.normal(size=(5, 5)))
    hessian = q @ np.diag(np.logspace(0, 1.5, 5)) @ q.T
    target = rng.normal(size=5)
    return (lambda w: hessian @ (w - target)), (lambda w: jnp.asarray(hessian) @ (w - jnp.asarray(target)))


def seed_nesterov_lookahead(gradient_fn, lr, mu, steps, w0=W0):
    # seeds/003: theta~ = theta + alpha v; g~ = grad at theta~; v = alpha v - eps g~; theta = theta + v
    theta, v, thetas, lookaheads = np.array(w0, np.float64), np.zeros_like(w0), [], []
    for _ in range(steps):
        lookahead = theta + mu * v
        v = mu * v - lr * gradient_fn(lookahead)
        theta = theta + v
        thetas.append(theta)
        lookaheads.append(theta + mu * v)
    return np.stack(thetas), np.stack(lookaheads)


def run_with_gradient_fn(optimizer, gradient_fn, steps, w0=W0):
    """Float64 run where the gradient is taken at ``optimizer.lookahead`` when it has one."""
    lookahead = getattr(optimizer, "lookahead", None)
    with jax.enable_x64(True):
        w0 = jnp.asarray(w0, jnp.float64)

        def step(carry, _):
            w, state = carry
            at = lookahead(w, state) if lookahead else w
            updates, state = optimizer.update(gradient_fn(at), state, w)
            w = optim.apply_updates(w, updates)
            after = lookahead(w, state) if lookahead else w
            return (w, state), (w, after)

        run = jax.jit(lambda: jax.lax.scan(step, (w0, optimizer.init(w0)), None, length=steps)[1],
                      compiler_options=FAST_COMPILE)
        return [np.asarray(x) for x in run()]


def test_nesterov_lookahead_matches_the_course_and_optax_nesterov():
    """seeds' look-ahead iterates theta_t vs jdl; their look-ahead points vs optax's iterates."""
    gradient_numpy, gradient_jax = quadratic_gradients()
    lr, mu, steps = 0.02, 0.9, 150
    seed_thetas, seed_lookaheads = seed_nesterov_lookahead(gradient_numpy, lr, mu, steps)
    thetas, lookaheads = run_with_gradient_fn(optim.nesterov_lookahead(lr, mu), gradient_jax, steps)
    np.testing.assert_allclose(thetas, seed_thetas, **FLOAT64_TOLERANCE)
    # optax's reformulation holds the look-ahead point phi_t = theta_t + mu v_t as its params
    optax_params, _ = run_with_gradient_fn(optax.sgd(lr, mu, nesterov=True), gradient_jax, steps)
    jdl_params, _ = run_with_gradient_fn(optim.sgd(lr, mu, nesterov=True), gradient_jax, steps)
    np.testing.assert_allclose(lookaheads, optax_params, **FLOAT64_TOLERANCE)
    np.testing.assert_allclose(seed_lookaheads, optax_params, **FLOAT64_TOLERANCE)
    np.testing.assert_allclose(jdl_params, optax_params, **FLOAT64_TOLERANCE)
    assert np.max(np.abs(thetas - lookaheads)) > 1e-3  # the two sequences are different points


def test_nesterov_lookahead_at_the_params_is_classical_momentum():
    gradient_numpy, gradient_jax = quadratic_gradients()
    optimizer = optim.nesterov_lookahead(0.02, 0.9)
    plain = optim.GradientTransformation(optimizer.init, optimizer.update)  # ignore the look-ahead
    velocity, _ = run_with_gradient_fn(plain, gradient_jax, 100)
    trace_form, _ = run_with_gradient_fn(optax.sgd(0.02, 0.9), gradient_jax, 100)
    np.testing.assert_allclose(velocity, trace_form, **FLOAT64_TOLERANCE)


# ---------------------------------------------------------------------------------------
# Behaviour and errors of single blocks


def test_adagrad_scaling_is_zero_not_nan_before_any_gradient():
    block = optim.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
    updates, _ = block.update(jnp.array([0.0, 2.0]), block.init(jnp.zeros(2)))
    np.testing.assert_array_equal(updates, [0.0, 1.0])


def test_moments_keep_their_dtypes():
    params = {"w": jnp.ones(3, jnp.bfloat16)}
    block = optim.scale_by_adam(mu_dtype=jnp.float32)
    state = block.init(params)
    _, state = block.update({"w": jnp.ones(3, jnp.bfloat16)}, state)
    assert state.mu["w"].dtype == jnp.float32 and state.nu["w"].dtype == jnp.bfloat16


def test_weight_decay_masks_may_be_prefixes_or_functions():
    params = {"layer": {"w": jnp.ones(2), "b": jnp.ones(2)}, "head": [jnp.ones(1)]}
    grads = jax.tree.map(jnp.zeros_like, params)
    prefix = {"layer": {"w": True, "b": False}, "head": True}  # "head" stands for its whole list
    for mask in (prefix, lambda params: prefix):
        decay = optim.add_decayed_weights(0.5, mask)
        updates, _ = decay.update(grads, decay.init(params), params)
        np.testing.assert_array_equal(updates["layer"]["w"], [0.5, 0.5])
        np.testing.assert_array_equal(updates["layer"]["b"], [0.0, 0.0])
        np.testing.assert_array_equal(updates["head"][0], [0.5])


def test_weight_decay_errors_name_the_block():
    params = {"w": jnp.ones(2)}
    decay = optim.add_decayed_weights(0.1)
    with pytest.raises(ValueError, match=r"^add_decayed_weights: expected params"):
        decay.update(params, decay.init(params))
    bad_mask = optim.add_decayed_weights(0.1, mask={"v": True})
    with pytest.raises(ValueError, match=r"^add_decayed_weights: expected mask with the tree structure"):
        bad_mask.update(params, bad_mask.init(params), params)
    traced_mask = optim.add_decayed_weights(0.1, mask={"w": jnp.array(True)})
    with pytest.raises(TypeError, match=r"^add_decayed_weights: expected mask leaves to be Python bools"):
        traced_mask.update(params, traced_mask.init(params), params)
    with pytest.raises(ValueError, match=r"^add_decayed_weights: expected weight_decay >= 0"):
        optim.add_decayed_weights(-0.1)


@pytest.mark.parametrize("build, message", [
    (lambda: optim.scale_by_adam(b1=1.0), r"^scale_by_adam: expected b1 in \[0, 1\), got 1.0"),
    (lambda: optim.scale_by_adam(b2=-0.5), r"^scale_by_adam: expected b2 in \[0, 1\), got -0.5"),
    (lambda: optim.scale_by_adam(nesterov_form="keras"), r"^scale_by_adam: expected nesterov_form in"),
    (lambda: optim.trace(1.5), r"^trace: expected decay in \[0, 1\)"),
    (lambda: optim.ema(-0.1), r"^ema: expected decay in \[0, 1\)"),
    (lambda: optim.scale_by_rms(decay=1.0), r"^scale_by_rms: expected decay in \[0, 1\)"),
    (lambda: optim.scale_by_stddev(eps=-1.0), r"^scale_by_stddev: expected eps >= 0"),
    (lambda: optim.scale_by_rss(initial_accumulator_value=-0.1), r"^scale_by_rss: expected initial_accumulator_value"),
    (lambda: optim.scale_by_adadelta(rho=1.0), r"^scale_by_adadelta: expected rho in \[0, 1\)"),
])
def test_bad_block_hyperparameters_name_the_block(build, message):
    with pytest.raises(ValueError, match=message):
        build()


@pytest.mark.parametrize("name, block", [
    ("trace", optim.trace(0.9)), ("ema", optim.ema(0.9)), ("scale_by_rss", optim.scale_by_rss()),
    ("scale_by_rms", optim.scale_by_rms()), ("scale_by_stddev", optim.scale_by_stddev()),
    ("scale_by_adam", optim.scale_by_adam()), ("scale_by_adadelta", optim.scale_by_adadelta()),
])
def test_block_updates_must_match_the_state(name, block):
    state = block.init({"w": jnp.ones((2, 2)), "b": jnp.ones(2)})
    with pytest.raises(ValueError, match=rf"^{name}: expected updates with the tree structure of the state"):
        block.update({"w": jnp.ones((2, 2))}, state)
    with pytest.raises(ValueError, match=rf"^{name}: expected updates\['b'\] of shape \(2,\).*got \(1, 2\)"):
        block.update({"w": jnp.ones((2, 2)), "b": jnp.ones((1, 2))}, state)


def test_add_noise_is_optaxs_bit_for_bit_and_anneals():
    """The same key gives optax's noise exactly; the noise's variance is ``eta / t^gamma``."""
    params = {"a": jnp.ones((3, 4)), "b": {"c": jnp.ones(5)}}
    ours, theirs = optim.add_noise(0.3, 0.55, jax.random.key(7)), optax.add_noise(0.3, 0.55, jax.random.key(7))

    @jax.jit
    def run(grads):
        def step(states, g):
            (u, s), (v, t) = ours.update(g, states[0]), theirs.update(g, states[1])
            return (s, t), (u, v)
        return jax.lax.scan(step, (ours.init(params), theirs.init(params)), grads)[1]

    grads = jax.tree.map(lambda p: jnp.stack([p * i for i in range(6)]), params)
    mine, reference = run(grads)
    for leaf, ref in zip(jax.tree.leaves(mine), jax.tree.leaves(reference)):
        np.testing.assert_array_equal(leaf, ref)
    # the noise at step t has variance eta / t^gamma: a large sample at t = 1 and t = 100
    noisy = optim.add_noise(2.0, 1.0, 3)
    state = noisy.init(None)._replace(count=jnp.array(99, jnp.int32))
    late, _ = noisy.update(jnp.zeros(200_000), state)
    early, _ = noisy.update(jnp.zeros(200_000), noisy.init(None))
    np.testing.assert_allclose([np.var(early), np.var(late)], [2.0, 0.02], rtol=0.02)
    with pytest.raises(ValueError, match=r"add_noise: expected eta \(the noise's base variance\) finite and >= 0"):
        optim.add_noise(-1.0, 0.55)
