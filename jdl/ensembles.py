"""Ensembles and bagging: ``M`` copies of one model, trained apart, whose predictions are averaged.

An ensemble of a :class:`jdl.nn.Layer` is the model's params and state with a leading member
axis of size ``M``: :func:`init_ensemble` is ``vmap`` of ``model.init`` over one key per member,
and :func:`ensemble_apply` ``vmap`` of ``model.apply`` over the members, giving each member's
output stacked on axis 0. Member ``m``'s key is ``jax.random.fold_in(key, m)`` (for ``init``, for
dropout in ``apply`` and for its bootstrap resample), so growing an ensemble from ``M`` to
``M' > M`` members keeps the first ``M`` as they were.

:func:`average_predictions` combines the outputs: for classifiers the mean of the members'
softmax probabilities, ``p(y | x) = (1/M) sum_m softmax(z_m)``, the ensemble's predictive
distribution as a mixture of the members' (deep ensembles, Lakshminarayanan et al., 2017);
for regression the plain mean ``(1/M) sum_m f_m(x)``.

**Bagging** (bootstrap aggregating, Breiman, 1996) trains member ``m`` on a resample of the
``n`` training examples drawn *with replacement*, of the same size ``n``: :func:`bootstrap_indices`
and :func:`bootstrap_samples`. An example is left out of a resample with probability
``(1 - 1/n)^n -> 1/e``, so each member sees about ``1 - 1/e = 63.2%`` of the distinct
examples; those it did not see (:func:`out_of_bag`) give an error estimate for free.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import ensembles, nn
    >>> model = nn.Dense(3)
    >>> x = jnp.ones((4, 5))
    >>> params, state = ensembles.init_ensemble(model, jax.random.key(0), x, size=7)
    >>> params["w"].shape
    (7, 5, 3)
    >>> logits, _ = ensembles.ensemble_apply(model, params, state, x)
    >>> logits.shape
    (7, 4, 3)
    >>> probabilities = ensembles.average_predictions(logits)  # the mean of the members' softmax
    >>> probabilities.shape, bool(jnp.allclose(probabilities.sum(-1), 1.0))
    ((4, 3), True)
"""
from __future__ import annotations

import functools
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jdl._checks import (
    Key, PositiveInt, check_choice, check_floating, check_key, check_min_rank, check_rank, check_that, check_train_flag,
    checks_arguments,
)
from jdl.nn.core import Layer

__all__ = ["init_ensemble", "ensemble_apply", "average_predictions", "member_keys", "Bootstrap", "bootstrap_indices",
           "bootstrap_samples", "out_of_bag"]


class Bootstrap(NamedTuple):
    """The resamples of a data set: ``data`` each leaf ``(size, n, ...)``, ``indices`` ``(size, n)``
    (``data[m] = original[indices[m]]``)."""

    data: Any
    indices: jax.Array


def _check_model(where: str, model: Any) -> None:
    check_that(isinstance(model, Layer), where, "model to be a jdl.nn.Layer", type(model).__name__, TypeError)


@checks_arguments
def member_keys(key: Key, size: PositiveInt) -> jax.Array:
    """One key per member: ``[fold_in(key, m) for m in range(size)]``, stacked.

    Folding in the member's index (not ``split(key, size)``) makes member ``m``'s key independent
    of ``size``.

    Example:
        >>> import jax
        >>> from jdl import ensembles
        >>> ensembles.member_keys(jax.random.key(0), 3).shape
        (3,)
    """
    return _member_keys(key, size)


def _member_keys(key: jax.Array, size: int) -> jax.Array:
    return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, jnp.arange(size))


