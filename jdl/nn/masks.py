"""Attention masks, and the softmax that applies them.

A mask is boolean, ``True`` where a query may attend to a key, of shape ``[batch..., heads
or 1, q_len or 1, kv_len]``; it broadcasts against the logits as numpy does, from the
right. flax's mask helpers return float 1/0 masks by default; pass those as
``mask.astype(bool)``.

A query whose every key is masked has no softmax: :func:`masked_softmax` gives it zero
weights (so a zero output and a zero, finite gradient), never NaN.

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import nn
    >>> mask = nn.combine_masks(nn.causal_mask(3), nn.padding_mask(jnp.array([2]), key_length=3))
    >>> mask[0, 0].astype(int)
    Array([[1, 0, 0],
           [1, 1, 0],
           [1, 1, 0]], dtype=int32)
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jdl._checks import check_array, check_int_at_least, check_integer, check_mask_dtype, check_that


def _valid_tokens(where: str, valid, length: int | None, what: str) -> jax.Array:
    """A ``[batch..., len]`` boolean token mask from a token mask or (with ``length``) lengths."""
    check_array(where, valid, what)
    if length is not None:
        check_integer(where, valid, f"{what} length array")
        return jnp.arange(length) < jnp.asarray(valid)[..., None]
    if valid.dtype == jnp.bool_:
        return jnp.asarray(valid)
    if jnp.issubdtype(valid.dtype, jnp.integer):
        return jnp.asarray(valid) != 0
    raise TypeError(f"{where}: expected a boolean or integer {what} token mask (nonzero = a real token), got "
                    f"{jnp.dtype(valid.dtype).name} of shape {tuple(valid.shape)}")


def padding_mask(key_valid, *, query_valid=None, key_length: int | None = None,
                 query_length: int | None = None) -> jax.Array:
    """A boolean attention mask that keeps real tokens and drops padding.

    ``mask[..., 0, i, j] = query_valid[..., i] and key_valid[..., j]``: flax's
    ``make_attention_mask(query_valid, key_valid)``, but boolean, and with the keys first,
    because the key mask is the one every padded batch needs.

    Args:
      key_valid: which keys are real tokens: a token mask ``[batch..., kv_len]`` (boolean,
        or integers where nonzero marks a real token, so token ids with pad id 0 work as
        they are), or, with ``key_length``, the key sequences' lengths ``[batch...]``.
      query_valid: the same for the queries; ``None`` keeps every query, and the mask's query
        axis is 1 (it broadcasts).
      key_length, query_length: the padded lengths, when lengths are given.

    Returns:
      A boolean mask ``[batch..., 1, q_len (or 1), kv_len]``.

    Example:
        >>> import jax.numpy as jnp
        >>> padding_mask(jnp.array([3, 1]), key_length=4)[:, 0, 0].astype(int)
        Array([[1, 1, 1, 0],
               [1, 0, 0, 0]], dtype=int32)
    """
    keys = _valid_tokens("padding_mask", key_valid, key_length, "key")
    if query_valid is None:
        return keys[..., None, None, :]
    queries = _valid_tokens("padding_mask", query_valid, query_length, "query")
    check_that(queries.shape[:-1] == keys.shape[:-1], "padding_mask", "query and key masks with the same batch axes",
               f"query {tuple(queries.shape)} and key {tuple(keys.shape)}")
    return (queries[..., :, None] & keys[..., None, :])[..., None, :, :]


def causal_mask(length: int) -> jax.Array:
    """``mask[0, 0, i, j] = j <= i``: position ``i`` attends to itself and to the past only.

    Shape ``(1, 1, length, length)`` (flax's ``make_causal_mask`` of a batch of one); it
    broadcasts over batch and heads. Inside a per-example ``vmap`` use ``causal_mask(n)[0]``.

    Example:
        >>> causal_mask(3)[0, 0].astype(int)
        Array([[1, 0, 0],
               [1, 1, 0],
               [1, 1, 1]], dtype=int32)
    """
    check_int_at_least("causal_mask", "length", length, 0)
    return jnp.asarray(np.tril(np.ones((length, length), bool)))[None, None]


def combine_masks(*masks) -> jax.Array | None:
    """The logical and of the masks that are not ``None`` (``None`` if all are).

    flax's ``combine_masks``, boolean, and broadcasting masks of different ranks from the
    right as numpy does (flax asks for equal ranks).

    Example:
        >>> import jax.numpy as jnp
        >>> mask = combine_masks(causal_mask(3), None, padding_mask(jnp.array([2]), key_length=3))
        >>> mask.shape, mask[0, 0].astype(int).tolist()
        ((1, 1, 3, 3), [[1, 0, 0], [1, 1, 0], [1, 1, 0]])
    """
    present = [m for m in masks if m is not None]
    if not present:
        return None
    for m in present:
        check_mask_dtype("combine_masks", m, "boolean masks")
    try:
        np.broadcast_shapes(*(tuple(m.shape) for m in present))
    except ValueError:
        raise ValueError(f"combine_masks: expected masks that broadcast together, got shapes "
                         f"{[tuple(m.shape) for m in present]}") from None
    mask = present[0]
    for other in present[1:]:
        mask = jnp.logical_and(mask, other)
    return mask


def masked_softmax(logits: jax.Array, mask: jax.Array | None = None, *, zero_empty_rows: bool = True) -> jax.Array:
    """``softmax`` over the last axis of the entries ``mask`` keeps; zeros for a row with none.

    A masked logit becomes the dtype's lowest finite value rather than ``-inf``, so a row
    with every entry masked stays finite: its softmax is uniform, replaced by zeros (with a
    zero gradient, not NaN). ``zero_empty_rows=False`` leaves it uniform, for a caller that
    zeroes a smaller array downstream (attention zeroes the output rows).

    Example:
        >>> import jax.numpy as jnp
        >>> masked_softmax(jnp.zeros((2, 3)), jnp.array([[True, True, False], [False, False, False]]))
        Array([[0.5, 0.5, 0. ],
               [0. , 0. , 0. ]], dtype=float32)
    """
    if mask is None:
        return jax.nn.softmax(logits, axis=-1)
    weights = jax.nn.softmax(jnp.where(mask, logits, jnp.finfo(logits.dtype).min), axis=-1)
    if not zero_empty_rows:
        return weights
    return jnp.where(jnp.any(mask, axis=-1, keepdims=True), weights, jnp.zeros((), weights.dtype))
