"""Recurrent sequence models: a classifier, a tagger and a (character) language model.

Every model is made of :mod:`jdl.nn` layers and follows the layer rule (``init``/``apply``,
nested-dict params ``{"embedding", "rnn", "head"}``, state ``{}``); like the recurrent
layers, ``apply`` also takes ``lengths=`` for padded batches. The recurrent part is always
a :func:`jdl.nn.StackedRNN` (one cell or several stacked, with dropout between), so its
params are ``params["rnn"]["layer_0"]``, ``["layer_1"]``, ...

* :func:`SequenceClassifier` (many-to-one): ids ``[*batch, time]`` (through an
  :func:`~jdl.nn.Embedding`) or float features ``[*batch, time, features]`` -> recurrent
  layers, one direction or both -> a summary ``s`` -> ``Dense`` to classes. ``s`` is the
  top layer's final hidden state (``readout="final"``; for both directions
  ``[h_fwd_T, h_bwd_1]``) or the mean of its outputs over the real steps
  (``readout="mean"``, ``s = (1 / L) sum_{t < L} y_t``).
* :func:`SequenceTagger` (many-to-many): the same encoder, ``Dense`` on every step's
  output: logits ``[*batch, time, num_tags]``. Train it with :func:`masked_cross_entropy`
  and :func:`sequence_mask`, so padded steps are not part of the loss.
* :func:`CharLM`, a :class:`LanguageModel` (ids -> ``Embedding`` -> LSTM/GRU layers ->
  ``Dense`` to the vocabulary) modelling ``p(x_1..x_T) = prod_t p(x_{t+1} | x_1..x_t)``:
  a teacher-forcing loss, a free-running (scheduled-sampling) loss, and
  :meth:`LanguageModel.generate`, temperature sampling as one jitted ``lax.scan``.

Sampling draws ``x ~ softmax(z / T)`` with the Gumbel-max trick written so that ``T = 0``
is exactly greedy decoding (:func:`sample_tokens`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import models, nn
    >>> model = models.SequenceClassifier(3, nn.GRUCell(8), vocab_size=20, bidirectional=True)
    >>> ids = jnp.array([[4, 7, 1, 0], [5, 2, 0, 0]])
    >>> params, state = model.init(jax.random.key(0), ids)
    >>> logits, state = model.apply(params, state, ids, lengths=jnp.array([3, 2]))
    >>> logits.shape
    (2, 3)
"""
from __future__ import annotations

import dataclasses
import functools
import numbers
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jdl import losses
from jdl._checks import (
    check_array, check_floating, check_integer, check_keys, check_lengths, check_min_rank, check_rank,
    check_token_ids, is_concrete,
)
from jdl.nn.core import _LegacyLayerBase, Layer, child_key, make_layer
from jdl.nn.dense import Dense
from jdl.nn.dropout import Dropout
from jdl.nn.embed import Embedding
from jdl.nn.recurrent import Cell, StackedRNN

__all__ = [
    "SequenceClassifier", "SequenceTagger", "CharLM", "LanguageModel",
    "sample_tokens", "sequence_mask", "masked_cross_entropy", "masked_accuracy",
]


# ----------------------------------------------------------------------------------- checks


def _check_temperature(where: str, temperature: Any) -> None:
    if isinstance(temperature, bool) or not (isinstance(temperature, numbers.Real) or hasattr(temperature, "shape")):
        raise TypeError(f"{where}: expected temperature to be a number >= 0, got {type(temperature).__name__}")
    if hasattr(temperature, "shape") and np.ndim(temperature) != 0:
        raise ValueError(f"{where}: expected a scalar temperature, got shape {tuple(np.shape(temperature))}")
    if is_concrete(temperature):
        value = float(temperature)
        if not value >= 0.0 or not np.isfinite(value):
            raise ValueError(f"{where}: expected a finite temperature >= 0 (0 is greedy decoding), got {value}")


