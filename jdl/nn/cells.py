"""Recurrent cells: one step ``cell(params, carry, x_t) -> (carry, y_t)`` of a recurrent network.

* :class:`SimpleRNNCell`, the Elman RNN: ``h' = tanh(x U + h W + b)`` (``activation="relu"``
  for a ReLU RNN).
* :class:`LSTMCell`: gates ``i, f, g, o``, carry ``(c, h)``; ``c' = f c + i g``,
  ``h' = o tanh(c')``.
* :class:`GRUCell`, in flax's convention (``flax.linen.GRUCell``): gates ``r, z, n``,
  ``n = tanh(x W_n + b_n + r (h U_n + b_hn))``, ``h' = (1 - z) n + z h``.
* :class:`SimplifiedGRUCell`, the GRU with an update gate only:
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

**Inside a step.** A step is one function of two pre-activations, ``pre = x_t W_input + b``
(the input side, which a layer computes for many steps at once, outside the scan) and
``rec = h W_hidden (+ b_hn)`` (the recurrent side, inside the scan)::

    carry', y_t, saved = cell.gates_fn(carry, pre, rec)
    d_carry_direct, d_pre, d_rec = cell.backward(saved, h_prev, d_carry', d_y)

``saved`` is what the hand-written backward step needs besides the previous hidden state
``h_prev`` (which the layer keeps for the weight gradient anyway): the gate activations,
the LSTM's previous cell state. ``d_carry_direct`` leaves out the path through ``rec``
(the layer adds ``d_rec W_hidden^T`` to the hidden part); ``d_rec`` is ``None`` when it
equals ``d_pre``. :mod:`jdl.nn.recurrent_scan` runs these steps over a sequence.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> cell = nn.LSTMCell(8)
    >>> params, state = cell.init(jax.random.key(0), jnp.zeros((2, 3)))
    >>> params["input"]["w"].shape, params["hidden"]["w"].shape
    ((3, 32), (8, 32))
    >>> (c, h), y = cell(params, cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape, bool((y == h).all())
    ((2, 8), True)
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import field
from typing import Any, Callable, ClassVar, Literal

import jax
import jax.numpy as jnp

from jdl import init as initializers
from jdl._checks import PositiveInt, check_floating, check_floating_min_rank, check_last_axis, check_shape, check_tuple
from jdl.nn.core import KW_ONLY, Layer, check_params

Carry = Any


def dot_promoted(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x @ w`` in the dtype the two promote to."""
    dtype = jnp.result_type(x.dtype, w.dtype)
    return jnp.dot(x.astype(dtype), w.astype(dtype))


def compute_dtype(x: Any, params: dict) -> Any:
    """The dtype a cell computes in: the input's and the input kernel's, promoted."""
    return jnp.result_type(x.dtype, params["input"]["w"].dtype)


def _sigmoid_grad(s):
    """``sigmoid'`` from the sigmoid's value ``s``."""
    return s * (1.0 - s)


def _tanh_grad(t):
    """``tanh'`` from the tanh's value ``t``."""
    return 1.0 - t * t


