"""The Transformer encoder-decoder (Vaswani et al., 2017, section 3), with training loss and cached decoding.

The model reads as the paper's section 3 does:

* **3.1 Encoder and decoder stacks.** ``N`` encoder blocks (self-attention, feed-forward)
  and ``N`` decoder blocks (masked self-attention, attention over the encoder's output,
  feed-forward), each sublayer wrapped as ``LayerNorm(x + Dropout(Sublayer(x)))``
  (:class:`jdl.nn.TransformerEncoderBlock`, :class:`jdl.nn.TransformerDecoderBlock`; with
  ``pre_ln`` the norm moves in front of each sublayer and each stack ends with one more).
* **3.2, 3.3 Attention, feed-forward**: inside the blocks.
* **3.4 Embeddings and softmax.** Token ids become ``E[x] sqrt(d_model)``; the output
  logits are ``h E^T`` with the target's embedding (``tie_output``) or ``h W + b``; with
  ``share_embeddings`` one table serves the source, the target and the output.
* **3.5 Positional encoding.** Sinusoids (or learned vectors, ``positional="learned"``)
  added to the embeddings, then dropout (section 5.4).

``TransformerConfig`` holds every size; :func:`transformer_base` is the paper's base model
(``d_model`` 512, 8 heads, 6 + 6 layers, feed-forward 2048, dropout 0.1, one shared
embedding table). :class:`Transformer` is a :class:`~jdl.nn.Layer` whose ``apply`` maps
``(source_ids, decoder_input_ids)`` to logits, with methods for the rest: :meth:`~Transformer.encode`,
:meth:`~Transformer.decode`, :meth:`~Transformer.loss` (teacher forcing, label smoothing),
:meth:`~Transformer.init_decode_state` and :meth:`~Transformer.decode_step` (one position at
a time against a key/value cache per decoder block: the ``step_fn`` :mod:`jdl.decoding`
drives), :meth:`~Transformer.greedy_decode` and :meth:`~Transformer.beam_decode`.

Token ids: ``pad_id`` (0) marks padding; sequences are ``[batch, length]`` int arrays,
padded at the end. Params::

    {"embedding"} or {"source_embedding", "target_embedding"}  (share_embeddings)
    {"source_positions", "target_positions"}                   (positional="learned")
    "encoder": {"block_0", ..., "norm" (pre-LN only)}, "decoder": {"block_0", ..., "norm"},
    "output": {"w", "b"}                                        (tie_output=False)

With ``scan_layers=True`` a stack's blocks are ``{"blocks": ...}`` instead, the same params
stacked on a leading axis (``jdl.nn.repeat.stack`` of the ``block_i`` trees, the same init
numbers), and each stack runs as one ``lax.scan``: the same function, compiled once per stack
whatever ``num_encoder_layers`` and ``num_decoder_layers`` are.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import models
    >>> config = models.TransformerConfig(source_vocab_size=12, target_vocab_size=12, d_model=16, num_heads=2,
    ...                                   num_encoder_layers=1, num_decoder_layers=1, mlp_features=32, max_length=8)
    >>> model = models.Transformer(config)
    >>> source, target = jnp.array([[5, 6, 7, 0]]), jnp.array([[8, 9, 2]])
    >>> params, state = jax.jit(model.init)(jax.random.key(0), (source, target))  # one program, not one per op
    >>> logits, _ = jax.jit(model.apply)(params, state, (source, target))
    >>> logits.shape
    (1, 3, 12)
    >>> float(jax.jit(model.loss)(params, source, target)) > 0
    True
"""
from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import field
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp

from jdl import decoding, losses
from jdl._checks import (
    Positive, PositiveInt, Rate, check_declared, check_divisible, check_rank, check_rate, check_that, check_token_id,
    check_token_ids, check_tuple,
)
from jdl.nn import (
    Dense, Dropout, Embedding, LayerNorm, LearnedPositionalEmbedding, SinusoidalPositionalEncoding,
    TransformerDecoderBlock, TransformerEncoderBlock, attend, causal_mask, padding_mask,
)
from jdl.nn.core import KW_ONLY, Layer, check_params, child_key
from jdl.nn import repeat
from jdl.nn.scaled_dot_product import Implementation as AttentionImplementation
from jdl.summaries import count_params  # re-exported: jdl.models.count_params is jdl.summaries'

