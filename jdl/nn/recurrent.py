"""Recurrent cells and the layers that run them over a sequence with ``jax.lax.scan``.

**Cells.** A cell is a pure step ``cell(params, carry, x_t) -> (carry, y_t)`` with its own
initialiser ``cell.init_params(key, input_features) -> params``. Four are provided:

* :func:`SimpleRNNCell`, the Elman RNN: ``h' = tanh(x U + h W + b)`` (``activation="relu"``
  for a ReLU RNN).
* :func:`LSTMCell`: gates ``i, f, g, o``, carry ``(c, h)``; ``c' = f c + i g``,
  ``h' = o tanh(c')``.
* :func:`GRUCell`, in flax's convention (``flax.linen.GRUCell``): gates ``r, z, n``,
  ``n = tanh(x W_n + b_n + r (h U_n + b_hn))``, ``h' = (1 - z) n + z h``.
* :func:`SimplifiedGRUCell`, the GRU with an update gate only:
  ``u = sigmoid([h, x] W_u + b_u)``, ``m~ = tanh([h, x] W_c + b_c)``, ``h' = u m~ + (1 - u) h``.

**Params** of every cell have one layout, the gates stacked along the last axis in the
order the cell's ``gates`` attribute names (``"ifgo"``, ``"rzn"``, ``"uc"``, ``"h"``)::

    {"input":  {"w": (input_features, G * hidden), "b": (G * hidden,)},
     "hidden": {"w": (hidden, G * hidden)}}            # GRU: also "b": (hidden,), the n-gate's b_hn

so gate ``k``'s kernels are ``w[:, k * hidden:(k + 1) * hidden]``. The input side holds the
only bias (input and recurrent projections are summed), except for the GRU, whose reset
gate multiplies the hidden projection of ``n`` including its own bias. Vectors are rows:
``x W``, so the seeds' ``W h`` is ``h @ params["hidden"]["w"]`` with ``w = W^T``.
Initialisers: input kernels LeCun normal (as flax), recurrent kernels orthogonal per gate,
biases zero; ``LSTMCell(forget_bias=1.0)`` starts the forget gate's bias at 1.

**Layers.** :func:`RNN` runs any cell over ``x`` of shape ``[*batch, time, features]``
(``[batch, time, features]`` usually; ``[time, features]`` is one sequence;
``time_major=True`` for ``[time, *batch, features]``). The input projection is hoisted
out of the recurrence: one matmul over many steps at once (all of them on accelerators,
chunks of about 8 on CPU: ``time_chunk``); only the recurrent matmul is inside the scan.

**The backward pass** is hand-written (``implementation="fused"``, the default): each cell
has a backward step (its gate derivatives, written out in its docstring and tested
against ``jax.vjp``), and a ``jax.custom_vjp`` runs them in a reverse scan that produces
only each step's pre-activation gradients ``d_pre_t`` and the carry's gradient (one
``[batch, G * hidden] x [G * hidden, hidden]`` matmul a step). The weight gradients come
after it as single matmuls over ``chunk * batch`` rows: ``dW_hidden = H_prev^T d_rec``,
``dW_input = X^T d_pre`` and the input's gradient ``d_pre W_input^T``, instead of JAX's
small per-step accumulations. ``implementation="autodiff"`` lets JAX differentiate the
scan instead; it is the one to use for forward-mode derivatives (``jax.jvp``,
``jax.jacfwd``), which a custom VJP does not support. Reverse over reverse works with both.

``apply`` takes two extra keywords::

    (outputs, final_carry), state = layer.apply(params, state, x, lengths=None, initial_carry=None)

* ``lengths`` (integers, shape ``batch``): sequence ``b`` is ``x[b, :lengths[b]]``; outputs
  past its end are zero and its final carry is the carry after its last real step. A
  length of 0 gives the initial carry. Lengths outside ``[0, time]`` are an error when they
  are concrete; under ``jit`` they cannot be checked, and a length above ``time`` acts as
  ``time``.
* ``initial_carry``: the cell's carry for every sequence (zeros by default): an array
  ``[*batch, hidden]``, or for the LSTM a pair ``(c, h)`` of them.

``y`` is the pair ``(outputs [*batch, time, hidden], final_carry)``; with
``return_carry=False`` it is ``outputs`` alone (to put the layer in a ``Sequential``).
``reverse=True`` reads each sequence from its own last real step back to its first, and
returns outputs in the original time order (flax's ``reverse=True, keep_order=True``).
:func:`Bidirectional` runs a forward and a reverse RNN; outputs are concatenated
(``[..., 2 * hidden]``), carries and ``initial_carry`` are pairs ``(forward, backward)``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> layer = nn.LSTM(8)
    >>> params, state = layer.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
    >>> params["input"]["w"].shape, params["hidden"]["w"].shape
    ((3, 32), (8, 32))
    >>> (outputs, (c, h)), state = layer.apply(params, state, jnp.ones((2, 5, 3)), lengths=jnp.array([5, 2]))
    >>> outputs.shape, h.shape
    ((2, 5, 8), (2, 8))
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp

from jdl import init as initializers
from jdl._checks import (
    check_array, check_floating, check_kernel_matches_input, check_keys, check_lengths, check_min_rank, check_param_shape,
)
from jdl.nn.core import Layer, make_layer
from jdl.nn.dropout import Dropout

Carry = Any


@dataclasses.dataclass(frozen=True, eq=False)
class Cell:
    """A recurrent cell: a pure step function plus what a layer needs to run it fast.

    Every cell computes one step from two pre-activations: ``pre = x_t W_input + b`` (the
    input side, which a layer computes for all steps at once, outside the scan) and
    ``rec = h W_hidden (+ b_hidden)`` (the recurrent side, inside the scan)::

        carry', y_t, saved = cell.gates(carry, pre, rec)

    ``saved`` is what the cell's hand-written backward step needs besides the previous
    hidden state ``h_prev`` (which the layer keeps for the weight gradient anyway): its gate
    activations, the LSTM's previous cell state. ``cell.backward(saved, h_prev, d_carry',
    d_y) -> (d_carry_direct, d_pre, d_rec)`` gives the step's gradients, ``d_carry_direct`` not counting the path
    through ``rec`` (the layer adds ``d_rec W_hidden^T`` to the hidden part) and ``d_rec``
    ``None`` when it equals ``d_pre``.

    Attributes:
      hidden_size: size of the hidden state (and of each output step).
      gates: one letter per gate, in the order they are stacked in the params.
      description: how the cell introduces itself in errors (``"LSTMCell(hidden_size=8)"``).
      init_params: ``init_params(key, input_features) -> params``.
      gates_fn, backward: see above.
      is_pair: whether the carry is a pair ``(c, h)`` (the LSTM) rather than one array.
      hidden_bias: whether ``params["hidden"]`` has a bias ``b`` of ``hidden_size`` (the GRU's
        ``b_hn``), added to the last gate's slice of ``rec``.
    """

    hidden_size: int
    gates: str
    description: str
    init_params: Callable[[jax.Array, int], dict]
    gates_fn: Callable[[Carry, jax.Array, jax.Array], tuple[Carry, jax.Array, Any]]
    backward: Callable[[Any, jax.Array, Carry, jax.Array], tuple[Carry, jax.Array, jax.Array | None]]
    is_pair: bool = False
    hidden_bias: bool = False

    def __call__(self, params: dict, carry: Carry, x_t: jax.Array) -> tuple[Carry, jax.Array]:
        """One step: ``(carry, x_t) -> (carry, y_t)``; ``x_t`` is ``[*batch, input_features]``."""
        check_params(self.description, self, params, x_t)
        check_carry(self.description, self, carry, tuple(x_t.shape[:-1]))
        return self.step(params, carry, self.project(params, x_t))

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """``x W_input + b`` over any leading axes: the part of a step that ignores the carry."""
        return _input_matmul(params, x) + params["input"]["b"].astype(_dtype(x, params))

    def recurrent(self, params: dict, h: jax.Array) -> jax.Array:
        """``h W_hidden`` (plus the hidden bias in the last gate's slice, for the GRU)."""
        rec = _hidden_matmul(params["hidden"]["w"], h)
        bias = _hidden_bias_vector(self, params, rec.dtype)
        return rec if bias is None else rec + bias

    def step(self, params: dict, carry: Carry, projected: jax.Array) -> tuple[Carry, jax.Array]:
        """One step from the projected input ``x_t W_input + b``: ``(carry, y_t)``."""
        carry, y, _ = self.gates_fn(carry, projected, self.recurrent(params, self.hidden(carry)))
        return carry, y

    def hidden(self, carry: Carry) -> jax.Array:
        """The part of the carry the recurrent matmul reads (``h``)."""
        return carry[1] if self.is_pair else carry

    def add_to_hidden(self, d_carry: Carry, d_h: jax.Array) -> Carry:
        return (d_carry[0], d_carry[1] + d_h) if self.is_pair else d_carry + d_h

    def initial_carry(self, batch_shape: tuple[int, ...], dtype=jnp.float32) -> Carry:
        """The zero carry for ``batch_shape`` sequences."""
        zeros = jnp.zeros(tuple(batch_shape) + (self.hidden_size,), dtype)
        return (zeros, zeros) if self.is_pair else zeros

    def __repr__(self) -> str:
        return self.description


def _check_hidden_size(owner: str, hidden_size: Any) -> None:
    if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size <= 0:
        raise ValueError(f"{owner}: expected hidden_size to be a positive int, got {hidden_size!r}")


def _stacked_params(key, input_features, hidden_size, gates, kernel_init, recurrent_kernel_init, bias_init, param_dtype,
                    hidden_bias=False, bias_offsets=None):
    """Params in the common layout; each gate's kernels drawn on their own (orthogonal per gate)."""
    n = len(gates)
    keys = jax.random.split(key, 3 * n + 1)
    w_in = [kernel_init(keys[i], (input_features, hidden_size), param_dtype) for i in range(n)]
    w_h = [recurrent_kernel_init(keys[n + i], (hidden_size, hidden_size), param_dtype) for i in range(n)]
    b = [bias_init(keys[2 * n + i], (hidden_size,), param_dtype) for i in range(n)]
    for gate, offset in (bias_offsets or {}).items():
        index = gates.index(gate)
        b[index] = b[index] + jnp.asarray(offset, param_dtype)
    params = {
        "input": {"w": jnp.concatenate(w_in, axis=1), "b": jnp.concatenate(b)},
        "hidden": {"w": jnp.concatenate(w_h, axis=1)},
    }
    if hidden_bias:
        params["hidden"]["b"] = bias_init(keys[3 * n], (hidden_size,), param_dtype)
    return params


def _dtype(x, params):
    return jnp.result_type(x.dtype, params["input"]["w"].dtype)


def _input_matmul(params, x):
    """``x W_input`` without the bias (the fused layers add the bias inside the scan)."""
    w = params["input"]["w"]
    dtype = jnp.result_type(x.dtype, w.dtype)
    return jnp.dot(x.astype(dtype), w.astype(dtype))


def _hidden_matmul(w, h):
    dtype = jnp.result_type(h.dtype, w.dtype)
    return jnp.dot(h.astype(dtype), w.astype(dtype))


def _hidden_bias_vector(cell, params, dtype):
    """The GRU's ``b_hn`` placed in the last gate's slice of a ``G * hidden`` vector (else None)."""
    if not cell.hidden_bias:
        return None
    bias = params["hidden"]["b"].astype(dtype)
    return jnp.concatenate([jnp.zeros(((len(cell.gates) - 1) * cell.hidden_size,), dtype), bias])


def _split(z, n):
    return jnp.split(z, n, axis=-1)


def _sigmoid_grad(s):
    """``sigmoid'`` from the sigmoid's value ``s``."""
    return s * (1.0 - s)


def _tanh_grad(t):
    """``tanh'`` from the tanh's value ``t``."""
    return 1.0 - t * t


def SimpleRNNCell(hidden_size: int, *, activation: str = "tanh", kernel_init=initializers.lecun_normal(),
                  recurrent_kernel_init=initializers.orthogonal(), bias_init=initializers.zeros,
                  param_dtype=jnp.float32) -> Cell:
    """The Elman RNN (the seeds' ``a = b + W h + U x``, ``h = tanh(a)``); the output is ``h``.

    ``activation`` is ``"tanh"`` or ``"relu"``. Params: one gate ``"h"`` in the common layout.
    """
    _check_hidden_size("SimpleRNNCell", hidden_size)
    if activation not in ("tanh", "relu"):
        raise ValueError(f"SimpleRNNCell: expected activation 'tanh' or 'relu', got {activation!r}")
    function = jnp.tanh if activation == "tanh" else jax.nn.relu

    def init_params(key, input_features):
        return _stacked_params(key, input_features, hidden_size, "h", kernel_init, recurrent_kernel_init, bias_init, param_dtype)

    def gates(h, pre, rec):
        h = function(pre + rec)
        return h, h, h

    def backward(h, h_prev, d_h, d_y):
        del h_prev
        d_h = d_h + d_y
        d_a = d_h * (_tanh_grad(h) if activation == "tanh" else (h > 0).astype(h.dtype))
        return jnp.zeros_like(d_h), d_a, None

    return Cell(hidden_size, "h", f"SimpleRNNCell(hidden_size={hidden_size}, activation={activation!r})",
                init_params, gates, backward)


def LSTMCell(hidden_size: int, *, forget_bias: float = 0.0, kernel_init=initializers.lecun_normal(),
             recurrent_kernel_init=initializers.orthogonal(), bias_init=initializers.zeros,
             param_dtype=jnp.float32) -> Cell:
    """The LSTM (Hochreiter & Schmidhuber, 1997) as in ``flax.linen.LSTMCell``; carry ``(c, h)``.

    Gates ``i, f, g, o`` (sigmoid, sigmoid, tanh, sigmoid) of ``z = pre + rec``:
    ``c' = f c + i g``, ``h' = o tanh(c')``; the output is ``h'``. ``forget_bias`` is added to
    the forget gate's initial bias (1.0 is the common choice; 0.0, the default, is flax's).

    Backward step (``dh = dh' + dy``, ``t = tanh(c')``): ``dc = dc' + dh o (1 - t^2)``;
    ``dz = [dc g i(1-i), dc c f(1-f), dc i (1-g^2), dh t o(1-o)]``; the carry's gradient is
    ``(dc f, dz W_hidden^T)``.
    """
    _check_hidden_size("LSTMCell", hidden_size)

    def init_params(key, input_features):
        return _stacked_params(key, input_features, hidden_size, "ifgo", kernel_init, recurrent_kernel_init, bias_init,
                               param_dtype, bias_offsets={"f": forget_bias} if forget_bias else None)

    def gates(carry, pre, rec):
        c, _ = carry
        i, f, g, o = _split(pre + rec, 4)
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        new_c = f * c + i * g
        h = o * jnp.tanh(new_c)
        # Saved as separate arrays: concatenating them would make XLA recompute the gates.
        return (new_c, h), h, (i, f, g, o, c)

    def backward(saved, h_prev, d_carry, d_y):
        del h_prev  # h enters only through rec, whose gradient the layer handles
        i, f, g, o, c = saved
        d_c, d_h = d_carry
        d_h = d_h + d_y
        t = jnp.tanh(f * c + i * g)  # recomputed: cheaper than saving c' as well
        d_c = d_c + d_h * o * _tanh_grad(t)
        d_z = jnp.concatenate([d_c * g * _sigmoid_grad(i), d_c * c * _sigmoid_grad(f), d_c * i * _tanh_grad(g),
                               d_h * t * _sigmoid_grad(o)], axis=-1)
        return (d_c * f, jnp.zeros_like(d_h)), d_z, None

    description = f"LSTMCell(hidden_size={hidden_size})"
    return Cell(hidden_size, "ifgo", description, init_params, gates, backward, is_pair=True)


def GRUCell(hidden_size: int, *, kernel_init=initializers.lecun_normal(), recurrent_kernel_init=initializers.orthogonal(),
            bias_init=initializers.zeros, param_dtype=jnp.float32) -> Cell:
    """The GRU (Cho et al., 2014) in flax's convention (``flax.linen.GRUCell``).

    ``r = sigmoid(x W_r + b_r + h U_r)``, ``z = sigmoid(x W_z + b_z + h U_z)``,
    ``n = tanh(x W_n + b_n + r * (h U_n + b_hn))``, ``h' = (1 - z) n + z h``.
    ``params["hidden"]["b"]`` is ``b_hn``, shape ``(hidden,)``.
    """
    _check_hidden_size("GRUCell", hidden_size)

    def init_params(key, input_features):
        return _stacked_params(key, input_features, hidden_size, "rzn", kernel_init, recurrent_kernel_init, bias_init,
                               param_dtype, hidden_bias=True)

    def gates(h, pre, rec):
        x_r, x_z, x_n = _split(pre, 3)
        h_r, h_z, h_n = _split(rec, 3)  # h_n includes b_hn
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        new_h = (1.0 - z) * n + z * h
        return new_h, new_h, (r, z, n, h_n)

    def backward(saved, h, d_h, d_y):
        r, z, n, h_n = saved
        d_h = d_h + d_y
        d_n = d_h * (1.0 - z) * _tanh_grad(n)
        d_r = d_n * h_n * _sigmoid_grad(r)
        d_z = d_h * (h - n) * _sigmoid_grad(z)
        d_pre = jnp.concatenate([d_r, d_z, d_n], axis=-1)
        d_rec = jnp.concatenate([d_r, d_z, d_n * r], axis=-1)
        return d_h * z, d_pre, d_rec

    return Cell(hidden_size, "rzn", f"GRUCell(hidden_size={hidden_size})", init_params, gates, backward,
                hidden_bias=True)


def SimplifiedGRUCell(hidden_size: int, *, kernel_init=initializers.lecun_normal(),
                      recurrent_kernel_init=initializers.orthogonal(), bias_init=initializers.zeros,
                      param_dtype=jnp.float32) -> Cell:
    """The seeds' simplified GRU: an update gate ``u`` and no reset gate.

    ``u = sigmoid([h, x] W_u + b_u)``, ``m~ = tanh([h, x] W_c + b_c)``,
    ``h' = u m~ + (1 - u) h``; gates ``"uc"`` (``[h, x] W`` is ``h U + x W`` with the two
    halves of ``W`` stored as ``params["hidden"]["w"]`` and ``params["input"]["w"]``).
    """
    _check_hidden_size("SimplifiedGRUCell", hidden_size)

    def init_params(key, input_features):
        return _stacked_params(key, input_features, hidden_size, "uc", kernel_init, recurrent_kernel_init, bias_init, param_dtype)

    def gates(h, pre, rec):
        u, m = _split(pre + rec, 2)
        u, m = jax.nn.sigmoid(u), jnp.tanh(m)
        new_h = u * m + (1.0 - u) * h
        return new_h, new_h, (u, m)

    def backward(saved, h, d_h, d_y):
        u, m = saved
        d_h = d_h + d_y
        d_z = jnp.concatenate([d_h * (m - h) * _sigmoid_grad(u), d_h * u * _tanh_grad(m)], axis=-1)
        return d_h * (1.0 - u), d_z, None

    return Cell(hidden_size, "uc", f"SimplifiedGRUCell(hidden_size={hidden_size})", init_params, gates, backward)


# ----------------------------------------------------------------------------------- checks


def check_params(where: str, cell: Cell, params: Any, x: Any) -> None:
    """``params`` have the cell's layout for inputs with ``x.shape[-1]`` features."""
    check_floating(where, x)
    hidden_keys = ["w", "b"] if cell.gates == "rzn" else ["w"]
    check_keys(where, params, ["input", "hidden"])
    check_keys(where, params["input"], ["w", "b"], "params['input']")
    check_keys(where, params["hidden"], hidden_keys, "params['hidden']")
    width = len(cell.gates) * cell.hidden_size
    check_kernel_matches_input(where, params["input"]["w"], x, width, "input.w")
    check_param_shape(where, params["input"]["b"], (width,), "input.b")
    check_param_shape(where, params["hidden"]["w"], (cell.hidden_size, width), "hidden.w")
    if "b" in hidden_keys:
        check_param_shape(where, params["hidden"]["b"], (cell.hidden_size,), "hidden.b")


def check_carry(where: str, cell: Cell, carry: Any, batch_shape: tuple[int, ...], what: str = "carry") -> None:
    """``carry`` is the cell's carry for ``batch_shape`` sequences."""
    shape = tuple(batch_shape) + (cell.hidden_size,)
    if cell.is_pair:
        if not isinstance(carry, (tuple, list)) or len(carry) != 2:
            raise ValueError(f"{where}: expected {what} to be a pair (c, h) of arrays of shape {shape}, "
                             f"got {type(carry).__name__}")
        parts = {"c": carry[0], "h": carry[1]}
    else:
        parts = {"": carry}
    for name, part in parts.items():
        label = f"{what}[{name!r}]" if name else what
        check_array(where, part, label)
        if tuple(part.shape) != shape:
            raise ValueError(f"{where}: expected {label} of shape {shape} ([*batch, hidden_size]), "
                             f"got shape {tuple(part.shape)}")


# ----------------------------------------------------------------------------------- layers


def flip_sequences(x: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """Reverse each sequence of a time-major ``x`` ``[time, *batch, ...]`` within its length.

    Padding stays at the end: ``[1, 2, 3, pad] -> [3, 2, 1, pad]``. Applying it twice gives ``x``.
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
    one in ``[preferred / 2, 2 * preferred]``, else the size that pads the sequence least."""
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
    rec = _hidden_matmul(w, cell.hidden(carry))
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
        d_prev = cell.add_to_hidden(d_direct, _hidden_matmul(w_t, d_rec))
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
    """The fused path of :func:`_run`: chunks of ``time_chunk`` steps (padded steps are masked)."""
    steps = x.shape[0]
    dtype = _dtype(x, params)
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
    hidden_bias = _hidden_bias_vector(cell, params, dtype)
    carry, outputs = _scan_fused(cell, params["input"]["w"].astype(dtype), params["input"]["b"].astype(dtype),
                                 params["hidden"]["w"].astype(dtype), hidden_bias, to_chunks(x), carry,
                                 to_chunks(valid))
    outputs = outputs.reshape((chunks * size,) + outputs.shape[2:])[:steps]
    if reverse:
        outputs = flip_sequences(outputs, lengths)
    return carry, outputs


def _run(cell: Cell, params, x, lengths, carry, reverse: bool, implementation: str = "fused",
         time_chunk: int | None = None):
    """Run ``cell`` over time-major ``x`` ``[time, *batch, features]``; outputs are time-major."""
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


def _apply_directions(description, directions, params, x, lengths, initial_carry, implementation, time_major,
                      time_chunk=None):
    """Checks, then runs each ``(name, cell, reverse)``; returns outputs and carries per direction."""
    check_floating(description, x)
    check_min_rank(description, x, 2, "time, *batch, features" if time_major else "*batch, time, features")
    if time_major:
        batch_shape, steps = tuple(x.shape[1:-1]), x.shape[0]
    else:
        batch_shape, steps = tuple(x.shape[:-2]), x.shape[-2]
    if lengths is not None:
        check_lengths(description, lengths, batch_shape, steps)
    many = len(directions) > 1
    if many:
        check_keys(description, params, [name for name, _, _ in directions])
        if initial_carry is not None and (not isinstance(initial_carry, (tuple, list)) or len(initial_carry) != 2):
            raise ValueError(f"{description}: expected initial_carry to be a pair (forward, backward), "
                             f"got {type(initial_carry).__name__}")
    inputs = x if time_major else jnp.moveaxis(x, -2, 0)
    outputs, carries = [], []
    for index, (name, cell, reverse) in enumerate(directions):
        cell_params = params[name] if many else params
        check_params(description, cell, cell_params, x)
        dtype = jnp.result_type(x.dtype, cell_params["input"]["w"].dtype)
        carry = initial_carry[index] if (many and initial_carry is not None) else initial_carry
        if carry is None:
            carry = cell.initial_carry(batch_shape, dtype)
        else:
            what = f"initial_carry[{index}]" if many else "initial_carry"
            check_carry(description, cell, carry, batch_shape, what)
            carry = jax.tree.map(lambda a: jnp.asarray(a).astype(dtype), tuple(carry) if cell.is_pair else carry)
        carry, out = _run(cell, cell_params, inputs, lengths, carry, reverse, implementation, time_chunk)
        outputs.append(out if time_major else jnp.moveaxis(out, 0, -2))
        carries.append(carry)
    return outputs, carries


IMPLEMENTATIONS = ("fused", "autodiff")


def _check_options(owner: str, implementation: Any, time_major: Any, time_chunk: Any = None) -> None:
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"{owner}: expected implementation to be one of {IMPLEMENTATIONS}, got {implementation!r}")
    if not isinstance(time_major, bool):
        raise ValueError(f"{owner}: expected time_major to be a bool, got {time_major!r}")
    if time_chunk is not None and (not isinstance(time_chunk, int) or isinstance(time_chunk, bool) or time_chunk <= 0):
        raise ValueError(f"{owner}: expected time_chunk to be a positive int or None, got {time_chunk!r}")


def _check_cell(owner: str, cell: Any) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(f"{owner}: expected a jdl recurrent Cell (nn.LSTMCell(64), ...), got {type(cell).__name__}")


def RNN(cell: Cell, *, reverse: bool = False, return_carry: bool = True, time_major: bool = False,
        implementation: str = "fused", time_chunk: int | None = None, name: str = "rnn") -> Layer:
    """Run ``cell`` over ``x`` ``[*batch, time, features]`` with ``jax.lax.scan``.

    Params are the cell's (see the module docstring). ``apply(params, state, x, *,
    lengths=None, initial_carry=None)`` gives ``((outputs, final_carry), state)``, or
    ``(outputs, state)`` with ``return_carry=False``. ``reverse=True`` reads each sequence
    from its last real step back to its first and returns outputs in the original order.
    ``time_major=True`` takes and returns ``[time, *batch, features]`` (no transposes).
    ``implementation="fused"`` (the default) differentiates with the cells' hand-written
    backward steps (reverse mode only); ``"autodiff"`` lets JAX differentiate the scan,
    which also supports forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``).
    ``time_chunk`` is the fused path's steps per chunk (``None``: about 8 on CPU, see
    :func:`time_chunk_size`, and the whole sequence in one chunk on accelerators).
    """
    _check_cell("RNN", cell)
    _check_options("RNN", implementation, time_major, time_chunk)
    description = f"RNN({cell}" + (", reverse=True)" if reverse else ")")
    directions = [("", cell, reverse)]

    def init(key, x):
        check_floating(description, x)
        check_min_rank(description, x, 2, "time, *batch, features" if time_major else "*batch, time, features")
        return cell.init_params(key, x.shape[-1]), {}

    def apply(params, state, x, *, key=None, train=False, lengths=None, initial_carry=None):
        del key, train
        check_keys(description, state, [], "state")
        (outputs,), (carry,) = _apply_directions(description, directions, params, x, lengths, initial_carry,
                                                 implementation, time_major, time_chunk)
        return ((outputs, carry) if return_carry else outputs), state

    return make_layer(name, description, init, apply)


def Bidirectional(forward: Cell, backward: Cell | None = None, *, return_carry: bool = True,
                  time_major: bool = False, implementation: str = "fused", time_chunk: int | None = None,
                  name: str = "bidirectional") -> Layer:
    """A forward and a reverse :func:`RNN` over the same input, outputs concatenated.

    ``backward`` defaults to a fresh cell of the same kind and size (its own params). Params
    are ``{"forward": ..., "backward": ...}``; ``y`` is ``(outputs [*batch, time, 2 * hidden],
    (forward_carry, backward_carry))``. With ``lengths``, the backward direction starts at
    each sequence's own last real step, and its final carry is the one after step 0.
    ``time_major``, ``implementation`` and ``time_chunk`` are :func:`RNN`'s.
    """
    _check_cell("Bidirectional", forward)
    _check_options("Bidirectional", implementation, time_major, time_chunk)
    backward = forward if backward is None else backward
    _check_cell("Bidirectional", backward)
    description = f"Bidirectional({forward}, {backward})"
    directions = [("forward", forward, False), ("backward", backward, True)]

    def init(key, x):
        check_floating(description, x)
        check_min_rank(description, x, 2, "time, *batch, features" if time_major else "*batch, time, features")
        return {"forward": forward.init_params(jax.random.fold_in(key, 0), x.shape[-1]),
                "backward": backward.init_params(jax.random.fold_in(key, 1), x.shape[-1])}, {}

    def apply(params, state, x, *, key=None, train=False, lengths=None, initial_carry=None):
        del key, train
        check_keys(description, state, [], "state")
        outputs, carries = _apply_directions(description, directions, params, x, lengths, initial_carry,
                                             implementation, time_major, time_chunk)
        outputs = jnp.concatenate(outputs, axis=-1)
        return ((outputs, tuple(carries)) if return_carry else outputs), state

    return make_layer(name, description, init, apply)


def LSTM(hidden_size: int, *, reverse: bool = False, return_carry: bool = True, time_major: bool = False,
         implementation: str = "fused", time_chunk: int | None = None, name: str = "lstm", **cell_options) -> Layer:
    """``RNN(LSTMCell(hidden_size, **cell_options))``; the final carry is ``(c, h)``."""
    return RNN(LSTMCell(hidden_size, **cell_options), reverse=reverse, return_carry=return_carry,
               time_major=time_major, implementation=implementation, time_chunk=time_chunk, name=name)


def GRU(hidden_size: int, *, reverse: bool = False, return_carry: bool = True, time_major: bool = False,
        implementation: str = "fused", time_chunk: int | None = None, name: str = "gru", **cell_options) -> Layer:
    """``RNN(GRUCell(hidden_size, **cell_options))`` (flax's GRU convention)."""
    return RNN(GRUCell(hidden_size, **cell_options), reverse=reverse, return_carry=return_carry,
               time_major=time_major, implementation=implementation, time_chunk=time_chunk, name=name)


def StackedRNN(cells: list[Cell], *, bidirectional: bool = False, dropout_rate: float = 0.0,
               return_carry: bool = True, time_major: bool = False, implementation: str = "fused",
               time_chunk: int | None = None, name: str = "stacked_rnn") -> Layer:
    """Recurrent layers on top of each other, with dropout between them (not after the last).

    Layer ``i`` runs ``cells[i]`` (both ways with ``bidirectional=True``) over the outputs of
    layer ``i - 1``; every layer gets the same ``lengths``, so padding stays zero all the way
    up. Params are ``{"layer_0": ..., "layer_1": ...}`` (each an :func:`RNN`'s or a
    :func:`Bidirectional`'s). ``y`` is ``(outputs of the top layer, (carry_0, carry_1, ...))``;
    ``initial_carry``, if given, is such a tuple too. Dropout (inverted, rate
    ``dropout_rate``) needs ``key`` when ``train=True``, as :func:`jdl.nn.Dropout` does.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn
        >>> layer = nn.StackedRNN([nn.GRUCell(16), nn.GRUCell(16)], dropout_rate=0.2)
        >>> params, state = layer.init(jax.random.key(0), jnp.zeros((2, 7, 3)))
        >>> sorted(params)
        ['layer_0', 'layer_1']
        >>> (outputs, carries), _ = layer.apply(params, state, jnp.ones((2, 7, 3)), key=jax.random.key(1), train=True)
        >>> outputs.shape, len(carries)
        ((2, 7, 16), 2)
    """
    if not cells:
        raise ValueError("StackedRNN: expected at least one cell, got none")
    for cell in cells:
        _check_cell("StackedRNN", cell)
    _check_options("StackedRNN", implementation, time_major, time_chunk)
    options = dict(time_major=time_major, implementation=implementation, time_chunk=time_chunk)
    make = (lambda cell: Bidirectional(cell, **options)) if bidirectional else (lambda cell: RNN(cell, **options))
    layers = {f"layer_{i}": make(cell) for i, cell in enumerate(cells)}
    dropout = Dropout(dropout_rate)
    description = (f"StackedRNN([{', '.join(str(c) for c in cells)}]"
                   + (", bidirectional=True" if bidirectional else "") + f", dropout_rate={dropout_rate})")

    def init(key, x):
        params = {}
        for index, (layer_name, layer) in enumerate(layers.items()):
            params[layer_name], _ = layer.init(jax.random.fold_in(key, index), x)
            x = jax.eval_shape(lambda p, v: layer.apply(p, {}, v)[0][0], params[layer_name], x)
        return params, {}

    def apply(params, state, x, *, key=None, train=False, lengths=None, initial_carry=None):
        check_keys(description, params, list(layers))
        check_keys(description, state, [], "state")
        if initial_carry is not None and (not isinstance(initial_carry, (tuple, list))
                                          or len(initial_carry) != len(layers)):
            raise ValueError(f"{description}: expected initial_carry to be a tuple of {len(layers)} carries "
                             f"(one per layer), got {type(initial_carry).__name__}")
        carries = []
        for index, (layer_name, layer) in enumerate(layers.items()):
            if index > 0:
                dropout_key = None if key is None else jax.random.fold_in(key, index)
                x, _ = dropout.apply({}, {}, x, key=dropout_key, train=train)
            carry = None if initial_carry is None else initial_carry[index]
            (x, carry), _ = layer.apply(params[layer_name], {}, x, lengths=lengths, initial_carry=carry)
            carries.append(carry)
        return ((x, tuple(carries)) if return_carry else x), state

    return make_layer(name, description, init, apply)
