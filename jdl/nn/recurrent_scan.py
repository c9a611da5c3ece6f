"""The scan that runs a cell over a sequence, with a hand-written backward pass.

:func:`scan_cell` runs a :class:`~jdl.nn.cells.Cell` over a time-major sequence
``[time, *batch, features]``, masked past each sequence's length, forwards or reversed
within each length (:func:`flip_sequences`). The recurrent layers of
:mod:`jdl.nn.recurrent` are built on it.

**The input projection is hoisted** out of the recurrence: one matmul over many steps at
once (all of them on accelerators, chunks of about 8 on CPU: ``time_chunk``,
:func:`time_chunk_size`); only the recurrent matmul is inside the scan.

**The backward pass is hand-written** (``implementation="fused"``, the default): a
``jax.custom_vjp`` runs the cells' backward steps in a reverse scan that produces only each
step's pre-activation gradients ``d_pre_t`` and the carry's gradient (one
``[batch, G * hidden] x [G * hidden, hidden]`` matmul a step). The weight gradients come
after it as single matmuls over ``chunk * batch`` rows: ``dW_hidden = H_prev^T d_rec``,
``dW_input = X^T d_pre`` and the input's gradient ``d_pre W_input^T``, instead of JAX's
small per-step accumulations. ``implementation="autodiff"`` lets JAX differentiate the
scan instead; it is the one to use for forward-mode derivatives (``jax.jvp``,
``jax.jacfwd``), which a custom VJP does not support. Reverse over reverse works with both.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> from jdl.nn.recurrent_scan import scan_cell
    >>> cell = nn.GRUCell(4)
    >>> params = cell.init_params(jax.random.key(0), 3)
    >>> x = jnp.ones((5, 2, 3))  # [time, batch, features]
    >>> carry, outputs = scan_cell(cell, params, x, jnp.array([5, 2]), cell.initial_carry((2,)), reverse=False)
    >>> outputs.shape, float(jnp.abs(outputs[2:, 1]).max())  # zeros past the second sequence's end
    ((5, 2, 4), 0.0)
"""
from __future__ import annotations

import functools
import typing
from typing import Literal

import jax
import jax.numpy as jnp

from jdl.nn.cells import Cell, compute_dtype, dot_promoted

Implementation = Literal["fused", "autodiff"]
IMPLEMENTATIONS = typing.get_args(Implementation)


def flip_sequences(x: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """Reverse each sequence of a time-major ``x`` ``[time, *batch, ...]`` within its length.

    Padding stays at the end: ``[1, 2, 3, pad] -> [3, 2, 1, pad]``. Applying it twice gives ``x``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import nn
        >>> nn.flip_sequences(jnp.array([[1, 4], [2, 5], [3, 0]]), jnp.array([3, 2])).T.tolist()
        [[3, 2, 1], [5, 4, 0]]
    """
    steps = x.shape[0]
    if lengths is None:
        return jnp.flip(x, axis=0)
    t = jnp.arange(steps).reshape((steps,) + (1,) * lengths.ndim)
    index = jnp.where(t < lengths, lengths - 1 - t, t)  # [time, *batch]
    index = index.reshape(index.shape + (1,) * (x.ndim - index.ndim))
    return jnp.take_along_axis(x, jnp.broadcast_to(index, x.shape), axis=0)


def _valid_steps(steps: int, lengths):
    """``[time, *batch]`` booleans: step ``t`` of sequence ``b`` is real (``t < lengths[b]``)."""
    return jnp.arange(steps).reshape((steps,) + (1,) * lengths.ndim) < lengths


def _keep(keep, new, old):
    """``new`` where the step is real, ``old`` (the carry passing through) past the end."""
    keep = keep[..., None]
    return jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, old)


def _scan_autodiff(cell: Cell, params, projected, carry, valid):
    """The plain scan of ``cell.step``; JAX differentiates it (forward and reverse mode)."""
    if valid is None:
        return jax.lax.scan(lambda c, p: cell.step(params, c, p), carry, projected)

    def body(c, inputs):
        p, keep = inputs
        new_c, y = cell.step(params, c, p)
        return _keep(keep, new_c, c), jnp.where(keep[..., None], y, jnp.zeros_like(y))

    return jax.lax.scan(body, carry, (projected, valid))