__all__ = ["TransformerConfig", "transformer_base", "Transformer", "EncoderDecoderTransformer", "DecodeState",
           "count_params"]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Every size and switch of the encoder-decoder (defaults: the paper's base model)."""

    source_vocab_size: PositiveInt
    target_vocab_size: PositiveInt
    d_model: PositiveInt = 512
    num_heads: PositiveInt = 8
    num_encoder_layers: PositiveInt = 6
    num_decoder_layers: PositiveInt = 6
    mlp_features: PositiveInt = 2048
    dropout_rate: Rate = 0.1
    attention_dropout_rate: Rate = 0.0
    max_length: PositiveInt = 256  # the longest source or target the positional encodings cover
    pre_ln: bool = False  # True: LayerNorm before each sublayer (and at the end of each stack)
    share_embeddings: bool = False  # one table for source and target (the vocabularies must match)
    tie_output: bool = True  # logits = h E_target^T (else a Dense layer)
    positional: Literal["sinusoidal", "learned"] = "sinusoidal"
    activation: Literal["gelu", "relu"] = "relu"
    epsilon: Positive = 1e-6
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    param_dtype: Any = jnp.float32
    attention_implementation: AttentionImplementation = "auto"
    # True: each stack's blocks have stacked params ({"blocks": [n, ...] leaves}) and run as one
    # lax.scan (compiled once, whatever the depth); cached decoding still walks the blocks.
    scan_layers: bool = False

    def __post_init__(self):
        where = "TransformerConfig"
        check_declared(where, TransformerConfig, self)
        check_divisible(where, "d_model", self.d_model, "num_heads", self.num_heads)
        if self.share_embeddings and self.source_vocab_size != self.target_vocab_size:
            raise ValueError(f"{where}: share_embeddings needs one vocabulary, got source_vocab_size="
                             f"{self.source_vocab_size} and target_vocab_size={self.target_vocab_size}")
        for token in ("pad_id", "bos_id", "eos_id"):
            check_token_id(where, token, getattr(self, token), self.target_vocab_size, "the target vocabulary")


def transformer_base(source_vocab_size: int, target_vocab_size: int | None = None, **overrides) -> TransformerConfig:
    """The paper's base model (Table 3): ``d_model`` 512, 8 heads, 6 + 6 layers, ``d_ff`` 2048,
    dropout 0.1, post-LN, sinusoidal positions, and (with one vocabulary) the embedding
    shared by source, target and output. With the paper's 37000-token shared vocabulary it
    has about 63M params (the paper's table rounds it to 65M)."""
    target_vocab_size = source_vocab_size if target_vocab_size is None else target_vocab_size
    shared = source_vocab_size == target_vocab_size
    options = dict(d_model=512, num_heads=8, num_encoder_layers=6, num_decoder_layers=6, mlp_features=2048,
                   dropout_rate=0.1, share_embeddings=shared, tie_output=True)
    options.update(overrides)
    return TransformerConfig(source_vocab_size, target_vocab_size, **options)


# The numbers that ``init`` folds into its key for each part (``jax.random.fold_in(key, k)``).
# They are fixed, not the parts' order, so that adding a part never changes the others'
# initial values (and saved results stay reproducible): the embeddings, positions, final
# norms (one key for both stacks: a LayerNorm starts at ones and zeros whatever its key)
# and the output layer, then from FIRST_BLOCK_KEY on one key per block, encoder first.
SOURCE_EMBEDDING_KEY, TARGET_EMBEDDING_KEY = 0, 1  # a shared table takes the source's
SOURCE_POSITIONS_KEY, TARGET_POSITIONS_KEY = 2, 3
FINAL_NORM_KEY = 4
OUTPUT_KEY = 5
FIRST_BLOCK_KEY = 10


class Transformer(Layer):
    """The encoder-decoder for ``config``; see the module docstring.

    ``init(key, (source_ids, decoder_inputs))``; ``apply(params, state, (source_ids,
    decoder_inputs), *, key=None, train=False) -> (logits, state)``. Dropout needs ``key``
    when ``train=True``; the encoder gets ``fold_in(key, 0)``, the decoder ``fold_in(key, 1)``.
    """

    config: TransformerConfig
    _: KW_ONLY
    name: str = "transformer"

    # 3.4, 3.5: embeddings (one table when shared), positions, dropout.
    source_embedding: Embedding = field(init=False, repr=False, compare=False)
    target_embedding: Embedding = field(init=False, repr=False, compare=False)
    positions: Layer = field(init=False, repr=False, compare=False)
    dropout: Dropout = field(init=False, repr=False, compare=False)
    # 3.1: the stacks (the final LayerNorm of each in pre-LN), and the output layer when not tied.
    encoder_blocks: tuple = field(init=False, repr=False, compare=False)
    decoder_blocks: tuple = field(init=False, repr=False, compare=False)
    final_norm: LayerNorm = field(init=False, repr=False, compare=False)
    output: Dense = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        config = self.config
        if not isinstance(config, TransformerConfig):
            raise TypeError(f"Transformer: expected a TransformerConfig, got {type(config).__name__}")
        d_model, dtype = config.d_model, config.param_dtype
        source_embedding = Embedding(config.source_vocab_size, d_model, param_dtype=dtype)
        positions = (SinusoidalPositionalEncoding(config.max_length) if config.positional == "sinusoidal"
                     else LearnedPositionalEmbedding(config.max_length, param_dtype=dtype))
        parts = dict(
            source_embedding=source_embedding,
            target_embedding=(source_embedding if config.share_embeddings
                              else Embedding(config.target_vocab_size, d_model, param_dtype=dtype)),
            positions=positions,
            dropout=Dropout(config.dropout_rate),
            encoder_blocks=(self._block(TransformerEncoderBlock),) * config.num_encoder_layers,
            decoder_blocks=(self._block(TransformerDecoderBlock),) * config.num_decoder_layers,
            final_norm=LayerNorm(config.epsilon, param_dtype=dtype),
            output=Dense(config.target_vocab_size, param_dtype=dtype),
        )
        for part, layer in parts.items():
            object.__setattr__(self, part, layer)

    def _block(self, kind: type) -> Layer:
        config = self.config
        return kind(config.num_heads, config.mlp_features, dropout_rate=config.dropout_rate,
                    attention_dropout_rate=config.attention_dropout_rate, pre_ln=config.pre_ln,
                    activation=config.activation, epsilon=config.epsilon, param_dtype=config.param_dtype,
                    attention_implementation=config.attention_implementation)

    def __repr__(self) -> str:  # the sizes that tell models apart, not all of the config
        config = self.config
        return (f"Transformer(d_model={config.d_model}, num_heads={config.num_heads}, layers="
                f"{config.num_encoder_layers}+{config.num_decoder_layers}, mlp_features={config.mlp_features}"
                + (", pre_ln=True)" if config.pre_ln else ")"))

    def num_params(self, params) -> int:
        """The number of scalars in ``params`` (:func:`count_params`)."""
        return count_params(params)

    # ------------------------------------------------------------------------------ params

    def _table(self, side: str) -> str:
        """The params key of the ``"source"`` or ``"target"`` embedding table."""
        return "embedding" if self.config.share_embeddings else f"{side}_embedding"

    def init(self, key, x):
        check_tuple(self, x, 2, "x", "a pair (source_ids, decoder_inputs)")
        source, target = x
        config = self.config
        part_key = functools.partial(jax.random.fold_in, key)

        def features(ids):  # the embedded ids' shape: what the positions and the blocks read
            return jax.ShapeDtypeStruct(tuple(ids.shape) + (config.d_model,), config.param_dtype)

        params = {self._table("source"): self.source_embedding.init(part_key(SOURCE_EMBEDDING_KEY), source)[0]}
        if not config.share_embeddings:
            params["target_embedding"] = self.target_embedding.init(part_key(TARGET_EMBEDDING_KEY), target)[0]
        if config.positional == "learned":
            params["source_positions"] = self.positions.init(part_key(SOURCE_POSITIONS_KEY), features(source))[0]
            params["target_positions"] = self.positions.init(part_key(TARGET_POSITIONS_KEY), features(target))[0]
        first_decoder_block = FIRST_BLOCK_KEY + config.num_encoder_layers
        params["encoder"] = self._init_stack(self.encoder_blocks, key, FIRST_BLOCK_KEY, features(source))
        params["decoder"] = self._init_stack(self.decoder_blocks, key, first_decoder_block, features(target))
        if not config.tie_output:
            params["output"] = self.output.init(part_key(OUTPUT_KEY), features(target))[0]
        return params, {}

    def _init_stack(self, blocks, key, first_key: int, x) -> dict:
        """``{"block_0", ..., "norm" (pre-LN)}``; block ``i`` from ``fold_in(key, first_key + i)``.
        With ``scan_layers`` the same blocks' params stacked: ``{"blocks", "norm"}``."""
        per_block = [block.init(jax.random.fold_in(key, first_key + i), x)[0] for i, block in enumerate(blocks)]
        params = ({"blocks": repeat.stack(per_block)} if self.config.scan_layers
                  else {f"block_{i}": block_params for i, block_params in enumerate(per_block)})
        if self.config.pre_ln:
            params["norm"] = self.final_norm.init(jax.random.fold_in(key, FINAL_NORM_KEY), x)[0]
        return params

    # ------------------------------------------------------------------------- the model

    def _check_ids(self, where: str, ids: Any, vocab_size: int, what: str) -> None:
        check_rank(where, ids, 2, "batch, length", what)
        check_token_ids(where, ids, vocab_size, what)
        check_that(ids.shape[1] <= self.config.max_length, where, f"{what} of at most max_length="
                   f"{self.config.max_length} tokens (the positional encodings' range)", f"length {ids.shape[1]}")

    def _embed(self, params, side: str, ids, offset, key, train) -> jax.Array:
        """3.4 and 3.5: ``Dropout(E[ids] sqrt(d_model) + PE[offset + t])``."""
        embedding = self.source_embedding if side == "source" else self.target_embedding
        x, _ = embedding.apply(params[self._table(side)], {}, ids)
        x, _ = self.positions.apply(params.get(f"{side}_positions", {}), {}, x * math.sqrt(self.config.d_model),
                                    offset=offset)
        return self.dropout.apply({}, {}, x, key=key, train=train)[0]

    def _block_params(self, stack_params, index: int) -> dict:
        """Block ``index``'s params, stored on their own or (``scan_layers``) in the stack."""
        if self.config.scan_layers:
            return jax.tree.map(lambda leaf: leaf[index], stack_params["blocks"])
        return stack_params[f"block_{index}"]

    def _run_stack(self, blocks, stack_params, x, key, train, **kwargs) -> jax.Array:
        """``x`` through the blocks in order, block ``i`` with dropout key ``fold_in(key, 1 + i)``:
        unrolled, or one ``lax.scan`` over the stacked params (the same function)."""
        if not self.config.scan_layers:
            for index, block in enumerate(blocks):
                x, _ = block.apply(stack_params[f"block_{index}"], {}, x, key=child_key(key, 1 + index), train=train,
                                   **kwargs)
            return x

        def one_block(h, layer):
            block_params, index = layer
            return blocks[0].apply(block_params, {}, h, key=child_key(key, 1 + index), train=train, **kwargs)[0], None

        return jax.lax.scan(one_block, x, (stack_params["blocks"], jnp.arange(len(blocks), dtype=jnp.int32)))[0]

    def _end_of_stack(self, stack_params, x) -> jax.Array:
        """Pre-LN stacks end with one more LayerNorm; post-LN blocks already end with one."""
        return self.final_norm.apply(stack_params["norm"], {}, x)[0] if self.config.pre_ln else x

    def encode(self, params, source_ids, *, key=None, train=False) -> jax.Array:
        """The encoder's output ``[batch, source_length, d_model]`` (self-attention over the real tokens)."""
        self._check_ids(f"{self}.encode", source_ids, self.config.source_vocab_size, "source_ids")
        x = self._embed(params, "source", source_ids, 0, child_key(key, 0), train)
        mask = padding_mask(source_ids != self.config.pad_id)
        x = self._run_stack(self.encoder_blocks, params["encoder"], x, key, train, mask=mask)
        return self._end_of_stack(params["encoder"], x)

    def decode(self, params, memory, source_ids, decoder_inputs, *, key=None, train=False) -> jax.Array:
        """Logits ``[batch, target_length, target_vocab]``: position ``t`` scores token ``t + 1``
        given ``decoder_inputs[:, :t + 1]`` (causal self-attention) and the source (``memory``,
        the encoder's output, attended where ``source_ids`` are real tokens)."""
        self._check_ids(f"{self}.decode", decoder_inputs, self.config.target_vocab_size, "decoder_inputs")
        x = self._embed(params, "target", decoder_inputs, 0, child_key(key, 0), train)
        masks = dict(self_mask=causal_mask(decoder_inputs.shape[1]),
                     cross_mask=padding_mask(source_ids != self.config.pad_id))
        x = self._run_stack(self.decoder_blocks, params["decoder"], x, key, train, context=memory, **masks)
        return self._logits(params, self._end_of_stack(params["decoder"], x))

    def _logits(self, params, h) -> jax.Array:
        """3.4: ``h E^T`` with the target's table (tied), else ``h W + b``."""
        if self.config.tie_output:
            return attend(params[self._table("target")], h)
        return self.output.apply(params["output"], {}, h)[0]

    def apply(self, params, state, x, *, key=None, train=False):
        check_tuple(self, x, 2, "x", "a pair (source_ids, decoder_inputs)")
        source_ids, decoder_inputs = x
        self._check_ids(f"{self}.apply", source_ids, self.config.source_vocab_size, "source_ids")
        self._check_ids(f"{self}.apply", decoder_inputs, self.config.target_vocab_size, "decoder_inputs")
        check_params(self, params, state, x)
        memory = self.encode(params, source_ids, key=child_key(key, 0), train=train)
        return self.decode(params, memory, source_ids, decoder_inputs, key=child_key(key, 1), train=train), state

    def cross_attention(self, params, source_ids, decoder_inputs) -> list[jax.Array]:
        """Each decoder block's cross-attention weights ``[batch, heads, target_length, source_length]``."""
        memory = self.encode(params, source_ids)
        self._check_ids(f"{self}.cross_attention", decoder_inputs, self.config.target_vocab_size, "decoder_inputs")
        x = self._embed(params, "target", decoder_inputs, 0, None, False)
        masks = dict(self_mask=causal_mask(decoder_inputs.shape[1]),
                     cross_mask=padding_mask(source_ids != self.config.pad_id))
        weights = []
        for index, block in enumerate(self.decoder_blocks):
            block_params = self._block_params(params["decoder"], index)
            weights.append(block.cross_attention_weights(block_params, x, context=memory, **masks))
            x, _ = block.apply(block_params, {}, x, context=memory, **masks)
        return weights

    # --------------------------------------------------------------------------- training

    def shift_right(self, target_ids: jax.Array) -> jax.Array:
        """The decoder's inputs for teacher forcing: ``bos`` then ``target_ids[:, :-1]``."""
        bos = jnp.full(target_ids.shape[:1] + (1,), self.config.bos_id, target_ids.dtype)
        return jnp.concatenate([bos, target_ids[:, :-1]], axis=1)

    def loss(self, params, source_ids, target_ids, *, key=None, train=False, label_smoothing: float = 0.0):
        """Mean token cross-entropy (nats) of ``target_ids`` (with ``eos``, padded with ``pad_id``)
        under teacher forcing, over the real tokens; ``label_smoothing`` mixes the one-hot
        targets with the uniform distribution (0.1 in the paper, section 5.4)."""
        where = f"{self}.loss"
        self._check_ids(where, target_ids, self.config.target_vocab_size, "target_ids")
        check_rate(where, "label_smoothing", label_smoothing)
        logits, _ = self.apply(params, {}, (source_ids, self.shift_right(target_ids)), key=key, train=train)
        per_token = losses.softmax_cross_entropy_with_integer_labels(logits, target_ids,
                                                                     label_smoothing=label_smoothing)
        return losses.masked_mean(per_token, target_ids != self.config.pad_id)

    # --------------------------------------------------------------------------- decoding

    def init_decode_state(self, params, source_ids, max_length: int) -> DecodeState:
        """Encode the source, project it once for every decoder block's cross-attention, and make empty
        self-attention caches for ``max_length`` decoder positions."""
        check_that(isinstance(max_length, int) and 0 < max_length <= self.config.max_length, f"{self}.init_decode_"
                   f"state", f"max_length in [1, {self.config.max_length}] (the positional encodings' range)", repr(max_length))
        memory = self.encode(params, source_ids)
        caches = tuple(block.self_attention.init_cache(self._block_params(params["decoder"], index)["self_attention"],
                                                       source_ids.shape[:1], max_length, dtype=memory.dtype)
                       for index, block in enumerate(self.decoder_blocks))
        context = tuple(block.context_cache(self._block_params(params["decoder"], index), memory)
                        for index, block in enumerate(self.decoder_blocks))
        return DecodeState(context, source_ids != self.config.pad_id, caches)

    def decode_step(self, params, state: DecodeState, tokens, step) -> tuple[jax.Array, DecodeState]:
        """Log-probabilities of the next token after ``tokens`` ``[batch]`` at position ``step``.

        ``(log_probs [batch, target_vocab], new_state)``: the ``step_fn`` of
        :func:`jdl.decoding.greedy_search` / :func:`~jdl.decoding.beam_search` (with ``params``
        bound). Same logits as :meth:`decode` at that position, for the same prefix.
        """
        where = f"{self}.decode_step"
        check_rank(where, tokens, 1, "batch", "tokens")
        check_token_ids(where, tokens, self.config.target_vocab_size, "tokens")
        x = self._embed(params, "target", tokens[:, None], step, None, False)
        cross_mask = padding_mask(state.source_valid)
        caches = []
        for index, block in enumerate(self.decoder_blocks):
            x, cache = block.decode_step(self._block_params(params["decoder"], index), x, state.caches[index],
                                         context=state.context[index], cross_mask=cross_mask)
            caches.append(cache)
        logits = self._logits(params, self._end_of_stack(params["decoder"], x))[:, 0]
        return jax.nn.log_softmax(logits.astype(jnp.float32)), state._replace(caches=tuple(caches))

    def greedy_decode(self, params, source_ids, max_length: int) -> decoding.DecodeOutput:
        """Greedy decoding of up to ``max_length`` tokens (jit it with ``max_length`` static)."""
        state = self.init_decode_state(params, source_ids, max_length)
        start = jnp.full(source_ids.shape[:1], self.config.bos_id, jnp.int32)
        return decoding.greedy_search(functools.partial(self.decode_step, params), state, start,
                                      max_length=max_length, eos_id=self.config.eos_id, pad_id=self.config.pad_id)

    def beam_decode(self, params, source_ids, max_length: int, *, beam_size: int = 4,
                    length_penalty: float = 0.6) -> decoding.DecodeOutput:
        """Beam search (``length_penalty`` is GNMT's alpha; 0.6 in the paper), best beam first."""
        state = self.init_decode_state(params, source_ids, max_length)
        start = jnp.full(source_ids.shape[:1], self.config.bos_id, jnp.int32)
        return decoding.beam_search(functools.partial(self.decode_step, params), state, start, beam_size=beam_size,
                                    max_length=max_length, eos_id=self.config.eos_id,
                                    length_penalty=length_penalty, pad_id=self.config.pad_id)


class DecodeState(NamedTuple):
    """What one decoding step needs: the encoder's output projected for each decoder block's
    cross-attention, the source's mask, the self-attention caches."""

    context: tuple  # one full KVCache per decoder layer: the encoder's output as its keys and values
    source_valid: jax.Array  # [batch, source_length], True on real tokens
    caches: tuple  # one KVCache per decoder layer


EncoderDecoderTransformer = Transformer  # the name this model had when `Transformer` was its constructor