@checks_arguments
def init_ensemble(model: Layer, key: Key, x: Any, size: PositiveInt) -> tuple[Any, Any]:
    """``size`` independent initialisations of ``model``: ``(params, state)`` with a leading member axis.

    Member ``m`` is ``model.init(fold_in(key, m), x)``; ``x`` is the example input ``init`` takes
    (an array or a ``jax.ShapeDtypeStruct``), the same for every member.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import ensembles, nn
        >>> params, _ = ensembles.init_ensemble(nn.Dense(2), jax.random.key(0), jnp.ones((1, 3)), 4)
        >>> params["b"].shape
        (4, 2)
    """
    _check_model("init_ensemble", model)
    keys = _member_keys(key, size)
    return jax.vmap(lambda member_key: model.init(member_key, x))(keys)


def _leading_sizes(tree: Any) -> list[tuple[int, ...]]:
    """The distinct leading axes of the tree's arrays, ``()`` for a scalar, sorted."""
    return sorted({tuple(leaf.shape[:1]) for leaf in jax.tree.leaves(tree)})


def _ensemble_size(where: str, params: Any, state: Any) -> int:
    """The members' count: the leading axis every leaf of ``params`` and ``state`` shares."""
    leaves = jax.tree.leaves((params, state))
    check_that(len(leaves) > 0, where, "stacked params or state with a leading member axis (from init_ensemble)",
               "no arrays (a model without params has nothing to ensemble)")
    sizes = _leading_sizes(leaves)
    check_that(len(sizes) == 1 and sizes[0] != (), where, "every params and state leaf with the same leading "
               "member axis (from init_ensemble)", f"leading axes {[s[0] if s else 'scalar' for s in sizes]}")
    return sizes[0][0]


def ensemble_apply(model: Layer, params: Any, state: Any, x: Any, *, key: jax.Array | None = None,
                   train: bool = False, stacked_inputs: bool = False) -> tuple[Any, Any]:
    """Every member's ``model.apply``: ``(outputs, states)``, each stacked on a leading member axis.

    All members see the same ``x``, or with ``stacked_inputs=True`` member ``m`` sees ``x[m]``
    (its own bootstrap batch). A ``key`` (dropout in training) gives member ``m`` the key
    ``fold_in(key, m)``, so members drop different units. The model checks each member's params.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import ensembles, nn
        >>> params, state = ensembles.init_ensemble(nn.Dense(2), jax.random.key(0), jnp.ones((1, 3)), 4)
        >>> ensembles.ensemble_apply(nn.Dense(2), params, state, jnp.ones((5, 3)))[0].shape
        (4, 5, 2)
    """
    where = "ensemble_apply"
    _check_model(where, model)
    check_train_flag(where, train)
    size = _ensemble_size(where, params, state)
    if stacked_inputs:
        leading = _leading_sizes(x)
        check_that(leading == [(size,)], where, f"inputs stacked on a leading member axis of size {size} "
                   f"(stacked_inputs=True)", f"leading axes {leading}")
    keys = None
    if key is not None:
        check_key(where, key)
        keys = _member_keys(key, size)

    def member(member_params, member_state, member_x, member_key):
        return model.apply(member_params, member_state, member_x, key=member_key, train=train)

    return jax.vmap(member, in_axes=(0, 0, 0 if stacked_inputs else None, None if keys is None else 0))(
        params, state, x, keys)


def average_predictions(outputs: jax.Array,
                        kind: Literal["probabilities", "logits", "mean"] = "probabilities") -> jax.Array:
    """Combine the members' ``outputs`` (members on axis 0) into the ensemble's prediction.

    * ``"probabilities"`` (classifiers; ``outputs`` are logits or log-probabilities, classes on the
      last axis): ``(1/M) sum_m softmax(z_m)``, probabilities. This is the mixture of the members'
      predictive distributions, the usual choice: a member that is confidently wrong moves the
      average by at most ``1/M``, and the result is calibrated as a probability.
    * ``"logits"``: ``(1/M) sum_m z_m``, logits; its softmax is the renormalised *geometric* mean of
      the members' probabilities, which lets one very confident member dominate.
    * ``"mean"``: ``(1/M) sum_m y_m``, the plain mean (regression, or outputs already probabilities).

    A NaN in any member's output makes the prediction NaN where it reaches.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import ensembles
        >>> ensembles.average_predictions(jnp.array([[1.0, 2.0], [3.0, 6.0]]), kind="mean")
        Array([2., 4.], dtype=float32)
    """
    where = "average_predictions"
    check_choice(where, "kind", kind, ("probabilities", "logits", "mean"))
    check_floating(where, outputs, "outputs")
    if kind == "mean":
        check_min_rank(where, outputs, 1, "members, ...", "outputs")
        return jnp.mean(outputs, axis=0)
    check_min_rank(where, outputs, 2, "members, ..., classes", "outputs")
    if kind == "logits":
        return jnp.mean(outputs, axis=0)
    return jnp.mean(jax.nn.softmax(outputs, axis=-1), axis=0)


