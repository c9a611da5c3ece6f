"""Transformer cases: a train step of the encoder-decoder, jdl against an equivalent flax.linen model.

The flax twin (:class:`FlaxTransformer`) is written here from flax.linen's own pieces
(``MultiHeadDotProductAttention``, ``LayerNorm``, ``Dense``, ``Embed`` with ``attend``),
with the sinusoidal table transcribed from the paper, and its submodules named like the
jdl params, so the jdl weights copy in by renaming leaves (``w``/``b`` -> ``kernel``/
``bias``, ``gamma``/``beta`` -> ``scale``/``bias``). Both sides then compute the same
function; the shared train-step harness (:mod:`benchmarks.cases`) asserts that their
losses agree before timing. The twin reads its sizes from the jdl model's
``TransformerConfig`` (:data:`MODEL`): the model is configured once, for both sides.
Dropout is off on both sides (the same random masks cannot be drawn by both), so the
step is forward, cross-entropy, backward and Adam.

``transformer_train_step``: 4 + 4 layers, ``d_model`` 256, 8 heads, feed-forward 1024,
source and target length 64, batch 32, a shared vocabulary of 1000 tokens (post-LN,
tied output, as the paper's base model).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks.cases import Budget, check_twin, flax_params_from_jdl, train_step_case
from jdl import models

# The model of transformer_train_step: the paper's base model (post-LN, sinusoidal positions, one
# vocabulary shared by source, target and the tied output), scaled down, dropout off.
MODEL = models.transformer_base(1000, d_model=256, num_encoder_layers=4, num_decoder_layers=4, mlp_features=1024,
                                dropout_rate=0.0, max_length=64)


def token_batches(steps: int, batch: int, length: int, vocab_size: int) -> tuple[jax.Array, jax.Array]:
    """``steps`` batches of (source, target) ``[batch, length]``: random tokens (ids 3 and up), padded at the end
    to random lengths."""
    rng = np.random.default_rng(0)
    shape = (steps, batch, length)
    tokens = rng.integers(3, vocab_size, shape)
    lengths = rng.integers(length // 2, length + 1, shape[:2] + (2,))
    position = np.arange(length)
    source = np.where(position < lengths[..., :1], tokens, 0)
    target = np.where(position < lengths[..., 1:], np.roll(tokens, 1, axis=-1), 0)
    return jnp.asarray(source, jnp.int32), jnp.asarray(target, jnp.int32)


def paper_sinusoids(length: int, features: int) -> np.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i / d)), PE(pos, 2i + 1) = cos(pos / 10000^(2i / d))."""
    table = np.zeros((length, features), np.float64)
    positions = np.arange(length)[:, None]
    rates = 10000.0 ** (np.arange(0, features, 2) / features)
    table[:, 0::2] = np.sin(positions / rates)
    table[:, 1::2] = np.cos(positions / rates[: features // 2])
    return table.astype(np.float32)


# --------------------------------------------------------------------------- the flax twin


class FlaxPart(fnn.Module):
    """A piece of the flax twin: the jdl model's config (its sizes) and one dtype for params and compute."""

    config: models.TransformerConfig
    dtype: Any = jnp.float32

    def norm(self, name: str) -> fnn.LayerNorm:
        return fnn.LayerNorm(epsilon=self.config.epsilon, dtype=self.dtype, param_dtype=self.dtype, name=name)

    def attention(self, name: str) -> fnn.MultiHeadDotProductAttention:
        return fnn.MultiHeadDotProductAttention(self.config.num_heads, dtype=self.dtype, param_dtype=self.dtype,
                                               name=name)


class FlaxFeedForward(FlaxPart):
    @fnn.compact
    def __call__(self, x):
        dense = functools.partial(fnn.Dense, dtype=self.dtype, param_dtype=self.dtype)
        return dense(x.shape[-1], name="output")(fnn.relu(dense(self.config.mlp_features, name="hidden")(x)))


class FlaxEncoderBlock(FlaxPart):
    @fnn.compact
    def __call__(self, x, mask):
        x = self.norm("norm_1")(x + self.attention("self_attention")(x, x, mask=mask))
        return self.norm("norm_2")(x + FlaxFeedForward(self.config, self.dtype, name="feed_forward")(x))


class FlaxDecoderBlock(FlaxPart):
    @fnn.compact
    def __call__(self, x, memory, self_mask, cross_mask):
        x = self.norm("norm_1")(x + self.attention("self_attention")(x, x, mask=self_mask))
        x = self.norm("norm_2")(x + self.attention("cross_attention")(x, memory, mask=cross_mask))
        return self.norm("norm_3")(x + FlaxFeedForward(self.config, self.dtype, name="feed_forward")(x))


class FlaxStack(FlaxPart):
    block: Any = FlaxEncoderBlock
    num_layers: int = 1

    @fnn.compact
    def __call__(self, x, *args):
        for index in range(self.num_layers):
            x = self.block(self.config, self.dtype, name=f"block_{index}")(x, *args)
        return x


class FlaxTransformer(FlaxPart):
    """Post-LN encoder-decoder, one embedding shared by source, target and the tied output, sinusoidal positions."""

    @fnn.compact
    def __call__(self, source, decoder_inputs):
        config = self.config
        embed = fnn.Embed(config.target_vocab_size, config.d_model, dtype=self.dtype, param_dtype=self.dtype,
                          name="embedding")
        table = jnp.asarray(paper_sinusoids(config.max_length, config.d_model), self.dtype)

        def embed_tokens(ids):
            return embed(ids) * math.sqrt(config.d_model) + table[: ids.shape[1]]

        source_valid = source != 0
        encoder_mask = fnn.make_attention_mask(jnp.ones_like(source_valid), source_valid, dtype=bool)
        memory = FlaxStack(config, self.dtype, FlaxEncoderBlock, config.num_encoder_layers,
                           name="encoder")(embed_tokens(source), encoder_mask)
        causal = fnn.make_causal_mask(decoder_inputs, dtype=bool)
        cross = fnn.make_attention_mask(jnp.ones_like(decoder_inputs, bool), source_valid, dtype=bool)
        h = FlaxStack(config, self.dtype, FlaxDecoderBlock, config.num_decoder_layers,
                      name="decoder")(embed_tokens(decoder_inputs), memory, causal, cross)
        return embed.attend(h)


def check_twin_covers(config: models.TransformerConfig) -> None:
    """Raise unless ``config`` is a model the flax twin implements (it is written for that one layout)."""
    layout = (config.pre_ln, config.share_embeddings, config.tie_output, config.positional, config.activation,
              config.pad_id, config.bos_id)
    if layout != (False, True, True, "sinusoidal", "relu", 0, 1):
        raise ValueError(f"FlaxTransformer implements post-LN, shared tied embeddings, sinusoidal positions, ReLU, "
                         f"pad id 0 and bos id 1; got (pre_ln, share_embeddings, tie_output, positional, activation, "
                         f"pad_id, bos_id) = {layout}")


# --------------------------------------------------------------------------- the case


@dataclasses.dataclass(frozen=True)
class TransformerTrainCase:
    name: str = "transformer_train_step"
    model: models.TransformerConfig = MODEL  # source and target length: its max_length
    batch: int = 32
    budget: Budget = Budget(steps_per_call=5, rounds=11, quick_steps_per_call=5, quick_rounds=3)
    kind: str = "train_step"

    @property
    def description(self) -> str:
        m = self.model
        return (f"Transformer encoder-decoder train step (Adam): {m.num_encoder_layers}+{m.num_decoder_layers} layers, "
                f"d_model {m.d_model}, {m.num_heads} heads, d_ff {m.mlp_features}, length {m.max_length}, vocab "
                f"{m.target_vocab_size}, dropout off")

    def build(self, config) -> dict:
        dtype = jnp.dtype(config.dtype)
        steps, rounds = self.budget.choose(config)
        steps = max(steps, 2)  # two steps at least: the loss check compares two
        model_config = dataclasses.replace(self.model, param_dtype=dtype)
        check_twin_covers(model_config)
        sources, targets = token_batches(steps, self.batch, model_config.max_length, model_config.source_vocab_size)
        model = models.Transformer(model_config)
        params, state = model.init(jax.random.key(0), (sources[0], targets[0]))
        module = FlaxTransformer(model_config, dtype)
        ref_params = flax_params_from_jdl(params)
        check_twin(self.name, module, (sources[0], targets[0]), ref_params)

        def jdl_loss_of(p, s, x, y):
            return model.loss(p, x, y), s

        def ref_loss_of(p, s, x, y):
            bos = jnp.ones_like(y[:, :1])
            logits = module.apply({"params": p}, x, jnp.concatenate([bos, y[:, :-1]], axis=1))
            per_token = optax.losses.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
            real = (y != 0).astype(per_token.dtype)
            return jnp.sum(per_token * real) / jnp.maximum(jnp.sum(real), 1.0), s

        return train_step_case(jdl_loss_of, params, state, ref_loss_of, ref_params, sources, targets, steps=steps,
                               rounds=rounds, dtype=config.dtype,
                               record={"batch": self.batch, "length": model_config.max_length,
                                       "d_model": model_config.d_model})


TRANSFORMER_CASES = {case.name: case for case in (TransformerTrainCase(),)}
