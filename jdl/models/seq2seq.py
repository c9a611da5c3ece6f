"""The RNN encoder-decoder with additive attention (Bahdanau, Cho & Bengio, ICLR 2015).

The seeds' model (003, "DL-13/04"; 002, sections 4.9 and 5.3), for a source sentence
``x_1..x_Tx`` and a target sentence ``y_1..y_Ty``:

* **Encoder**: each source id embedded (``E x_j``), then a bidirectional GRU; the
  annotation of position ``j`` is ``h_j = [h->_j, h<-_j]`` (``2 * hidden_size`` features).
  With ``source_lengths`` the padding is masked: the backward direction starts at each
  sentence's own last real token, and the annotations past the end are zero.
* **Initial decoder state**: ``s_0 = tanh(W_s h<-_1)`` (the seeds' and the paper's, from the
  backward state after reading the whole sentence; ``initial_state="both"`` uses
  ``[h->_Tx, h<-_1]`` instead).
* **Attention**: ``e_ij = v_a^T tanh(W_a s_{i-1} + U_a h_j)``, ``alpha_ij = softmax_j(e_ij)``
  over the real source positions only, ``c_i = sum_j alpha_ij h_j``
  (:func:`jdl.nn.AdditiveAttention`). ``U_a h_j`` does not depend on ``i``; it is computed
  once per sentence (:func:`jdl.nn.additive_attention_keys`), outside the decoder's loop.
* **Decoder**: a GRU whose input at step ``i`` is ``[E y_{i-1}, c_i]``: the seeds'
  ``s~_i = tanh(W E y_{i-1} + U [r_i * s_{i-1}] + C c_i)`` and gates
  ``z_i = sigmoid(W_z E y_{i-1} + U_z s_{i-1} + C_z c_i)`` (same for ``r_i``), with ``W`` and
  ``C`` the two row blocks of one input kernel. The cell is :func:`jdl.nn.GRUCell` (flax's
  convention: the reset gate multiplies ``U s_{i-1} + b`` rather than ``s_{i-1}``, and ``z``
  weighs the old state; the same family of functions).
* **Output**: ``t~_i = U_o s_{i-1} + V_o E y_{i-1} + C_o c_i`` (one ``Dense`` on the
  concatenation, with a bias), ``t_i = maxout(t~_i)`` (the maximum of each pair of units,
  as in the paper; ``readout="linear"`` keeps ``t~_i``), and ``p(y_i | y_<i, x) =
  softmax(W_o t_i)``. ``readout_state="current"`` reads ``s_i`` instead of ``s_{i-1}``
  (the variant most later implementations use).

Training is teacher forcing (seed 002, section 4.5): the decoder reads ``y_0 = <bos>``,
then the true ``y_1..y_{T-1}``, and the loss is the mean cross-entropy over the real target
tokens. The decoder's pass over the target is one ``lax.scan`` whose body holds only what
depends on the previous state (the attention and the recurrent matmul); the target
embeddings' share of the GRU's input projection, and the output layer over every step,
run outside it.

**Decoding** reads one token per sentence per call of ``step_fn(state, tokens, step) ->
(log_probs [N, vocab], state)``, where ``state`` is a dict of arrays with leading axis
``N`` (``{"carry", "memory", "keys", "mask"}``: the decoder state, the annotations, their
attention keys and the source mask) from :meth:`AttentionSeq2Seq.init_decode_state`, so a
search can reorder or repeat its rows (beam search) with one ``jnp.take`` per leaf:
:meth:`~AttentionSeq2Seq.greedy_decode` and :meth:`~AttentionSeq2Seq.beam_decode` run
:func:`jdl.decoding.greedy_search` and :func:`jdl.decoding.beam_search` on it.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import models
    >>> model = models.AttentionSeq2Seq(12, 10, hidden_size=16)
    >>> source, source_lengths = jnp.array([[5, 6, 7, 0], [8, 9, 10, 11]]), jnp.array([3, 4])
    >>> target, target_lengths = jnp.array([[3, 4, 2], [5, 2, 0]]), jnp.array([3, 2])
    >>> params, _ = jax.jit(model.init)(jax.random.key(0), source)
    >>> loss = jax.jit(model.loss)(params, source, source_lengths, target, target_lengths)
    >>> logits, weights = jax.jit(model.logits)(params, source, source_lengths, target)
    >>> logits.shape, weights.shape               # [batch, target_len, vocab], [batch, target_len, source_len]
    ((2, 3, 10), (2, 3, 4))
    >>> greedy = jax.jit(model.greedy_decode, static_argnames="max_length")
    >>> greedy(params, source, source_lengths, max_length=5).tokens.shape
    (2, 5)
"""
from __future__ import annotations

