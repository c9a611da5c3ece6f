"""Recurrent sequence models: a classifier, a tagger and a (character) language model.

Every model is a :class:`~jdl.nn.Layer` made of :mod:`jdl.nn` layers: ids ``[*batch,
time]`` through an :class:`~jdl.nn.Embedding` (with ``vocab_size``) or float features
``[*batch, time, features]``, then a :func:`jdl.nn.StackedRNN` (one cell or several
stacked, with dropout between), then dropout and a ``Dense`` head. Params are
``{"embedding"?, "rnn": {"layer_0", ...}, "head": {"w", "b"}}``, state ``{}``; like the
recurrent layers, ``apply`` also takes ``lengths=`` for padded batches.

* :class:`SequenceClassifier` (many-to-one): a summary ``s`` of the top layer's outputs ->
  ``Dense`` to classes. ``s`` is the top layer's final hidden state (``readout="final"``;
  for both directions ``[h_fwd_T, h_bwd_1]``) or the mean of its outputs over the real
  steps (``readout="mean"``, ``s = (1 / L) sum_{t < L} y_t``).
* :class:`SequenceTagger` (many-to-many): ``Dense`` on every step's output: logits
  ``[*batch, time, num_tags]``. Train it with :func:`jdl.losses.masked_cross_entropy` and
  :func:`jdl.losses.sequence_mask`, so padded steps are not part of the loss.
* :class:`CharLM` (also named :data:`LanguageModel`) models ``p(x_1..x_T) = prod_t
  p(x_{t+1} | x_1..x_t)``: a teacher-forcing loss, a free-running (scheduled-sampling) loss,
  and :meth:`CharLM.generate`, temperature sampling (:func:`jdl.decoding.sample_tokens`) as
  one jitted ``lax.scan``.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import models, nn
    >>> model = models.SequenceClassifier(3, nn.GRUCell(8), vocab_size=20, bidirectional=True)
    >>> ids = jnp.array([[4, 7, 1, 0], [5, 2, 0, 0]])
    >>> params, state = model.init(jax.random.key(0), ids)
    >>> logits, state = jax.jit(model.apply)(params, state, ids, lengths=jnp.array([3, 2]))
    >>> logits.shape
    (2, 3)
"""
from __future__ import annotations

import functools
import numbers
from dataclasses import field
from typing import Any, ClassVar, Literal

import jax
import jax.numpy as jnp

from jdl._checks import (
    PositiveInt, Rate, check_array, check_floating_min_rank, check_lengths, check_min_rank, check_positive_int,
    check_rank, check_temperature, check_that, check_token_ids, check_tuple, is_concrete,
)
from jdl.decoding import sample_tokens
from jdl.losses import masked_cross_entropy, sequence_mask
from jdl.nn import Cell, Dense, Dropout, Embedding, StackedRNN
from jdl.nn.core import KW_ONLY, Layer, check_params, child_key, output_shape

__all__ = ["SequenceClassifier", "SequenceTagger", "CharLM", "LanguageModel"]


# The keys that fold into a model's PRNG key, one per part (the params' order).
EMBEDDING_KEY, RNN_KEY, HEAD_KEY = 0, 1, 2


def _as_cells(where: str, cell: Any) -> tuple[Cell, ...]:
    cells = (cell,) if isinstance(cell, Cell) else tuple(cell) if isinstance(cell, (list, tuple)) else None
    check_that(cells and all(isinstance(c, Cell) for c in cells), where, "a jdl recurrent Cell (nn.LSTMCell(64), "
               "...) or a non-empty list of them (stacked layers)", repr(cell), TypeError)
    return cells


def _check_features(where: Any, x: Any) -> None:
    check_array(where, x)
    check_that(not jnp.issubdtype(x.dtype, jnp.integer), where, "float features [*batch, time, features]",
               f"integer input of shape {tuple(x.shape)}; give vocab_size= to embed token ids", TypeError)
    check_floating_min_rank(where, x, 2, "*batch, time, features")


