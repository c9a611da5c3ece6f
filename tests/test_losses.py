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
ATOL = 1e-6
BATCH, CLASSES = 5, 4


def _key(i):
    return jax.random.key(i)


def _logits(seed=0, shape=(BATCH, CLASSES), scale=3.0):
    return scale * jax.random.normal(_key(seed), shape)


def _int_labels(seed=1, shape=(BATCH,), num_classes=CLASSES):
    return jax.random.randint(_key(seed), shape, 0, num_classes)


def _probabilities(seed=2, shape=(BATCH, CLASSES)):
    return jax.nn.softmax(_logits(seed, shape))


def _close(actual, expected, rtol=RTOL, atol=ATOL):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def _finite_differences(fn, args):
    """check_grads in float64 (x64 only inside), forward and reverse mode, first order."""
    with jax.enable_x64(True):
        args64 = tuple(jnp.asarray(a, jnp.float64) for a in args)
        fn = jax.jit(fn)  # one compilation per transform instead of one per eager op
        assert fn(*args64).dtype == jnp.float64
        check_grads(fn, args64, order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5, eps=1e-5)


# ------------------------------------------------------------------------ vs optax


def test_regression_losses_match_optax():
    p, t = _logits(0, (3, 4)), _logits(1, (3, 4))
    _close(losses.squared_error(p, t), optax.losses.squared_error(p, t))
    _close(losses.squared_error(p), optax.losses.squared_error(p))
    _close(losses.l2_loss(p, t), optax.losses.l2_loss(p, t))
    _close(losses.l2_loss(p), optax.losses.l2_loss(p))
    _close(losses.mean_squared_error(p, t), optax.losses.squared_error(p, t).mean())
    _close(losses.absolute_error(p, t), np.abs(np.asarray(p) - np.asarray(t)))
    _close(losses.mean_absolute_error(p, t), np.mean(np.abs(np.asarray(p) - np.asarray(t))))
    assert losses.mean_squared_error(p, t).shape == ()
    assert losses.mean_absolute_error(p, t).shape == ()


def test_sigmoid_binary_cross_entropy_matches_optax():
    logits = _logits(0, (6, 3))
    hard = jax.random.bernoulli(_key(1), 0.5, (6, 3)).astype(jnp.float32)
    soft = jax.random.uniform(_key(2), (6, 3))
    for labels in (hard, soft):
        _close(losses.sigmoid_binary_cross_entropy(logits, labels),
               optax.losses.sigmoid_binary_cross_entropy(logits, labels))
    # Integer 0/1 labels give the same numbers as float ones.
    _close(losses.sigmoid_binary_cross_entropy(logits, hard.astype(jnp.int32)),
           optax.losses.sigmoid_binary_cross_entropy(logits, hard))


def test_binary_cross_entropy_matches_optax_on_logits():
    # BCE from p = sigmoid(z) is sigmoid BCE from z (away from the clamp).
    logits = _logits(0, (6, 3), scale=2.0)
    labels = jax.random.uniform(_key(1), (6, 3))
    _close(losses.binary_cross_entropy(jax.nn.sigmoid(logits), labels),
           optax.losses.sigmoid_binary_cross_entropy(logits, labels), rtol=1e-5, atol=1e-6)


def test_binary_cross_entropy_matches_numpy_with_clamp():
    p = np.array([0.0, 1e-50, 0.3, 0.999, 1.0, 1.0], np.float64)
    y = np.array([1.0, 1.0, 0.0, 1.0, 0.0, 1.0], np.float64)
    with np.errstate(divide="ignore"):
        expected = -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))
    _close(losses.binary_cross_entropy(jnp.asarray(p, jnp.float32), jnp.asarray(y, jnp.float32)),
           expected, rtol=1e-5)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_matches_optax(label_smoothing):
    logits = _logits(0, (2, 3, CLASSES))
    labels = _probabilities(1, (2, 3, CLASSES))
    expected = optax.losses.softmax_cross_entropy(
        logits, optax.losses.smooth_labels(labels, label_smoothing))
    _close(losses.softmax_cross_entropy(logits, labels, label_smoothing=label_smoothing), expected)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_with_integer_labels_matches_optax(label_smoothing):
    logits, labels = _logits(0), _int_labels(1)
    one_hot = jax.nn.one_hot(labels, CLASSES)
    actual = losses.softmax_cross_entropy_with_integer_labels(
        logits, labels, label_smoothing=label_smoothing)
    _close(actual, optax.losses.softmax_cross_entropy(
        logits, optax.losses.smooth_labels(one_hot, label_smoothing)), rtol=2e-6)
    if label_smoothing == 0.0:
        _close(actual, optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels))