class Cell(Layer):
    """The kind every recurrent cell is: params, a step, its hand-written backward step.

    A subclass names its gates (``gates = "ifgo"``) and writes ``gates_fn`` and
    ``backward`` (see the module docstring); params, projections, carries and checks are
    shared. ``init(key, x)`` gives the params for inputs with ``x.shape[-1]`` features.
    ``apply(params, state, x_t, *, carry=None)`` is one step as a layer,
    ``((carry', y_t), state)``, from the zero carry unless one is given;
    ``cell(params, carry, x_t)`` is the same step without the state.

    Attributes:
      hidden_size: size of the hidden state (and of each output step).
      kernel_init, recurrent_kernel_init, bias_init: initialisers of the input kernels, of
        each gate's recurrent kernel, and of the biases.
      param_dtype: dtype of the params.
      gates (class): one letter per gate, in the order they are stacked in the params.
      is_pair (class): whether the carry is a pair ``(c, h)`` (the LSTM) rather than one array.
      hidden_bias (class): whether ``params["hidden"]`` has a bias ``b`` of ``hidden_size``
        (the GRU's ``b_hn``), added to the last gate's slice of ``rec``.
    """

    hidden_size: PositiveInt
    _: KW_ONLY
    kernel_init: Callable = field(default=initializers.lecun_normal(), repr=False)
    recurrent_kernel_init: Callable = field(default=initializers.orthogonal(), repr=False)
    bias_init: Callable = field(default=initializers.zeros, repr=False)
    param_dtype: Any = jnp.float32
    name: str = "cell"

    gates: ClassVar[str] = ""
    is_pair: ClassVar[bool] = False
    hidden_bias: ClassVar[bool] = False

    # ------------------------------------------------------------------ params

    def bias_offsets(self) -> dict[str, float]:
        """Constants added to some gates' initial biases (the LSTM's forget bias)."""
        return {}

    def init_params(self, key: jax.Array, input_features: int) -> dict:
        """Params in the common layout; each gate's kernels drawn on their own (orthogonal per gate)."""
        n, hidden_size, dtype = len(self.gates), self.hidden_size, self.param_dtype
        keys = jax.random.split(key, 3 * n + 1)
        w_in = [self.kernel_init(keys[i], (input_features, hidden_size), dtype) for i in range(n)]
        w_h = [self.recurrent_kernel_init(keys[n + i], (hidden_size, hidden_size), dtype) for i in range(n)]
        b = [self.bias_init(keys[2 * n + i], (hidden_size,), dtype) for i in range(n)]
        for gate, offset in self.bias_offsets().items():
            index = self.gates.index(gate)
            b[index] = b[index] + jnp.asarray(offset, dtype)
        params = {
            "input": {"w": jnp.concatenate(w_in, axis=1), "b": jnp.concatenate(b)},
            "hidden": {"w": jnp.concatenate(w_h, axis=1)},
        }
        if self.hidden_bias:
            params["hidden"]["b"] = self.bias_init(keys[3 * n], (hidden_size,), dtype)
        return params

    def init(self, key, x):
        check_floating(self, x)
        return self.init_params(key, x.shape[-1]), {}

    # ------------------------------------------------------------------ the step

    def apply(self, params, state, x, *, key=None, train=False, carry=None):
        check_floating_min_rank(self, x, 1, "*batch, input_features")
        self.check_fits(self, params, x)
        check_params(self, params, state, x)
        batch_shape = tuple(x.shape[:-1])
        carry = self.initial_carry(batch_shape, compute_dtype(x, params)) if carry is None else carry
        self.check_carry(self, carry, batch_shape)

        return self.step(params, carry, self.project(params, x)), state

    def __call__(self, params: dict, carry: Carry, x_t: jax.Array) -> tuple[Carry, jax.Array]:
        """One step: ``(carry, x_t) -> (carry, y_t)``; ``x_t`` is ``[*batch, input_features]``."""
        return self.apply(params, {}, x_t, carry=carry)[0]

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """``x W_input + b`` over any leading axes: the part of a step that ignores the carry."""
        return dot_promoted(x, params["input"]["w"]) + params["input"]["b"].astype(compute_dtype(x, params))

    def recurrent(self, params: dict, h: jax.Array) -> jax.Array:
        """``h W_hidden`` (plus the hidden bias in the last gate's slice, for the GRU)."""
        rec = dot_promoted(h, params["hidden"]["w"])
        bias = self.hidden_bias_vector(params, rec.dtype)
        return rec if bias is None else rec + bias

    def hidden_bias_vector(self, params: dict, dtype) -> jax.Array | None:
        """The GRU's ``b_hn`` placed in the last gate's slice of a ``G * hidden`` vector (else None)."""
        if not self.hidden_bias:
            return None
        bias = params["hidden"]["b"].astype(dtype)
        return jnp.concatenate([jnp.zeros(((len(self.gates) - 1) * self.hidden_size,), dtype), bias])

    def step(self, params: dict, carry: Carry, projected: jax.Array) -> tuple[Carry, jax.Array]:
        """One step from the projected input ``x_t W_input + b``: ``(carry, y_t)``."""
        carry, y, _ = self.gates_fn(carry, projected, self.recurrent(params, self.hidden(carry)))
        return carry, y

    def gates_fn(self, carry: Carry, pre: jax.Array, rec: jax.Array) -> tuple[Carry, jax.Array, Any]:
        """``(carry', y_t, saved)`` from the two pre-activations (see the module docstring)."""
        raise NotImplementedError

    def backward(self, saved: Any, h_prev: jax.Array, d_carry: Carry, d_y: jax.Array) -> tuple[Carry, jax.Array, Any]:
        """``(d_carry_direct, d_pre, d_rec or None)``: the step's gradients (see the module docstring)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ carries

    def hidden(self, carry: Carry) -> jax.Array:
        """The part of the carry the recurrent matmul reads (``h``)."""
        return carry[1] if self.is_pair else carry

    def add_to_hidden(self, d_carry: Carry, d_h: jax.Array) -> Carry:
        return (d_carry[0], d_carry[1] + d_h) if self.is_pair else d_carry + d_h

    def initial_carry(self, batch_shape: tuple[int, ...], dtype=jnp.float32) -> Carry:
        """The zero carry for ``batch_shape`` sequences."""
        zeros = jnp.zeros(tuple(batch_shape) + (self.hidden_size,), dtype)
        return (zeros, zeros) if self.is_pair else zeros

    def starting_carry(self, where: Any, carry: Carry | None, batch_shape: tuple[int, ...], dtype,
                       what: str = "initial_carry") -> Carry:
        """The carry a layer starts from: zeros for ``None``, else ``carry`` checked and cast to ``dtype``."""
        if carry is None:
            return self.initial_carry(batch_shape, dtype)
        self.check_carry(where, carry, batch_shape, what)
        return jax.tree.map(lambda a: jnp.asarray(a).astype(dtype), tuple(carry) if self.is_pair else carry)

    # ------------------------------------------------------------------ checks

    def check_carry(self, where: Any, carry: Any, batch_shape: tuple[int, ...], what: str = "carry") -> None:
        """``carry`` is this cell's carry for ``batch_shape`` sequences (the LSTM's a pair ``(c, h)``)."""
        shape = tuple(batch_shape) + (self.hidden_size,)
        if self.is_pair:
            check_tuple(where, carry, 2, what, f"a pair (c, h) of arrays of shape {shape}")
        parts = {f"{what}['c']": carry[0], f"{what}['h']": carry[1]} if self.is_pair else {what: carry}
        for label, part in parts.items():
            check_shape(where, part, shape, "[*batch, hidden_size]", label)

    def check_fits(self, where: Any, params: Any, x: Any) -> None:
        """An input whose last axis differs from good params' ``in_features`` is the input's fault
        (checked before :func:`~jdl.nn.core.check_params`, which would blame the params)."""
        kernel = params.get("input") if isinstance(params, Mapping) else None
        kernel = kernel.get("w") if isinstance(kernel, Mapping) else None
        if getattr(kernel, "ndim", 0) == 2 and kernel.shape[1] == len(self.gates) * self.hidden_size:
            check_last_axis(where, x, kernel.shape[0], "the params' in_features")


class SimpleRNNCell(Cell):
    """The Elman RNN (the seeds' ``a = b + W h + U x``, ``h = tanh(a)``); the output is ``h``.

    ``activation`` is ``"tanh"`` or ``"relu"``. Params: one gate ``"h"`` in the common layout.
    Backward step: ``da = (dh' + dy) f'(a)``, with ``f'`` read off the output (``1 - h^2``, or ``h > 0``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn
        >>> cell = nn.SimpleRNNCell(4, activation="relu")
        >>> cell
        SimpleRNNCell(hidden_size=4, activation='relu')
        >>> params, _ = cell.init(jax.random.key(0), jnp.zeros((2, 3)))
        >>> h, y = cell(params, cell.initial_carry((2,)), jnp.ones((2, 3)))
        >>> bool((y >= 0).all()), y.shape
        (True, (2, 4))
    """

    _: KW_ONLY
    activation: Literal["tanh", "relu"] = "tanh"
    name: str = "simple_rnn_cell"

    gates: ClassVar[str] = "h"
    always_shown: ClassVar[tuple[str, ...]] = ("activation",)

    def gates_fn(self, h, pre, rec):
        h = (jnp.tanh if self.activation == "tanh" else jax.nn.relu)(pre + rec)
        return h, h, h

    def backward(self, h, h_prev, d_h, d_y):
        del h_prev
        d_h = d_h + d_y
        d_a = d_h * (_tanh_grad(h) if self.activation == "tanh" else (h > 0).astype(h.dtype))
        return jnp.zeros_like(d_h), d_a, None


class LSTMCell(Cell):
    """The LSTM (Hochreiter & Schmidhuber, 1997) as in ``flax.linen.LSTMCell``; carry ``(c, h)``.

    Gates ``i, f, g, o`` (sigmoid, sigmoid, tanh, sigmoid) of ``z = pre + rec``:
    ``c' = f c + i g``, ``h' = o tanh(c')``; the output is ``h'``. ``forget_bias`` is added to
    the forget gate's initial bias (1.0 is the common choice; 0.0, the default, is flax's).

    Backward step (``dh = dh' + dy``, ``t = tanh(c')``): ``dc = dc' + dh o (1 - t^2)``;
    ``dz = [dc g i(1-i), dc c f(1-f), dc i (1-g^2), dh t o(1-o)]``; the carry's gradient is
    ``(dc f, dz W_hidden^T)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn
        >>> params, _ = nn.LSTMCell(2, forget_bias=1.0).init(jax.random.key(0), jnp.zeros((1, 3)))
        >>> params["input"]["b"].tolist()  # gates i, f, g, o
        [0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    """

    _: KW_ONLY
    forget_bias: float = 0.0
    name: str = "lstm_cell"

    gates: ClassVar[str] = "ifgo"
    is_pair: ClassVar[bool] = True

    def bias_offsets(self):
        return {"f": self.forget_bias} if self.forget_bias else {}

    def gates_fn(self, carry, pre, rec):
        c, _ = carry
        i, f, g, o = jnp.split(pre + rec, 4, axis=-1)
        i, f, g, o = jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)
        new_c = f * c + i * g
        h = o * jnp.tanh(new_c)
        # Saved as separate arrays: concatenating them would make XLA recompute the gates.
        return (new_c, h), h, (i, f, g, o, c)

    def backward(self, saved, h_prev, d_carry, d_y):
        del h_prev  # h enters only through rec, whose gradient the layer handles
        i, f, g, o, c = saved
        d_c, d_h = d_carry
        d_h = d_h + d_y
        t = jnp.tanh(f * c + i * g)  # recomputed: cheaper than saving c' as well
        d_c = d_c + d_h * o * _tanh_grad(t)
        d_z = jnp.concatenate([d_c * g * _sigmoid_grad(i), d_c * c * _sigmoid_grad(f), d_c * i * _tanh_grad(g),
                               d_h * t * _sigmoid_grad(o)], axis=-1)
        return (d_c * f, jnp.zeros_like(d_h)), d_z, None


class GRUCell(Cell):
    """The GRU (Cho et al., 2014) in flax's convention (``flax.linen.GRUCell``).

    ``r = sigmoid(x W_r + b_r + h U_r)``, ``z = sigmoid(x W_z + b_z + h U_z)``,
    ``n = tanh(x W_n + b_n + r * (h U_n + b_hn))``, ``h' = (1 - z) n + z h``.
    ``params["hidden"]["b"]`` is ``b_hn``, shape ``(hidden,)``.

    Backward step (``dh = dh' + dy``): ``dn = dh (1 - z)(1 - n^2)``, ``dr = dn (h U_n + b_hn) r(1-r)``,
    ``dz = dh (h - n) z(1-z)``; ``d_pre = [dr, dz, dn]``, ``d_rec = [dr, dz, dn r]``, and
    ``dh z`` flows to the previous step directly.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn
        >>> params, _ = nn.GRUCell(4).init(jax.random.key(0), jnp.zeros((1, 3)))
        >>> jax.tree.map(jnp.shape, params)
        {'hidden': {'b': (4,), 'w': (4, 12)}, 'input': {'b': (12,), 'w': (3, 12)}}
    """

    _: KW_ONLY
    name: str = "gru_cell"

    gates: ClassVar[str] = "rzn"
    hidden_bias: ClassVar[bool] = True

    def gates_fn(self, h, pre, rec):
        x_r, x_z, x_n = jnp.split(pre, 3, axis=-1)
        h_r, h_z, h_n = jnp.split(rec, 3, axis=-1)  # h_n includes b_hn
        r = jax.nn.sigmoid(x_r + h_r)
        z = jax.nn.sigmoid(x_z + h_z)
        n = jnp.tanh(x_n + r * h_n)
        new_h = (1.0 - z) * n + z * h
        return new_h, new_h, (r, z, n, h_n)

    def backward(self, saved, h, d_h, d_y):
        r, z, n, h_n = saved
        d_h = d_h + d_y
        d_n = d_h * (1.0 - z) * _tanh_grad(n)
        d_r = d_n * h_n * _sigmoid_grad(r)
        d_z = d_h * (h - n) * _sigmoid_grad(z)
        d_pre = jnp.concatenate([d_r, d_z, d_n], axis=-1)
        d_rec = jnp.concatenate([d_r, d_z, d_n * r], axis=-1)
        return d_h * z, d_pre, d_rec


class SimplifiedGRUCell(Cell):
    """The seeds' simplified GRU: an update gate ``u`` and no reset gate.

    ``u = sigmoid([h, x] W_u + b_u)``, ``m~ = tanh([h, x] W_c + b_c)``,
    ``h' = u m~ + (1 - u) h``; gates ``"uc"`` (``[h, x] W`` is ``h U + x W`` with the two
    halves of ``W`` stored as ``params["hidden"]["w"]`` and ``params["input"]["w"]``).
    Backward step (``dh = dh' + dy``): ``d_pre = [dh (m~ - h) u(1-u), dh u (1 - m~^2)]``, and
    ``dh (1 - u)`` flows to the previous step directly.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn
        >>> cell = nn.SimplifiedGRUCell(4)
        >>> params, _ = cell.init(jax.random.key(0), jnp.zeros((1, 3)))
        >>> params["hidden"]["w"].shape
        (4, 8)
    """

    _: KW_ONLY
    name: str = "simplified_gru_cell"

    gates: ClassVar[str] = "uc"

    def gates_fn(self, h, pre, rec):
        u, m = jnp.split(pre + rec, 2, axis=-1)
        u, m = jax.nn.sigmoid(u), jnp.tanh(m)
        new_h = u * m + (1.0 - u) * h
        return new_h, new_h, (u, m)

    def backward(self, saved, h, d_h, d_y):
        u, m = saved
        d_h = d_h + d_y
        d_z = jnp.concatenate([d_h * (m - h) * _sigmoid_grad(u), d_h * u * _tanh_grad(m)], axis=-1)
        return d_h * (1.0 - u), d_z, None
