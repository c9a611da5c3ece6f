"""Mixed precision: one policy for the dtypes of params, computation and outputs.

A :class:`Policy` names three dtypes (as jmp's and flax's ``param_dtype``/``dtype`` do):

* ``param_dtype``: what the params are stored, trained and updated in (the optimizer state
  follows them): float32 "master weights";
* ``compute_dtype``: what the layers compute in: params and floating inputs are cast to it
  on the way in (bfloat16 on accelerators halves memory traffic and doubles matrix-unit
  throughput);
* ``output_dtype``: what the outputs are cast to (float32 for a loss computed outside).

:class:`MixedPrecision` wraps any layer or model in a policy, so it applies uniformly to
every layer inside: each computes in the dtype of the params and inputs it is given. The
casts are differentiable, so ``jax.grad`` with respect to the float32 params returns
float32 gradients: the update happens at full precision. Non-floating leaves (token ids,
counters) are never cast, nor is the state (batch statistics stay in their own dtype).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> policy = nn.Policy.from_string("params=float32,compute=bfloat16,output=float32")
    >>> model = nn.MixedPrecision(nn.Sequential([nn.Dense(8), nn.ReLU(), nn.Dense(2)]), policy)
    >>> params, state = model.init(jax.random.key(0), jnp.ones((4, 3)))
    >>> params["dense_0"]["w"].dtype, jax.jit(model.apply)(params, state, jnp.ones((4, 3)))[0].dtype
    (dtype('float32'), dtype('float32'))
    >>> grads = jax.jit(jax.grad(lambda p: model.apply(p, state, jnp.ones((4, 3)))[0].sum()))(params)
    >>> grads["dense_0"]["w"].dtype
    dtype('float32')
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jdl._checks import check_that
from jdl.nn.core import KW_ONLY, Layer, inside

_SHORT_NAMES = {"f32": "float32", "bf16": "bfloat16", "f16": "float16", "f64": "float64",
                "p": "params", "c": "compute", "o": "output"}


def _is_floating(x: Any) -> bool:
    return hasattr(x, "dtype") and jnp.issubdtype(x.dtype, jnp.floating)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Every floating leaf of ``tree`` cast to ``dtype``; other leaves as they are."""
    return jax.tree.map(lambda x: x.astype(dtype) if _is_floating(x) else x, tree)


class Policy(NamedTuple):
    """The dtypes of params, computation and outputs (``output_dtype=None``: the compute dtype)."""

    param_dtype: Any = jnp.float32
    compute_dtype: Any = jnp.float32
    output_dtype: Any = None

    @classmethod
    def from_string(cls, text: str) -> "Policy":
        """``"params=float32,compute=bfloat16,output=float32"`` (jmp's ``"p=f32,c=bf16,o=f32"`` too)."""
        fields = {}
        for part in filter(None, (piece.strip() for piece in text.split(","))):
            check_that("=" in part, "Policy.from_string", "comma-separated name=dtype pairs", repr(text))
            name, dtype = (_SHORT_NAMES.get(piece.strip(), piece.strip()) for piece in part.split("=", 1))
            check_that(name in ("params", "compute", "output"), "Policy.from_string", "names among params, compute "
                       "and output", repr(name))
            fields[f"{'param' if name == 'params' else name}_dtype"] = jnp.dtype(dtype)
        return cls(**fields)

    def cast_to_param(self, tree: Any) -> Any:
        return cast_floating(tree, self.param_dtype)

    def cast_to_compute(self, tree: Any) -> Any:
        return cast_floating(tree, self.compute_dtype)

    def cast_to_output(self, tree: Any) -> Any:
        return cast_floating(tree, self.output_dtype or self.compute_dtype)


class MixedPrecision(Layer):
    """``layer`` under a :class:`Policy`: params kept in ``param_dtype``; params and floating inputs
    cast to ``compute_dtype`` for ``apply``; floating outputs cast to ``output_dtype``.

    The params tree is the layer's (this wrapper keeps its name), so weights move between
    the wrapped and the plain model as they are. Extra keywords of ``apply`` (masks, context)
    are cast like the input when floating.
    """

    layer: Layer
    policy: Policy = Policy()
    _: KW_ONLY
    name: str = ""

    def __post_init__(self):
        check_that(isinstance(self.layer, Layer), type(self).__name__, "a jdl Layer to wrap",
                   type(self.layer).__name__, TypeError)
        check_that(isinstance(self.policy, Policy), type(self).__name__, "a Policy", type(self.policy).__name__,
                   TypeError)
        if not self.name:
            object.__setattr__(self, "name", self.layer.name)

    def __repr__(self) -> str:
        policy = self.policy
        dtypes = [jnp.dtype(d).name if d is not None else None for d in policy]
        return f"MixedPrecision({self.layer}, params={dtypes[0]}, compute={dtypes[1]}, output={dtypes[2]})"

    def init(self, key, x):
        with inside(self, "layer"):
            params, state = self.layer.init(key, x)
        return self.policy.cast_to_param(params), state

    def apply(self, params, state, x, *, key=None, train=False, **kwargs):
        compute = self.policy.cast_to_compute
        with inside(self, "layer"):
            y, new_state = self.layer.apply(compute(params), state, compute(x), key=key, train=train,
                                            **{name: compute(value) for name, value in kwargs.items()})
        # The state keeps the dtypes it came in (batch statistics accumulate in float32).
        new_state = jax.tree.map(lambda new, old: new.astype(old.dtype), new_state, state)
        return self.policy.cast_to_output(y), new_state