def test_integer_and_one_hot_cross_entropy_agree():
    logits, labels = _logits(3, (2, 3, CLASSES)), _int_labels(4, (2, 3))
    _close(losses.softmax_cross_entropy_with_integer_labels(logits, labels, label_smoothing=0.2),
           losses.softmax_cross_entropy(logits, jax.nn.one_hot(labels, CLASSES), label_smoothing=0.2),
           rtol=2e-6)


def test_nll_loss_matches_optax_and_numpy():
    logits, labels = _logits(0), _int_labels(1)
    log_probs = jax.nn.log_softmax(logits)
    _close(losses.nll_loss(log_probs, labels),
           optax.losses.softmax_cross_entropy_with_integer_labels(logits, labels), rtol=2e-6)
    lp = np.asarray(log_probs)
    _close(losses.nll_loss(log_probs, labels), -lp[np.arange(BATCH), np.asarray(labels)])


def test_smooth_labels_matches_optax():
    labels = jax.nn.one_hot(_int_labels(1), CLASSES)
    for alpha in (0.0, 0.1, 1.0):
        _close(losses.smooth_labels(labels, alpha), optax.losses.smooth_labels(labels, alpha))


def test_hinge_and_perceptron_match_optax():
    outputs = _logits(0, (7,))
    targets = jnp.where(jax.random.bernoulli(_key(1), 0.5, (7,)), 1.0, -1.0)
    _close(losses.hinge_loss(outputs, targets), optax.losses.hinge_loss(outputs, targets))
    _close(losses.perceptron_loss(outputs, targets), optax.losses.perceptron_loss(outputs, targets))
    int_targets = targets.astype(jnp.int32)
    _close(losses.hinge_loss(outputs, int_targets), optax.losses.hinge_loss(outputs, targets))


def test_kl_divergence_matches_optax():
    log_predictions = jax.nn.log_softmax(_logits(0, (2, 3, CLASSES)))
    targets = _probabilities(1, (2, 3, CLASSES))
    targets = targets.at[0, 0, 1].set(0.0)  # 0 log 0 = 0
    _close(losses.kl_divergence(log_predictions, targets),
           optax.losses.kl_divergence(log_predictions, targets), rtol=2e-6)
    # KL(p || p) = 0
    _close(losses.kl_divergence(jnp.log(_probabilities(1)), _probabilities(1)), np.zeros(BATCH), atol=1e-6)


# ---------------------------------------------------------- worked examples, by hand


def test_worked_examples_regression():
    p, t = jnp.array([1.0, -2.0, 3.0]), jnp.array([0.0, 1.0, 3.0])
    _close(losses.squared_error(p, t), [1.0, 9.0, 0.0])
    _close(losses.l2_loss(p, t), [0.5, 4.5, 0.0])
    _close(losses.absolute_error(p, t), [1.0, 3.0, 0.0])
    _close(losses.mean_squared_error(p, t), 10.0 / 3.0)
    _close(losses.mean_absolute_error(p, t), 4.0 / 3.0)


def test_worked_examples_binary():
    # z = 0: s = 1/2, loss = log 2 for either label; z = log 3: s = 3/4.
    z = jnp.array([0.0, np.log(3.0), np.log(3.0)], jnp.float32)
    y = jnp.array([1.0, 1.0, 0.0])
    _close(losses.sigmoid_binary_cross_entropy(z, y), [np.log(2), -np.log(0.75), -np.log(0.25)])
    p = jnp.array([0.5, 0.75, 0.75, 0.0, 1.0])
    y = jnp.array([1.0, 1.0, 0.0, 0.0, 0.0])
    _close(losses.binary_cross_entropy(p, y),
           [np.log(2), -np.log(0.75), -np.log(0.25), 0.0, 100.0], rtol=1e-6)
    f = jnp.array([2.0, 0.5, -1.0, 0.0])
    t = jnp.array([1.0, 1.0, 1.0, -1.0])
    _close(losses.hinge_loss(f, t), [0.0, 0.5, 2.0, 1.0])
    _close(losses.perceptron_loss(f, t), [0.0, 0.0, 1.0, 0.0])


