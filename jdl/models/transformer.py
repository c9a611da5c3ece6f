"""The Transformer encoder-decoder (Vaswani et al., 2017), with training loss and cached decoding.

``TransformerConfig`` holds every size; :func:`transformer_base` is the paper's base model
(``d_model`` 512, 8 heads, 6 + 6 layers, feed-forward 2048, dropout 0.1, one embedding
table shared by the source, the target and the output projection). :func:`Transformer`
builds the model, a :class:`~jdl.nn.Layer` whose ``apply`` maps ``(source_ids,
decoder_input_ids)`` to logits, with methods for the rest:

* ``encode(params, source_ids)``: embeddings ``E[x] sqrt(d_model)`` plus positions,
  dropout, the encoder blocks (self-attention masked to the source's real tokens);
* ``decode(params, memory, source_ids, decoder_inputs)``: the same for the target with
  causal self-attention and cross-attention over ``memory``; logits ``h E^T`` (tied) or
  ``h W + b``;
* ``loss(params, source_ids, target_ids)``: teacher forcing (the decoder reads ``bos``
  followed by the target shifted right), mean cross-entropy over the target's real tokens
  (those before padding, the ``eos`` included), optional label smoothing;
* ``init_decode_state`` and ``decode_step``: one decoder position at a time with a
  key/value cache per decoder layer (each step attends over the cache instead of re-running
  the prefix), the ``step_fn`` that :mod:`jdl.decoding` drives;
* ``greedy_decode`` and ``beam_decode``.

Token ids: ``pad_id`` (0) marks padding; sequences are ``[batch, length]`` int arrays,
padded at the end. Params::

    {"embedding"} or {"source_embedding", "target_embedding"}  (share_embeddings)
    {"source_positions", "target_positions"}                   (positional="learned")
    "encoder": {"block_0", ..., "norm" (pre-LN only)}, "decoder": {"block_0", ..., "norm"},
    "output": {"w", "b"}                                        (tie_output=False)

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import models
    >>> config = models.TransformerConfig(source_vocab_size=12, target_vocab_size=12, d_model=16, num_heads=2,
    ...                                   num_encoder_layers=1, num_decoder_layers=1, mlp_features=32, max_length=8)
    >>> model = models.Transformer(config)
    >>> source, target = jnp.array([[5, 6, 7, 0]]), jnp.array([[8, 9, 2]])
    >>> params, state = model.init(jax.random.key(0), (source, target))
    >>> logits, _ = model.apply(params, state, (source, target))
    >>> logits.shape
    (1, 3, 12)
    >>> float(model.loss(params, source, target)) > 0
    True
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jdl import decoding, losses
from jdl._checks import check_keys, check_rank, check_token_ids
from jdl.nn.attention import causal_mask, init_kv_cache, padding_mask
from jdl.nn.core import _LegacyLayerBase, Layer, child_key, make_layer
from jdl.nn.dense import Dense
from jdl.nn.dropout import Dropout
from jdl.nn.embed import Embedding, attend
from jdl.nn.norm import LayerNorm
from jdl.nn.position import LearnedPositionalEmbedding, SinusoidalPositionalEncoding
from jdl.nn.transformer import TransformerDecoderBlock, TransformerEncoderBlock

__all__ = ["TransformerConfig", "transformer_base", "Transformer", "EncoderDecoderTransformer", "DecodeState"]


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """Every size and switch of the encoder-decoder (defaults: the paper's base model)."""

    source_vocab_size: int
    target_vocab_size: int
    d_model: int = 512
    num_heads: int = 8
    num_encoder_layers: int = 6
    num_decoder_layers: int = 6
    mlp_features: int = 2048
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.0
    max_length: int = 256  # the longest source or target the positional encodings cover
    pre_ln: bool = False  # True: LayerNorm before each sublayer (and at the end of each stack)
    share_embeddings: bool = False  # one table for source and target (the vocabularies must match)
    tie_output: bool = True  # logits = h E_target^T (else a Dense layer)
    positional: str = "sinusoidal"  # or "learned"
    activation: str = "relu"
    epsilon: float = 1e-6
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    param_dtype: Any = jnp.float32
    attention_implementation: str = "auto"

    def __post_init__(self):
        where = "TransformerConfig"
        for name in ("source_vocab_size", "target_vocab_size", "d_model", "num_heads", "mlp_features", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{where}: expected {name} to be a positive int, got {value!r}")
        for name in ("num_encoder_layers", "num_decoder_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{where}: expected {name} to be an int >= 1, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(f"{where}: expected d_model divisible by num_heads, got d_model={self.d_model}, "
                             f"num_heads={self.num_heads}")
        if self.share_embeddings and self.source_vocab_size != self.target_vocab_size:
            raise ValueError(f"{where}: share_embeddings needs one vocabulary, got source_vocab_size="
                             f"{self.source_vocab_size} and target_vocab_size={self.target_vocab_size}")
        if self.positional not in ("sinusoidal", "learned"):
            raise ValueError(f"{where}: expected positional 'sinusoidal' or 'learned', got {self.positional!r}")
        for name in ("pad_id", "bos_id", "eos_id"):
            value = getattr(self, name)
            if not 0 <= value < self.target_vocab_size:
                raise ValueError(f"{where}: expected {name} in [0, {self.target_vocab_size}), got {value}")


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


class DecodeState(NamedTuple):
    """What one decoding step needs: the encoder's output, the source's mask, the caches."""

    memory: jax.Array  # [batch, source_length, d_model]
    source_valid: jax.Array  # [batch, source_length], True on real tokens
    caches: tuple  # one KVCache per decoder layer


@dataclasses.dataclass(frozen=True, eq=False)
class EncoderDecoderTransformer(_LegacyLayerBase):
    """The model :func:`Transformer` builds; see the module docstring."""

    config: TransformerConfig
    encoder_blocks: tuple
    decoder_blocks: tuple

    def num_params(self, params) -> int:
        """The number of scalars in ``params``."""
        return num_params(params)

    # -- pieces

    @property
    def _source_table(self) -> str:
        return "embedding" if self.config.share_embeddings else "source_embedding"

    @property
    def _target_table(self) -> str:
        return "embedding" if self.config.share_embeddings else "target_embedding"

    def _check_ids(self, where: str, ids: Any, vocab_size: int, what: str) -> None:
        check_rank(where, ids, 2, "batch, length", what)
        check_token_ids(where, ids, vocab_size, what)
        if ids.shape[1] > self.config.max_length:
            raise ValueError(f"{where}: expected {what} of at most max_length={self.config.max_length} tokens "
                             f"(the positional encodings' range), got length {ids.shape[1]}")

    def _embed(self, params, table: str, positions_name: str, ids, offset, key, train):
        config = self.config
        x = jnp.take(params[table]["embedding"], ids, axis=0) * math.sqrt(config.d_model)
        if config.positional == "sinusoidal":
            x, _ = SinusoidalPositionalEncoding(config.max_length).apply({}, {}, x, offset=offset)
        else:
            x, _ = LearnedPositionalEmbedding(config.max_length).apply(params[positions_name], {}, x, offset=offset)
        x, _ = Dropout(config.dropout_rate).apply({}, {}, x, key=key, train=train)
        return x

    def _final_norm(self, params, x):
        if self.config.pre_ln:
            x, _ = LayerNorm(self.config.epsilon).apply(params["norm"], {}, x)
        return x

    def _logits(self, params, h):
        if self.config.tie_output:
            return attend(params[self._target_table], h)
        return Dense(self.config.target_vocab_size).apply(params["output"], {}, h)[0]

    # -- the two halves

    def encode(self, params, source_ids, *, key=None, train=False) -> jax.Array:
        """The encoder's output ``[batch, source_length, d_model]``."""
        where = f"{self.description}.encode"
        self._check_ids(where, source_ids, self.config.source_vocab_size, "source_ids")
        x = self._embed(params, self._source_table, "source_positions", source_ids, 0, child_key(key, 0), train)
        mask = padding_mask(source_ids != self.config.pad_id)
        for index, block in enumerate(self.encoder_blocks):
            x, _ = block.apply(params["encoder"][f"block_{index}"], {}, x, key=child_key(key, 1 + index),
                               train=train, mask=mask)
        return self._final_norm(params["encoder"], x)

    def decode(self, params, memory, source_ids, decoder_inputs, *, key=None, train=False) -> jax.Array:
        """Logits ``[batch, target_length, target_vocab]``: position ``t`` scores token ``t + 1``
        given ``decoder_inputs[:, :t + 1]`` and the source."""
        return self._decode(params, memory, source_ids, decoder_inputs, key, train, False)[0]

    def cross_attention(self, params, source_ids, decoder_inputs) -> list[jax.Array]:
        """Each decoder layer's cross-attention weights ``[batch, heads, target_length, source_length]``."""
        memory = self.encode(params, source_ids)
        return self._decode(params, memory, source_ids, decoder_inputs, None, False, True)[1]

    def _decode(self, params, memory, source_ids, decoder_inputs, key, train, collect_weights):
        where = f"{self.description}.decode"
        self._check_ids(where, decoder_inputs, self.config.target_vocab_size, "decoder_inputs")
        x = self._embed(params, self._target_table, "target_positions", decoder_inputs, 0, child_key(key, 0), train)
        self_mask = causal_mask(decoder_inputs.shape[1])
        cross_mask = padding_mask(source_ids != self.config.pad_id)
        weights = []
        for index, block in enumerate(self.decoder_blocks):
            x, _ = block.apply(params["decoder"][f"block_{index}"], {}, x, context=memory,
                               key=child_key(key, 1 + index), train=train, self_mask=self_mask,
                               cross_mask=cross_mask, return_cross_weights=collect_weights)
            if collect_weights:
                x, layer_weights = x
                weights.append(layer_weights)
        return self._logits(params, self._final_norm(params["decoder"], x)), weights

    # -- training

    def shift_right(self, target_ids: jax.Array) -> jax.Array:
        """The decoder's inputs for teacher forcing: ``bos`` then ``target_ids[:, :-1]``."""
        bos = jnp.full(target_ids.shape[:1] + (1,), self.config.bos_id, target_ids.dtype)
        return jnp.concatenate([bos, target_ids[:, :-1]], axis=1)

    def loss(self, params, source_ids, target_ids, *, key=None, train=False, label_smoothing: float = 0.0):
        """Mean token cross-entropy (nats) of ``target_ids`` (with ``eos``, padded with ``pad_id``)
        under teacher forcing; ``label_smoothing`` mixes the one-hot targets with the uniform
        distribution (0.1 in the paper)."""
        where = f"{self.description}.loss"
        self._check_ids(where, target_ids, self.config.target_vocab_size, "target_ids")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"{where}: expected label_smoothing in [0, 1), got {label_smoothing}")
        logits, _ = self.apply(params, {}, (source_ids, self.shift_right(target_ids)), key=key, train=train)
        per_token = losses.softmax_cross_entropy_with_integer_labels(logits, target_ids,
                                                                     label_smoothing=label_smoothing)
        real = (target_ids != self.config.pad_id).astype(per_token.dtype)
        return jnp.sum(per_token * real) / jnp.maximum(jnp.sum(real), 1.0)

    # -- decoding

    def init_decode_state(self, params, source_ids, max_length: int) -> DecodeState:
        """Encode the source and make empty caches for ``max_length`` decoder positions."""
        where = f"{self.description}.init_decode_state"
        if not isinstance(max_length, int) or not 0 < max_length <= self.config.max_length:
            raise ValueError(f"{where}: expected max_length in [1, {self.config.max_length}] (the positional "
                             f"encodings' range), got {max_length!r}")
        memory = self.encode(params, source_ids)
        batch = source_ids.shape[:1]
        caches = tuple(init_kv_cache(params["decoder"][f"block_{i}"]["self_attention"], batch, max_length,
                                     dtype=memory.dtype) for i in range(len(self.decoder_blocks)))
        return DecodeState(memory, source_ids != self.config.pad_id, caches)

    def decode_step(self, params, state: DecodeState, tokens, step) -> tuple[jax.Array, DecodeState]:
        """Log-probabilities of the next token after ``tokens`` ``[batch]`` at position ``step``.

        ``(log_probs [batch, target_vocab], new_state)``: the ``step_fn`` of
        :func:`jdl.decoding.greedy_search` / :func:`~jdl.decoding.beam_search` (with ``params``
        bound). Same logits as :meth:`decode` at that position, for the same prefix.
        """
        where = f"{self.description}.decode_step"
        check_rank(where, tokens, 1, "batch", "tokens")
        check_token_ids(where, tokens, self.config.target_vocab_size, "tokens")
        x = self._embed(params, self._target_table, "target_positions", tokens[:, None], step, None, False)
        cross_mask = padding_mask(state.source_valid)
        caches = []
        for index, block in enumerate(self.decoder_blocks):
            (x, cache), _ = block.apply(params["decoder"][f"block_{index}"], {}, x, context=state.memory,
                                        cross_mask=cross_mask, cache=state.caches[index])
            caches.append(cache)
        logits = self._logits(params, self._final_norm(params["decoder"], x))[:, 0]
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


def num_params(params) -> int:
    """The number of scalars in a params tree."""
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(params)))