def _check_positive_int(where: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
        raise ValueError(f"{where}: expected {name} to be a positive int, got {value!r}")


def _as_cells(owner: str, cell: Any) -> tuple[Cell, ...]:
    cells = (cell,) if isinstance(cell, Cell) else tuple(cell) if isinstance(cell, (list, tuple)) else None
    if not cells or not all(isinstance(c, Cell) for c in cells):
        raise TypeError(f"{owner}: expected a jdl recurrent Cell (nn.LSTMCell(64), ...) or a non-empty list of "
                        f"them (stacked layers), got {cell!r}")
    return cells


def _check_dropout_rate(owner: str, rate: Any) -> None:
    if not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{owner}: expected dropout_rate in [0, 1), got {rate!r}")


# ---------------------------------------------------------------------------- masked losses


def sequence_mask(lengths: jax.Array, time: int) -> jax.Array:
    """``mask[..., t] = t < lengths[...]``: which steps of a padded batch are real.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import models
        >>> models.sequence_mask(jnp.array([3, 1]), 4).astype(int)
        Array([[1, 1, 1, 0],
               [1, 0, 0, 0]], dtype=int32)
    """
    check_integer("sequence_mask", lengths, "lengths")
    if isinstance(time, bool) or not isinstance(time, numbers.Integral) or time < 0:
        raise ValueError(f"sequence_mask: expected time to be an int >= 0, got {time!r}")
    return jnp.arange(time) < lengths[..., None]


def _check_masked(where: str, logits: Any, labels: Any, mask: Any) -> None:
    check_floating(where, logits, "logits")
    check_min_rank(where, logits, 1, "..., num_classes", "logits")
    check_integer(where, labels, "labels")
    expected = tuple(logits.shape[:-1])
    if tuple(labels.shape) != expected:
        raise ValueError(f"{where}: expected labels of shape {expected} (logits.shape[:-1], one class per step; "
                         f"nothing is broadcast), got labels of shape {tuple(labels.shape)} for logits of shape "
                         f"{tuple(logits.shape)}")
    if mask is not None:
        check_array(where, mask, "mask")
        if mask.dtype != jnp.bool_:
            raise TypeError(f"{where}: expected a bool mask (sequence_mask(lengths, time) makes one), "
                            f"got {jnp.dtype(mask.dtype).name}")
        if tuple(mask.shape) != expected:
            raise ValueError(f"{where}: expected mask of shape {expected} (the labels'), got {tuple(mask.shape)}")


def _masked_mean(values: jax.Array, mask: jax.Array | None) -> jax.Array:
    """``sum(mask * values) / max(sum(mask), 1)``; masked-out values (NaN included) never leak in."""
    if mask is None:
        return jnp.mean(values)
    total = jnp.sum(jnp.where(mask, values, jnp.zeros_like(values)))
    return total / jnp.maximum(jnp.sum(mask), 1).astype(values.dtype)


def masked_cross_entropy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """Mean cross-entropy over the real steps of a padded batch (a scalar, in nats).

    ``L = sum_{b,t} m_{bt} (-log softmax(z_{bt})_{y_{bt}}) / sum_{b,t} m_{bt}`` with
    ``m = mask`` (``sequence_mask(lengths, time)``; ``None`` means every step). Labels at
    masked-out steps are ignored, whatever their value (``-1`` is a fine padding label), and
    get no gradient; an out-of-range label at a real step gives NaN, as in :mod:`jdl.losses`.
    An all-false mask gives 0.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import models
        >>> logits = jnp.zeros((1, 3, 4))                     # uniform: log 4 = 1.386 per step
        >>> labels = jnp.array([[2, 0, -1]])                  # the last step is padding
        >>> models.masked_cross_entropy(logits, labels, models.sequence_mask(jnp.array([2]), 3))
        Array(1.3862944, dtype=float32)
    """
    where = "masked_cross_entropy"
    _check_masked(where, logits, labels, mask)
    safe_labels = labels if mask is None else jnp.where(mask, labels, 0)
    per_step = losses.softmax_cross_entropy_with_integer_labels(logits, safe_labels)
    if mask is not None:  # a real step with an out-of-range label still gives NaN
        in_range = (labels >= 0) & (labels < logits.shape[-1])
        per_step = jnp.where(in_range | ~mask, per_step, jnp.nan)
    return _masked_mean(per_step, mask)


def masked_accuracy(logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None) -> jax.Array:
    """The fraction of real steps with ``argmax(z_{bt}) == y_{bt}`` (a float32 scalar).

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import models
        >>> logits = jnp.array([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
        >>> models.masked_accuracy(logits, jnp.array([[1, 1, 0]]), jnp.array([[True, True, False]]))
        Array(0.5, dtype=float32)
    """
    _check_masked("masked_accuracy", logits, labels, mask)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return _masked_mean(hits, mask)


# --------------------------------------------------------------------------------- sampling


def sample_tokens(key: jax.Array, logits: jax.Array, temperature: Any = 1.0) -> jax.Array:
    """Draw one id per row from ``softmax(logits / T)``; ``T = 0`` gives ``argmax(logits)``.

    With ``g`` i.i.d. standard Gumbel noise, ``argmax_i(z_i / T + g_i)`` is a draw from
    ``softmax(z / T)`` (the Gumbel-max trick), and for ``T > 0`` it equals
    ``argmax_i(z_i + T g_i)``, the form computed here: no division, so a tiny ``T`` cannot
    overflow, and ``T = 0`` is exactly greedy decoding (ties go to the lowest id). Low
    temperatures sharpen the distribution towards the argmax, high ones flatten it towards
    uniform. ``temperature`` may be traced (one compilation serves every temperature); a
    negative one is an error when concrete, and under ``jit`` gives the invalid id ``-1``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import models
        >>> logits = jnp.array([[0.0, 3.0, 1.0]])
        >>> models.sample_tokens(jax.random.key(0), logits, temperature=0.0)
        Array([1], dtype=int32)
    """
    where = "sample_tokens"
    check_floating(where, logits, "logits")
    check_min_rank(where, logits, 1, "..., vocab_size", "logits")
    _check_temperature(where, temperature)
    if is_concrete(temperature) and float(temperature) == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    temperature = jnp.asarray(temperature, logits.dtype)
    noise = jax.random.gumbel(key, logits.shape, logits.dtype)
    tokens = jnp.argmax(logits + temperature * noise, axis=-1).astype(jnp.int32)
    return jnp.where(temperature >= 0, tokens, -1)


# ---------------------------------------------------------------------------------- encoders


def _hidden(cell: Cell, carry: Any) -> jax.Array:
    """The hidden state ``h`` of a carry (the LSTM's is the pair ``(c, h)``)."""
    return carry[1] if cell.is_pair else carry


@dataclasses.dataclass(frozen=True)
class _Encoder:
    """Optional embedding, then stacked recurrent layers: the body of every model here."""

    owner: str
    cells: tuple[Cell, ...]
    vocab_size: int | None
    embed_features: int | None
    embedding: Layer | None
    rnn: Layer
    bidirectional: bool

    @property
    def param_names(self) -> list[str]:
        return (["embedding"] if self.embedding else []) + ["rnn"]

    def check_input(self, x: Any) -> None:
        if self.embedding is not None:
            check_min_rank(self.owner, x, 1, "*batch, time", "ids")
            check_token_ids(self.owner, x, self.vocab_size)
        else:
            check_array(self.owner, x)
            if jnp.issubdtype(x.dtype, jnp.integer):
                raise TypeError(f"{self.owner}: expected float features [*batch, time, features], got integer "
                                f"input of shape {tuple(x.shape)}; give vocab_size= to embed token ids")
            check_floating(self.owner, x)
            check_min_rank(self.owner, x, 2, "*batch, time, features")

    def batch_and_time(self, x: Any) -> tuple[tuple[int, ...], int]:
        shape = tuple(x.shape) if self.embedding is not None else tuple(x.shape[:-1])
        return shape[:-1], shape[-1]

    def init(self, key, x) -> dict:
        params = {}
        if self.embedding is not None:
            params["embedding"], _ = self.embedding.init(jax.random.fold_in(key, 0), x)
            x = jax.eval_shape(lambda p, v: self.embedding.apply(p, {}, v)[0], params["embedding"], x)
        params["rnn"], _ = self.rnn.init(jax.random.fold_in(key, 1), x)
        return params

    def run(self, params, x, *, key, train, lengths, initial_carry=None):
        """The top layer's outputs ``[*batch, time, hidden (x2 both ways)]`` and every layer's carry."""
        self.check_input(x)
        batch_shape, steps = self.batch_and_time(x)
        if lengths is not None:
            check_lengths(self.owner, lengths, batch_shape, steps)
        if self.embedding is not None:
            x, _ = self.embedding.apply(params["embedding"], {}, x)
        (outputs, carries), _ = self.rnn.apply(params["rnn"], {}, x, key=child_key(key, 1), train=train,
                                               lengths=lengths, initial_carry=initial_carry)
        return outputs, carries

    def final_hidden(self, carries) -> jax.Array:
        """The top layer's final hidden state; ``[h_forward, h_backward]`` for both directions."""
        cell, top = self.cells[-1], carries[-1]
        if self.bidirectional:
            return jnp.concatenate([_hidden(cell, top[0]), _hidden(cell, top[1])], axis=-1)
        return _hidden(cell, top)


def _make_encoder(owner: str, cell, vocab_size, embed_features, bidirectional, dropout_rate) -> _Encoder:
    cells = _as_cells(owner, cell)
    _check_dropout_rate(owner, dropout_rate)
    embedding = None
    if vocab_size is not None:
        _check_positive_int(owner, "vocab_size", vocab_size)
        embed_features = cells[0].hidden_size if embed_features is None else embed_features
        _check_positive_int(owner, "embed_features", embed_features)
        embedding = Embedding(vocab_size, embed_features)
    elif embed_features is not None:
        raise ValueError(f"{owner}: embed_features={embed_features!r} needs vocab_size (token ids to embed); "
                         f"leave both out for float features")
    rnn = StackedRNN(list(cells), bidirectional=bidirectional, dropout_rate=dropout_rate)
    return _Encoder(owner, cells, vocab_size, embed_features, embedding, rnn, bool(bidirectional))


def _describe(kind: str, size_name: str, size: int, encoder: _Encoder, extra: str = "") -> str:
    cells = encoder.cells[0] if len(encoder.cells) == 1 else list(encoder.cells)
    parts = [f"{size_name}={size}", f"cell={cells}"]
    if encoder.vocab_size is not None:
        parts.append(f"vocab_size={encoder.vocab_size}")
    if encoder.bidirectional:
        parts.append("bidirectional=True")
    return f"{kind}({', '.join(parts)}{extra})"


# ------------------------------------------------------------------------------- classifier


def SequenceClassifier(num_classes: int, cell: Cell | Sequence[Cell], *, vocab_size: int | None = None,
                       embed_features: int | None = None, bidirectional: bool = False, readout: str = "final",
                       dropout_rate: float = 0.0, name: str = "sequence_classifier") -> Layer:
    """Many-to-one: one label per sequence, ``logits = Dense(dropout(s))``.

    The input is ids ``[*batch, time]`` when ``vocab_size`` is given (embedded with
    ``embed_features`` features, by default the first cell's hidden size), float features
    ``[*batch, time, features]`` otherwise. ``cell`` is a cell or a list of cells (stacked,
    with inverted dropout of rate ``dropout_rate`` between layers and before the head).
    The summary ``s`` of a sequence of length ``L``:

    * ``readout="final"``: the top layer's hidden state after step ``L`` (``h``, the LSTM's
      second carry entry); bidirectional: ``[h_fwd after step L, h_bwd after step 1]``;
    * ``readout="mean"``: ``s = (1 / L) sum_{t < L} y_t`` over the top layer's outputs
      (``0`` when ``L = 0``).

    ``apply(params, state, x, *, key=None, train=False, lengths=None) -> (logits
    [*batch, num_classes], state)``. Padding past ``lengths`` never changes a sequence's
    logits. Params: ``{"embedding"?, "rnn": StackedRNN's, "head": {"w", "b"}}``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import models, nn
        >>> model = models.SequenceClassifier(2, nn.LSTMCell(8), readout="mean")
        >>> x = jnp.ones((4, 6, 3))                               # 4 sequences, 6 steps, 3 features
        >>> params, state = model.init(jax.random.key(0), x)
        >>> sorted(params), model.apply(params, state, x)[0].shape
        (['head', 'rnn'], (4, 2))
    """
    owner = "SequenceClassifier"
    _check_positive_int(owner, "num_classes", num_classes)
    if readout not in ("final", "mean"):
        raise ValueError(f"{owner}: expected readout 'final' or 'mean', got {readout!r}")
    encoder = _make_encoder(owner, cell, vocab_size, embed_features, bidirectional, dropout_rate)
    description = _describe(owner, "num_classes", num_classes, encoder, f", readout={readout!r}")
    encoder = dataclasses.replace(encoder, owner=description)
    head, dropout = Dense(num_classes), Dropout(dropout_rate)
    names = encoder.param_names + ["head"]

    def summary(params, x, key, train, lengths):
        outputs, carries = encoder.run(params, x, key=key, train=train, lengths=lengths)
        if readout == "final":
            return encoder.final_hidden(carries)
        steps = outputs.shape[-2]
        count = jnp.full(outputs.shape[:-2], steps) if lengths is None else jnp.clip(lengths, 0, steps)
        # Outputs past each length are zero (the RNN's rule), so the sum covers the real steps only.
        return jnp.sum(outputs, axis=-2) / jnp.maximum(count, 1)[..., None].astype(outputs.dtype)

    def init(key, x):
        encoder.check_input(x)
        params = encoder.init(key, x)
        features = jax.eval_shape(lambda p, v: summary(p, v, None, False, None), params, x)
        params["head"], _ = head.init(jax.random.fold_in(key, 2), features)
        return params, {}

    def apply(params, state, x, *, key=None, train=False, lengths=None):
        check_keys(description, params, names)
        check_keys(description, state, [], "state")
        features = summary(params, x, key, train, lengths)
        features, _ = dropout.apply({}, {}, features, key=child_key(key, 2), train=train)
        logits, _ = head.apply(params["head"], {}, features)
        return logits, state

    return make_layer(name, description, init, apply)


# ----------------------------------------------------------------------------------- tagger


def SequenceTagger(num_tags: int, cell: Cell | Sequence[Cell], *, vocab_size: int | None = None,
                   embed_features: int | None = None, bidirectional: bool = False, dropout_rate: float = 0.0,
                   name: str = "sequence_tagger") -> Layer:
    """Many-to-many: one label per time step, ``logits_t = Dense(dropout(y_t))``.

    The encoder is :func:`SequenceClassifier`'s (ids with ``vocab_size``, float features
    otherwise; one cell or a stack; ``bidirectional=True`` lets every tag see the whole
    sequence, its backward direction starting at each sequence's own last real step).
    ``apply(params, state, x, *, key=None, train=False, lengths=None) -> (logits
    [*batch, time, num_tags], state)``. Logits at padded steps are meaningless (the head's
    bias); leave them out of the loss with :func:`masked_cross_entropy` and
    ``sequence_mask(lengths, time)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import models, nn
        >>> tagger = models.SequenceTagger(5, nn.GRUCell(8), vocab_size=10, bidirectional=True)
        >>> ids, lengths = jnp.array([[1, 2, 3], [4, 5, 0]]), jnp.array([3, 2])
        >>> params, state = tagger.init(jax.random.key(0), ids)
        >>> logits, _ = tagger.apply(params, state, ids, lengths=lengths)
        >>> logits.shape
        (2, 3, 5)
        >>> loss = models.masked_cross_entropy(logits, jnp.array([[0, 1, 2], [3, 4, -1]]),
        ...                                    models.sequence_mask(lengths, 3))
    """
    owner = "SequenceTagger"
    _check_positive_int(owner, "num_tags", num_tags)
    encoder = _make_encoder(owner, cell, vocab_size, embed_features, bidirectional, dropout_rate)
    description = _describe(owner, "num_tags", num_tags, encoder)
    encoder = dataclasses.replace(encoder, owner=description)
    head, dropout = Dense(num_tags), Dropout(dropout_rate)
    names = encoder.param_names + ["head"]

    def init(key, x):
        encoder.check_input(x)
        params = encoder.init(key, x)
        outputs = jax.eval_shape(lambda p, v: encoder.run(p, v, key=None, train=False, lengths=None)[0], params, x)
        params["head"], _ = head.init(jax.random.fold_in(key, 2), outputs)
        return params, {}

    def apply(params, state, x, *, key=None, train=False, lengths=None):
        check_keys(description, params, names)
        check_keys(description, state, [], "state")
        outputs, _ = encoder.run(params, x, key=key, train=train, lengths=lengths)
        outputs, _ = dropout.apply({}, {}, outputs, key=child_key(key, 2), train=train)
        logits, _ = head.apply(params["head"], {}, outputs)
        return logits, state

    return make_layer(name, description, init, apply)


# --------------------------------------------------------------------------- language model


@dataclasses.dataclass(frozen=True, eq=False, repr=False)  # repr: the Layer's, its description
class LanguageModel(_LegacyLayerBase):
    """A recurrent language model (a :class:`~jdl.nn.Layer`), built by :func:`CharLM`.

    ``apply(params, state, ids, *, key=None, train=False, lengths=None, initial_carry=None)
    -> ((logits [*batch, time, vocab_size], final_carry), state)``: ``logits[..., t, :]``
    scores ``x_{t+1}`` given ``x_1..x_t`` (and the carry before ``x_1``). The carry is a
    tuple with one cell carry per layer (:meth:`initial_carry`), so a long text can be
    read chunk by chunk. The methods add the training losses, one step and generation.

    Attributes:
      vocab_size: the number of token ids.
      cells: the recurrent cells, bottom first.
      dropout_rate: the rate of the dropout between layers and before the head.
      embedding, rnn, dropout, head: the layers (``Embedding``, ``StackedRNN``, the
        ``Dropout`` before the head, ``Dense(vocab_size)``).
    """

    vocab_size: int
    cells: tuple
    dropout_rate: float
    embedding: Layer
    rnn: Layer
    dropout: Layer
    head: Layer

    # -- one step

    def initial_carry(self, batch_shape: tuple[int, ...], dtype=jnp.float32) -> tuple:
        """The zero carry of every layer for ``batch_shape`` sequences."""
        return tuple(cell.initial_carry(tuple(batch_shape), dtype) for cell in self.cells)

    def step(self, params, carry: tuple, ids_t: jax.Array, *, key=None, train=False) -> tuple[tuple, jax.Array]:
        """One token per sequence: ``(carry, ids_t [*batch]) -> (carry, logits_t [*batch, vocab_size])``.

        The same computation as one time step of :meth:`apply`, through each cell's public
        step ``cell(params, carry, x_t)`` (dropout masks are drawn per step here, per
        sequence in ``apply``, so the two agree with ``train=False``).
        """
        where = f"{self.description}.step"
        check_keys(where, params, ["embedding", "rnn", "head"])
        check_token_ids(where, ids_t, self.vocab_size, "ids_t")
        if not isinstance(carry, (tuple, list)) or len(carry) != len(self.cells):
            raise ValueError(f"{where}: expected carry to be a tuple of {len(self.cells)} carries (one per layer, "
                             f"as initial_carry gives), got {type(carry).__name__}")
        check_keys(where, params["rnn"], [f"layer_{i}" for i in range(len(self.cells))], "params['rnn']")
        x, _ = self.embedding.apply(params["embedding"], {}, ids_t)
        rnn_key, new_carry = child_key(key, 1), []  # the keys apply gives the StackedRNN and the head
        for index, cell in enumerate(self.cells):
            if index > 0:  # as StackedRNN: dropout between layers, keyed by the layer index
                x, _ = self.dropout.apply({}, {}, x, key=child_key(rnn_key, index), train=train)
            layer_carry, x = cell(params["rnn"][f"layer_{index}"], carry[index], x)
            new_carry.append(layer_carry)
        x, _ = self.dropout.apply({}, {}, x, key=child_key(key, 2), train=train)
        logits, _ = self.head.apply(params["head"], {}, x)
        return tuple(new_carry), logits

    # -- losses

    def _check_sequences(self, where: str, ids: Any, lengths: Any) -> None:
        check_rank(where, ids, 2, "batch, time", "ids")
        check_token_ids(where, ids, self.vocab_size)
        if ids.shape[1] < 2:
            raise ValueError(f"{where}: expected ids with at least 2 steps (an input and its next token), "
                             f"got shape {tuple(ids.shape)}")
        if lengths is not None:
            check_lengths(where, lengths, ids.shape[:1], ids.shape[1])

    def _prediction_mask(self, ids, lengths):
        """Which of the ``time - 1`` predictions are real: ``t + 1 < lengths``."""
        return None if lengths is None else sequence_mask(lengths - 1, ids.shape[1] - 1)

    def teacher_forcing_loss(self, params, ids: jax.Array, *, lengths=None, key=None, train=False) -> jax.Array:
        """Mean next-token cross-entropy (nats) with the true previous tokens as inputs.

        Teacher forcing (seed 002, section 4.5): the input at step ``t + 1`` is the ground
        truth ``x_t``, not the model's own output, so for ids ``x`` ``[batch, time]``::

            L = -(1 / N) sum_b sum_{t < L_b - 1} log p(x_{b,t+1} | x_{b,1..t})

        with ``N`` the number of real predictions (``L_b = lengths[b]``, ``time`` without
        ``lengths``). The whole sequence runs through :meth:`apply` at once. Divide by
        ``ln 2`` for bits per token.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from jdl import models, nn
            >>> lm = models.CharLM(5, nn.LSTMCell(8))
            >>> ids = jnp.array([[0, 1, 2, 3, 4, 0]])
            >>> params, _ = lm.init(jax.random.key(0), ids)
            >>> bool(abs(lm.teacher_forcing_loss(params, ids) - jnp.log(5.0)) < 0.3)  # near uniform at init
            True
        """
        where = f"{self.description}.teacher_forcing_loss"
        self._check_sequences(where, ids, lengths)
        # Causal: the logits of real steps do not depend on padding, so no lengths are needed here.
        (logits, _), _ = self.apply(params, {}, ids[:, :-1], key=key, train=train)
        return masked_cross_entropy(logits, ids[:, 1:], self._prediction_mask(ids, lengths))

    def free_running(self, params, ids: jax.Array, key: jax.Array | None, *, teacher_forcing_prob: Any = 0.0,
                     temperature: Any = 1.0, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Run the model on its own predictions; returns ``(logits, inputs)``, both over ``time - 1`` steps.

        Step 0 reads the true first token ``x_0``. At step ``t >= 1`` the input is, for each
        sequence independently, the true ``x_t`` with probability ``p = teacher_forcing_prob``
        and otherwise the model's own prediction from step ``t - 1``, a draw from
        ``softmax(z_{t-1} / T)`` (``temperature=0``: the argmax) made by
        :func:`sample_tokens`. This is scheduled sampling (seed 002, section 4.5.1: "a
        probability p of using the ground truth values, and 1 - p of using the model's own
        predictions"); ``p`` may be traced, so it can follow a schedule inside ``jit``.
        ``p = 1`` is teacher forcing, ``p = 0`` free running. The steps run in one
        ``lax.scan`` over :meth:`step`; no gradient flows through the sampled tokens.
        ``inputs [batch, time - 1]`` are the tokens actually fed, so ``apply`` on them gives
        the same ``logits [batch, time - 1, vocab_size]``.

        ``key`` draws the coin flips, the samples and the dropout masks (step ``t`` uses
        ``jax.random.split(key, time - 1)[t]``); it may be ``None`` only when nothing is
        random (``p = 1``, or ``p = 0`` with ``temperature = 0``, and no dropout).
        """
        where = f"{self.description}.free_running"
        check_keys(where, params, ["embedding", "rnn", "head"])
        self._check_sequences(where, ids, None)
        _check_temperature(where, temperature)
        if isinstance(teacher_forcing_prob, bool) or not (isinstance(teacher_forcing_prob, numbers.Real)
                                                          or hasattr(teacher_forcing_prob, "shape")):
            raise TypeError(f"{where}: expected teacher_forcing_prob to be a number in [0, 1], "
                            f"got {type(teacher_forcing_prob).__name__}")
        if is_concrete(teacher_forcing_prob) and not 0.0 <= float(teacher_forcing_prob) <= 1.0:
            raise ValueError(f"{where}: expected teacher_forcing_prob in [0, 1], got {float(teacher_forcing_prob)}")
        if key is None:
            deterministic = is_concrete(teacher_forcing_prob) and (
                float(teacher_forcing_prob) == 1.0
                or (float(teacher_forcing_prob) == 0.0 and is_concrete(temperature) and float(temperature) == 0.0))
            uses_dropout = train and self.dropout_rate > 0
            if not deterministic or uses_dropout:
                raise ValueError(f"{where}: expected a PRNG key for the coin flips, samples or dropout, got key=None; "
                                 f"pass key=jax.random.key(...)")
            key = jax.random.key(0)  # drawn from, never used
        batch, steps = ids.shape[0], ids.shape[1] - 1
        probability = jnp.asarray(teacher_forcing_prob, jnp.float32)
        dtype = jnp.result_type(params["embedding"]["embedding"].dtype, params["head"]["w"].dtype)
        start = (self.initial_carry((batch,), dtype), jnp.zeros((batch, self.vocab_size), dtype))

        def body(state, inputs):
            carry, previous_logits = state
            true_t, step_key, t = inputs
            coin_key, sample_key, dropout_key = jax.random.split(step_key, 3)
            own = sample_tokens(sample_key, jax.lax.stop_gradient(previous_logits), temperature)
            use_true = (t == 0) | jax.random.bernoulli(coin_key, probability, (batch,))
            x_t = jnp.where(use_true, true_t, own.astype(true_t.dtype))
            carry, logits = self.step(params, carry, x_t, key=dropout_key, train=train)
            return (carry, logits), (logits, x_t)

        scanned = (ids[:, :-1].T, jax.random.split(key, steps), jnp.arange(steps))
        _, (logits, inputs) = jax.lax.scan(body, start, scanned)
        return jnp.swapaxes(logits, 0, 1), inputs.T

    def free_running_loss(self, params, ids: jax.Array, key: jax.Array | None, *, teacher_forcing_prob: Any = 0.0,
                          temperature: Any = 1.0, lengths=None, train: bool = False) -> jax.Array:
        """Mean next-token cross-entropy (nats) of :meth:`free_running`'s logits against the true ids.

        ``L = -(1 / N) sum_{b, t < L_b - 1} log p(x_{b,t+1} | x~_{b,1..t})`` where ``x~`` are
        the fed inputs (true or the model's own, see :meth:`free_running`). With
        ``teacher_forcing_prob=1`` this equals :meth:`teacher_forcing_loss`.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from jdl import models, nn
            >>> lm = models.CharLM(5, nn.GRUCell(8))
            >>> ids = jnp.array([[0, 1, 2, 3, 4, 0]])
            >>> params, _ = lm.init(jax.random.key(0), ids)
            >>> forced = lm.free_running_loss(params, ids, None, teacher_forcing_prob=1.0)
            >>> bool(jnp.allclose(forced, lm.teacher_forcing_loss(params, ids), atol=1e-6))
            True
        """
        where = f"{self.description}.free_running_loss"
        self._check_sequences(where, ids, lengths)
        logits, _ = self.free_running(params, ids, key, teacher_forcing_prob=teacher_forcing_prob,
                                      temperature=temperature, train=train)
        return masked_cross_entropy(logits, ids[:, 1:], self._prediction_mask(ids, lengths))

    # -- generation

    def generate(self, params, key: jax.Array, prompt_ids: jax.Array, length: int, temperature: Any = 1.0) -> jax.Array:
        """Sample ``length`` tokens after ``prompt_ids``; returns the new ids only.

        The carry is warmed up by running :meth:`apply` over the prompt (``[prompt_len]`` or
        ``[batch, prompt_len]``, at least one token); then each new token is drawn from
        ``softmax(z / T)`` (:func:`sample_tokens`; ``temperature=0``: greedy) and fed back.
        The whole generation is one jitted ``lax.scan`` of fixed length (compiled once per
        model, prompt shape and ``length``; the temperature is traced). Token ``t`` uses the
        key ``jax.random.split(key, length)[t]``. Returns ``[length]`` or ``[batch, length]``.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from jdl import models, nn
            >>> lm = models.CharLM(5, nn.LSTMCell(8))
            >>> params, _ = lm.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
            >>> lm.generate(params, jax.random.key(1), jnp.array([0, 1]), length=6, temperature=0.8).shape
            (6,)
        """
        where = f"{self.description}.generate"
        check_array(where, prompt_ids, "prompt_ids")
        if prompt_ids.ndim not in (1, 2) or prompt_ids.shape[-1] < 1:
            raise ValueError(f"{where}: expected prompt_ids of shape [prompt_len] or [batch, prompt_len] with "
                             f"prompt_len >= 1, got shape {tuple(prompt_ids.shape)}")
        check_token_ids(where, prompt_ids, self.vocab_size, "prompt_ids")
        _check_positive_int(where, "length", length)
        _check_temperature(where, temperature)
        one = prompt_ids.ndim == 1
        tokens = _generate(self, params, key, prompt_ids[None] if one else prompt_ids, int(length), temperature)
        return tokens[0] if one else tokens



@functools.partial(jax.jit, static_argnums=(0, 4))
def _generate(model: LanguageModel, params, key, prompt_ids, length: int, temperature):
    (logits, carry), _ = model.apply(params, {}, prompt_ids)

    def body(state, step_key):
        carry, logits_t = state
        token = sample_tokens(step_key, logits_t, temperature)
        carry, logits_t = model.step(params, carry, token)
        return (carry, logits_t), token

    _, tokens = jax.lax.scan(body, (carry, logits[:, -1]), jax.random.split(key, length))
    return tokens.T


def CharLM(vocab_size: int, cell: Cell | Sequence[Cell], *, embed_features: int | None = None,
           dropout_rate: float = 0.0, name: str = "char_lm") -> LanguageModel:
    """A character (or any token) language model: ``Embedding -> RNN layers -> Dense(vocab_size)``.

    ``p(x_{t+1} | x_1..x_t) = softmax(Dense(dropout(h_t)))`` with ``h_t`` the top layer's
    output after reading ``x_1..x_t`` (each id embedded in ``embed_features`` dimensions,
    by default the first cell's hidden size). ``cell`` is one cell (``nn.LSTMCell(256)``,
    ``nn.GRUCell(256)``) or a list of them, stacked with inverted dropout of rate
    ``dropout_rate`` between layers and before the head (the non-recurrent connections,
    Zaremba et al., 2014). Params: ``{"embedding": {"embedding"}, "rnn": {"layer_0", ...},
    "head": {"w", "b"}}``. See :class:`LanguageModel` for ``apply``, the losses and
    :meth:`~LanguageModel.generate`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import models, nn
        >>> lm = models.CharLM(30, [nn.LSTMCell(16), nn.LSTMCell(16)], dropout_rate=0.1)
        >>> ids = jnp.zeros((2, 10), jnp.int32)
        >>> params, state = lm.init(jax.random.key(0), ids)
        >>> (logits, carry), state = lm.apply(params, state, ids)
        >>> logits.shape, len(carry)
        ((2, 10, 30), 2)
    """
    owner = "CharLM"
    if vocab_size is None:
        raise ValueError(f"{owner}: expected vocab_size to be a positive int, got None")
    encoder = _make_encoder(owner, cell, vocab_size, embed_features, False, dropout_rate)
    dropout, head = Dropout(dropout_rate), Dense(vocab_size)
    shown = encoder.cells[0] if len(encoder.cells) == 1 else list(encoder.cells)
    description = (f"CharLM(vocab_size={vocab_size}, cell={shown}, embed_features={encoder.embed_features}, "
                   f"dropout_rate={dropout_rate})")
    encoder = dataclasses.replace(encoder, owner=description)
    names = ["embedding", "rnn", "head"]

    def init(key, ids):
        encoder.check_input(ids)
        params = encoder.init(key, ids)
        outputs = jax.eval_shape(lambda p, v: encoder.run(p, v, key=None, train=False, lengths=None)[0], params, ids)
        params["head"], _ = head.init(jax.random.fold_in(key, 2), outputs)
        return params, {}

    def apply(params, state, ids, *, key=None, train=False, lengths=None, initial_carry=None):
        check_keys(description, params, names)
        check_keys(description, state, [], "state")
        outputs, carry = encoder.run(params, ids, key=key, train=train, lengths=lengths, initial_carry=initial_carry)
        outputs, _ = dropout.apply({}, {}, outputs, key=child_key(key, 2), train=train)
        logits, _ = head.apply(params["head"], {}, outputs)
        return (logits, carry), state

    return LanguageModel(init=make_layer(name, description, init, apply).init, apply=apply, name=name,
                         description=description, vocab_size=vocab_size, cells=encoder.cells,
                         dropout_rate=float(dropout_rate), embedding=encoder.embedding, rnn=encoder.rnn,
                         dropout=dropout, head=head)