class _RecurrentModel(Layer):
    """What the three models share: ``[Embedding] -> StackedRNN -> Dropout -> Dense``.

    A subclass declares the configuration (``cell``, ``vocab_size``, ``embed_features``,
    ``dropout_rate``, ``bidirectional``) and names the field that sizes its head.
    """

    head_size: ClassVar[str]  # the field that holds the head's number of outputs

    cells: tuple = field(init=False, repr=False, compare=False)
    embedding: Embedding | None = field(init=False, repr=False, compare=False)
    rnn: Layer = field(init=False, repr=False, compare=False)
    dropout: Layer = field(init=False, repr=False, compare=False)
    head: Dense = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        cells = _as_cells(type(self).__name__, self.cell)
        embedding = None
        if self.vocab_size is not None:
            embedding = Embedding(self.vocab_size, self.embed_features or cells[0].hidden_size)
        check_that(self.vocab_size is not None or self.embed_features is None, type(self).__name__, f"vocab_size (token "
                   f"ids to embed) with embed_features={self.embed_features!r}", "None; leave both out for float features")
        if not isinstance(self.cell, Cell):
            object.__setattr__(self, "cell", cells)  # a list of cells, as a (hashable) tuple
        object.__setattr__(self, "cells", cells)
        object.__setattr__(self, "embedding", embedding)
        object.__setattr__(self, "rnn", StackedRNN(list(cells), bidirectional=self.bidirectional,
                                                   dropout_rate=self.dropout_rate))
        object.__setattr__(self, "dropout", Dropout(self.dropout_rate))
        object.__setattr__(self, "head", Dense(getattr(self, self.head_size)))

    def _check_input(self, x: Any, lengths: Any = None) -> None:
        """Ids in the vocabulary (or float features), and lengths that fit them."""
        if self.embedding is not None:
            check_min_rank(self, x, 1, "*batch, time", "ids")
            check_token_ids(self, x, self.vocab_size)
        else:
            _check_features(self, x)
        steps_shape = tuple(x.shape) if self.embedding is not None else tuple(x.shape[:-1])
        if lengths is not None:
            check_lengths(self, lengths, steps_shape[:-1], steps_shape[-1])

    def init(self, key, x):
        self._check_input(x)
        params = {}
        if self.embedding is not None:
            params["embedding"], _ = self.embedding.init(jax.random.fold_in(key, EMBEDDING_KEY), x)
            x = output_shape(self.embedding, params["embedding"], {}, x)
        params["rnn"], _ = self.rnn.init(jax.random.fold_in(key, RNN_KEY), x)
        outputs, _ = output_shape(self.rnn, params["rnn"], {}, x)
        params["head"], _ = self.head.init(jax.random.fold_in(key, HEAD_KEY), outputs)
        return params, {}

    def _run(self, params, x, *, key, train, lengths, initial_carry=None):
        """The top layer's outputs ``[*batch, time, hidden (x2 both ways)]`` and every layer's carry."""
        if self.embedding is not None:
            x, _ = self.embedding.apply(params["embedding"], {}, x)
        (outputs, carries), _ = self.rnn.apply(params["rnn"], {}, x, key=child_key(key, RNN_KEY), train=train,
                                               lengths=lengths, initial_carry=initial_carry)
        return outputs, carries

    def apply(self, params, state, x, *, key=None, train=False, lengths=None):
        self._check_input(x, lengths)
        check_params(self, params, state, x)
        outputs, carries = self._run(params, x, key=key, train=train, lengths=lengths)
        return self._head(params, self._readout(outputs, carries, lengths), key=key, train=train), state

    def _readout(self, outputs, carries, lengths) -> jax.Array:
        """What the head reads: the top layer's outputs at every step (a classifier: a summary)."""
        return outputs

    def _head(self, params, features, *, key, train):
        """``Dense(dropout(features))``: the logits."""
        features, _ = self.dropout.apply({}, {}, features, key=child_key(key, HEAD_KEY), train=train)
        return self.head.apply(params["head"], {}, features)[0]