def time_chunk_size(steps: int, preferred: int = 8) -> int:
    """Steps per chunk of the fused layers: a divisor of ``steps`` near ``preferred`` when there is
    one in ``[preferred / 2, 2 * preferred]``, else the size that pads the sequence least.

    Example:
        >>> from jdl.nn.recurrent_scan import time_chunk_size
        >>> time_chunk_size(5), time_chunk_size(100), time_chunk_size(400)
        (5, 10, 8)
    """
    if steps <= preferred:
        return max(steps, 1)
    candidates = range(max(preferred // 2, 1), 2 * preferred + 1)
    return min(candidates, key=lambda c: (-(-steps // c) * c - steps, abs(c - preferred)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _scan_fused(cell: Cell, w_in, bias, w, hidden_bias, x, carry, valid):
    """The layer over time-major ``x`` ``[chunks, chunk, *batch, features]``: ``(final carry, outputs)``.

    An outer scan walks the chunks; each projects its steps' inputs in one matmul
    (``x W_input + b``) and runs an inner scan of the recurrence. The gradient is
    hand-written (:func:`_scan_fused_forward`, :func:`_scan_fused_backward`): the reverse
    inner scan computes only each step's pre-activation gradients and the carry's gradient
    (``d_rec W^T``, one small matmul a step); then each chunk's weight gradients are single
    matmuls over its ``chunk * batch`` rows, ``H_prev^T d_rec`` and ``X^T d_pre``, and the
    input's gradient ``d_pre W_input^T``, instead of a small accumulation every step.
    """
    (carry, outputs), _ = _scan_fused_forward(cell, w_in, bias, w, hidden_bias, x, carry, valid)
    return carry, outputs


def _fused_step(cell, w, hidden_bias, carry, pre_t):
    rec = dot_promoted(cell.hidden(carry), w)
    if hidden_bias is not None:
        rec = rec + hidden_bias
    return cell.gates_fn(carry, pre_t, rec)


def _scan_fused_forward(cell, w_in, bias, w, hidden_bias, x, carry0, valid):
    # Saved for the backward pass: the cell's `saved` per step, and per chunk the hidden
    # state it starts from; with the outputs they give h_prev, the hidden state before
    # each step (for the cell's backward and for dW_hidden = H_prev^T d_rec).
    def step(carry, inputs):
        pre_t, keep = inputs
        new_carry, y, saved = _fused_step(cell, w, hidden_bias, carry, pre_t)
        if keep is not None:
            y = jnp.where(keep[..., None], y, jnp.zeros_like(y))
            new_carry = _keep(keep, new_carry, carry)
        return new_carry, (y, saved)

    def chunk(carry, inputs):
        x_c, valid_c = inputs
        pre = jnp.dot(x_c, w_in) + bias  # every step of the chunk in one matmul
        new_carry, (y, saved) = jax.lax.scan(step, carry, (pre, valid_c))
        return new_carry, (y, saved, cell.hidden(carry))

    carry, (outputs, saved, h_first) = jax.lax.scan(chunk, carry0, (x, valid))
    return (carry, outputs), (w_in, w, hidden_bias is not None, saved, outputs, h_first, x, valid)


def _rows(a):
    return a.reshape(-1, a.shape[-1])


def _scan_fused_backward(cell, residuals, cotangents):
    w_in, w, has_hidden_bias, saved, outputs, h_first, x, valid = residuals
    d_carry, d_outputs = cotangents
    w_t, w_in_t = w.T, w_in.T
    # Weight gradients are summed over the chunks in at least float32.
    acc_dtype = jnp.promote_types(w.dtype, jnp.float32)
    same = None  # whether the cell's d_rec is its d_pre (known once the step is traced)

    def step(d_carry, inputs):
        nonlocal same
        saved_t, h_prev_t, d_y, keep = inputs
        d_direct, d_pre, d_rec = cell.backward(saved_t, h_prev_t, d_carry, d_y)
        same = d_rec is None
        d_rec = d_pre if same else d_rec
        d_prev = cell.add_to_hidden(d_direct, dot_promoted(d_rec, w_t))
        if keep is not None:  # past a sequence's end: nothing flows but the carry's gradient
            zeros = jnp.zeros_like(d_pre)
            d_pre, d_rec = jnp.where(keep[..., None], d_pre, zeros), jnp.where(keep[..., None], d_rec, zeros)
            d_prev = _keep(keep, d_prev, d_carry)
        return d_prev, (d_pre, None if same else d_rec)

    def chunk(accumulated, inputs):
        d_carry, d_w_in, d_bias, d_w, d_hidden_bias = accumulated
        saved_c, outputs_c, h_first_c, x_c, d_y_c, valid_c = inputs
        # The hidden state before each step is the previous step's output (the chunk's first
        # state for its first step). Past a sequence's end the outputs are zeros instead, but
        # nothing flows there (d_pre = d_rec = 0), and the real steps of a sequence come first.
        h_prev_c = jnp.concatenate([h_first_c[None], outputs_c[:-1]], axis=0)
        d_carry, (d_pre, d_rec) = jax.lax.scan(step, d_carry, (saved_c, h_prev_c, d_y_c, valid_c), reverse=True)
        d_rec = d_pre if d_rec is None else d_rec
        d_w = d_w + jnp.dot(_rows(h_prev_c).T, _rows(d_rec), preferred_element_type=acc_dtype)
        d_w_in = d_w_in + jnp.dot(_rows(x_c).T, _rows(d_pre), preferred_element_type=acc_dtype)
        d_bias = d_bias + jnp.sum(_rows(d_pre), axis=0, dtype=acc_dtype)
        if has_hidden_bias:
            d_hidden_bias = d_hidden_bias + jnp.sum(_rows(d_rec), axis=0, dtype=acc_dtype)
        d_x = jnp.dot(d_pre, w_in_t)
        return (d_carry, d_w_in, d_bias, d_w, d_hidden_bias), d_x

    zeros = lambda a: jnp.zeros(a.shape, acc_dtype)  # noqa: E731
    width = w.shape[-1]
    initial = (d_carry, zeros(w_in), jnp.zeros((width,), acc_dtype), zeros(w),
               jnp.zeros((width,), acc_dtype) if has_hidden_bias else None)
    (d_carry0, d_w_in, d_bias, d_w, d_hidden_bias), d_x = jax.lax.scan(
        chunk, initial, (saved, outputs, h_first, x, d_outputs, valid), reverse=True)
    cast = lambda a, like: None if a is None else a.astype(like.dtype)  # noqa: E731
    return (cast(d_w_in, w_in), cast(d_bias, w_in), cast(d_w, w), cast(d_hidden_bias, w), d_x.astype(x.dtype),
            d_carry0, None)


_scan_fused.defvjp(_scan_fused_forward, _scan_fused_backward)


def _run_fused(cell: Cell, params, x, lengths, carry, reverse: bool, time_chunk: int | None):
    """The fused path of :func:`scan_cell`: chunks of ``time_chunk`` steps (padded steps are masked)."""
    steps = x.shape[0]
    dtype = compute_dtype(x, params)
    x = x.astype(dtype)
    if reverse:
        x = flip_sequences(x, lengths)
    if time_chunk is None:  # chunks on CPU (see docs/design.md); accelerators prefer the largest matmuls
        size = time_chunk_size(steps) if jax.default_backend() == "cpu" else steps
    else:
        size = min(time_chunk, steps)
    chunks = -(-steps // size)
    padding = chunks * size - steps
    valid = None
    if lengths is not None or padding:
        limit = jnp.full(x.shape[1:-1], steps, jnp.int32) if lengths is None else lengths
        valid = _valid_steps(chunks * size, limit)
    if padding:
        x = jnp.concatenate([x, jnp.zeros((padding,) + x.shape[1:], x.dtype)], axis=0)
    to_chunks = lambda a: None if a is None else a.reshape((chunks, size) + a.shape[1:])  # noqa: E731
    hidden_bias = cell.hidden_bias_vector(params, dtype)
    carry, outputs = _scan_fused(cell, params["input"]["w"].astype(dtype), params["input"]["b"].astype(dtype),
                                 params["hidden"]["w"].astype(dtype), hidden_bias, to_chunks(x), carry,
                                 to_chunks(valid))
    outputs = outputs.reshape((chunks * size,) + outputs.shape[2:])[:steps]
    if reverse:
        outputs = flip_sequences(outputs, lengths)
    return carry, outputs


def scan_cell(cell: Cell, params, x, lengths, carry, reverse: bool, implementation: str = "fused",
              time_chunk: int | None = None):
    """Run ``cell`` over time-major ``x`` ``[time, *batch, features]``: ``(final carry, outputs)``.

    ``outputs`` are time-major ``[time, *batch, hidden]``, zero past each sequence's length
    (``lengths``, shape ``batch``, or ``None`` for full sequences), where the carry stops
    updating. ``reverse`` reads each sequence from its last real step back to its first and
    returns outputs in the original order. ``carry`` is the starting carry (nothing here
    checks it: the layers do). ``implementation`` is one of :data:`IMPLEMENTATIONS`; see the
    module docstring.
    """
    steps = x.shape[0]
    if lengths is not None:  # traced lengths cannot be checked: above `steps` acts as `steps`
        lengths = jnp.clip(lengths, 0, steps)
    if implementation == "fused":
        return _run_fused(cell, params, x, lengths, carry, reverse, time_chunk)
    valid = None if lengths is None else _valid_steps(steps, lengths)
    projected = cell.project(params, x)  # one matmul for every step, outside the scan
    if reverse:
        projected = flip_sequences(projected, lengths)
    carry, outputs = _scan_autodiff(cell, params, projected, carry, valid)
    if reverse:
        outputs = flip_sequences(outputs, lengths)
    return carry, outputs