def Transformer(config: TransformerConfig, *, name: str = "transformer") -> EncoderDecoderTransformer:
    """The encoder-decoder for ``config``; see the module docstring.

    ``init(key, (source_ids, decoder_inputs))``; ``apply(params, state, (source_ids,
    decoder_inputs), *, key=None, train=False) -> (logits, state)``. ``model.num_params(params)``
    counts the params.
    """
    if not isinstance(config, TransformerConfig):
        raise TypeError(f"Transformer: expected a TransformerConfig, got {type(config).__name__}")
    block_options = dict(dropout_rate=config.dropout_rate, attention_dropout_rate=config.attention_dropout_rate,
                         pre_ln=config.pre_ln, activation=config.activation, epsilon=config.epsilon,
                         param_dtype=config.param_dtype, attention_implementation=config.attention_implementation)
    encoder_blocks = tuple(TransformerEncoderBlock(config.num_heads, config.mlp_features, **block_options)
                           for _ in range(config.num_encoder_layers))
    decoder_blocks = tuple(TransformerDecoderBlock(config.num_heads, config.mlp_features, **block_options)
                           for _ in range(config.num_decoder_layers))
    description = (f"Transformer(d_model={config.d_model}, num_heads={config.num_heads}, layers="
                   f"{config.num_encoder_layers}+{config.num_decoder_layers}, mlp_features={config.mlp_features}"
                   + (", pre_ln=True)" if config.pre_ln else ")"))
    holder = {}

    def check_pair(where, x):
        if not isinstance(x, (tuple, list)) or len(x) != 2:
            raise ValueError(f"{where}: expected x to be a pair (source_ids, decoder_inputs), got "
                             f"{type(x).__name__}")

    def init(key, x):
        check_pair(description, x)
        source, target = x
        d, dtype = config.d_model, config.param_dtype
        embed = lambda vocab: Embedding(vocab, d, param_dtype=dtype)  # noqa: E731
        params = {}
        if config.share_embeddings:
            params["embedding"] = embed(config.source_vocab_size).init(child_key(key, 0), source)[0]
        else:
            params["source_embedding"] = embed(config.source_vocab_size).init(child_key(key, 0), source)[0]
            params["target_embedding"] = embed(config.target_vocab_size).init(child_key(key, 1), target)[0]
        example = lambda ids: jax.ShapeDtypeStruct(tuple(ids.shape) + (d,), dtype)  # noqa: E731
        if config.positional == "learned":
            positions = LearnedPositionalEmbedding(config.max_length, param_dtype=dtype)
            params["source_positions"] = positions.init(child_key(key, 2), example(source))[0]
            params["target_positions"] = positions.init(child_key(key, 3), example(target))[0]
        norm = LayerNorm(config.epsilon, param_dtype=dtype)
        for part, blocks, ids, offset in (("encoder", encoder_blocks, source, 10), ("decoder", decoder_blocks, target,
                                                                                    10 + len(encoder_blocks))):
            params[part] = {f"block_{i}": block.init(child_key(key, offset + i), example(ids))[0]
                            for i, block in enumerate(blocks)}
            if config.pre_ln:
                params[part]["norm"] = norm.init(child_key(key, 4), example(ids))[0]
        if not config.tie_output:
            params["output"] = Dense(config.target_vocab_size, param_dtype=dtype).init(child_key(key, 5),
                                                                                       example(target))[0]
        return params, {}

    def apply(params, state, x, *, key=None, train=False):
        check_pair(description, x)
        check_keys(description, state, [], "state")
        model = holder["model"]
        source, decoder_inputs = x
        memory = model.encode(params, source, key=child_key(key, 0), train=train)
        return model.decode(params, memory, source, decoder_inputs, key=child_key(key, 1), train=train), state

    layer = make_layer(name, description, init, apply)
    model = EncoderDecoderTransformer(layer.init, layer.apply, layer.name, layer.description, config,
                                      encoder_blocks, decoder_blocks)
    holder["model"] = model
    return model

