"""jdl.metrics against numpy (random data), worked examples, k = 1 is accuracy, errors."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import metrics

CLASSES = 7


def _data(seed, batch_shape):
    rng = np.random.default_rng(seed)
    # Continuous logits: no ties, so the numpy reference is unambiguous.
    logits = rng.standard_normal(batch_shape + (CLASSES,)).astype(np.float32)
    labels = rng.integers(0, CLASSES, batch_shape).astype(np.int32)
    return logits, labels


def _numpy_top_k_accuracy(logits, labels, k):
    # A label is in the top k iff fewer than k classes score strictly higher (no ties here).
    label_scores = np.take_along_axis(logits, labels[..., None], axis=-1)
    rank = np.sum(logits > label_scores, axis=-1)
    return np.mean(rank < k)


@jax.jit
def _all_metrics(logits, labels):
    return {
        "accuracy": metrics.accuracy(logits, labels),
        **{f"top_{k}": metrics.top_k_accuracy(logits, labels, k) for k in (1, 2, 3, CLASSES)},
    }


@pytest.mark.parametrize("batch_shape", [(64,), (4, 16)])
def test_metrics_match_numpy_on_random_data(batch_shape):
    logits, labels = _data(0, batch_shape)
    got = _all_metrics(logits, labels)
    expected_accuracy = np.mean(np.argmax(logits, axis=-1) == labels)
    assert 0.05 < expected_accuracy < 0.5  # a random 7-class problem: the check has teeth
    np.testing.assert_allclose(got["accuracy"], expected_accuracy, rtol=1e-6)
    for k in (1, 2, 3, CLASSES):
        np.testing.assert_allclose(got[f"top_{k}"], _numpy_top_k_accuracy(logits, labels, k), rtol=1e-6)
    # k = 1 is accuracy; k = num_classes is always right; top-k grows with k.
    assert float(got["top_1"]) == float(got["accuracy"])
    assert float(got["top_7"]) == 1.0
    assert got["top_1"] <= got["top_2"] <= got["top_3"]
    assert got["accuracy"].shape == () and got["accuracy"].dtype == jnp.float32


def test_worked_example():
    logits = np.array(
        [
            [0.1, 0.5, 0.4, 0.0],  # order 1, 2, 0, 3
            [0.9, 0.05, 0.03, 0.02],  # order 0, 1, 2, 3
            [0.2, 0.3, 0.1, 0.4],  # order 3, 1, 0, 2
            [0.25, 0.35, 0.3, 0.1],  # order 1, 2, 0, 3
        ],
        np.float32,
    )
    labels = np.array([1, 2, 1, 3], np.int32)
    # argmax hits row 0 only; the labels rank 0, 2, 1, 3 (0 = top).
    assert float(metrics.accuracy(logits, labels)) == 0.25
    assert float(metrics.top_k_accuracy(logits, labels, 1)) == 0.25
    assert float(metrics.top_k_accuracy(logits, labels, 2)) == 0.5
    assert float(metrics.top_k_accuracy(logits, labels, 3)) == 0.75
    assert float(metrics.top_k_accuracy(logits, labels, 4)) == 1.0


def test_ties_go_to_the_lowest_class_index_like_argmax():
    logits = np.array([[1.0, 1.0, 0.0], [0.0, 2.0, 2.0]], np.float32)
    assert float(metrics.accuracy(logits, np.array([0, 1], np.int32))) == 1.0
    assert float(metrics.accuracy(logits, np.array([1, 2], np.int32))) == 0.0
    assert float(metrics.top_k_accuracy(logits, np.array([1, 2], np.int32), 1)) == 0.0
    assert float(metrics.top_k_accuracy(logits, np.array([1, 2], np.int32), 2)) == 1.0


def _zeros(shape, dtype=np.float32):
    return np.zeros(shape, dtype)


@pytest.mark.parametrize("name, fn", [
    ("accuracy", metrics.accuracy),
    ("top_k_accuracy", lambda logits, labels: metrics.top_k_accuracy(logits, labels, 2)),
])
def test_bad_inputs_are_errors(name, fn):
    logits = _zeros((4, 3))
    with pytest.raises(TypeError, match=rf"^{name}: expected an integer labels, got float32"):
        fn(logits, _zeros((4,)))
    with pytest.raises(TypeError, match=rf"^{name}: .*one-hot"):
        fn(logits, _zeros((4, 3)))
    with pytest.raises(ValueError, match=rf"^{name}: expected labels of shape \(4,\).*got labels of shape \(4, 1\)"):
        fn(logits, _zeros((4, 1), np.int32))
    with pytest.raises(TypeError, match=rf"^{name}: expected a floating-point logits, got int32"):
        fn(_zeros((4, 3), np.int32), _zeros((4,), np.int32))
    with pytest.raises(ValueError, match=rf"^{name}: expected logits of rank >= 1"):
        fn(np.float32(0.0), np.int32(0))
    # The errors come at trace time under jit too.
    with pytest.raises(ValueError, match=rf"^{name}: expected labels of shape \(4,\)"):
        jax.jit(fn)(logits, _zeros((5,), np.int32))


@pytest.mark.parametrize("k", [0, 4, -1, 1.0, True])
def test_top_k_bad_k_is_an_error(k):
    with pytest.raises(ValueError, match=r"^top_k_accuracy: expected k to be an int in \[1, num_classes = 3\]"):
        metrics.top_k_accuracy(_zeros((4, 3)), _zeros((4,), np.int32), k)


def test_masked_accuracy_counts_only_the_real_steps():
    logits, labels = _data(30, (3, 6))
    lengths = np.array([6, 2, 0])
    mask = np.arange(6)[None, :] < lengths[:, None]
    hits = np.argmax(logits, -1) == labels
    np.testing.assert_allclose(metrics.masked_accuracy(logits, labels, mask), hits[mask].mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics.masked_accuracy(logits, labels), metrics.accuracy(logits, labels))
    assert float(metrics.masked_accuracy(logits, labels, np.zeros((3, 6), bool))) == 0.0


def test_masked_accuracy_errors():
    with pytest.raises(TypeError, match=r"^masked_accuracy: expected a boolean mask"):
        metrics.masked_accuracy(_zeros((2, 5, 3)), _zeros((2, 5), np.int32), np.ones((2, 5), np.float32))
    with pytest.raises(ValueError, match=r"^masked_accuracy: expected labels of shape \(2, 5\)"):
        metrics.masked_accuracy(_zeros((2, 5, 3)), _zeros((2, 4), np.int32))


def test_a_nan_in_the_logits_makes_the_metric_nan():
    """argmax picks the NaN's class: a row holding NaN used to count as an ordinary prediction."""
    logits, labels = _data(40, (3, 4))
    logits[1, 2, 0] = np.nan  # predicts class 0 under argmax
    labels[1, 2] = 0
    assert np.isnan(float(metrics.accuracy(logits, labels)))
    assert np.isnan(float(metrics.top_k_accuracy(logits, labels, 2)))
    assert np.isnan(float(metrics.masked_accuracy(logits, labels, np.ones((3, 4), bool))))
    # A NaN at a masked-out step counts for nothing.
    mask = np.ones((3, 4), bool)
    mask[1, 2] = False
    expected = (np.argmax(logits, -1) == labels)[mask].mean()
    np.testing.assert_allclose(metrics.masked_accuracy(logits, labels, mask), expected, rtol=1e-6)


