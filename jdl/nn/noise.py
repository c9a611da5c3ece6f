"""Input corruption for training: additive Gaussian noise and masking noise.

Both are keyed, train-only layers with the conventions of :class:`~jdl.nn.Dropout`: in
training (``train=True``) they draw with the ``key`` given to ``apply`` (and refuse to run
without one); in evaluation (``train=False``) they are the identity and need no key. They
are the corruptions of a denoising autoencoder (Vincent et al., 2008), which learns to
rebuild the clean input from a corrupted one (see :class:`jdl.models.Autoencoder`'s
``corruption``), and serve as regularisers anywhere in a network.

* :class:`GaussianNoise`: ``y = x + stddev * eps``, ``eps ~ N(0, 1)`` entry by entry.
* :func:`add_weight_noise`: the course's noise on the weights, ``W~ = W + eps``,
  ``eps ~ N(0, stddev^2)``: a perturbed copy of the params to evaluate the loss at, drawn
  afresh each step (``loss(add_weight_noise(key, params, s), batch)``), so that the gradient
  is taken at a noisy point and training prefers minima that tolerate it.
* :class:`MaskingNoise`: ``y = mask * x``, ``mask ~ Bernoulli(1 - rate)``: each entry is
  set to 0 with probability ``rate``. **Not rescaled**, unlike (inverted) dropout: a
  denoising autoencoder's masked input has missing values, not a rescaled copy of ``x``,
  so ``E[y] = (1 - rate) x``. For the rescaled version use :class:`~jdl.nn.Dropout`.

NaN stays NaN: the noise is added, and a masked NaN is still NaN (under ``jit`` too).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> y, _ = nn.MaskingNoise(0.5).apply({}, {}, jnp.full((4, 8), 3.0), key=jax.random.key(0), train=True)
    >>> sorted(set(y.ravel().tolist()))
    [0.0, 3.0]
    >>> nn.GaussianNoise(0.1).apply({}, {}, jnp.ones(3))[0]     # evaluation: the identity
    Array([1., 1., 1.], dtype=float32)
"""
from __future__ import annotations

from typing import Annotated, ClassVar

import jax
import jax.numpy as jnp

from jdl._checks import Constraint, Rate, _is_real, check_key, check_that, check_train_flag, check_training_key
from jdl.nn.core import KW_ONLY, ParamFree

__all__ = ["GaussianNoise", "MaskingNoise", "add_weight_noise"]


def _check_non_negative(where, name, value) -> None:
    check_that(_is_real(value) and value >= 0.0 and value != float("inf"), where, f"{name} to be a finite "
               f"number >= 0", repr(value))


NonNegative = Annotated[float, Constraint(_check_non_negative)]


class _TrainOnlyNoise(ParamFree):
    """The identity in evaluation; in training, ``corrupt(key, x)`` with a required key."""

    def fn(self, x):
        return x  # evaluation (train=False) is the identity

    strength: ClassVar[str]  # the field whose 0 makes training the identity too (no key needed)

    def corrupt(self, key, x):
        raise NotImplementedError

    def apply(self, params, state, x, *, key=None, train=False):
        x, state = super().apply(params, state, x)  # the checks, then the identity
        check_train_flag(self, train)
        if not train or getattr(self, self.strength) == 0.0:
            return x, state
        check_training_key(self, key)
        return self.corrupt(key, x), state


class GaussianNoise(_TrainOnlyNoise):
    """Add ``N(0, stddev^2)`` noise to each entry in training; identity in evaluation.

    ``y = x + stddev * eps`` with ``eps ~ N(0, 1)`` drawn in the input's dtype.
    ``stddev=0`` is the identity in training too (and needs no key).
    """

    stddev: NonNegative
    _: KW_ONLY
    name: str = "gaussian_noise"
    strength: ClassVar = "stddev"

    def corrupt(self, key, x):
        eps = jax.random.normal(key, x.shape, x.dtype)
        return x + jnp.asarray(self.stddev, x.dtype) * eps


class MaskingNoise(_TrainOnlyNoise):
    """Set each entry to 0 with probability ``rate`` in training (not rescaled); identity in evaluation.

    The denoising autoencoder's masking corruption: ``y = mask * x``, ``mask ~
    Bernoulli(1 - rate)``. Unlike :class:`~jdl.nn.Dropout`, the kept entries are **not**
    divided by ``1 - rate``. ``rate=0`` is the identity in training too (and needs no key).
    """

    rate: Rate
    _: KW_ONLY
    name: str = "masking_noise"
    strength: ClassVar = "rate"

    def corrupt(self, key, x):
        keep = jax.random.bernoulli(key, 1.0 - self.rate, x.shape)
        # A select that keeps NaN, not the product x * keep: under jit, XLA rewrites a product
        # with a converted bool into a select, which turned a masked NaN into 0.
        return jnp.where(keep | jnp.isnan(x), x, jnp.zeros_like(x))


def add_weight_noise(key: jax.Array, params, stddev: float):
    """``params + N(0, stddev^2)`` on every floating leaf (one key per leaf, split in tree order).

    Integer leaves (step counts, ids) are returned as they are. Differentiable in ``params``:
    the gradient of ``loss(add_weight_noise(key, params, s))`` is the loss's gradient at the
    perturbed point.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn
        >>> noisy = nn.add_weight_noise(jax.random.key(0), {"w": jnp.zeros((2, 3))}, 0.1)
        >>> noisy["w"].shape
        (2, 3)
    """
    where = "add_weight_noise"
    _check_non_negative(where, "stddev", stddev)
    check_key(where, key)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, max(len(leaves), 1))
    noisy = [leaf + stddev * jax.random.normal(k, leaf.shape, leaf.dtype)
             if jnp.issubdtype(leaf.dtype, jnp.floating) else leaf for leaf, k in zip(leaves, keys)]
    return jax.tree.unflatten(treedef, noisy)
