"""A decoder-only Transformer language model (GPT-2's layout, Radford et al., 2019).

::

    h_0 = E[x] + P[0..T)                         token and learned position embeddings
    h_l = Block_l(h_{l-1})                       pre-LN blocks, causal self-attention
    logits = LayerNorm(h_L) E^T                  the output tied to the token embedding

Each block is a :class:`~jdl.nn.TransformerEncoderBlock` (pre-LN, GELU) with a causal mask.
``scan_layers=True`` builds the stack as one :class:`~jdl.nn.Repeat` (params stacked on a
leading axis, one ``lax.scan``: compiled once, whatever the depth); cached decoding then
scans over the layers' stacked caches too. :meth:`GPT.generate` decodes greedily or by
sampling, one jitted ``lax.scan`` over positions, each step reading and writing the key/value
caches (:meth:`GPT.decode_step`).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import models
    >>> config = models.GPTConfig(vocab_size=50, d_model=16, num_heads=2, num_layers=2, max_length=12)
    >>> lm = models.GPT(config)
    >>> ids = jnp.array([[5, 7, 9, 11]])
    >>> params, state = jax.jit(lm.init)(jax.random.key(0), ids)
    >>> jax.jit(lm.apply)(params, state, ids)[0].shape         # next-token logits at each position
    (1, 4, 50)
    >>> generate = jax.jit(lm.generate, static_argnames="max_new_tokens")
    >>> out = generate(params, ids, max_new_tokens=3)          # greedy: the prompt, then 3 tokens
    >>> out.shape
    (1, 7)
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from jdl import init as initializers
from jdl import losses
from jdl._checks import PositiveInt, check_rank, check_that, check_token_ids
from jdl.nn.core import Layer, check_params, child_key, inside
from jdl.nn.dropout import Dropout
from jdl.nn.embed import Embedding, attend
from jdl.nn.masks import causal_mask
from jdl.nn.multi_head import KVCache
from jdl.nn.norm import LayerNorm
from jdl.nn.repeat import Repeat
from jdl.nn.transformer import TransformerEncoderBlock


@dataclasses.dataclass(frozen=True)
class GPTConfig:
    """The sizes of a :class:`GPT` (GPT-2 small: ``GPTConfig(50257, 768, 12, 12, 3072, 1024)``)."""

    vocab_size: int
    d_model: int = 768
    num_heads: int = 12
    num_layers: int = 12
    mlp_features: int | None = None  # 4 d_model by default
    max_length: int = 1024
    dropout_rate: float = 0.0
    epsilon: float = 1e-5
    scan_layers: bool = False
    param_dtype: Any = jnp.float32


class GPT(Layer):
    """GPT-2's decoder-only language model (see the module docstring).

    Params: ``{"token_embedding": {"embedding": (vocab, d)}, "positions": {"embedding":
    (max_length, d)}, "blocks": {"block_0": ..., ...}`` (or the :class:`~jdl.nn.Repeat`'s
    stacked tree with ``scan_layers``), ``"norm": {"gamma", "beta"}}``. Position and token
    embeddings are drawn from ``N(0, 0.02)`` as in GPT-2.

    ``apply(params, state, ids, *, key=None, train=False)``: ``ids`` ``[batch, length]``
    (length at most ``max_length``) to logits ``[batch, length, vocab]``, position ``t``
    scoring token ``t + 1``.
    """

    config: GPTConfig
    name: str = "gpt"

    def __post_init__(self):
        c = self.config
        check_that(isinstance(c, GPTConfig), type(self).__name__, "a GPTConfig", type(c).__name__, TypeError)
        for field in ("vocab_size", "d_model", "num_heads", "num_layers", "max_length"):
            check_that(isinstance(getattr(c, field), int) and getattr(c, field) > 0, "GPTConfig",
                       f"{field} to be a positive int", repr(getattr(c, field)))
        check_that(c.d_model % c.num_heads == 0, "GPTConfig", f"d_model divisible by num_heads ({c.num_heads})",
                   c.d_model)
        block = TransformerEncoderBlock(c.num_heads, c.mlp_features or 4 * c.d_model, dropout_rate=c.dropout_rate,
                                        pre_ln=True, activation="gelu", epsilon=c.epsilon,
                                        kernel_init=initializers.normal(0.02), param_dtype=c.param_dtype,
                                        name="block")
        normal = initializers.normal(0.02)
        parts = dict(block=block, blocks=Repeat(block, c.num_layers) if c.scan_layers else None,
                     token_embedding=Embedding(c.vocab_size, c.d_model, embedding_init=normal,
                                               param_dtype=c.param_dtype),
                     norm=LayerNorm(c.epsilon, param_dtype=c.param_dtype), dropout=Dropout(c.dropout_rate))
        for name, part in parts.items():
            object.__setattr__(self, name, part)

    def __repr__(self) -> str:
        c = self.config
        return f"GPT(vocab={c.vocab_size}, d_model={c.d_model}, heads={c.num_heads}, layers={c.num_layers})"

    # ------------------------------------------------------------------------- params

    def _check_ids(self, where: str, ids, rank: int = 2) -> None:
        check_rank(where, ids, rank, "batch, length" if rank == 2 else "batch", "ids")
        check_token_ids(where, ids, self.config.vocab_size, "ids")
        if rank == 2:
            check_that(ids.shape[1] <= self.config.max_length, where, f"at most max_length="
                       f"{self.config.max_length} positions", f"ids of shape {tuple(ids.shape)}")

    def init(self, key, ids):
        self._check_ids(f"{self}.init", ids)
        c = self.config
        keys = jax.random.split(key, 3)
        h = jax.ShapeDtypeStruct(tuple(ids.shape) + (c.d_model,), c.param_dtype)
        params = {"token_embedding": self.token_embedding.init(keys[0], ids)[0],
                  "positions": {"embedding": initializers.normal(0.02)(keys[1], (c.max_length, c.d_model),
                                                                       c.param_dtype)},
                  "norm": self.norm.init(keys[2], h)[0]}
        with inside(self, "blocks"):
            if c.scan_layers:
                params["blocks"] = self.blocks.init(jax.random.fold_in(key, 3), h)[0]
            else:
                params["blocks"] = {f"block_{i}": self.block.init(jax.random.fold_in(keys[2], i), h)[0]
                                    for i in range(c.num_layers)}
        return params, {}

    # ------------------------------------------------------------------------- the forward pass

    def _embed(self, params, ids, offset, key=None, train=False):
        x = self.token_embedding.apply(params["token_embedding"], {}, ids)[0]
        positions = jax.lax.dynamic_slice_in_dim(params["positions"]["embedding"], offset, ids.shape[1])
        return self.dropout.apply({}, {}, x + positions.astype(x.dtype), key=key, train=train)[0]

    def _logits(self, params, h):
        h = self.norm.apply(params["norm"], {}, h)[0]
        return attend(params["token_embedding"], h)

    def apply(self, params, state, ids, *, key=None, train=False):
        self._check_ids(f"{self}.apply", ids)
        check_params(self, params, state, ids)
        x = self._embed(params, ids, 0, child_key(key, 0), train)
        mask = causal_mask(ids.shape[1])
        with inside(self, "blocks"):
            if self.config.scan_layers:
                x, _ = self.blocks.apply(params["blocks"], {}, x, mask=mask, key=child_key(key, 1), train=train)
            else:
                for i in range(self.config.num_layers):
                    x, _ = self.block.apply(params["blocks"][f"block_{i}"], {}, x, mask=mask,
                                            key=child_key(key, 1 + i), train=train)
        return self._logits(params, x), state

    def loss(self, params, ids, *, key=None, train=False) -> jax.Array:
        """Mean next-token cross-entropy (nats): positions ``0..T-2`` predict tokens ``1..T-1``."""
        logits, _ = self.apply(params, {}, ids, key=key, train=train)
        return jnp.mean(losses.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids[:, 1:]))

    # ------------------------------------------------------------------------- cached decoding

    def init_cache(self, params, batch: int, max_length: int | None = None) -> Any:
        """Empty key/value caches for ``max_length`` positions (the model's by default): one
        :class:`~jdl.nn.KVCache` per block (stacked on a leading axis with ``scan_layers``)."""
        c = self.config
        length = max_length or c.max_length
        check_that(0 < length <= c.max_length, f"{self}.init_cache", f"max_length in [1, {c.max_length}]", length)
        head_dim = c.d_model // c.num_heads
        shape = (batch, c.num_heads, length, head_dim)
        dtype = params["token_embedding"]["embedding"].dtype
        one = KVCache(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype), jnp.zeros((), jnp.int32))
        if c.scan_layers:
            return jax.tree.map(lambda a: jnp.broadcast_to(a, (c.num_layers,) + a.shape), one)
        return tuple(one for _ in range(c.num_layers))

    def decode_step(self, params, caches, ids, step) -> tuple[jax.Array, Any]:
        """Logits ``[batch, steps, vocab]`` of the next positions ``ids`` ``[batch, steps]`` written at
        ``step`` (= the caches' index), and the updated caches: the same as :meth:`apply`'s at those
        positions, for the same prefix."""
        x = self._embed(params, ids, step)
        if self.config.scan_layers:
            def one_block(h, layer):
                block_params, cache = layer
                return self.block.decode_step(block_params, h, cache)

            x, caches = jax.lax.scan(one_block, x, (params["blocks"], caches))
        else:
            new = []
            for i, cache in enumerate(caches):
                x, cache = self.block.decode_step(params["blocks"][f"block_{i}"], x, cache)
                new.append(cache)
            caches = tuple(new)
        return self._logits(params, x), caches

    def generate(self, params, prompt, max_new_tokens: PositiveInt, *, temperature: float = 0.0,
                 key=None) -> jax.Array:
        """``prompt`` ``[batch, prompt_length]`` followed by ``max_new_tokens`` tokens: greedy
        (``temperature=0``) or sampled from ``softmax(logits / temperature)`` with ``key``. The
        prompt fills the caches in one step; each new token is one cached step of a ``lax.scan``.
        Jit it with ``max_new_tokens`` static."""
        where = f"{self}.generate"
        self._check_ids(where, prompt)
        total = prompt.shape[1] + max_new_tokens
        check_that(isinstance(max_new_tokens, int) and max_new_tokens > 0 and total <= self.config.max_length, where,
                   f"a positive max_new_tokens with prompt + new tokens <= {self.config.max_length}",
                   repr(max_new_tokens))
        check_that(temperature == 0.0 or key is not None, where, "a PRNG key to sample with", "key=None")
        caches = self.init_cache(params, prompt.shape[0], total)
        logits, caches = self.decode_step(params, caches, prompt, 0)

        def pick(logits_last, step_key):
            if temperature == 0.0:
                return jnp.argmax(logits_last, axis=-1).astype(jnp.int32)
            return jax.random.categorical(step_key, logits_last.astype(jnp.float32) / temperature).astype(jnp.int32)

        keys = jax.random.split(key, max_new_tokens) if key is not None else jnp.zeros((max_new_tokens,))

        def one_token(carry, inputs):
            caches, logits_last = carry
            position, step_key = inputs
            token = pick(logits_last, step_key)
            logits, caches = self.decode_step(params, caches, token[:, None], position)
            return (caches, logits[:, -1]), token

        positions = prompt.shape[1] + jnp.arange(max_new_tokens, dtype=jnp.int32)
        _, tokens = jax.lax.scan(one_token, (caches, logits[:, -1]), (positions, keys))
        return jnp.concatenate([prompt.astype(jnp.int32), tokens.T], axis=1)

