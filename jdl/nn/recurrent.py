"""Recurrent layers: a cell (:mod:`jdl.nn.cells`) run over a sequence with ``jax.lax.scan``.

:class:`RNN` runs any cell over ``x`` of shape ``[*batch, time, features]``
(``[batch, time, features]`` usually; ``[time, features]`` is one sequence;
``time_major=True`` for ``[time, *batch, features]``); :class:`LSTM` and :class:`GRU` are
``RNN(LSTMCell(...))`` and ``RNN(GRUCell(...))``. Params are the cell's. The scan, with
its hoisted input projection and hand-written backward pass, is
:func:`jdl.nn.recurrent_scan.scan_cell`: ``implementation="fused"`` (the default,
reverse mode only) or ``"autodiff"`` (forward mode too: ``jax.jvp``, ``jax.jacfwd``);
``time_chunk`` is the fused path's steps per chunk.

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
:class:`Bidirectional` runs a forward and a reverse RNN; outputs are concatenated
(``[..., 2 * hidden]``), carries and ``initial_carry`` are pairs ``(forward, backward)``.
:class:`StackedRNN` puts layers on top of each other, with dropout between them.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> layer = nn.LSTM(8)
    >>> params, state = layer.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
    >>> params["input"]["w"].shape, params["hidden"]["w"].shape
    ((3, 32), (8, 32))
    >>> apply = jax.jit(layer.apply)
    >>> (outputs, (c, h)), state = apply(params, state, jnp.ones((2, 5, 3)), lengths=jnp.array([5, 2]))
    >>> outputs.shape, h.shape
    ((2, 5, 8), (2, 8))
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jdl._checks import PositiveInt, Rate, check_floating_min_rank, check_lengths, check_that, check_tuple
from jdl.nn.cells import Cell, GRUCell, LSTMCell, SimpleRNNCell, SimplifiedGRUCell, compute_dtype
from jdl.nn.core import KW_ONLY, Layer, check_params, child_key, inside
from jdl.nn.dropout import Dropout
from jdl.nn.recurrent_scan import IMPLEMENTATIONS, Implementation, flip_sequences, scan_cell, time_chunk_size

__all__ = [
    "RNN", "LSTM", "GRU", "Bidirectional", "StackedRNN",
    # the cells and the scan, importable from here as before the split
    "Cell", "SimpleRNNCell", "LSTMCell", "GRUCell", "SimplifiedGRUCell", "flip_sequences", "time_chunk_size",
    "IMPLEMENTATIONS",
]


def _check_cell(where: str, cell: Any) -> None:
    if not isinstance(cell, Cell):
        raise TypeError(f"{where}: expected a jdl recurrent Cell (nn.LSTMCell(64), ...), got {type(cell).__name__}")


class _Recurrent(Layer):
    """What the recurrent layers share: the options of how a sequence is read and run, the
    input checks, the scan of each direction, and the description errors use.

    Fields (all keyword-only): ``return_carry``, ``time_major``, ``implementation`` and
    ``time_chunk``, as :class:`RNN` documents them.
    """

    _: KW_ONLY
    return_carry: bool = True
    time_major: bool = False
    implementation: Implementation = "fused"
    time_chunk: PositiveInt | None = None

    kind: ClassVar[str] = ""  # the name errors use (LSTM and GRU are RNNs)
    cell_fields: ClassVar[tuple[str, ...]] = ()  # shown first, by value

    def __repr__(self) -> str:
        # The cells by value, then the options that differ from their defaults, as errors have always
        # described these layers: RNN(LSTMCell(hidden_size=8), reverse=True).
        values = [getattr(self, name) for name in self.cell_fields]
        shown = [repr(list(value) if isinstance(value, tuple) else value) for value in values]
        shown += [f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self)
                  if f.repr and f.name not in self.cell_fields + ("name",)
                  and (f.name in self.always_shown or getattr(self, f.name) != f.default)]
        return f"{self.kind}({', '.join(shown)})"

    def check_sequences(self, x: Any, lengths: Any = None) -> tuple[int, ...]:
        """A floating input in this layer's layout and, if given, one length per sequence; returns the batch shape."""
        check_floating_min_rank(self, x, 2, "time, *batch, features" if self.time_major else "*batch, time, features")
        batch_shape, steps = (x.shape[1:-1], x.shape[0]) if self.time_major else (x.shape[:-2], x.shape[-2])
        if lengths is not None:
            check_lengths(self, lengths, tuple(batch_shape), steps)
        return tuple(batch_shape)

    def run(self, runs: list, x, lengths) -> tuple[list, list]:
        """Each ``(cell, params, carry, reverse)`` of ``runs`` over ``x`` in this layer's layout:
        the outputs and the final carries."""
        inputs = x if self.time_major else jnp.moveaxis(x, -2, 0)
        if lengths is not None:  # padded steps, whatever they hold (NaN too), reach no output nor gradient
            real = jnp.arange(inputs.shape[0]).reshape((-1,) + (1,) * lengths.ndim) < lengths
            inputs = jnp.where(real[..., None], inputs, jnp.zeros((), inputs.dtype))
        outputs, carries = [], []
        for cell, params, carry, reverse in runs:
            carry, out = scan_cell(cell, params, inputs, lengths, carry, reverse, self.implementation, self.time_chunk)
            outputs.append(out if self.time_major else jnp.moveaxis(out, 0, -2))
            carries.append(carry)
        return outputs, carries


