"""experiments/linear_regression.py on a small budget: the hand gradient, the closed form, Gabor minima, files."""
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import linear_regression


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("linear_regression")
    results = linear_regression.main(["--gabor-starts", "3", "--gabor-steps", "3000", "--out", str(out)])
    return out, results


def test_hand_written_gradient_is_autodiffs():
    x, y = linear_regression.make_line_data(jax.random.key(1), 12)
    phis = jax.random.normal(jax.random.key(2), (5, 2)) * 3.0
    both = jax.jit(jax.vmap(lambda phi, x, y: (linear_regression.linear_gradient(phi, x, y),
                                               jax.grad(linear_regression.linear_loss)(phi, x, y)), (0, None, None)))
    hand, auto = both(phis, x, y)
    np.testing.assert_allclose(hand, auto, rtol=1e-5, atol=1e-4)
    with jax.enable_x64(True):  # in float64 the two agree to rounding
        hand, auto = both(*(jnp.asarray(np.asarray(a), jnp.float64) for a in (phis, x, y)))
        assert hand.dtype == jnp.float64
        np.testing.assert_allclose(hand, auto, rtol=1e-12, atol=1e-12)


def test_normal_equations_are_least_squares_and_descent_reaches_them(small_run):
    _, results = small_run
    linear = results["linear"]
    x, y = np.asarray(linear["x"], np.float64), np.asarray(linear["y"], np.float64)
    assert len(x) == 15
    lstsq, *_ = np.linalg.lstsq(np.stack([np.ones_like(x), x], 1), y, rcond=None)
    np.testing.assert_allclose(linear["normal_equations_phi"], lstsq, atol=1e-4)
    # From (1.6, -0.8), 300 steps of alpha = 0.01 land on the closed form up to float32 rounding.
    np.testing.assert_allclose(linear["gd"]["final_phi"], linear["normal_equations_phi"], atol=1e-4)
    assert linear["gd_max_abs_difference"] < 1e-4
    assert linear["gd"]["final_loss"] == pytest.approx(linear["normal_equations_loss"], rel=1e-5)
    assert linear["gd"]["final_loss"] < 0.1 * linear["gd"]["start_loss"]
    assert linear["hand_vs_autodiff_max_abs_difference"] < 1e-4


def test_descent_diverges_above_two_over_the_largest_curvature():
    with pytest.raises(ValueError, match="gradient descent diverges"):
        linear_regression.run_linear(jax.random.key(0), 15, 1.0, 10)


def test_gabor_descents_find_distinct_minima(small_run):
    _, results = small_run
    gabor = results["gabor"]
    x, y = np.asarray(gabor["x"], np.float64), np.asarray(gabor["y"], np.float64)
    finals, losses = np.asarray(gabor["finals"]), np.asarray(gabor["losses"])
    assert finals.shape == (9, 2) and len(gabor["classes"]) == 9
    # Some starts reach the global minimum, others stop in local minima: at least two distinct ones.
    assert gabor["num_global"] >= 1 and gabor["num_local"] >= 1
    minima = gabor["minima"]
    assert len(minima) >= 2 and gabor["num_distinct_minima"] == len(minima)
    assert np.linalg.norm(np.subtract(minima[0]["phi"], minima[1]["phi"])) > 1.0
    assert minima[1]["loss"] > 1.5 * minima[0]["loss"]
    # The lowest is the fit to the generating phi = (-1, 12), up to the noise.
    assert np.all(np.abs(np.subtract(minima[0]["phi"], linear_regression.GABOR_PHI)) < (0.5, 1.0))
    assert minima[0]["loss"] <= gabor["loss_at_phi_true"]
    assert losses.min() == pytest.approx(minima[0]["loss"])
    # Every point a descent stopped at as a minimum: zero gradient and positive curvature, in float64.
    at_minima = [start for minimum in minima for start in minimum["starts"]]
    assert all(gabor["classes"][start] in ("global", "local") for start in at_minima)
    with jax.enable_x64(True):
        gradients, hessians = jax.jit(jax.vmap(
            lambda phi, x, y: (jax.grad(linear_regression.gabor_loss)(phi, x, y),
                               jax.hessian(linear_regression.gabor_loss)(phi, x, y)), (0, None, None)))(
            jnp.asarray(finals[at_minima], jnp.float64), jnp.asarray(x), jnp.asarray(y))
    assert np.all(np.linalg.norm(gradients, axis=-1) < 2e-3)
    assert np.all(np.linalg.eigvalsh(np.asarray(hessians)).min(axis=-1) > 0)
    for kind, loss in zip(gabor["classes"], losses):
        assert (kind == "global") == (loss <= 1.01 * losses.min())


def test_writes_json_and_png(small_run):
    out, results = small_run
    with open(os.path.join(out, "linear_regression.json")) as f:
        written = json.load(f)
    assert written["backend"] == jax.default_backend()
    for key in ("normal_equations_phi", "gd", "gd_minus_normal_equations", "hand_vs_autodiff_max_abs_difference"):
        assert key in written["linear"]
    for key in ("starts", "finals", "losses", "classes", "num_global", "minima"):
        assert key in written["gabor"]
    assert written["gabor"]["num_global"] == results["gabor"]["num_global"]
    np.testing.assert_allclose(written["linear"]["normal_equations_phi"], results["linear"]["normal_equations_phi"])
    with open(os.path.join(out, "linear_regression.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_arguments_are_checked():
    with pytest.raises(SystemExit):
        linear_regression.parse_args(["--gabor-steps", "0"])
    with pytest.raises(SystemExit):
        linear_regression.parse_args(["--learning-rate", "-0.1"])
    with pytest.raises(SystemExit):
        linear_regression.parse_args(["--num-points", "1"])
