"""jdl.losses against optax.losses (random inputs), worked examples, stability, gradients, errors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

from jdl import losses

RTOL = 1e-6
ATOL = 1e-7
BATCH, CLASSES = 5, 4


# Inputs come from numpy: eager jax.random would compile a sampler per shape.
def _rng(seed):
    return np.random.default_rng(seed)


def _uniform(seed, shape, low=0.0, high=1.0):
    return jnp.asarray(_rng(seed).uniform(low, high, shape), jnp.float32)


def _signs(seed, shape):
    return jnp.asarray(_rng(seed).choice([-1.0, 1.0], shape), jnp.float32)


def _logits(seed=0, shape=(BATCH, CLASSES), scale=3.0):
    return jnp.asarray(scale * _rng(seed).standard_normal(shape), jnp.float32)


def _int_labels(seed=1, shape=(BATCH,), num_classes=CLASSES):
    return jnp.asarray(_rng(seed).integers(0, num_classes, shape), jnp.int32)


def _probabilities(seed=2, shape=(BATCH, CLASSES)):
    exp = np.exp(3.0 * _rng(seed).standard_normal(shape))
    return jnp.asarray(exp / exp.sum(-1, keepdims=True), jnp.float32)


def _close(actual, expected, rtol=RTOL, atol=ATOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def _finite_differences(fn, args):
    """check_grads in float64 (x64 only inside), forward and reverse mode, first order."""
    with jax.enable_x64(True):
        # NumPy arrays: check_grads's perturbations then run in NumPy, not as XLA ops compiled per shape.
        args64 = tuple(np.asarray(a, np.float64) for a in args)
        fn = jax.jit(fn)  # one compilation per transform instead of one per eager op
        assert all(leaf.dtype == jnp.float64 for leaf in jax.tree.leaves(fn(*args64)))
        check_grads(fn, args64, order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5, eps=1e-5)


# ------------------------------------------------------------------------ vs optax
# Each test runs jdl and optax side by side inside one jit: one compilation per test
# instead of one per eager op.


def test_regression_losses_match_optax():
    p, t = _logits(0, (3, 4)), _logits(1, (3, 4))

    @jax.jit
    def pairs(p, t):
        return [
            (losses.squared_error(p, t), optax.losses.squared_error(p, t)),
            (losses.squared_error(p), optax.losses.squared_error(p)),
            (losses.l2_loss(p, t), optax.losses.l2_loss(p, t)),
            (losses.l2_loss(p), optax.losses.l2_loss(p)),
            (losses.mean_squared_error(p, t), optax.losses.squared_error(p, t).mean()),
        ]

    for got, want in pairs(p, t):
        _close(got, want)
    p64, t64 = np.asarray(p, np.float64), np.asarray(t, np.float64)
    _close(losses.absolute_error(p, t), np.abs(p64 - t64))
    _close(losses.mean_absolute_error(p, t), np.mean(np.abs(p64 - t64)))
    assert losses.mean_squared_error(p, t).shape == ()


def test_sigmoid_binary_cross_entropy_matches_optax():
    logits = _logits(0, (6, 3))
    hard = (_signs(1, (6, 3)) > 0).astype(jnp.float32)
    soft = _uniform(2, (6, 3))

    @jax.jit
    def pairs(z, hard, soft):
        return [
            (losses.sigmoid_binary_cross_entropy(z, hard), optax.losses.sigmoid_binary_cross_entropy(z, hard)),
            (losses.sigmoid_binary_cross_entropy(z, soft), optax.losses.sigmoid_binary_cross_entropy(z, soft)),
            # Integer 0/1 labels give the numbers of float ones.
            (losses.sigmoid_binary_cross_entropy(z, hard.astype(jnp.int32)),
             optax.losses.sigmoid_binary_cross_entropy(z, hard)),
            # BCE from p = sigmoid(z) is sigmoid BCE from z (away from the clamp).
            (losses.binary_cross_entropy(jax.nn.sigmoid(z), soft),
             optax.losses.sigmoid_binary_cross_entropy(z, soft)),
        ]

    results = pairs(logits, hard, soft)
    for got, want in results[:3]:
        _close(got, want)
    _close(*results[3], rtol=1e-5)


def test_binary_cross_entropy_matches_numpy_with_clamp():
    p = np.array([0.0, 1e-50, 0.3, 0.999, 1.0, 1.0], np.float64)
    y = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0], np.float64)
    with np.errstate(divide="ignore"):
        expected = -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))
    _close(losses.binary_cross_entropy(jnp.asarray(p, jnp.float32), jnp.asarray(y, jnp.float32)),
           expected, rtol=1e-5)


def test_softmax_cross_entropies_match_optax():
    logits = _logits(0, (2, 3, CLASSES))
    soft = _probabilities(1, (2, 3, CLASSES))
    labels = _int_labels(2, (2, 3))

    @jax.jit
    def pairs(z, soft, labels):
        one_hot = jax.nn.one_hot(labels, CLASSES)
        out = [(losses.softmax_cross_entropy_with_integer_labels(z, labels),
                optax.losses.softmax_cross_entropy_with_integer_labels(z, labels))]
        for alpha in (0.0, 0.1):
            out.append((losses.softmax_cross_entropy(z, soft, label_smoothing=alpha),
                        optax.losses.softmax_cross_entropy(z, optax.losses.smooth_labels(soft, alpha))))
            out.append((losses.softmax_cross_entropy_with_integer_labels(z, labels, label_smoothing=alpha),
                        optax.losses.softmax_cross_entropy(z, optax.losses.smooth_labels(one_hot, alpha))))
            out.append((losses.softmax_cross_entropy(z, one_hot, label_smoothing=alpha),
                        losses.softmax_cross_entropy_with_integer_labels(z, labels, label_smoothing=alpha)))
            out.append((losses.smooth_labels(soft, alpha), optax.losses.smooth_labels(soft, alpha)))
        # nll of log-softmax is the integer cross-entropy.
        out.append((losses.nll_loss(jax.nn.log_softmax(z), labels),
                    optax.losses.softmax_cross_entropy_with_integer_labels(z, labels)))
        return out

    for got, want in pairs(logits, soft, labels):
        assert got.shape == want.shape
        _close(got, want, rtol=2e-6)
    assert losses.softmax_cross_entropy(logits, soft).shape == (2, 3)


def test_nll_loss_matches_numpy():
    log_probs = jnp.asarray(np.log(np.asarray(_probabilities(0))), jnp.float32)
    labels = _int_labels(1)
    expected = -np.asarray(log_probs)[np.arange(BATCH), np.asarray(labels)]
    _close(losses.nll_loss(log_probs, labels), expected)


def test_smooth_labels_alpha_one_is_uniform():
    labels = jax.nn.one_hot(_int_labels(1), CLASSES)
    _close(losses.smooth_labels(labels, 1.0), np.full((BATCH, CLASSES), 1.0 / CLASSES))
    _close(losses.smooth_labels(labels, 1.0), optax.losses.smooth_labels(labels, 1.0))


def test_hinge_and_perceptron_match_optax():
    outputs, targets = _logits(0, (7,)), _signs(1, (7,))

    @jax.jit
    def pairs(f, t):
        return [
            (losses.hinge_loss(f, t), optax.losses.hinge_loss(f, t)),
            (losses.perceptron_loss(f, t), optax.losses.perceptron_loss(f, t)),
            (losses.hinge_loss(f, t.astype(jnp.int32)), optax.losses.hinge_loss(f, t)),
        ]

    for got, want in pairs(outputs, targets):
        _close(got, want)


def test_kl_divergence_matches_optax():
    log_predictions = jnp.log(_probabilities(0, (2, 3, CLASSES)))
    targets = _probabilities(1, (2, 3, CLASSES)).at[0, 0, 1].set(0.0)  # 0 log 0 = 0

    @jax.jit
    def pairs(lq, p):
        return [
            (losses.kl_divergence(lq, p), optax.losses.kl_divergence(lq, p)),
            (losses.kl_divergence(lq, jnp.exp(lq)), jnp.zeros(lq.shape[:-1])),  # KL(q || q) = 0
        ]

    for got, want in pairs(log_predictions, targets):
        _close(got, want, rtol=2e-6)


# ---------------------------------------------------------- worked examples, by hand


def _f32(values):
    return np.asarray(values, np.float32)


def _check_worked(cases):
    """``cases``: (thunk, expected) pairs; every thunk runs in ONE jit compilation."""
    actual = jax.jit(lambda: [thunk() for thunk, _ in cases])()
    for got, (_, want) in zip(actual, cases):
        _close(got, want)


def test_worked_examples_regression():
    p, t = _f32([1.0, -2.0, 3.0]), _f32([0.0, 1.0, 3.0])
    _check_worked([
        (lambda: losses.squared_error(p, t), [1.0, 9.0, 0.0]),
        (lambda: losses.l2_loss(p, t), [0.5, 4.5, 0.0]),
        (lambda: losses.absolute_error(p, t), [1.0, 3.0, 0.0]),
        (lambda: losses.mean_squared_error(p, t), 10.0 / 3.0),
        (lambda: losses.mean_absolute_error(p, t), 4.0 / 3.0),
    ])


def test_worked_examples_binary():
    # z = 0: s = 1/2, loss = log 2 for either label; z = log 3: s = 3/4.
    z, y = _f32([0.0, np.log(3.0), np.log(3.0)]), _f32([1.0, 1.0, 0.0])
    p, y_p = _f32([0.5, 0.75, 0.75, 0.0, 1.0]), _f32([1.0, 1.0, 0.0, 0.0, 0.0])
    f, t = _f32([2.0, 0.5, -1.0, 0.0]), _f32([1.0, 1.0, 1.0, -1.0])
    _check_worked([
        (lambda: losses.sigmoid_binary_cross_entropy(z, y), [np.log(2), -np.log(0.75), -np.log(0.25)]),
        # p = 1 with label 0: log(1 - p) = log 0 is clamped at -100.
        (lambda: losses.binary_cross_entropy(p, y_p), [np.log(2), -np.log(0.75), -np.log(0.25), 0.0, 100.0]),
        (lambda: losses.hinge_loss(f, t), [0.0, 0.5, 2.0, 1.0]),
        (lambda: losses.perceptron_loss(f, t), [0.0, 0.0, 1.0, 0.0]),
    ])


def test_worked_examples_multiclass():
    # logits (log 2, 0, 0): softmax = (1/2, 1/4, 1/4).
    logits = _f32([[np.log(2.0), 0.0, 0.0]])
    first, last = np.array([0], np.int32), np.array([2], np.int32)
    _check_worked([
        (lambda: losses.softmax_cross_entropy_with_integer_labels(logits, first), [np.log(2)]),
        (lambda: losses.softmax_cross_entropy_with_integer_labels(logits, last), [np.log(4)]),
        (lambda: losses.softmax_cross_entropy(logits, _f32([[0.5, 0.5, 0.0]])),
         [0.5 * np.log(2) + 0.5 * np.log(4)]),
        # alpha = 0.3 over 3 classes: labels (0.8, 0.1, 0.1).
        (lambda: losses.smooth_labels(_f32([1.0, 0.0, 0.0]), 0.3), [0.8, 0.1, 0.1]),
        (lambda: losses.softmax_cross_entropy_with_integer_labels(logits, first, label_smoothing=0.3),
         [0.8 * np.log(2) + 0.1 * np.log(4) + 0.1 * np.log(4)]),
        (lambda: losses.nll_loss(np.log(_f32([[0.5, 0.25, 0.25]])), np.array([1], np.int32)), [np.log(4)]),
        # KL((1, 0) || (1/2, 1/2)) = log 2, with 0 log 0 = 0.
        (lambda: losses.kl_divergence(np.log(_f32([0.5, 0.5])), _f32([1.0, 0.0])), np.log(2)),
        (lambda: losses.kl_divergence(np.log(_f32([0.25, 0.75])), _f32([0.5, 0.5])),
         0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)),
        (lambda: losses.l1_penalty({"w": _f32([[1.0, -2.0]]), "b": _f32([0.5])}), 3.5),
        (lambda: losses.l2_penalty({"w": _f32([[1.0, -2.0]]), "b": _f32([0.5])}), 0.5 * (1.0 + 4.0 + 0.25)),
    ])


def test_out_of_range_integer_labels_give_nan():
    logits = _logits(0, (3, 3))

    @jax.jit
    def run(z):
        return (losses.softmax_cross_entropy_with_integer_labels(z, jnp.array([0, 3, -1])),
                losses.nll_loss(z, jnp.array([0, 7, 1])))

    loss, nll = run(logits)
    assert np.isfinite(loss[0]) and np.isnan(loss[1]) and np.isnan(loss[2])
    assert np.isfinite(nll[0]) and np.isnan(nll[1]) and np.isfinite(nll[2])


def test_concrete_out_of_range_labels_are_errors():
    """Outside jit the labels can be read: an out-of-range one used to give NaN instead of saying so."""
    logits = _logits(0, (3, 4))
    for name, call in [
        ("softmax_cross_entropy_with_integer_labels",
         lambda y: losses.softmax_cross_entropy_with_integer_labels(logits, y)),
        ("nll_loss", lambda y: losses.nll_loss(jax.nn.log_softmax(logits), y)),
        ("masked_cross_entropy", lambda y: losses.masked_cross_entropy(logits, y)),
    ]:
        scores = "log_probs" if name == "nll_loss" else "logits"
        for bad, got in [([0, 4, 1], "0 to 4"), ([-1, 2, 3], "-1 to 3")]:
            with pytest.raises(ValueError, match=rf"^{name}: expected labels in \[0, 4\) \(the classes of {scores}'s "
                                                 rf"last axis\), got labels from {got}$"):
                call(np.array(bad, np.int32))
        assert np.all(np.isfinite(call(jnp.array([0, 3, 1]))))
    # Under grad (labels still concrete) too; a label at a masked-out step is not checked.
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy_with_integer_labels: expected labels in \[0, 4\)"):
        jax.grad(lambda z: losses.softmax_cross_entropy_with_integer_labels(z, jnp.array([0, 9, 1])).sum())(logits)
    mask = np.array([True, False, True])
    assert np.isfinite(float(losses.masked_cross_entropy(logits, np.array([0, -1, 3], np.int32), mask)))
    with pytest.raises(ValueError, match=r"^masked_cross_entropy: expected labels in \[0, 4\) \(the classes of "
                                         r"logits's last axis, where mask is true\), got labels from 0 to 5"):
        losses.masked_cross_entropy(logits, np.array([0, -1, 5], np.int32), mask)


# ------------------------------------------------------------- large logits, stability


def test_large_logits_give_finite_losses_and_gradients():
    big = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    labels = jnp.array([1, 0])
    one_hot = jax.nn.one_hot(labels, 3)
    binary = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    cases = {
        "sigmoid_bce": lambda z: losses.sigmoid_binary_cross_entropy(z, binary),
        "softmax_ce": lambda z: losses.softmax_cross_entropy(z, one_hot, label_smoothing=0.1),
        "integer_ce": lambda z: losses.softmax_cross_entropy_with_integer_labels(z, labels),
        "kl": lambda z: losses.kl_divergence(jax.nn.log_softmax(z), one_hot),
        "bce_probabilities": lambda z: losses.binary_cross_entropy(jax.nn.sigmoid(z), binary),
    }

    @jax.jit  # one compilation for every value and gradient, jdl's and optax's
    def values_and_grads(z):
        ours = {name: (fn(z), jax.grad(lambda v: jnp.sum(fn(v)))(z)) for name, fn in cases.items()}
        theirs = {
            "sigmoid_bce": optax.losses.sigmoid_binary_cross_entropy(z, binary),
            "softmax_ce": optax.losses.softmax_cross_entropy(z, optax.losses.smooth_labels(one_hot, 0.1)),
            "integer_ce": optax.losses.softmax_cross_entropy_with_integer_labels(z, labels),
            "kl": optax.losses.kl_divergence(jax.nn.log_softmax(z), one_hot),
        }
        return ours, theirs

    results, expected = values_and_grads(big)
    for name, (value, grad) in results.items():
        assert np.all(np.isfinite(value)), name
        assert np.all(np.isfinite(grad)), name
    for name, want in expected.items():
        _close(results[name][0], want)
    # A wrong class 2e4 below the top costs 2e4; two tied top logits add log 2.
    _close(results["integer_ce"][0], [2e4, 2e4 + np.log(2)])
    # Its gradient is softmax - one_hot: exactly -1 / +1 / 0 and -1, 1/2, 1/2.
    _close(results["integer_ce"][1], [[1.0, -1.0, 0.0], [-1.0, 0.5, 0.5]])
    # BCE of a saturated sigmoid hits the -100 clamp, not inf.
    _close(results["bce_probabilities"][0][0], [100.0, 100.0, np.log(2)])


def test_binary_cross_entropy_gradient_finite_at_zero_and_one():
    p = jnp.array([0.0, 1.0, 0.0, 1.0, 0.5])
    y = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0])
    grad = jax.jit(jax.grad(lambda q: jnp.sum(losses.binary_cross_entropy(q, y))))(p)
    assert np.all(np.isfinite(grad))
    # d/dp -log p = -1/p = -2 at p = 1/2; zero where the clamp is active.
    _close(grad, [0.0, 0.0, 1.0, -1.0, -2.0])


def test_binary_cross_entropy_of_nan_is_nan_with_nan_gradient():
    """NaN is never clamped into a number (it used to give a loss of 100 with zero gradient)."""
    p = jnp.array([jnp.nan, jnp.nan, 0.5])
    y = jnp.array([1.0, 0.0, 1.0])
    loss, grad = jax.vmap(jax.value_and_grad(losses.binary_cross_entropy))(p, y)
    assert np.isnan(loss[0]) and np.isnan(loss[1]) and np.isnan(grad[0]) and np.isnan(grad[1])
    _close(loss[2], np.log(2.0))
    _close(grad[2], -2.0)


def test_kl_divergence_gradient_finite_where_target_is_zero():
    log_q = jnp.log(jnp.array([0.5, 0.5]))
    grads = jax.jit(jax.grad(losses.kl_divergence, argnums=(0, 1)))(log_q, jnp.array([1.0, 0.0]))
    assert all(np.all(np.isfinite(g)) for g in grads)
    _close(grads[0], [-1.0, 0.0])


# ------------------------------------------------------------- finite differences


# Grouped by family: each group is one function with a dict of outputs, so one
# compilation per transform covers every loss in it (a failure names the dict key).
SMOOTH_LOSS_GROUPS = {
    "regression": (
        lambda p, t: {
            "squared_error": losses.squared_error(p, t),
            "squared_error_no_targets": losses.squared_error(p),
            "l2_loss": losses.l2_loss(p, t),
            "mean_squared_error": losses.mean_squared_error(p, t),
        },
        (_logits(0, (3,)), _logits(1, (3,))),
    ),
    "binary": (
        lambda z, p, y: {
            "sigmoid_binary_cross_entropy": losses.sigmoid_binary_cross_entropy(z, y),
            "binary_cross_entropy": losses.binary_cross_entropy(p, y),
        },
        (_logits(0, (4,)), _uniform(1, (4,), 0.1, 0.9), _uniform(2, (4,))),
    ),
    "multiclass": (
        lambda z, y, log_q: {
            "softmax_cross_entropy": losses.softmax_cross_entropy(z, y, label_smoothing=0.1),
            "softmax_cross_entropy_with_integer_labels": losses.softmax_cross_entropy_with_integer_labels(
                z, jnp.array([2, 0]), label_smoothing=0.1),
            "nll_loss": losses.nll_loss(log_q, jnp.array([1, 2])),
            "kl_divergence": losses.kl_divergence(log_q, y),
            "smooth_labels": losses.smooth_labels(y, 0.2),
        },
        (_logits(0, (2, 3)), _probabilities(1, (2, 3)), jnp.log(_probabilities(2, (2, 3)))),
    ),
}


@pytest.mark.parametrize("group", sorted(SMOOTH_LOSS_GROUPS))
def test_gradients_match_finite_differences(group):
    fn, args = SMOOTH_LOSS_GROUPS[group]
    _finite_differences(fn, args)


def test_cross_entropy_gradient_is_softmax_minus_one_hot():
    # The course's result: dL/dz = softmax(z) - y.
    logits, labels = _logits(0), _int_labels(1)
    grad = jax.jit(jax.grad(lambda z: jnp.sum(losses.softmax_cross_entropy_with_integer_labels(z, labels))))(logits)
    z = np.asarray(logits, np.float64)
    softmax = np.exp(z - z.max(-1, keepdims=True))
    softmax /= softmax.sum(-1, keepdims=True)
    _close(grad, softmax - np.eye(CLASSES)[np.asarray(labels)], atol=1e-6)


# ----------------------------------------------------------------------- penalties


def test_penalties_match_manual_sum_over_nested_pytree():
    params = {
        "encoder": {"w": _logits(0, (3, 4)), "b": _logits(1, (4,))},
        "head": {"block_0": {"w": _logits(2, (4, 2))}, "scale": jnp.array(-1.5)},
    }
    flat = [np.asarray(leaf, np.float64).ravel() for leaf in
            (params["encoder"]["w"], params["encoder"]["b"], params["head"]["block_0"]["w"],
             params["head"]["scale"])]
    (l1, l1_grads), (l2, l2_grads) = jax.jit(
        lambda p: (jax.value_and_grad(losses.l1_penalty)(p), jax.value_and_grad(losses.l2_penalty)(p))
    )(params)
    _close(l1, sum(np.abs(w).sum() for w in flat), rtol=1e-6)
    _close(l2, 0.5 * sum((w**2).sum() for w in flat), rtol=1e-6)
    # d/dw 1/2 sum w^2 = w; d/dw sum |w| = sign(w).
    assert jax.tree.structure(l2_grads) == jax.tree.structure(params)
    for got_l1, got_l2, w in zip(jax.tree.leaves(l1_grads), jax.tree.leaves(l2_grads), jax.tree.leaves(params)):
        _close(got_l1, np.sign(w))
        _close(got_l2, w)
    _close(losses.l2_penalty({}), 0.0)


# -------------------------------------------------------------------------- errors
# numpy inputs: the checks read only shapes and dtypes, so nothing is compiled here.


def _zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype)


def _ones(shape, dtype=np.float32):
    return np.ones(shape, dtype)


@pytest.mark.parametrize("name, fn", [
    ("squared_error", losses.squared_error),
    ("l2_loss", losses.l2_loss),
    ("absolute_error", losses.absolute_error),
    ("mean_squared_error", losses.mean_squared_error),
    ("mean_absolute_error", losses.mean_absolute_error),
    ("sigmoid_binary_cross_entropy", losses.sigmoid_binary_cross_entropy),
    ("binary_cross_entropy", losses.binary_cross_entropy),
    ("hinge_loss", losses.hinge_loss),
    ("perceptron_loss", losses.perceptron_loss),
    ("softmax_cross_entropy", losses.softmax_cross_entropy),
    ("kl_divergence", losses.kl_divergence),
])
def test_shape_mismatch_is_an_error_not_a_broadcast(name, fn):
    # (4, 1) against (4, 3) would broadcast silently in jnp (and in optax).
    with pytest.raises(ValueError, match=rf"^{name}: expected .* same shape .* \(4, 1\)"):
        fn(_zeros((4, 1)), _zeros((4, 3)))


@pytest.mark.parametrize("name, fn", [
    ("softmax_cross_entropy_with_integer_labels", losses.softmax_cross_entropy_with_integer_labels),
    ("nll_loss", losses.nll_loss),
])
def test_integer_label_errors(name, fn):
    logits = _zeros((4, 3))
    with pytest.raises(TypeError, match=rf"^{name}: expected an integer labels, got float32"):
        fn(logits, _zeros((4,)))
    with pytest.raises(TypeError, match=rf"^{name}: .*one-hot.*use softmax_cross_entropy"):
        fn(logits, _zeros((4, 3)))
    with pytest.raises(ValueError, match=rf"^{name}: expected labels of shape \(4,\).*got labels of shape \(4, 1\)"):
        fn(logits, _zeros((4, 1), np.int32))
    with pytest.raises(ValueError, match=rf"^{name}: expected labels of shape \(4,\).*got labels of shape \(\)"):
        fn(logits, np.array(1))
    with pytest.raises(TypeError, match=rf"^{name}: expected a floating-point .*got int32"):
        fn(_zeros((4, 3), np.int32), _zeros((4,), np.int32))
    with pytest.raises(ValueError, match=rf"^{name}: expected .* of rank >= 1"):
        fn(np.float32(0.0), np.array(0))


def test_softmax_cross_entropy_rejects_integer_class_labels():
    with pytest.raises(TypeError, match=r"^softmax_cross_entropy: .*class indices.*integer_labels"):
        losses.softmax_cross_entropy(_zeros((4, 3)), _zeros((4,), np.int32))
    with pytest.raises(TypeError, match=r"^softmax_cross_entropy: expected a floating-point labels, got int32"):
        losses.softmax_cross_entropy(_zeros((4, 3)), _zeros((4, 3), np.int32))


@pytest.mark.parametrize("name, fn, args", [
    ("squared_error", losses.squared_error, (_zeros(3, np.int32), _zeros(3))),
    ("sigmoid_binary_cross_entropy", losses.sigmoid_binary_cross_entropy, (_zeros(3, np.int32), _zeros(3))),
    ("hinge_loss", losses.hinge_loss, (_zeros(3, np.int32), _ones(3))),
    ("kl_divergence", losses.kl_divergence, (_zeros(3), _zeros(3, np.int32))),
    ("smooth_labels", losses.smooth_labels, (_zeros(3, np.int32), 0.1)),
])
def test_non_floating_inputs_are_errors(name, fn, args):
    with pytest.raises(TypeError, match=rf"^{name}: expected a floating-point"):
        fn(*args)


def test_non_array_and_complex_inputs_are_errors():
    with pytest.raises(TypeError, match=r"^mean_absolute_error: expected predictions to be an array, got list"):
        losses.mean_absolute_error([1.0, 2.0], _zeros(2))
    with pytest.raises(TypeError, match=r"^hinge_loss: expected real-valued targets .*complex64"):
        losses.hinge_loss(_zeros(2), _zeros(2, np.complex64))


def test_label_smoothing_out_of_range_is_an_error():
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy: expected label_smoothing in \[0, 1\], got 1.5"):
        losses.softmax_cross_entropy(_zeros((2, 3)), _zeros((2, 3)), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy_with_integer_labels: expected label_smoothing"):
        losses.softmax_cross_entropy_with_integer_labels(_zeros((2, 3)), _zeros(2, np.int32),
                                                         label_smoothing=-0.1)
    with pytest.raises(ValueError, match=r"^smooth_labels: expected alpha in \[0, 1\], got 2"):
        losses.smooth_labels(_zeros((2, 3)), 2)


def test_penalty_errors_name_the_leaf():
    params = {"dense": {"w": _zeros((2, 2)), "step": _zeros((), np.int32)}}
    with pytest.raises(TypeError, match=r"^l1_penalty: expected every leaf .* got int32 at params\['dense'\]\['step'\]"):
        losses.l1_penalty(params)
    with pytest.raises(TypeError, match=r"^l2_penalty: .* got float at params\['lr'\]"):
        losses.l2_penalty({"lr": 0.1})


def test_errors_are_raised_at_trace_time_under_jit():
    loss = jax.jit(losses.softmax_cross_entropy_with_integer_labels)
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy_with_integer_labels: expected labels of shape \(4,\)"):
        loss(_zeros((4, 3)), _zeros((3,), np.int32))


# ----------------------------------------------------------------- padded sequences (masks)


def test_sequence_mask_marks_the_real_steps():
    mask = losses.sequence_mask(jnp.array([[3, 0], [1, 4]]), 4)
    expected = np.arange(4)[None, None, :] < np.array([[3, 0], [1, 4]])[..., None]
    assert mask.dtype == jnp.bool_ and mask.shape == (2, 2, 4)
    np.testing.assert_array_equal(mask, expected)


def test_masked_cross_entropy_is_the_mean_over_real_steps_and_ignores_padding_labels():
    logits = _uniform(40, (2, 5, CLASSES), -3.0, 3.0)
    lengths = np.array([5, 3])
    labels = jnp.array([[0, 1, 2, 3, 0], [1, 2, 3, -1, 99]])  # junk labels at the padded steps
    mask = losses.sequence_mask(jnp.asarray(lengths), 5)
    loss, grad = jax.value_and_grad(losses.masked_cross_entropy)(logits, labels, mask)
    log_probs = np.asarray(jax.nn.log_softmax(logits), np.float64)
    expected = -np.mean([log_probs[b, t, labels[b, t]] for b in range(2) for t in range(lengths[b])])
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert np.all(np.asarray(grad)[1, 3:] == 0.0) and np.all(np.isfinite(np.asarray(grad)))
    # Without a mask every step counts: the out-of-range label 99 is an error, and under jit NaN, never a
    # wrapped id.
    with pytest.raises(ValueError, match=r"^masked_cross_entropy: expected labels in \[0, 4\)"):
        losses.masked_cross_entropy(logits, labels)
    assert np.isnan(float(jax.jit(losses.masked_cross_entropy)(logits, labels)))
    good = jnp.where(mask, labels, 0)
    np.testing.assert_allclose(losses.masked_cross_entropy(logits, good),
                               np.mean(optax.losses.softmax_cross_entropy_with_integer_labels(logits, good)), rtol=1e-6)
    assert float(losses.masked_cross_entropy(logits, labels, jnp.zeros((2, 5), bool))) == 0.0


def test_masked_mean_never_lets_masked_values_in():
    values = jnp.array([[1.0, jnp.nan], [3.0, jnp.inf]])
    mask = jnp.array([[True, False], [True, False]])
    assert float(losses.masked_mean(values, mask)) == 2.0
    grad = jax.grad(lambda v: losses.masked_mean(v, mask))(values)
    np.testing.assert_array_equal(grad, [[0.5, 0.0], [0.5, 0.0]])
    assert float(losses.masked_mean(jnp.array([1.0, 2.0]))) == 1.5


def test_masked_loss_errors():
    with pytest.raises(ValueError, match=r"^masked_cross_entropy: expected labels of shape \(2, 5\)"):
        losses.masked_cross_entropy(_zeros((2, 5, 3)), _zeros((2, 4), np.int32))
    with pytest.raises(TypeError, match=r"^masked_cross_entropy: expected a boolean mask \(True = keep\), got float32"):
        losses.masked_cross_entropy(_zeros((2, 5, 3)), _zeros((2, 5), np.int32), _ones((2, 5)))
    with pytest.raises(ValueError, match=r"^masked_cross_entropy: expected mask of shape \(2, 5\) \(the labels'\)"):
        losses.masked_cross_entropy(_zeros((2, 5, 3)), _zeros((2, 5), np.int32), np.ones((2, 4), bool))
    with pytest.raises(ValueError, match=r"^sequence_mask: expected time to be an int >= 0, got -1"):
        losses.sequence_mask(jnp.array([1]), -1)
    with pytest.raises(TypeError, match=r"^sequence_mask: expected an integer lengths, got float32"):
        losses.sequence_mask(_ones(2), 3)


def test_means_over_nothing_are_errors():
    """MSE, MAE and the unmasked means of zero elements used to give NaN; a loss over no class a silent 0 or
    jax's own error."""
    empty = _zeros((0, 3))
    # The message is the loss's own or, first, check_array's generic one (no empty axis anywhere).
    with pytest.raises(ValueError, match=r"^mean_squared_error: expected .*empty.* shape \(0, 3\)"):
        losses.mean_squared_error(empty, empty)
    with pytest.raises(ValueError, match=r"^mean_absolute_error: expected .*empty"):
        jax.jit(losses.mean_absolute_error)(empty, empty)
    with pytest.raises(ValueError, match=r"^masked_mean: expected values with no empty axis"):
        losses.masked_mean(_zeros((0,)))
    with pytest.raises(ValueError, match=r"^masked_cross_entropy: expected .*empty"):
        losses.masked_cross_entropy(_zeros((2, 0, 3)), _zeros((2, 0), np.int32))
    no_class = _zeros((2, 0))
    for name, call in [("softmax_cross_entropy", lambda: losses.softmax_cross_entropy(no_class, no_class)),
                       ("softmax_cross_entropy_with_integer_labels",
                        lambda: losses.softmax_cross_entropy_with_integer_labels(no_class, _zeros((2,), np.int32))),
                       ("nll_loss", lambda: losses.nll_loss(no_class, _zeros((2,), np.int32))),
                       ("kl_divergence", lambda: losses.kl_divergence(no_class, no_class))]:
        with pytest.raises(ValueError, match=rf"^{name}: expected .*empty.* shape \(2, 0\)"):
            call()