class RNN(_Recurrent):
    """Run ``cell`` over ``x`` ``[*batch, time, features]`` with ``jax.lax.scan``.

    Params are the cell's (see :mod:`jdl.nn.cells`). ``apply(params, state, x, *,
    lengths=None, initial_carry=None)`` gives ``((outputs, final_carry), state)``, or
    ``(outputs, state)`` with ``return_carry=False``. ``reverse=True`` reads each sequence
    from its last real step back to its first and returns outputs in the original order.
    ``time_major=True`` takes and returns ``[time, *batch, features]`` (no transposes).
    ``implementation="fused"`` (the default) differentiates with the cells' hand-written
    backward steps (reverse mode only); ``"autodiff"`` lets JAX differentiate the scan,
    which also supports forward mode (``jax.jvp``, ``jax.jacfwd``, ``jax.hessian``).
    ``time_chunk`` is the fused path's steps per chunk (``None``: about 8 on CPU, see
    :func:`~jdl.nn.recurrent_scan.time_chunk_size`, and the whole sequence in one chunk on
    accelerators).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn
        >>> layer = nn.RNN(nn.SimpleRNNCell(4), reverse=True, return_carry=False)
        >>> layer
        RNN(SimpleRNNCell(hidden_size=4, activation='tanh'), return_carry=False, reverse=True)
        >>> params, state = layer.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
        >>> outputs, _ = jax.jit(layer.apply)(params, state, jnp.ones((2, 5, 3)))
        >>> outputs.shape
        (2, 5, 4)
    """

    cell: Cell
    _: KW_ONLY
    reverse: bool = False
    name: str = "rnn"

    kind: ClassVar[str] = "RNN"
    cell_fields: ClassVar[tuple[str, ...]] = ("cell",)

    def __post_init__(self):
        _check_cell("RNN", self.cell)
        super().__post_init__()

    def init(self, key, x):
        self.check_sequences(x)
        return self.cell.init(key, x)

    def apply(self, params, state, x, *, key=None, train=False, lengths=None, initial_carry=None):
        batch_shape = self.check_sequences(x, lengths)
        self.cell.check_fits(self, params, x)
        check_params(self, params, state, x)
        carry = self.cell.starting_carry(self, initial_carry, batch_shape, compute_dtype(x, params))

        (outputs,), (carry,) = self.run([(self.cell, params, carry, self.reverse)], x, lengths)
        return ((outputs, carry) if self.return_carry else outputs), state