def test_worked_examples_multiclass():
    # logits (log 2, 0, 0): softmax = (1/2, 1/4, 1/4).
    logits = jnp.array([[np.log(2.0), 0.0, 0.0]], jnp.float32)
    _close(losses.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0])), [np.log(2)])
    _close(losses.softmax_cross_entropy_with_integer_labels(logits, jnp.array([2])), [np.log(4)])
    _close(losses.softmax_cross_entropy(logits, jnp.array([[0.5, 0.5, 0.0]])),
           [0.5 * np.log(2) + 0.5 * np.log(4)])
    # alpha = 0.3 over 3 classes: labels (0.8, 0.1, 0.1).
    _close(losses.smooth_labels(jnp.array([1.0, 0.0, 0.0]), 0.3), [0.8, 0.1, 0.1])
    _close(losses.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0]), label_smoothing=0.3),
           [0.8 * np.log(2) + 0.2 * np.log(4)])
    _close(losses.nll_loss(jnp.log(jnp.array([[0.5, 0.25, 0.25]])), jnp.array([1])), [np.log(4)])
    # KL((1, 0) || (1/2, 1/2)) = log 2; KL((1/2, 1/2) || (1/4, 3/4)) = 1/2 log(4/3) + 1/2 log(2/3)... by hand:
    _close(losses.kl_divergence(jnp.log(jnp.array([0.5, 0.5])), jnp.array([1.0, 0.0])), np.log(2))
    _close(losses.kl_divergence(jnp.log(jnp.array([0.25, 0.75])), jnp.array([0.5, 0.5])),
           0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75))


def test_out_of_range_integer_labels_give_nan():
    logits = _logits(0, (3, 3))
    loss = losses.softmax_cross_entropy_with_integer_labels(logits, jnp.array([0, 3, -1]))
    assert np.isfinite(loss[0]) and np.isnan(loss[1]) and np.isnan(loss[2])
    assert np.isnan(losses.nll_loss(logits, jnp.array([0, 7, 1]))[1])


# ------------------------------------------------------------- large logits, stability


def test_large_logits_give_finite_losses_and_gradients():
    big = jnp.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    labels = jnp.array([1, 0])
    one_hot = jax.nn.one_hot(labels, 3)
    binary = jnp.array([[0.0, 1.0, 1.0], [1.0, 0.0, 1.0]])
    cases = {
        "sigmoid_bce": (lambda z: losses.sigmoid_binary_cross_entropy(z, binary),
                        optax.losses.sigmoid_binary_cross_entropy(big, binary)),
        "softmax_ce": (lambda z: losses.softmax_cross_entropy(z, one_hot, label_smoothing=0.1),
                       optax.losses.softmax_cross_entropy(big, optax.losses.smooth_labels(one_hot, 0.1))),
        "integer_ce": (lambda z: losses.softmax_cross_entropy_with_integer_labels(z, labels),
                       optax.losses.softmax_cross_entropy_with_integer_labels(big, labels)),
        "kl": (lambda z: losses.kl_divergence(jax.nn.log_softmax(z), one_hot),
               optax.losses.kl_divergence(jax.nn.log_softmax(big), one_hot)),
        "bce_probabilities": (lambda z: losses.binary_cross_entropy(jax.nn.sigmoid(z), binary), None),
    }
    for name, (fn, expected) in cases.items():
        value = fn(big)
        grad = jax.grad(lambda z: jnp.sum(fn(z)))(big)
        assert np.all(np.isfinite(value)), name
        assert np.all(np.isfinite(grad)), name
        if expected is not None:
            _close(value, expected, rtol=1e-6)
    # A wrong class 2e4 below the top costs 2e4; two tied top logits add log 2.
    _close(losses.softmax_cross_entropy_with_integer_labels(big, labels), [2e4, 2e4 + np.log(2)])
    # BCE of a saturated sigmoid hits the -100 clamp, not inf.
    _close(losses.binary_cross_entropy(jax.nn.sigmoid(big), binary)[0], [100.0, 100.0, np.log(2)])


def test_binary_cross_entropy_gradient_finite_at_zero_and_one():
    p = jnp.array([0.0, 1.0, 0.0, 1.0, 0.5])
    y = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0])
    grad = jax.grad(lambda q: jnp.sum(losses.binary_cross_entropy(q, y)))(p)
    assert np.all(np.isfinite(grad))
    # d/dp -log p = -1/p = -2 at p = 1/2; zero where the clamp is active.
    _close(grad, [0.0, 0.0, 1.0, -1.0, -2.0])