@checks_arguments
def bootstrap_indices(key: Key, num_examples: PositiveInt, size: PositiveInt) -> jax.Array:
    """``size`` resamples of ``range(num_examples)`` with replacement, each of ``num_examples`` indices.

    Row ``m`` (int32) is drawn uniformly from ``[0, num_examples)`` with the key ``fold_in(key, m)``.

    Example:
        >>> import jax
        >>> from jdl import ensembles
        >>> indices = ensembles.bootstrap_indices(jax.random.key(0), 10, 3)
        >>> indices.shape, bool(((indices >= 0) & (indices < 10)).all())
        ((3, 10), True)
    """
    return _bootstrap_indices(key, num_examples, size)


@functools.partial(jax.jit, static_argnames=("num_examples", "size"))
def _bootstrap_indices(key: jax.Array, num_examples: int, size: int) -> jax.Array:
    """One compiled program (the draws of every member) whether called eagerly or under ``jit``."""
    draw = lambda member_key: jax.random.randint(member_key, (num_examples,), 0, num_examples)  # noqa: E731
    return jax.vmap(draw)(_member_keys(key, size))


def bootstrap_samples(key: jax.Array, data: Any, size: int) -> Bootstrap:
    """``size`` bootstrap resamples of ``data`` (a pytree of arrays sharing the leading example axis).

    Leaf ``a`` becomes ``a[indices]`` of shape ``(size, n, ...)``, with the same ``indices`` for every
    leaf (inputs stay with their labels), those of :func:`bootstrap_indices`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import ensembles
        >>> boot = ensembles.bootstrap_samples(jax.random.key(0), {"x": jnp.ones((6, 2)), "y": jnp.zeros(6)}, 3)
        >>> boot.data["x"].shape, boot.indices.shape
        ((3, 6, 2), (3, 6))
    """
    where = "bootstrap_samples"
    leaves = jax.tree.leaves(data)
    check_that(len(leaves) > 0, where, "data with at least one array", repr(data))
    for leaf in leaves:
        check_min_rank(where, leaf, 1, "examples, ...", "data")
    counts = [count for (count,) in _leading_sizes(leaves)]  # every leaf has rank >= 1, checked above
    check_that(len(counts) == 1, where, "data arrays with the same number of examples (leading axis)",
               f"leading axes {counts}")
    indices = bootstrap_indices(key, counts[0], size)
    return Bootstrap(jax.tree.map(lambda leaf: leaf[indices], data), indices)


@checks_arguments
def out_of_bag(indices: jax.Array, num_examples: PositiveInt) -> jax.Array:
    """``(size, num_examples)`` bool: True where example ``i`` is in none of resample ``m``'s draws.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import ensembles
        >>> ensembles.out_of_bag(jnp.array([[0, 0, 2]]), 3)
        Array([[False,  True, False]], dtype=bool)
    """
    where = "out_of_bag"
    check_rank(where, indices, 2, "members, draws", "indices")
    check_that(jnp.issubdtype(indices.dtype, jnp.integer), where, "integer indices (members, draws)",
               f"{jnp.dtype(indices.dtype).name} of shape {tuple(indices.shape)}", TypeError)
    drawn = jax.vmap(lambda row: jnp.zeros(num_examples, bool).at[row].set(True, mode="drop"))(indices)
    return ~drawn
