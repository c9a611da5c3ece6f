"""Optimizers for parts of a model: freezing, masking, one optimizer per group of params.

Transfer learning trains part of a network (a new head) and leaves the rest (the trunk)
as it is, or trains it at a smaller rate. Three transformations, with optax's names,
arguments, states and numbers:

* :func:`set_to_zero`: every update becomes zero (a frozen part: ``params + 0``).
* :func:`masked`: ``inner`` sees only the leaves where ``mask`` is True (the others are
  replaced by an empty :class:`MaskedNode`, so ``inner`` keeps no state for them) and
  transforms their updates; where ``mask`` is False the updates pass through unchanged.
* :func:`multi_transform`: one transformation per label, ``param_labels`` naming the label
  of every leaf: ``multi_transform({"trunk": set_to_zero(), "head": adam(1e-3)}, labels)``
  freezes the trunk and trains the head with Adam.

``mask`` and ``param_labels`` are pytrees with the params' structure (or a prefix of it:
one value for a whole subtree) or functions ``params -> tree``.

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import optim
    >>> params = {"trunk": {"w": jnp.ones(2)}, "head": {"w": jnp.ones(2)}}
    >>> optimizer = optim.multi_transform({"frozen": optim.set_to_zero(), "trained": optim.sgd(0.5)},
    ...                                   {"trunk": "frozen", "head": "trained"})
    >>> grads = {"trunk": {"w": jnp.array([1.0, 2.0])}, "head": {"w": jnp.array([1.0, 2.0])}}
    >>> updates, _ = optimizer.update(grads, optimizer.init(params), params)
    >>> optim.apply_updates(params, updates)
    {'head': {'w': Array([0.5, 0. ], dtype=float32)}, 'trunk': {'w': Array([1., 1.], dtype=float32)}}
"""
from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jdl._checks import check_that
from jdl.optim.base import GradientTransformation, check_transformation, stateless

__all__ = ["MaskedNode", "MaskedState", "MultiTransformState", "masked", "multi_transform", "set_to_zero"]


def set_to_zero() -> GradientTransformation:
    """Every update zero (optax's ``set_to_zero``): the params it covers stay as they are."""
    return stateless("set_to_zero", lambda updates: jax.tree.map(jnp.zeros_like, updates))


class MaskedNode(NamedTuple):
    """Stands in for a masked-out leaf: an empty node, so the inner transformation sees no leaf there."""


class MaskedState(NamedTuple):
    inner_state: Any


class MultiTransformState(NamedTuple):
    inner_states: Mapping[Hashable, Any]


def _tree_of(where: str, spec: Any, tree: Any, what: str) -> Any:
    """``spec`` (a tree, or a function of ``tree``) as a tree that is a prefix of ``tree``'s."""
    value = spec(tree) if callable(spec) else spec
    try:
        jax.tree.map(lambda *_: None, value, tree)
    except ValueError as error:
        raise ValueError(f"{where}: expected {what} with the params' tree structure (or a prefix of it), got "
                         f"{jax.tree.structure(value)} for params {jax.tree.structure(tree)}") from error
    return value


def _keep(mask: Any, tree: Any) -> Any:
    """``tree`` with every leaf where ``mask`` is False replaced by an empty :class:`MaskedNode`."""
    return jax.tree.map(lambda keep, subtree: subtree if keep else MaskedNode(), mask, tree)


def masked(inner: GradientTransformation, mask: Any) -> GradientTransformation:
    """``inner`` applied where ``mask`` is True; elsewhere the updates are left as they are.

    ``mask``: booleans with the params' structure (or a prefix), or ``fn(params) -> mask``
    (called on the updates in ``update``, as optax does). The state is
    ``MaskedState(inner_state)``, ``inner``'s state over the kept leaves only.
    """
    check_transformation("masked", inner, "as inner")

    def init(params):
        return MaskedState(inner.init(_keep(_tree_of("masked", mask, params, "mask"), params)))

    def update(updates, state, params=None):
        mask_tree = _tree_of("masked", mask, updates, "mask")
        kept_params = None if params is None else _keep(mask_tree, params)
        new, inner_state = inner.update(_keep(mask_tree, updates), state.inner_state, kept_params)
        merged = jax.tree.map(lambda keep, new_u, old_u: new_u if keep else old_u, mask_tree, new, updates)
        return merged, MaskedState(inner_state)

    return GradientTransformation(init, update)


def _labels(where: str, param_labels: Any, tree: Any, transforms: Mapping) -> Any:
    labels = _tree_of(where, param_labels, tree, "param_labels")
    unknown = sorted(set(jax.tree.leaves(labels)) - set(transforms), key=str)
    check_that(not unknown, where, f"labels among the transforms' {sorted(transforms, key=str)}", unknown)
    return labels


def multi_transform(transforms: Mapping[Hashable, GradientTransformation], param_labels: Any) -> GradientTransformation:
    """One transformation per label: leaf ``p`` is transformed by ``transforms[label(p)]``.

    ``param_labels``: labels with the params' structure (or a prefix), or ``fn(params) ->
    labels``; every label must name a transformation. The state is
    ``MultiTransformState({label: MaskedState(...)})``, as optax's.
    """
    check_that(isinstance(transforms, Mapping) and transforms, "multi_transform",
               "transforms as a non-empty dict of label -> transformation", repr(transforms), TypeError)
    for label, transform in transforms.items():
        check_transformation("multi_transform", transform, f"for label {label!r}")

    def group_mask(labels, group):
        return jax.tree.map(lambda label: label == group, labels)

    def init(params):
        labels = _labels("multi_transform", param_labels, params, transforms)
        return MultiTransformState({group: masked(transform, group_mask(labels, group)).init(params)
                                    for group, transform in transforms.items()})

    def update(updates, state, params=None):
        labels = _labels("multi_transform", param_labels, updates, transforms)
        new_states = {}
        for group, transform in transforms.items():
            updates, new_states[group] = masked(transform, group_mask(labels, group)).update(
                updates, state.inner_states[group], params)
        return updates, MultiTransformState(new_states)

    return GradientTransformation(init, update)