def test_label_smoothing_in_the_courses_convention_is_optaxs_with_a_mapped_alpha():
    """Seed 002: ``(eps/9, ..., 1 - eps, ..., eps/9)`` for 10 classes; optax's ``alpha = eps K / (K - 1)``."""
    labels = jax.nn.one_hot(jnp.array([2, 7, 0]), 10)
    smoothed = losses.smooth_labels_over_wrong_classes(labels, 0.1)
    np.testing.assert_allclose(smoothed[0], [0.1 / 9] * 2 + [0.9] + [0.1 / 9] * 7, rtol=1e-6)
    np.testing.assert_allclose(smoothed.sum(-1), 1.0, rtol=1e-6)
    alpha = losses.wrong_class_smoothing_alpha(0.1, 10)
    assert alpha == pytest.approx(1 / 9)
    np.testing.assert_allclose(smoothed, optax.smooth_labels(labels, alpha), rtol=1e-6)
    np.testing.assert_allclose(losses.smooth_labels_over_wrong_classes(labels, 0.9), 0.1)  # (K-1)/K: uniform
    with pytest.raises(ValueError, match=r"smooth_labels_over_wrong_classes: expected epsilon <= \(K - 1\) / K = 0.9"):
        losses.smooth_labels_over_wrong_classes(labels, 0.95)