def test_metrics_of_nothing_are_errors():
    """The mean over zero examples used to be NaN; zero classes gave jax's own argmax error."""
    for name, fn in [("accuracy", metrics.accuracy), ("masked_accuracy", metrics.masked_accuracy),
                     ("top_k_accuracy", lambda z, y: metrics.top_k_accuracy(z, y, 1))]:
        # The message is the metric's own or, first, check_array's generic one (no empty axis anywhere).
        with pytest.raises(ValueError, match=rf"^{name}: expected .*empty.* shape \(0,? ?3?\)"):
            fn(_zeros((0, 3)), _zeros((0,), np.int32))
        with pytest.raises(ValueError, match=rf"^{name}: expected .*empty.* shape \(2, 0\)"):
            fn(_zeros((2, 0)), _zeros((2,), np.int32))


def test_out_of_range_labels_are_errors_or_under_jit_nan():
    """An out-of-range label used to count silently as a wrong prediction."""
    logits, labels = _data(50, (4,))
    bad = labels.copy()
    bad[2] = CLASSES
    for name, fn in [("accuracy", metrics.accuracy), ("masked_accuracy", metrics.masked_accuracy),
                     ("top_k_accuracy", lambda z, y: metrics.top_k_accuracy(z, y, 2))]:
        with pytest.raises(ValueError, match=rf"^{name}: expected labels in \[0, 7\) \(the classes of logits's last "
                                             rf"axis\), got labels from \d+ to 7$"):
            fn(logits, bad)
        assert np.isnan(float(jax.jit(fn)(logits, bad)))
    mask = np.array([True, True, False, True])
    np.testing.assert_allclose(metrics.masked_accuracy(logits, bad, mask),
                               (np.argmax(logits, -1) == labels)[mask].mean(), rtol=1e-6)


def test_dead_unit_fraction_against_numpy_and_through_a_model():
    from jdl import capture_intermediates, nn

    rng = np.random.default_rng(0)
    h = np.maximum(rng.standard_normal((6, 4, 5)) - 1.0, 0.0).astype(np.float32)
    h[:, :, 2] = 0.0  # unit 2 off at every step of every example
    np.testing.assert_allclose(metrics.dead_unit_fraction(jnp.asarray(h), batch_axes=(0, 1)),
                               np.mean(np.all(h <= 0, axis=(0, 1))))
    np.testing.assert_allclose(metrics.dead_unit_fraction(jnp.asarray(h)), np.mean(np.all(h <= 0, axis=0)))
    assert float(metrics.dead_unit_fraction(jnp.asarray(h), batch_axes=(0, 1))) >= 0.2
    h[0, 0, 0] = np.nan
    assert np.isnan(metrics.dead_unit_fraction(jnp.asarray(h)))  # NaN is never turned into a number
    # a large negative bias kills every unit of the first layer, none of the second
    model = nn.Sequential([nn.Dense(8, bias_init=lambda k, s, d: jnp.full(s, -100.0, d)), nn.ReLU(),
                           nn.Dense(8, bias_init=lambda k, s, d: jnp.ones(s, d)), nn.ReLU()])
    x = jnp.asarray(rng.standard_normal((16, 3)), jnp.float32)
    params, state = model.init(jax.random.key(0), x)
    _, _, hidden = capture_intermediates(model, params, state, x, filter=nn.ReLU)
    assert {path: float(metrics.dead_unit_fraction(a)) for path, a in hidden.items()} == {"relu_1": 1.0, "relu_3": 0.0}
    with pytest.raises(ValueError, match=r"dead_unit_fraction: expected distinct batch_axes of an array of rank 2"):
        metrics.dead_unit_fraction(jnp.ones((2, 3)), batch_axes=(0, 1))
    with pytest.raises(TypeError, match=r"dead_unit_fraction: expected floating-point activations, got int32"):
        metrics.dead_unit_fraction(jnp.ones((2, 3), jnp.int32))