# ------------------------------------------------------------------------------- classifier


class SequenceClassifier(_RecurrentModel):
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
    logits.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import models, nn
        >>> model = models.SequenceClassifier(2, nn.LSTMCell(8), readout="mean")
        >>> x = jnp.ones((4, 6, 3))                               # 4 sequences, 6 steps, 3 features
        >>> params, state = model.init(jax.random.key(0), x)
        >>> sorted(params), jax.jit(model.apply)(params, state, x)[0].shape
        (['head', 'rnn'], (4, 2))
    """

    head_size: ClassVar[str] = "num_classes"
    num_classes: PositiveInt
    cell: Any
    _: KW_ONLY
    readout: Literal["final", "mean"] = "final"
    vocab_size: PositiveInt | None = None
    embed_features: PositiveInt | None = None
    bidirectional: bool = False
    dropout_rate: Rate = 0.0
    name: str = "sequence_classifier"

    def _readout(self, outputs, carries, lengths) -> jax.Array:
        """The summary ``s`` of each sequence."""
        if self.readout == "mean":
            return _mean_over_steps(outputs, lengths)
        # The top layer's final hidden state; [h_forward, h_backward] for both directions.
        cell, top = self.cells[-1], carries[-1]
        if self.bidirectional:
            return jnp.concatenate([cell.hidden(top[0]), cell.hidden(top[1])], axis=-1)
        return cell.hidden(top)


def _mean_over_steps(outputs: jax.Array, lengths: jax.Array | None) -> jax.Array:
    """``(1 / L) sum_{t < L} y_t``; outputs past each length are zero (the RNN's rule)."""
    steps = outputs.shape[-2]
    count = jnp.full(outputs.shape[:-2], steps) if lengths is None else jnp.clip(lengths, 0, steps)
    return jnp.sum(outputs, axis=-2) / jnp.maximum(count, 1)[..., None].astype(outputs.dtype)


# ----------------------------------------------------------------------------------- tagger


class SequenceTagger(_RecurrentModel):
    """Many-to-many: one label per time step, ``logits_t = Dense(dropout(y_t))``.

    The encoder is :class:`SequenceClassifier`'s (ids with ``vocab_size``, float features
    otherwise; one cell or a stack; ``bidirectional=True`` lets every tag see the whole
    sequence, its backward direction starting at each sequence's own last real step).
    ``apply(params, state, x, *, key=None, train=False, lengths=None) -> (logits
    [*batch, time, num_tags], state)``. Logits at padded steps are meaningless (the head's
    bias); leave them out of the loss with :func:`jdl.losses.masked_cross_entropy` and
    ``sequence_mask(lengths, time)``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import losses, models, nn
        >>> tagger = models.SequenceTagger(5, nn.GRUCell(8), vocab_size=10, bidirectional=True)
        >>> ids, lengths = jnp.array([[1, 2, 3], [4, 5, 0]]), jnp.array([3, 2])
        >>> params, state = tagger.init(jax.random.key(0), ids)
        >>> logits, _ = jax.jit(tagger.apply)(params, state, ids, lengths=lengths)
        >>> logits.shape
        (2, 3, 5)
        >>> loss = losses.masked_cross_entropy(logits, jnp.array([[0, 1, 2], [3, 4, -1]]),
        ...                                    losses.sequence_mask(lengths, 3))
    """

    head_size: ClassVar[str] = "num_tags"
    num_tags: PositiveInt
    cell: Any
    _: KW_ONLY
    vocab_size: PositiveInt | None = None
    embed_features: PositiveInt | None = None
    bidirectional: bool = False
    dropout_rate: Rate = 0.0
    name: str = "sequence_tagger"


# --------------------------------------------------------------------------- language model


def _check_probability(where: str, name: str, value: Any) -> None:
    """A number in ``[0, 1]`` that may be traced (a schedule inside ``jit``)."""
    if isinstance(value, bool) or not (isinstance(value, numbers.Real) or hasattr(value, "shape")):
        raise TypeError(f"{where}: expected {name} to be a number in [0, 1], got {type(value).__name__}")
    if is_concrete(value) and not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{where}: expected {name} in [0, 1], got {float(value)}")


class CharLM(_RecurrentModel):
    """A character (or any token) language model: ``Embedding -> RNN layers -> Dense(vocab_size)``.

    ``p(x_{t+1} | x_1..x_t) = softmax(Dense(dropout(h_t)))`` with ``h_t`` the top layer's
    output after reading ``x_1..x_t`` (each id embedded in ``embed_features`` dimensions,
    by default the first cell's hidden size). ``cell`` is one cell (``nn.LSTMCell(256)``,
    ``nn.GRUCell(256)``) or a list of them, stacked with inverted dropout of rate
    ``dropout_rate`` between layers and before the head (the non-recurrent connections,
    Zaremba et al., 2014). Params: ``{"embedding": {"embedding"}, "rnn": {"layer_0", ...},
    "head": {"w", "b"}}``.

    ``apply(params, state, ids, *, key=None, train=False, lengths=None, initial_carry=None)
    -> ((logits [*batch, time, vocab_size], final_carry), state)``: ``logits[..., t, :]``
    scores ``x_{t+1}`` given ``x_1..x_t`` (and the carry before ``x_1``). The carry is a
    tuple with one cell carry per layer (:meth:`initial_carry`), so a long text can be
    read chunk by chunk. The methods add one step, the training losses and generation.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import models, nn
        >>> lm = models.CharLM(30, [nn.LSTMCell(16), nn.LSTMCell(16)], dropout_rate=0.1)
        >>> ids = jnp.zeros((2, 10), jnp.int32)
        >>> params, state = lm.init(jax.random.key(0), ids)
        >>> (logits, carry), state = jax.jit(lm.apply)(params, state, ids)
        >>> logits.shape, len(carry)
        ((2, 10, 30), 2)
    """

    head_size: ClassVar[str] = "vocab_size"  # the next token's logits
    bidirectional: ClassVar[bool] = False  # a language model reads left to right only
    vocab_size: PositiveInt
    cell: Any
    _: KW_ONLY
    embed_features: PositiveInt | None = None
    dropout_rate: Rate = 0.0
    name: str = "char_lm"

    def apply(self, params, state, ids, *, key=None, train=False, lengths=None, initial_carry=None):
        self._check_input(ids, lengths)
        check_params(self, params, state, ids)
        outputs, carry = self._run(params, ids, key=key, train=train, lengths=lengths, initial_carry=initial_carry)
        return (self._head(params, outputs, key=key, train=train), carry), state

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
        where = f"{self}.step"
        check_token_ids(where, ids_t, self.vocab_size, "ids_t")
        check_tuple(where, carry, len(self.cells), "carry", f"a tuple of {len(self.cells)} carries (one per layer, "
                    f"as initial_carry gives)")
        check_params(self, params, {}, ids_t[..., None])  # the params of a one-step sequence
        x, _ = self.embedding.apply(params["embedding"], {}, ids_t)
        rnn_key, new_carry = child_key(key, RNN_KEY), []
        for index, cell in enumerate(self.cells):
            if index > 0:  # as StackedRNN: dropout between layers, keyed by the layer index
                x, _ = self.dropout.apply({}, {}, x, key=child_key(rnn_key, index), train=train)
            layer_carry, x = cell(params["rnn"][f"layer_{index}"], carry[index], x)
            new_carry.append(layer_carry)
        return tuple(new_carry), self._head(params, x, key=key, train=train)

    # -- losses

    def _check_sequences(self, where: str, ids: Any, lengths: Any) -> None:
        check_rank(where, ids, 2, "batch, time", "ids")
        check_token_ids(where, ids, self.vocab_size)
        check_that(ids.shape[1] >= 2, where, "ids with at least 2 steps (an input and its next token)",
                   f"shape {tuple(ids.shape)}")
        if lengths is not None:
            check_lengths(where, lengths, ids.shape[:1], ids.shape[1])

    def _next_token_loss(self, logits, ids, lengths) -> jax.Array:
        """Cross-entropy of ``logits`` (``time - 1`` steps) against ``ids[:, 1:]``, over the
        real predictions ``t + 1 < lengths``."""
        mask = None if lengths is None else sequence_mask(lengths - 1, ids.shape[1] - 1)
        return masked_cross_entropy(logits, ids[:, 1:], mask)

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
            >>> bool(abs(jax.jit(lm.teacher_forcing_loss)(params, ids) - jnp.log(5.0)) < 0.3)  # near uniform at init
            True
        """
        self._check_sequences(f"{self}.teacher_forcing_loss", ids, lengths)
        # Causal: the logits of real steps do not depend on padding, so no lengths are needed here.
        (logits, _), _ = self.apply(params, {}, ids[:, :-1], key=key, train=train)
        return self._next_token_loss(logits, ids, lengths)

    def free_running(self, params, ids: jax.Array, key: jax.Array | None, *, teacher_forcing_prob: Any = 0.0,
                     temperature: Any = 1.0, train: bool = False) -> tuple[jax.Array, jax.Array]:
        """Run the model on its own predictions; returns ``(logits, inputs)``, both over ``time - 1`` steps.

        Step 0 reads the true first token ``x_0``. At step ``t >= 1`` the input is, for each
        sequence independently, the true ``x_t`` with probability ``p = teacher_forcing_prob``
        and otherwise the model's own prediction from step ``t - 1``, a draw from
        ``softmax(z_{t-1} / T)`` (``temperature=0``: the argmax) made by
        :func:`jdl.decoding.sample_tokens`. This is scheduled sampling (seed 002, section
        4.5.1: "a probability p of using the ground truth values, and 1 - p of using the
        model's own predictions"); ``p`` may be traced, so it can follow a schedule inside
        ``jit``. ``p = 1`` is teacher forcing, ``p = 0`` free running. The steps run in one
        ``lax.scan`` over :meth:`step`; no gradient flows through the sampled tokens.
        ``inputs [batch, time - 1]`` are the tokens actually fed, so ``apply`` on them gives
        the same ``logits [batch, time - 1, vocab_size]``.

        ``key`` draws the coin flips, the samples and the dropout masks (step ``t`` uses
        ``jax.random.split(key, time - 1)[t]``); it may be ``None`` only when nothing is
        random (``p = 1``, or ``p = 0`` with ``temperature = 0``, and no dropout).
        """
        where = f"{self}.free_running"
        self._check_sequences(where, ids, None)
        check_temperature(where, temperature)
        _check_probability(where, "teacher_forcing_prob", teacher_forcing_prob)
        check_params(self, params, {}, ids)
        key = self._key_for_free_running(where, key, teacher_forcing_prob, temperature, train)
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

    def _key_for_free_running(self, where, key, teacher_forcing_prob, temperature, train) -> jax.Array:
        """``key``, or a stand-in that is never drawn from when nothing is random; else an error."""
        if key is not None:
            return key
        concrete = lambda value, wanted: is_concrete(value) and float(value) == wanted  # noqa: E731
        deterministic = concrete(teacher_forcing_prob, 1.0) or (concrete(teacher_forcing_prob, 0.0)
                                                                and concrete(temperature, 0.0))
        check_that(deterministic and not (train and self.dropout_rate > 0), where, "a PRNG key for the coin flips, "
                   "samples or dropout", "key=None; pass key=jax.random.key(...)")
        return jax.random.key(0)

    def free_running_loss(self, params, ids: jax.Array, key: jax.Array | None, *, teacher_forcing_prob: Any = 0.0,
                          temperature: Any = 1.0, lengths=None, train: bool = False) -> jax.Array:
        """Mean next-token cross-entropy (nats) of :meth:`free_running`'s logits against the true ids.

        ``L = -(1 / N) sum_{b, t < L_b - 1} log p(x_{b,t+1} | x~_{b,1..t})`` where ``x~`` are
        the fed inputs (true or the model's own, see :meth:`free_running`). With
        ``teacher_forcing_prob=1`` this equals :meth:`teacher_forcing_loss`.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from jdl import models, nn
            >>> lm = models.CharLM(5, [nn.GRUCell(8), nn.GRUCell(8)])
            >>> ids, lengths = jnp.array([[0, 1, 2, 3, 4, 0], [1, 2, 3, 0, 0, 0]]), jnp.array([6, 3])
            >>> params, _ = lm.init(jax.random.key(0), ids)
            >>> loss = jax.jit(lm.free_running_loss, static_argnames="teacher_forcing_prob")  # p = 1: no key needed
            >>> forced = loss(params, ids, None, teacher_forcing_prob=1.0, lengths=lengths)
            >>> bool(jnp.allclose(forced, jax.jit(lm.teacher_forcing_loss)(params, ids, lengths=lengths), atol=1e-6))
            True
        """
        self._check_sequences(f"{self}.free_running_loss", ids, lengths)
        logits, _ = self.free_running(params, ids, key, teacher_forcing_prob=teacher_forcing_prob,
                                      temperature=temperature, train=train)
        return self._next_token_loss(logits, ids, lengths)

    # -- generation

    def generate(self, params, key: jax.Array, prompt_ids: jax.Array, length: int, temperature: Any = 1.0) -> jax.Array:
        """Sample ``length`` tokens after ``prompt_ids``; returns the new ids only.

        The carry is warmed up by running :meth:`apply` over the prompt (``[prompt_len]`` or
        ``[batch, prompt_len]``, at least one token); then each new token is drawn from
        ``softmax(z / T)`` (:func:`jdl.decoding.sample_tokens`; ``temperature=0``: greedy)
        and fed back. The whole generation is one jitted ``lax.scan`` of fixed length
        (compiled once per model, prompt shape and ``length``; the temperature is traced).
        Token ``t`` uses the key ``jax.random.split(key, length)[t]``. Returns ``[length]``
        or ``[batch, length]``.

        Example:
            >>> import jax, jax.numpy as jnp
            >>> from jdl import models, nn
            >>> lm = models.CharLM(5, nn.LSTMCell(8))
            >>> params, _ = lm.init(jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
            >>> lm.generate(params, jax.random.key(1), jnp.array([0, 1]), length=6, temperature=0.8).shape
            (6,)
        """
        where = f"{self}.generate"
        check_array(where, prompt_ids, "prompt_ids")
        check_that(prompt_ids.ndim in (1, 2) and prompt_ids.shape[-1] >= 1, where, "prompt_ids of shape [prompt_len]"
                   " or [batch, prompt_len] with prompt_len >= 1", f"shape {tuple(prompt_ids.shape)}")
        check_token_ids(where, prompt_ids, self.vocab_size, "prompt_ids")
        check_positive_int(where, "length", length)
        check_temperature(where, temperature)
        one = prompt_ids.ndim == 1
        tokens = _generate(self, params, key, prompt_ids[None] if one else prompt_ids, int(length), temperature)
        return tokens[0] if one else tokens


LanguageModel = CharLM  # the general name: any token vocabulary, any recurrent cells


@functools.partial(jax.jit, static_argnums=(0, 4))
def _generate(model: CharLM, params, key, prompt_ids, length: int, temperature):
    (logits, carry), _ = model.apply(params, {}, prompt_ids)

    def body(state, step_key):
        carry, logits_t = state
        token = sample_tokens(step_key, logits_t, temperature)
        carry, logits_t = model.step(params, carry, token)
        return (carry, logits_t), token

    _, tokens = jax.lax.scan(body, (carry, logits[:, -1]), jax.random.split(key, length))
    return tokens.T