class LSTM(RNN):
    """``RNN(LSTMCell(hidden_size, **cell_options))``; the final carry is ``(c, h)``.

    Example:
        >>> from jdl import nn
        >>> nn.LSTM(8, forget_bias=1.0)
        RNN(LSTMCell(hidden_size=8, forget_bias=1.0))
    """

    def __init__(self, hidden_size: int, *, reverse: bool = False, return_carry: bool = True, time_major: bool = False,
                 implementation: str = "fused", time_chunk: int | None = None, name: str = "lstm", **cell_options):
        super().__init__(LSTMCell(hidden_size, **cell_options), reverse=reverse, return_carry=return_carry,
                         time_major=time_major, implementation=implementation, time_chunk=time_chunk, name=name)


class GRU(RNN):
    """``RNN(GRUCell(hidden_size, **cell_options))`` (flax's GRU convention)."""

    def __init__(self, hidden_size: int, *, reverse: bool = False, return_carry: bool = True, time_major: bool = False,
                 implementation: str = "fused", time_chunk: int | None = None, name: str = "gru", **cell_options):
        super().__init__(GRUCell(hidden_size, **cell_options), reverse=reverse, return_carry=return_carry,
                         time_major=time_major, implementation=implementation, time_chunk=time_chunk, name=name)


class Bidirectional(_Recurrent):
    """A forward and a reverse :class:`RNN` over the same input, outputs concatenated.

    ``backward`` defaults to a fresh cell of the same kind and size (its own params). Params
    are ``{"forward": ..., "backward": ...}``; ``y`` is ``(outputs [*batch, time, 2 * hidden],
    (forward_carry, backward_carry))``. With ``lengths``, the backward direction starts at
    each sequence's own last real step, and its final carry is the one after step 0.
    ``return_carry``, ``time_major``, ``implementation`` and ``time_chunk`` are :class:`RNN`'s.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn
        >>> layer = nn.Bidirectional(nn.GRUCell(4))
        >>> params, state = layer.init(jax.random.key(0), jnp.zeros((2, 5, 3)))
        >>> sorted(params)
        ['backward', 'forward']
        >>> (outputs, (forward, backward)), _ = jax.jit(layer.apply)(params, state, jnp.ones((2, 5, 3)))
        >>> outputs.shape, backward.shape
        ((2, 5, 8), (2, 4))
    """

    forward: Cell
    backward: Cell | None = None
    _: KW_ONLY
    name: str = "bidirectional"

    kind: ClassVar[str] = "Bidirectional"
    cell_fields: ClassVar[tuple[str, ...]] = ("forward", "backward")

    def __post_init__(self):
        _check_cell("Bidirectional", self.forward)
        super().__post_init__()
        if self.backward is None:
            object.__setattr__(self, "backward", self.forward)
        _check_cell("Bidirectional", self.backward)

    @property
    def directions(self) -> dict[str, Cell]:
        return {"forward": self.forward, "backward": self.backward}

    def init(self, key, x):
        self.check_sequences(x)
        return {"forward": self.forward.init(jax.random.fold_in(key, 0), x)[0],
                "backward": self.backward.init(jax.random.fold_in(key, 1), x)[0]}, {}

    def apply(self, params, state, x, *, key=None, train=False, lengths=None, initial_carry=None):
        batch_shape = self.check_sequences(x, lengths)
        if initial_carry is not None:
            check_tuple(self, initial_carry, 2, "initial_carry", "a pair (forward, backward)")
        for direction, cell in self.directions.items():
            if isinstance(params, Mapping):
                cell.check_fits(self, params.get(direction), x)
        check_params(self, params, state, x)

        runs = []
        for index, (direction, cell) in enumerate(self.directions.items()):
            carry = None if initial_carry is None else initial_carry[index]
            carry = cell.starting_carry(self, carry, batch_shape, compute_dtype(x, params[direction]),
                                        f"initial_carry[{index}]")
            runs.append((cell, params[direction], carry, direction == "backward"))
        outputs, carries = self.run(runs, x, lengths)
        outputs = jnp.concatenate(outputs, axis=-1)
        return ((outputs, tuple(carries)) if self.return_carry else outputs), state