def test_kl_divergence_gradient_finite_where_target_is_zero():
    log_q = jnp.log(jnp.array([0.5, 0.5]))
    grads = jax.grad(lambda lq, t: losses.kl_divergence(lq, t), argnums=(0, 1))(log_q, jnp.array([1.0, 0.0]))
    assert all(np.all(np.isfinite(g)) for g in grads)
    _close(grads[0], [-1.0, 0.0])


# ------------------------------------------------------------- finite differences


SMOOTH_LOSSES = {
    "squared_error": (lambda p, t: losses.squared_error(p, t), (_logits(0, (3,)), _logits(1, (3,)))),
    "l2_loss": (lambda p, t: losses.l2_loss(p, t), (_logits(0, (3,)), _logits(1, (3,)))),
    "mean_squared_error": (lambda p, t: losses.mean_squared_error(p, t), (_logits(0, (3,)), _logits(1, (3,)))),
    "sigmoid_bce": (lambda z, y: losses.sigmoid_binary_cross_entropy(z, y),
                    (_logits(0, (4,)), jax.random.uniform(_key(1), (4,)))),
    "bce": (lambda p, y: losses.binary_cross_entropy(p, y),
            (jax.random.uniform(_key(0), (4,), minval=0.1, maxval=0.9), jax.random.uniform(_key(1), (4,)))),
    "softmax_ce": (lambda z, y: losses.softmax_cross_entropy(z, y, label_smoothing=0.1),
                   (_logits(0, (2, 3)), _probabilities(1, (2, 3)))),
    "integer_ce": (lambda z: losses.softmax_cross_entropy_with_integer_labels(
        z, jnp.array([2, 0]), label_smoothing=0.1), (_logits(0, (2, 3)),)),
    "nll": (lambda lp: losses.nll_loss(lp, jnp.array([1, 2])), (_logits(0, (2, 3)),)),
    "kl": (lambda lq, t: losses.kl_divergence(lq, t),
           (jax.nn.log_softmax(_logits(0, (2, 3))), _probabilities(1, (2, 3)))),
}


@pytest.mark.parametrize("name", sorted(SMOOTH_LOSSES))
def test_gradients_match_finite_differences(name):
    fn, args = SMOOTH_LOSSES[name]
    _finite_differences(fn, args)


def test_cross_entropy_gradient_is_softmax_minus_one_hot():
    # The course's result: dL/dz = softmax(z) - y.
    logits, labels = _logits(0), _int_labels(1)
    grad = jax.grad(lambda z: jnp.sum(losses.softmax_cross_entropy_with_integer_labels(z, labels)))(logits)
    _close(grad, jax.nn.softmax(logits) - jax.nn.one_hot(labels, CLASSES), atol=1e-6)


# ----------------------------------------------------------------------- penalties


def test_penalties_match_manual_sum_over_nested_pytree():
    params = {
        "encoder": {"w": _logits(0, (3, 4)), "b": _logits(1, (4,))},
        "head": {"block_0": {"w": _logits(2, (4, 2))}, "scale": jnp.array(-1.5)},
    }
    flat = [np.asarray(leaf, np.float64).ravel() for leaf in
            (params["encoder"]["w"], params["encoder"]["b"], params["head"]["block_0"]["w"],
             params["head"]["scale"])]
    _close(losses.l1_penalty(params), sum(np.abs(w).sum() for w in flat), rtol=1e-6)
    _close(losses.l2_penalty(params), 0.5 * sum((w**2).sum() for w in flat), rtol=1e-6)
    # d/dw lam/2 sum w^2 = lam w; d/dw sum |w| = sign(w).
    grads = jax.grad(losses.l2_penalty)(params)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(params)):
        _close(got, want)
    grads = jax.grad(losses.l1_penalty)(params)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(params)):
        _close(got, np.sign(want))
    _close(losses.l2_penalty({}), 0.0)


def test_worked_example_penalties():
    params = {"w": jnp.array([[1.0, -2.0]]), "b": jnp.array([0.5])}
    _close(losses.l1_penalty(params), 3.5)
    _close(losses.l2_penalty(params), 0.5 * (1.0 + 4.0 + 0.25))


# -------------------------------------------------------------------------- errors


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
        fn(jnp.zeros((4, 1)), jnp.zeros((4, 3)))


