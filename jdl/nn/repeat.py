"""Scan over layers: ``n`` copies of a block with stacked params, applied by one ``lax.scan``.

An unrolled stack of ``n`` identical blocks is ``n`` copies of the block in the program: its
compile time grows with ``n`` (the complaint of deep unrolled models). ``Repeat(block, n)``
stacks the blocks' params on a leading axis (``init`` is the block's ``init`` under
``jax.vmap`` over ``n`` keys) and applies them with ``lax.scan``: XLA compiles the block once,
whatever ``n``. The block must keep its input's shape (the scan's carry), as a residual
Transformer block does. Combine with :class:`~jdl.nn.Remat` (``Repeat(Remat(block), n)``) to
also keep one block's activations at a time.

Params and state: the block's tree with every leaf stacked, ``[n, ...]``; block ``i`` is
``jax.tree.map(lambda a: a[i], params)``, and ``unstack``/``stack`` convert to and from a
list of per-block trees. Block ``i`` draws its randomness from ``fold_in(key, i)``, as
``Sequential`` does for its ``i``-th child, so a ``Repeat`` and the ``Sequential`` of the same
blocks with the same params compute the same function, dropout included.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> stack = nn.Repeat(nn.TransformerEncoderBlock(num_heads=2, mlp_features=16), 6)
    >>> x = jnp.ones((2, 5, 8))
    >>> params, state = jax.jit(stack.init)(jax.random.key(0), x)
    >>> params["self_attention"]["query"]["w"].shape          # 6 blocks of (in, heads, head_dim)
    (6, 8, 2, 4)
    >>> jax.jit(stack.apply)(params, state, x)[0].shape
    (2, 5, 8)
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jdl._checks import PositiveInt, check_that
from jdl.nn.core import KW_ONLY, Layer, check_params, child_key, inferring_shapes, inside, output_shape


def stack(trees: list) -> Any:
    """Per-block params (or states) stacked into a :class:`Repeat`'s: every leaf gains a leading axis."""
    return jax.tree.map(lambda *leaves: jnp.stack(leaves), *trees)


def unstack(tree: Any) -> list:
    """A :class:`Repeat`'s params (or state) as one tree per block."""
    leaves, treedef = jax.tree.flatten(tree)
    count = leaves[0].shape[0] if leaves else 0
    return [treedef.unflatten([leaf[i] for leaf in leaves]) for i in range(count)]


class Repeat(Layer):
    """``num_layers`` blocks with stacked params, applied in order by ``lax.scan`` (compiled once).

    Args:
      block: the block; its output must have its input's shape and dtype.
      num_layers: how many blocks.
      unroll: blocks per scan iteration (``lax.scan``'s ``unroll``): more is faster to run and
        slower to compile.

    Extra keywords of ``apply`` (a ``mask``, a ``context``) go to every block.
    """

    block: Layer
    num_layers: PositiveInt
    _: KW_ONLY
    unroll: PositiveInt = 1
    name: str = "repeat"

    def __post_init__(self):
        check_that(isinstance(self.block, Layer), type(self).__name__, "a jdl Layer to repeat",
                   type(self.block).__name__, TypeError)

    def __repr__(self) -> str:
        return f"Repeat({self.block}, {self.num_layers})"

    def _check_keeps(self, out, x, dtypes: bool) -> None:
        """The block's output can be the scan's next carry: the input's shape (and, at apply, where the
        params' dtype is known, its dtype)."""
        got, want = (tuple(out.shape), jnp.dtype(out.dtype)), (tuple(x.shape), jnp.dtype(x.dtype))
        dtype = f" and dtype {want[1].name}" if dtypes else ""
        check_that(got == want if dtypes else got[0] == want[0], self, f"a block that keeps its input's shape "
                   f"{want[0]}{dtype} (the scan carries it from block to block)", f"{got[0]} {got[1].name}")

    def init(self, key, x):
        with inside(self, "block"):
            params, state = jax.vmap(lambda k: self.block.init(k, x))(jax.random.split(key, self.num_layers))
            out = output_shape(self.block, *jax.tree.map(lambda a: a[0], (params, state)), x)
        self._check_keeps(out, x, dtypes=False)  # init's float32 params are not apply's
        return params, state

    def apply(self, params, state, x, *, key=None, train=False, **kwargs):
        check_params(self, params, state, x)
        if not inferring_shapes.get():
            with inside(self, "block"):
                out = output_shape(self.block, *jax.tree.map(lambda a: a[0], (params, state)), x)
            self._check_keeps(out, x, dtypes=True)

        def one_block(h, block):
            block_params, block_state, index = block
            with inside(self, "block"):
                h, block_state = self.block.apply(block_params, block_state, h, key=child_key(key, index),
                                                  train=train, **kwargs)
            return h, block_state

        indices = jnp.arange(self.num_layers, dtype=jnp.int32)
        return jax.lax.scan(one_block, x, (params, state, indices), unroll=self.unroll)
