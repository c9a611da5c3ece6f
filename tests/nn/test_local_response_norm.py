"""LocalResponseNorm against NumPy transcriptions of the paper's formula and of PyTorch's
implementation, and its gradient against finite differences."""
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn


def paper_lrn(a, k=2.0, n=5, alpha=1e-4, beta=0.75):
    """Krizhevsky et al. (2012), section 3.3, as written:
    ``b_i = a_i / (k + alpha sum_{j=max(0, i-n/2)}^{min(N-1, i+n/2)} a_j^2)^beta``."""
    channels = a.shape[-1]
    b = np.empty_like(a)
    for i in range(channels):
        low, high = max(0, i - n // 2), min(channels - 1, i + n // 2)
        b[..., i] = a[..., i] / (k + alpha * np.sum(a[..., low:high + 1] ** 2, axis=-1)) ** beta
    return b


def pytorch_lrn(a, size, alpha, beta, k):
    """``torch.nn.functional.local_response_norm``'s steps, channels last: the squares padded
    with ``size // 2`` zeros before and ``(size - 1) // 2`` after, averaged over ``size``."""
    pads = [(0, 0)] * (a.ndim - 1) + [(size // 2, (size - 1) // 2)]
    squares = np.pad(a ** 2, pads)
    mean = np.stack([squares[..., c:c + size].mean(-1) for c in range(a.shape[-1])], axis=-1)
    return a / (k + alpha * mean) ** beta


def _input(shape=(2, 3, 4, 7), scale=30.0, seed=0):
    # Large activations, so that alpha * sum is not lost next to k (AlexNet's ReLU outputs are unbounded).
    return np.random.default_rng(seed).standard_normal(shape) * scale


@pytest.mark.parametrize("options", [{}, dict(size=3, alpha=0.5, beta=1.0, k=1.0), dict(size=7, alpha=1e-3)])
def test_matches_the_paper(options):
    a = _input()
    layer = nn.LocalResponseNorm(**options)
    y = layer.apply({}, {}, jnp.asarray(a, jnp.float32))[0]
    paper = dict(k=options.get("k", 2.0), n=options.get("size", 5), alpha=options.get("alpha", 1e-4),
                 beta=options.get("beta", 0.75))
    expected = paper_lrn(a, **paper)
    np.testing.assert_allclose(y, expected, rtol=2e-6, atol=1e-6)
    # The normalisation really acts: far from a / k^beta, the division by a constant.
    assert np.max(np.abs(expected - a / paper["k"] ** paper["beta"])) > 1e-2


@pytest.mark.parametrize("size", [5, 4])
def test_pytorch_convention_divides_alpha_by_size(size):
    a = _input(seed=1)
    layer = nn.LocalResponseNorm(size, alpha=0.05, beta=0.75, k=1.0, convention="pytorch")
    y = layer.apply({}, {}, jnp.asarray(a, jnp.float32))[0]
    np.testing.assert_allclose(y, pytorch_lrn(a, size, 0.05, 0.75, 1.0), rtol=2e-6, atol=1e-6)
    # For odd sizes the two conventions differ by alpha -> alpha / size only.
    if size % 2:
        np.testing.assert_allclose(y, paper_lrn(a, k=1.0, n=size, alpha=0.05 / size), rtol=2e-6, atol=1e-6)


def test_gradient_matches_finite_differences(finite_differences):
    layer = nn.LocalResponseNorm(3, alpha=0.5, beta=0.75, k=1.0)
    x = jnp.asarray(_input((2, 3, 6), scale=2.0, seed=2), jnp.float32)
    finite_differences(lambda v: layer.apply({}, {}, v)[0], (x,))


def test_bfloat16_computes_the_denominator_wide():
    """alpha * sum is ~1e-4 of k: in bfloat16 arithmetic it would vanish; computed in float32 it shows."""
    a = _input((4, 96), scale=30.0, seed=3)
    layer = nn.LocalResponseNorm()
    y = layer.apply({}, {}, jnp.asarray(a, jnp.bfloat16))[0]
    assert y.dtype == jnp.bfloat16
    exact = paper_lrn(np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64))
    np.testing.assert_allclose(np.asarray(y, np.float64), exact, rtol=1e-2)


def test_refuses_a_scalar_and_integers():
    layer = nn.LocalResponseNorm()
    with pytest.raises(ValueError, match=r"LocalResponseNorm\(\): expected input of rank >= 1 \(\.\.\., channels\)"):
        layer.apply({}, {}, jnp.float32(1.0))
    with pytest.raises(TypeError, match=r"LocalResponseNorm\(\): expected a floating-point input"):
        layer.apply({}, {}, jnp.ones((2, 5), jnp.int32))
    with pytest.raises(ValueError, match=r"expected convention in \('paper', 'pytorch'\)"):
        nn.LocalResponseNorm(convention="caffe")