@pytest.mark.parametrize("name, fn", [
    ("softmax_cross_entropy_with_integer_labels", losses.softmax_cross_entropy_with_integer_labels),
    ("nll_loss", losses.nll_loss),
])
def test_integer_label_errors(name, fn):
    logits = jnp.zeros((4, 3))
    with pytest.raises(TypeError, match=rf"^{name}: expected an integer labels, got float32"):
        fn(logits, jnp.zeros((4,)))
    with pytest.raises(TypeError, match=rf"^{name}: .*one-hot.*use softmax_cross_entropy"):
        fn(logits, jnp.zeros((4, 3)))
    with pytest.raises(ValueError, match=rf"^{name}: expected labels of shape \(4,\).*got labels of shape \(4, 1\)"):
        fn(logits, jnp.zeros((4, 1), jnp.int32))
    with pytest.raises(ValueError, match=rf"^{name}: expected labels of shape \(4,\).*got labels of shape \(\)"):
        fn(logits, jnp.array(1))
    with pytest.raises(TypeError, match=rf"^{name}: expected a floating-point .*got int32"):
        fn(jnp.zeros((4, 3), jnp.int32), jnp.zeros((4,), jnp.int32))
    with pytest.raises(ValueError, match=rf"^{name}: expected .* of rank >= 1"):
        fn(jnp.array(0.0), jnp.array(0))


def test_softmax_cross_entropy_rejects_integer_class_labels():
    with pytest.raises(TypeError, match=r"^softmax_cross_entropy: .*class indices.*integer_labels"):
        losses.softmax_cross_entropy(jnp.zeros((4, 3)), jnp.zeros((4,), jnp.int32))
    with pytest.raises(TypeError, match=r"^softmax_cross_entropy: expected a floating-point labels, got int32"):
        losses.softmax_cross_entropy(jnp.zeros((4, 3)), jnp.zeros((4, 3), jnp.int32))


@pytest.mark.parametrize("name, fn, args", [
    ("squared_error", losses.squared_error, (jnp.zeros(3, jnp.int32), jnp.zeros(3))),
    ("sigmoid_binary_cross_entropy", losses.sigmoid_binary_cross_entropy, (jnp.zeros(3, jnp.int32), jnp.zeros(3))),
    ("hinge_loss", losses.hinge_loss, (jnp.zeros(3, jnp.int32), jnp.ones(3))),
    ("kl_divergence", losses.kl_divergence, (jnp.zeros(3), jnp.zeros(3, jnp.int32))),
    ("smooth_labels", losses.smooth_labels, (jnp.zeros(3, jnp.int32), 0.1)),
])
def test_non_floating_inputs_are_errors(name, fn, args):
    with pytest.raises(TypeError, match=rf"^{name}: expected a floating-point"):
        fn(*args)


def test_non_array_and_complex_inputs_are_errors():
    with pytest.raises(TypeError, match=r"^mean_absolute_error: expected predictions to be an array, got list"):
        losses.mean_absolute_error([1.0, 2.0], jnp.zeros(2))
    with pytest.raises(TypeError, match=r"^hinge_loss: expected real-valued targets .*complex64"):
        losses.hinge_loss(jnp.zeros(2), jnp.zeros(2, jnp.complex64))


def test_label_smoothing_out_of_range_is_an_error():
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy: expected label_smoothing in \[0, 1\], got 1.5"):
        losses.softmax_cross_entropy(jnp.zeros((2, 3)), jnp.zeros((2, 3)), label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy_with_integer_labels: expected label_smoothing"):
        losses.softmax_cross_entropy_with_integer_labels(jnp.zeros((2, 3)), jnp.zeros(2, jnp.int32),
                                                         label_smoothing=-0.1)
    with pytest.raises(ValueError, match=r"^smooth_labels: expected alpha in \[0, 1\], got 2"):
        losses.smooth_labels(jnp.zeros((2, 3)), 2)


def test_penalty_errors_name_the_leaf():
    params = {"dense": {"w": jnp.zeros((2, 2)), "step": jnp.zeros((), jnp.int32)}}
    with pytest.raises(TypeError, match=r"^l1_penalty: expected every leaf .* got int32 at params\['dense'\]\['step'\]"):
        losses.l1_penalty(params)
    with pytest.raises(TypeError, match=r"^l2_penalty: .* got float at params\['lr'\]"):
        losses.l2_penalty({"lr": 0.1})


def test_errors_are_raised_at_trace_time_under_jit():
    loss = jax.jit(losses.softmax_cross_entropy_with_integer_labels)
    with pytest.raises(ValueError, match=r"^softmax_cross_entropy_with_integer_labels: expected labels of shape \(4,\)"):
        loss(jnp.zeros((4, 3)), jnp.zeros((3,), jnp.int32))