import functools
from dataclasses import field
from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jdl import decoding
from jdl._checks import (
    PositiveInt, check_batch_axes, check_bool_mask, check_floating, check_integer, check_keys, check_lengths,
    check_rank, check_shape, check_that, check_token_id, check_token_ids, checks_arguments, is_concrete,
)
from jdl.losses import masked_cross_entropy, sequence_mask
from jdl.nn import AdditiveAttention, Bidirectional, Dense, Embedding, GRUCell, additive_attention_keys
from jdl.nn.core import KW_ONLY, Layer, check_params
from jdl.text import BOS_ID, EOS_ID, PAD_ID

__all__ = ["AttentionSeq2Seq", "RNNEncoderDecoder"]

_STATE_NAMES = ("carry", "memory", "keys", "mask")


def _real_ids(ids: Any, lengths: Any) -> Any:
    """``ids`` with the positions past ``lengths`` set to 0, when both are concrete (for the value check)."""
    if lengths is None or not is_concrete(ids) or not is_concrete(lengths):
        return ids
    valid = np.arange(ids.shape[1])[None, :] < np.asarray(lengths)[:, None]
    return np.where(valid, np.asarray(ids), 0)


class AttentionSeq2Seq(Layer):
    """The seeds' encoder-decoder: bidirectional GRU encoder, GRU decoder with Bahdanau attention.

    Sizes (the paper's RNNsearch in brackets): ``hidden_size`` per encoder direction
    [1000], ``embed_features`` for both embeddings [620] (default ``hidden_size``),
    ``decoder_hidden_size`` [1000] (default ``hidden_size``), ``attention_features`` [1000]
    (default ``decoder_hidden_size``), ``readout_features`` the size of ``t_i`` [500]
    (default ``decoder_hidden_size // 2``; maxout reads twice as many units); a size left
    out becomes its default when the model is made. ``readout`` is ``"maxout"`` (the paper)
    or ``"linear"``; ``readout_state`` is ``"previous"`` (``s_{i-1}``, the paper and the
    seeds) or ``"current"`` (``s_i``); ``initial_state`` is ``"backward"`` (``s_0 =
    tanh(W_s h<-_1)``, the paper and the seeds) or ``"both"`` (``tanh(W_s [h->_Tx,
    h<-_1])``). ``bos_id``, ``eos_id``, ``pad_id`` default to :mod:`jdl.text`'s (1, 2, 0).

    ``init(key, source_ids) -> (params, {})``; ``apply(params, state, source_ids, *,
    target_ids, source_lengths=None) -> ((logits, weights), state)`` is :meth:`logits`.
    Params::

        {"source_embedding": {"embedding"}, "encoder": {"forward", "backward"} (GRU cells),
         "initial_state": {"w"} (W_s), "target_embedding": {"embedding"},
         "attention": {"w_s", "w_h", "v"} (W_a, U_a, v_a), "decoder": GRU cell
         (input rows: [E y, c]), "readout": {"w", "b"} (U_o, V_o, C_o stacked), "output": {"w", "b"} (W_o)}

    Token ids are ``[batch, length]`` int arrays padded at the end; lengths are ``[batch]``.
    Whatever ids sit past ``source_lengths`` (and, in :meth:`loss`, past ``target_lengths``)
    are read as ``<pad>``: they never change a result or a gradient. Concrete ids outside
    the vocabulary at real positions and lengths outside ``[0, length]`` are errors that
    name the method; under ``jit`` values cannot be checked, and an id out of range gives
    NaN (the :class:`~jdl.nn.Embedding` rule).
    """

    source_vocab_size: PositiveInt
    target_vocab_size: PositiveInt
    hidden_size: PositiveInt = 64
    _: KW_ONLY
    embed_features: PositiveInt | None = None
    decoder_hidden_size: PositiveInt | None = None
    attention_features: PositiveInt | None = None
    readout_features: PositiveInt | None = None
    readout: Literal["maxout", "linear"] = "maxout"
    readout_state: Literal["previous", "current"] = "previous"
    initial_state: Literal["backward", "both"] = "backward"
    bos_id: int = BOS_ID
    eos_id: int = EOS_ID
    pad_id: int = PAD_ID
    name: str = "attention_seq2seq"

    # The layer of each part of the params, under the part's name.
    layers: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        for token in ("bos_id", "eos_id", "pad_id"):
            check_token_id("AttentionSeq2Seq", token, getattr(self, token), self.target_vocab_size, "the target vocabulary")
        self._resolve_sizes()
        object.__setattr__(self, "layers", {  # in the order of their PRNG keys
            "source_embedding": Embedding(self.source_vocab_size, self.embed_features),
            "encoder": Bidirectional(GRUCell(self.hidden_size)),
            "initial_state": Dense(self.decoder_hidden_size, use_bias=False),  # W_s
            "target_embedding": Embedding(self.target_vocab_size, self.embed_features),
            "attention": AdditiveAttention(self.attention_features, context_features=2 * self.hidden_size),
            "decoder": GRUCell(self.decoder_hidden_size),
            "readout": Dense(self.readout_features * (2 if self.readout == "maxout" else 1)),  # U_o, V_o, C_o
            "output": Dense(self.target_vocab_size),  # W_o
        })

    def _resolve_sizes(self) -> None:
        """The sizes left out become their defaults, each from the one before it."""
        if self.embed_features is None:
            object.__setattr__(self, "embed_features", self.hidden_size)
        if self.decoder_hidden_size is None:
            object.__setattr__(self, "decoder_hidden_size", self.hidden_size)
        if self.attention_features is None:
            object.__setattr__(self, "attention_features", self.decoder_hidden_size)
        if self.readout_features is None:
            object.__setattr__(self, "readout_features", max(1, self.decoder_hidden_size // 2))

    def init(self, key, source_ids):
        check_integer(self, source_ids, "source_ids")
        ids = jax.ShapeDtypeStruct((1, 1), jnp.int32)
        floats = lambda *shape: jax.ShapeDtypeStruct(shape, jnp.float32)  # noqa: E731
        annotation, state = 2 * self.hidden_size, self.decoder_hidden_size
        summary = self.hidden_size * (1 if self.initial_state == "backward" else 2)
        examples = {  # an input of each part's layer
            "source_embedding": ids,
            "encoder": floats(1, 1, self.embed_features),
            "initial_state": floats(1, summary),
            "target_embedding": ids,
            "attention": floats(1, state),
            "decoder": floats(1, self.embed_features + annotation),  # reads [E y, c]
            "readout": floats(1, state + self.embed_features + annotation),  # reads [s, E y, c]
            "output": floats(1, self.readout_features),
        }
        keys = jax.random.split(key, len(self.layers))
        return {part: layer.init(k, examples[part])[0] for k, (part, layer) in zip(keys, self.layers.items())}, {}

    def _apply(self, part: str, params, x, **options):
        """``params[part]``'s layer on ``x``: its output (no state, no dropout in this model)."""
        return self.layers[part].apply(params[part], {}, x, **options)[0]

    def apply(self, params, state, source_ids, *, target_ids=None, source_lengths=None, key=None, train=False):
        del key, train  # no dropout: the model is deterministic
        check_params(self, params, state, source_ids)
        return self.logits(params, source_ids, source_lengths, target_ids), state

    # ------------------------------------------------------------------------------ checks

    def _check_source(self, where: str, source_ids: Any, source_lengths: Any) -> None:
        check_rank(where, source_ids, 2, "batch, source_len", "source_ids")
        check_integer(where, source_ids, "source_ids")
        if source_lengths is not None:
            check_lengths(where, source_lengths, source_ids.shape[:1], source_ids.shape[1])
        check_token_ids(where, _real_ids(source_ids, source_lengths), self.source_vocab_size, "source_ids")

    def _check_target(self, where: str, source_ids: Any, target_ids: Any, target_lengths: Any = None) -> None:
        check_that(target_ids is not None, where, "target_ids [batch, target_len] (the tokens to predict)", "None")
        check_rank(where, target_ids, 2, "batch, target_len", "target_ids")
        check_that(target_ids.shape[0] == source_ids.shape[0], where, f"target_ids with the source's batch size "
                   f"{source_ids.shape[0]}", f"target_ids of shape {tuple(target_ids.shape)} for source_ids of shape "
                   f"{tuple(source_ids.shape)}")
        check_integer(where, target_ids, "target_ids")
        if target_lengths is not None:
            check_lengths(where, target_lengths, target_ids.shape[:1], target_ids.shape[1])
        check_token_ids(where, _real_ids(target_ids, target_lengths), self.target_vocab_size, "target_ids")

    # ----------------------------------------------------------------------------- encoder

    def encode(self, params, source_ids: jax.Array, source_lengths: jax.Array | None = None):
        """``(annotations [batch, source_len, 2 * hidden], mask [batch, source_len], s_0 [batch, decoder_hidden])``.

        ``annotations[b, j] = [h->_j, h<-_j]`` (zero past ``source_lengths[b]``), ``mask`` is
        ``j < source_lengths[b]`` (all true without lengths), ``s_0 = tanh(W_s h<-_1)``.
        """
        self._check_source(f"{self}.encode", source_ids, source_lengths)
        check_params(self, params, {}, source_ids)
        return self._encode(params, source_ids, source_lengths)

    def _encode(self, params, source_ids, source_lengths):
        batch, steps = source_ids.shape
        if source_lengths is None:
            mask = jnp.ones((batch, steps), jnp.bool_)
        else:  # padding is read as <pad>, whatever its ids: no NaN row can reach the gradients
            mask = sequence_mask(source_lengths, steps)
            source_ids = jnp.where(mask, source_ids, jnp.asarray(PAD_ID, source_ids.dtype))
        x = self._apply("source_embedding", params, source_ids)
        memory, (forward, backward) = self._apply("encoder", params, x, lengths=source_lengths)
        summary = backward if self.initial_state == "backward" else jnp.concatenate([forward, backward], axis=-1)
        return memory, mask, jnp.tanh(self._apply("initial_state", params, summary))

    # ----------------------------------------------------------------------------- decoder

    def _embedding_projection(self, params, embedded):
        """``E y W + b``: the target embedding's share of the decoder GRU's input projection."""
        w = params["decoder"]["input"]["w"][: self.embed_features]
        dtype = jnp.result_type(embedded.dtype, w.dtype)
        return jnp.dot(embedded.astype(dtype), w.astype(dtype)) + params["decoder"]["input"]["b"].astype(dtype)

    def _attend_and_update(self, params, carry, projected_t, memory, keys, mask):
        """One decoder step from ``s_{i-1}``: ``(s_i, c_i, alpha_i)``.

        ``projected_t`` is :meth:`_embedding_projection` of ``E y_{i-1}``; the context's share
        ``c_i C`` is added here, because ``c_i`` depends on ``s_{i-1}``.
        """
        context, weights = self._apply("attention", params, carry, context=memory, mask=mask, keys=keys)
        w_context = params["decoder"]["input"]["w"][self.embed_features:]
        dtype = jnp.result_type(context.dtype, w_context.dtype, projected_t.dtype)
        projected_t = projected_t.astype(dtype) + jnp.dot(context.astype(dtype), w_context.astype(dtype))
        new_carry, _ = self.layers["decoder"].step(params["decoder"], carry, projected_t)
        return new_carry, context, weights

    def _output_logits(self, params, state, embedded, context):
        """``W_o maxout(U_o s + V_o E y + C_o c)`` over any leading axes."""
        features = jnp.concatenate([state, embedded.astype(state.dtype), context.astype(state.dtype)], axis=-1)
        t = self._apply("readout", params, features)
        if self.readout == "maxout":
            t = jnp.max(t.reshape(t.shape[:-1] + (self.readout_features, 2)), axis=-1)
        return self._apply("output", params, t)

    def logits(self, params, source_ids: jax.Array, source_lengths: jax.Array | None,
               target_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Teacher forcing: ``(logits [batch, target_len, vocab], weights [batch, target_len, source_len])``.

        The decoder reads ``<bos>, y_1, ..., y_{T-1}`` (``target_ids`` shifted right), so
        ``logits[:, i]`` scores ``target_ids[:, i]`` given the true tokens before it.
        ``weights[b, i, j] = alpha_ij``: they sum to 1 over the real source positions and
        are 0 on padding (an attention heatmap). Steps past a target's end are computed
        from whatever ids are there and are meaningless; :meth:`loss` leaves them out.
        """
        where = f"{self}.logits"
        self._check_source(where, source_ids, source_lengths)
        self._check_target(where, source_ids, target_ids)
        check_params(self, params, {}, source_ids)
        return self._teacher_forcing(params, source_ids, source_lengths, target_ids)

    def _teacher_forcing(self, params, source_ids, source_lengths, target_ids):
        memory, mask, carry = self._encode(params, source_ids, source_lengths)
        keys = additive_attention_keys(params["attention"], memory, where=self)
        bos = jnp.full((target_ids.shape[0], 1), self.bos_id, target_ids.dtype)
        inputs = jnp.concatenate([bos, target_ids[:, :-1]], axis=1)
        embedded = self._apply("target_embedding", params, inputs)
        projected = self._embedding_projection(params, embedded)  # every step at once, outside the scan
        carry = carry.astype(jnp.result_type(carry.dtype, projected.dtype))
        previous = self.readout_state == "previous"

        def body(s, projected_t):
            new_s, context, weights = self._attend_and_update(params, s, projected_t, memory, keys, mask)
            return new_s, (s if previous else new_s, context, weights)

        _, (states, contexts, weights) = jax.lax.scan(body, carry, jnp.swapaxes(projected, 0, 1))
        states, contexts, weights = (jnp.swapaxes(a, 0, 1) for a in (states, contexts, weights))
        return self._output_logits(params, states, embedded, contexts), weights

    def loss(self, params, source_ids: jax.Array, source_lengths: jax.Array | None, target_ids: jax.Array,
             target_lengths: jax.Array | None = None) -> jax.Array:
        """Mean token cross-entropy (nats) under teacher forcing, over the real target tokens.

        ``L = -(1 / N) sum_b sum_{i < T_b} log p(y_{b,i} | y_{b,<i}, x_b)`` with ``T_b =
        target_lengths[b]`` (every step without lengths) and ``N = sum_b T_b``. Include the
        ``<eos>`` in ``target_ids`` and in its length (``Vocab.encode(..., add_eos=True)``) so
        the model learns to stop. Ids past a target's length are replaced by ``<pad>`` before
        they are read, so padding never changes the loss or its gradient.
        """
        where = f"{self}.loss"
        self._check_source(where, source_ids, source_lengths)
        self._check_target(where, source_ids, target_ids, target_lengths)
        check_params(self, params, {}, source_ids)
        mask = None if target_lengths is None else sequence_mask(target_lengths, target_ids.shape[1])
        if mask is not None:
            target_ids = jnp.where(mask, target_ids, jnp.asarray(self.pad_id, target_ids.dtype))
        logits, _ = self._teacher_forcing(params, source_ids, source_lengths, target_ids)
        return masked_cross_entropy(logits, target_ids, mask)

    # ---------------------------------------------------------------------------- decoding

    def init_decode_state(self, params, source_ids: jax.Array, source_lengths: jax.Array | None = None) -> dict:
        """The state before the first decoding step: every leaf has leading axis ``batch``.

        ``{"carry": s_0 [batch, decoder_hidden], "memory": annotations [batch, source_len,
        2 * hidden], "keys": U_a h_j [batch, source_len, attention_features], "mask": [batch,
        source_len] bool}``. The encoder runs once, here; each step then costs one attention
        over the source and one GRU step. Repeat every leaf along axis 0 for several
        hypotheses per sentence (beam search).
        """
        where = f"{self}.init_decode_state"
        self._check_source(where, source_ids, source_lengths)
        check_params(self, params, {}, source_ids)
        memory, mask, carry = self._encode(params, source_ids, source_lengths)
        keys = additive_attention_keys(params["attention"], memory, where=where)
        return {"carry": carry, "memory": memory, "keys": keys, "mask": mask}

    def step(self, params, state: dict, tokens: jax.Array) -> tuple[dict, jax.Array, jax.Array]:
        """One decoding step: ``(state, tokens [N]) -> (state, logits [N, vocab], weights [N, source_len])``.

        ``tokens`` are the previous tokens (``<bos>`` at the first step); ``logits`` score
        the next one. The same computation as one step of :meth:`logits`.
        """
        where = f"{self}.step"
        check_keys(where, state, _STATE_NAMES, "state")
        check_rank(where, tokens, 1, "N", "tokens")
        check_token_ids(where, tokens, self.target_vocab_size, "tokens")
        carry, memory, keys, mask = (state[name] for name in _STATE_NAMES)
        check_floating(where, carry, "state['carry']")
        check_shape(where, carry, (tokens.shape[0], self.decoder_hidden_size), "one row per token", "state['carry']")
        check_batch_axes(where, memory, tokens.shape, 2, "state['memory']", "the tokens'")
        check_bool_mask(where, mask, memory.shape[:-1], "state['memory']'s [N, source_len]", "state['mask']")
        check_params(self, params, {}, tokens[:, None])
        embedded = self._apply("target_embedding", params, tokens)
        projected = self._embedding_projection(params, embedded)
        carry = carry.astype(jnp.result_type(carry.dtype, projected.dtype))
        new_carry, context, weights = self._attend_and_update(params, carry, projected, memory, keys, mask)
        read = carry if self.readout_state == "previous" else new_carry
        return {**state, "carry": new_carry}, self._output_logits(params, read, embedded, context), weights

    def decode_step(self, params, state: dict, tokens: jax.Array, step: Any = None) -> tuple[jax.Array, dict]:
        """``(log_probs [N, vocab], state)``: :meth:`step` in the search interface of :mod:`jdl.decoding`.

        ``step`` (the position being decoded) is accepted for that interface and unused: the
        recurrent state already knows where it is.
        """
        del step
        state, logits, _ = self.step(params, state, tokens)
        return jax.nn.log_softmax(logits, axis=-1), state

    def step_fn(self, params) -> Callable[[dict, jax.Array, Any], tuple[jax.Array, dict]]:
        """``step_fn(state, tokens, step) -> (log_probs, state)`` with ``params`` bound (for a search)."""
        return functools.partial(self.decode_step, params)

    @checks_arguments
    def greedy_decode(self, params, source_ids: jax.Array, source_lengths: jax.Array | None,
                      max_length: PositiveInt) -> decoding.DecodeOutput:
        """Greedy decoding (:func:`jdl.decoding.greedy_search` over :meth:`step_fn`).

        Starts from ``<bos>`` and feeds back ``argmax_y log p(y | y_<t, x)`` until ``<eos>``
        or ``max_length`` tokens. Returns ``DecodeOutput(tokens [batch, max_length], lengths
        [batch], scores [batch])``: the tokens end with ``<eos>`` (counted in ``lengths``),
        then ``<pad>``, so ``Vocab.decode`` gives the text; ``scores`` is the sum of the
        chosen tokens' log-probabilities. One jitted loop, compiled once per model, shapes and
        ``max_length``.
        """
        where = f"{self}.greedy_decode"
        self._check_source(where, source_ids, source_lengths)
        return _search(self, params, source_ids, source_lengths, int(max_length), None, 0.0)

    @checks_arguments
    def beam_decode(self, params, source_ids: jax.Array, source_lengths: jax.Array | None, max_length: PositiveInt, *,
                    beam_size: PositiveInt = 4, length_penalty: float = 0.0) -> decoding.DecodeOutput:
        """Beam search (:func:`jdl.decoding.beam_search` over :meth:`step_fn`), best beam first.

        Hypotheses are ranked by ``log p(Y | x) / ((5 + |Y|) / 6) ** length_penalty`` (GNMT's
        penalty; the default 0 ranks by log-probability, as Bahdanau et al. did). Returns
        ``DecodeOutput(tokens [batch, beam_size, max_length], lengths [batch, beam_size],
        scores [batch, beam_size])``. The encoder runs once per sentence; its annotations and
        attention keys are repeated for the beams. Jitted, like :meth:`greedy_decode`.
        """
        where = f"{self}.beam_decode"
        self._check_source(where, source_ids, source_lengths)
        return _search(self, params, source_ids, source_lengths, int(max_length), int(beam_size), length_penalty)


RNNEncoderDecoder = AttentionSeq2Seq  # the name of the architecture (Cho et al.; Bahdanau et al.)


@functools.partial(jax.jit, static_argnums=(0, 4, 5, 6))
def _search(model: AttentionSeq2Seq, params, source_ids, source_lengths, max_length: int, beam_size: int | None,
            length_penalty: float) -> decoding.DecodeOutput:
    state = model.init_decode_state(params, source_ids, source_lengths)
    start = jnp.full(source_ids.shape[:1], model.bos_id, jnp.int32)
    ids = dict(max_length=max_length, eos_id=model.eos_id, pad_id=model.pad_id)
    if beam_size is None:
        return decoding.greedy_search(model.step_fn(params), state, start, **ids)
    return decoding.beam_search(model.step_fn(params), state, start, beam_size=beam_size,
                                length_penalty=length_penalty, **ids)