class StackedRNN(_Recurrent):
    """Recurrent layers on top of each other, with dropout between them (not after the last).

    Layer ``i`` runs ``cells[i]`` (both ways with ``bidirectional=True``) over the outputs of
    layer ``i - 1``; every layer gets the same ``lengths``, so padding stays zero all the way
    up. Params are ``{"layer_0": ..., "layer_1": ...}`` (each an :class:`RNN`'s or a
    :class:`Bidirectional`'s). ``y`` is ``(outputs of the top layer, (carry_0, carry_1, ...))``;
    ``initial_carry``, if given, is such a tuple too. Dropout (inverted, rate
    ``dropout_rate``) needs ``key`` when ``train=True``, as :class:`jdl.nn.Dropout` does.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import nn
        >>> layer = nn.StackedRNN([nn.GRUCell(16), nn.GRUCell(16)], dropout_rate=0.2)
        >>> params, state = layer.init(jax.random.key(0), jnp.zeros((2, 7, 3)))
        >>> sorted(params)
        ['layer_0', 'layer_1']
        >>> apply = jax.jit(layer.apply, static_argnames="train")
        >>> (outputs, carries), _ = apply(params, state, jnp.ones((2, 7, 3)), key=jax.random.key(1), train=True)
        >>> outputs.shape, len(carries)
        ((2, 7, 16), 2)
    """

    cells: Sequence[Cell]
    _: KW_ONLY
    bidirectional: bool = False
    dropout_rate: Rate = 0.0
    name: str = "stacked_rnn"
    # Built from the fields in __post_init__: the layers by params key, and the dropout between them.
    layers: dict = field(init=False, repr=False, compare=False)
    dropout: Layer = field(init=False, repr=False, compare=False)

    kind: ClassVar[str] = "StackedRNN"
    cell_fields: ClassVar[tuple[str, ...]] = ("cells",)
    always_shown: ClassVar[tuple[str, ...]] = ("dropout_rate",)

    def __post_init__(self):
        object.__setattr__(self, "cells", tuple(self.cells))  # hashable
        check_that(self.cells, "StackedRNN", "at least one cell", "none")
        for cell in self.cells:
            _check_cell("StackedRNN", cell)
        super().__post_init__()
        make = Bidirectional if self.bidirectional else RNN
        layers = {f"layer_{i}": make(cell, time_major=self.time_major, implementation=self.implementation,
                                     time_chunk=self.time_chunk) for i, cell in enumerate(self.cells)}
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "dropout", Dropout(self.dropout_rate))

    def init(self, key, x):
        self.check_sequences(x)
        params = {}
        for index, (layer_name, layer) in enumerate(self.layers.items()):
            with inside(self, layer_name):
                params[layer_name], _ = layer.init(jax.random.fold_in(key, index), x)
                x = jax.eval_shape(lambda p, v: layer.apply(p, {}, v)[0][0], params[layer_name], x)
        return params, {}

    def apply(self, params, state, x, *, key=None, train=False, lengths=None, initial_carry=None):
        self.check_sequences(x, lengths)
        if initial_carry is not None:
            check_tuple(self, initial_carry, len(self.cells), "initial_carry",
                        f"a tuple of {len(self.cells)} carries (one per layer)")
        check_params(self, params, state, x)

        carries = []
        for index, (layer_name, layer) in enumerate(self.layers.items()):
            if index > 0:
                x, _ = self.dropout.apply({}, {}, x, key=child_key(key, index), train=train)
            carry = None if initial_carry is None else initial_carry[index]
            with inside(self, layer_name):
                (x, carry), _ = layer.apply(params[layer_name], {}, x, lengths=lengths, initial_carry=carry)
            carries.append(carry)
        return ((x, tuple(carries)) if self.return_carry else x), state
