"""Transformer cases: a train step of the encoder-decoder, jdl against an equivalent flax.linen model.

The flax twin (:class:`FlaxTransformer`) is written here from flax.linen's own pieces
(``MultiHeadDotProductAttention``, ``LayerNorm``, ``Dense``, ``Embed`` with ``attend``),
with the sinusoidal table transcribed from the paper, and its submodules named like the
jdl params, so the jdl weights copy in by renaming leaves (``w``/``b`` -> ``kernel``/
``bias``, ``gamma``/``beta`` -> ``scale``/``bias``). Both sides then compute the same
function; the shared train-step harness (:mod:`benchmarks.cases`) asserts that their
losses agree before timing. Dropout is off on both sides (the same random masks cannot be
drawn by both), so the step is forward, cross-entropy, backward and Adam.

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

import jdl
from jdl import models

LEARNING_RATE = 1e-3
RENAME = {"w": "kernel", "b": "bias", "gamma": "scale", "beta": "bias"}


def flax_params_from_jdl(tree):
    """The jdl Transformer's params with flax's leaf names (copies: each side donates its own)."""
    if isinstance(tree, dict):
        return {RENAME.get(name, name): flax_params_from_jdl(value) for name, value in tree.items()}
    return jnp.array(tree, copy=True)


def paper_sinusoids(length: int, features: int) -> np.ndarray:
    """PE(pos, 2i) = sin(pos / 10000^(2i / d)), PE(pos, 2i + 1) = cos(pos / 10000^(2i / d))."""
    table = np.zeros((length, features), np.float64)
    positions = np.arange(length)[:, None]
    rates = 10000.0 ** (np.arange(0, features, 2) / features)
    table[:, 0::2] = np.sin(positions / rates)
    table[:, 1::2] = np.cos(positions / rates[: features // 2])
    return table.astype(np.float32)


class FlaxFeedForward(fnn.Module):
    mlp_features: int
    dtype: Any

    @fnn.compact
    def __call__(self, x):
        dense = functools.partial(fnn.Dense, dtype=self.dtype, param_dtype=self.dtype)
        return dense(x.shape[-1], name="output")(fnn.relu(dense(self.mlp_features, name="hidden")(x)))


class FlaxEncoderBlock(fnn.Module):
    num_heads: int
    mlp_features: int
    dtype: Any

    @fnn.compact
    def __call__(self, x, mask):
        norm = functools.partial(fnn.LayerNorm, epsilon=1e-6, dtype=self.dtype, param_dtype=self.dtype)
        attention = fnn.MultiHeadDotProductAttention(self.num_heads, dtype=self.dtype, param_dtype=self.dtype,
                                                     name="self_attention")
        x = norm(name="norm_1")(x + attention(x, x, mask=mask))
        return norm(name="norm_2")(x + FlaxFeedForward(self.mlp_features, self.dtype, name="feed_forward")(x))


class FlaxDecoderBlock(fnn.Module):
    num_heads: int
    mlp_features: int
    dtype: Any

    @fnn.compact
    def __call__(self, x, memory, self_mask, cross_mask):
        norm = functools.partial(fnn.LayerNorm, epsilon=1e-6, dtype=self.dtype, param_dtype=self.dtype)
        attention = functools.partial(fnn.MultiHeadDotProductAttention, self.num_heads, dtype=self.dtype,
                                      param_dtype=self.dtype)
        x = norm(name="norm_1")(x + attention(name="self_attention")(x, x, mask=self_mask))
        x = norm(name="norm_2")(x + attention(name="cross_attention")(x, memory, mask=cross_mask))
        return norm(name="norm_3")(x + FlaxFeedForward(self.mlp_features, self.dtype, name="feed_forward")(x))


class FlaxStack(fnn.Module):
    block: Any
    num_layers: int
    num_heads: int
    mlp_features: int
    dtype: Any

    @fnn.compact
    def __call__(self, x, *args):
        for index in range(self.num_layers):
            x = self.block(self.num_heads, self.mlp_features, self.dtype, name=f"block_{index}")(x, *args)
        return x


class FlaxTransformer(fnn.Module):
    """Post-LN encoder-decoder, shared embedding tied to the output, sinusoidal positions."""

    vocab_size: int
    d_model: int
    num_heads: int
    num_layers: int
    mlp_features: int
    max_length: int
    dtype: Any = jnp.float32

    @fnn.compact
    def __call__(self, source, decoder_inputs):
        embed = fnn.Embed(self.vocab_size, self.d_model, dtype=self.dtype, param_dtype=self.dtype, name="embedding")
        table = jnp.asarray(paper_sinusoids(self.max_length, self.d_model), self.dtype)

        def embed_tokens(ids):
            return embed(ids) * math.sqrt(self.d_model) + table[: ids.shape[1]]

        source_valid = source != 0
        encoder_mask = fnn.make_attention_mask(jnp.ones_like(source_valid), source_valid, dtype=bool)
        memory = FlaxStack(FlaxEncoderBlock, self.num_layers, self.num_heads, self.mlp_features, self.dtype,
                           name="encoder")(embed_tokens(source), encoder_mask)
        causal = fnn.make_causal_mask(decoder_inputs, dtype=bool)
        cross = fnn.make_attention_mask(jnp.ones_like(decoder_inputs, bool), source_valid, dtype=bool)
        h = FlaxStack(FlaxDecoderBlock, self.num_layers, self.num_heads, self.mlp_features, self.dtype,
                      name="decoder")(embed_tokens(decoder_inputs), memory, causal, cross)
        return embed.attend(h)


@dataclasses.dataclass(frozen=True)
class TransformerTrainCase:
    name: str = "transformer_train_step"
    batch: int = 32
    length: int = 64
    vocab_size: int = 1000
    d_model: int = 256
    num_heads: int = 8
    num_layers: int = 4
    mlp_features: int = 1024
    steps_per_call: int = 5
    rounds: int = 11
    quick_rounds: int = 3
    kind: str = "train_step"

    @property
    def description(self) -> str:
        return (f"Transformer encoder-decoder train step (Adam): {self.num_layers}+{self.num_layers} layers, d_model "
                f"{self.d_model}, {self.num_heads} heads, d_ff {self.mlp_features}, length {self.length}, vocab "
                f"{self.vocab_size}, dropout off")

    def config(self, dtype) -> models.TransformerConfig:
        return models.TransformerConfig(self.vocab_size, self.vocab_size, d_model=self.d_model, num_heads=self.num_heads,
                                        num_encoder_layers=self.num_layers, num_decoder_layers=self.num_layers,
                                        mlp_features=self.mlp_features, dropout_rate=0.0, max_length=self.length,
                                        share_embeddings=True, tie_output=True, param_dtype=dtype)

    def batches(self, steps: int):
        """``steps`` batches of (source, target): random tokens, padded at the end to random lengths."""
        rng = np.random.default_rng(0)
        shape = (steps, self.batch, self.length)
        tokens = rng.integers(3, self.vocab_size, shape)
        lengths = rng.integers(self.length // 2, self.length + 1, shape[:2] + (2,))
        position = np.arange(self.length)
        source = np.where(position < lengths[..., :1], tokens, 0)
        target = np.where(position < lengths[..., 1:], np.roll(tokens, 1, axis=-1), 0)
        return jnp.asarray(source, jnp.int32), jnp.asarray(target, jnp.int32)

    def build(self, config) -> dict:
        from benchmarks.cases import TrainLoop, check_losses

        dtype = jnp.dtype(config.dtype)
        steps = config.steps_per_call or self.steps_per_call
        steps = max(steps, 2)
        sources, targets = self.batches(steps)
        model = models.Transformer(self.config(dtype))
        params, state = model.init(jax.random.key(0), (sources[0], targets[0]))

        def jdl_loss_of(p, s, x, y):
            return model.loss(p, x, y), s

        jdl_optimizer = jdl.optim.adam(LEARNING_RATE)
        jdl_loop = TrainLoop(jdl_loss_of, jdl_optimizer, jdl.optim.apply_updates,
                             (params, state, jdl_optimizer.init(params)), sources, targets)

        module = FlaxTransformer(self.vocab_size, self.d_model, self.num_heads, self.num_layers, self.mlp_features,
                                 self.length, dtype)
        ref_params = flax_params_from_jdl(params)
        expected = jax.eval_shape(module.init, jax.random.key(0), sources[0], targets[0])["params"]
        shapes = lambda tree: jax.tree.map(lambda a: tuple(a.shape), tree)  # noqa: E731
        if shapes(expected) != shapes(ref_params):
            raise AssertionError(f"{self.name}: the flax twin's params differ from the jdl model's")

        def ref_loss_of(p, s, x, y):
            bos = jnp.ones_like(y[:, :1])
            logits = module.apply({"params": p}, x, jnp.concatenate([bos, y[:, :-1]], axis=1))
            per_token = optax.losses.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), y)
            real = (y != 0).astype(per_token.dtype)
            return jnp.sum(per_token * real) / jnp.maximum(jnp.sum(real), 1.0), s

        optimizer = optax.adam(LEARNING_RATE)
        ref_loop = TrainLoop(ref_loss_of, optimizer, optax.apply_updates, (ref_params, {}, optimizer.init(ref_params)),
                             sources, targets)
        return {
            "jdl_call": jdl_loop,
            "ref_call": ref_loop,
            "check": functools.partial(check_losses, dtype=config.dtype),
            "steps_per_call": steps,
            "rounds": config.rounds or (self.quick_rounds if config.quick else self.rounds),
            "num_params": models.transformer.num_params(params),
            "record": {"batch": self.batch, "length": self.length, "d_model": self.d_model},
        }


TRANSFORMER_CASES = {case.name: case for case in (TransformerTrainCase(),)}
