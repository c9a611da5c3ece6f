"""Backpropagation by hand: the chain rule plus memoisation, in the notation of UDL chapter 7.

``jax.grad`` does all of this automatically (each primitive knows its derivative); this
module writes it out, so that the course's equations run and can be checked against it.

**Memoisation.** The derivative of the loss with respect to a weight deep in the network is
a sum over every path from that weight to the loss, and paths share their later factors.
The forward pass stores every intermediate value, and the backward pass computes each
``dl/df_k`` once, from ``dl/df_{k+1}``, instead of once per path.

**A ReLU network** (UDL eq. 7.13), weights ``Omega_k`` of shape ``(D_{k+1}, D_k)`` and
biases ``beta_k``, ``h_0 = x``:

    forward:   f_k = beta_k + Omega_k h_k,     h_{k+1} = ReLU(f_k),     k = 0 .. K
    backward:  dl/dbeta_k  = dl/df_k
               dl/dOmega_k = dl/df_k h_k^T
               dl/df_{k-1} = I[f_{k-1} > 0] * (Omega_k^T dl/df_k),      k = K .. 0

``I[b > 0]`` is the ReLU's Jacobian ``diag(I[b > 0])`` applied as a product. Over a batch
(rows of ``x``) the parameter derivatives sum over the examples. :func:`from_dense` and
:func:`to_dense` convert to and from the params of a ``jdl.nn`` stack of ``Dense`` and
``ReLU`` layers (``Omega = W^T``), so the hand-written pass can be held against ``jax.grad``
of the same network.

**The toy function** (UDL section 7.3):
``f = beta_3 + omega_3 cos(beta_2 + omega_2 exp(beta_1 + omega_1 sin(beta_0 + omega_0 x)))``
with ``l = (f - y)^2``: forward through ``f_0, h_1, f_1, h_2, f_2, h_3, f_3``, backward
through ``dl/df_3 = 2 (f_3 - y)``, ``dl/dh_3 = omega_3 dl/df_3``, ``dl/df_2 = -sin(f_2) dl/dh_3``,
... and ``dl/dbeta_k = dl/df_k``, ``dl/domega_k = h_k dl/df_k`` (``h_0 = x``).

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import backprop
    >>> key = jax.random.key(0)
    >>> weights = [jax.random.normal(k, s) for k, s in zip(jax.random.split(key, 2), [(4, 3), (1, 4)])]
    >>> biases = [jnp.zeros(4), jnp.zeros(1)]
    >>> x, y = jnp.ones((5, 3)), jnp.zeros((5, 1))
    >>> out, memo = jax.jit(backprop.forward)(weights, biases, x)
    >>> d_weights, d_biases = jax.jit(backprop.backward)(weights, memo, 2 * (out - y))  # l = sum (f - y)^2
    >>> loss = lambda w: jnp.sum((backprop.forward(w, biases, x)[0] - y) ** 2)
    >>> bool(jnp.allclose(d_weights[0], jax.jit(jax.grad(loss))(weights)[0], atol=1e-5))
    True
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from jdl import activations
from jdl._checks import check_floating, check_rank, check_that

__all__ = ["Memo", "forward", "backward", "from_dense", "to_dense", "ToyMemo", "toy_forward", "toy_backward",
           "chain_rule_two_paths"]


class Memo(NamedTuple):
    """What the forward pass keeps: ``hidden[k] = h_k`` (``h_0 = x``) and ``pre_activations[k] = f_k``."""

    hidden: tuple
    pre_activations: tuple


def _check_network(where: str, weights: Sequence, biases: Sequence, x) -> None:
    check_that(len(weights) == len(biases) and len(weights) >= 1, where,
               "as many bias vectors as weight matrices, at least one", f"{len(weights)} and {len(biases)}")
    check_floating(where, x)
    check_rank(where, x, 2, "(examples, features)")
    size = x.shape[1]
    for k, (omega, beta) in enumerate(zip(weights, biases)):
        check_that(omega.ndim == 2 and omega.shape[1] == size and beta.shape == omega.shape[:1], where,
                   f"Omega_{k} of shape (D_{k + 1}, {size}) and beta_{k} of shape (D_{k + 1},)",
                   f"{tuple(omega.shape)} and {tuple(beta.shape)}")
        size = omega.shape[0]


def forward(weights: Sequence[jax.Array], biases: Sequence[jax.Array], x: jax.Array) -> tuple[jax.Array, Memo]:
    """The ReLU network's output ``f_K`` for inputs ``x`` (rows), and the memo of every ``h_k`` and ``f_k``."""
    _check_network("backprop.forward", weights, biases, x)
    hidden, pre_activations = [x], []
    for k, (omega, beta) in enumerate(zip(weights, biases)):
        f = beta + hidden[k] @ omega.T  # f_k = beta_k + Omega_k h_k, one row per example
        pre_activations.append(f)
        if k < len(weights) - 1:
            hidden.append(activations.relu(f))
    return pre_activations[-1], Memo(tuple(hidden), tuple(pre_activations))


def backward(weights: Sequence[jax.Array], memo: Memo, output_grad: jax.Array) -> tuple[list, list]:
    """Equation 7.13: from ``dl/df_K`` (``output_grad``, one row per example) to every ``dl/dOmega_k``, ``dl/dbeta_k``.

    The derivatives are summed over the examples (the loss is a sum of the examples' losses).
    """
    check_that(output_grad.shape == memo.pre_activations[-1].shape, "backprop.backward",
               f"dl/df_K of the output's shape {memo.pre_activations[-1].shape}", f"{output_grad.shape}")
    d_weights, d_biases = [None] * len(weights), [None] * len(weights)
    d_f = output_grad
    for k in reversed(range(len(weights))):
        d_biases[k] = jnp.sum(d_f, axis=0)  # dl/dbeta_k = dl/df_k
        d_weights[k] = d_f.T @ memo.hidden[k]  # dl/dOmega_k = dl/df_k h_k^T
        if k > 0:  # dl/df_{k-1} = I[f_{k-1} > 0] * Omega_k^T dl/df_k
            d_f = (memo.pre_activations[k - 1] > 0) * (d_f @ weights[k])
    return d_weights, d_biases


def _dense_layers(params: dict) -> list[str]:
    """The names of the dense layers' params (those with a kernel ``w``), in the order the network applies them.

    A ``Sequential`` names its children ``<name>_<index>``; the order is read from the index,
    not from the dict, whose keys JAX sorts as strings (``dense_10`` before ``dense_2``)
    whenever the params pass through ``jit`` or a tree map.
    """
    names = [name for name, p in params.items() if isinstance(p, dict) and "w" in p]
    check_that(names and all("b" in params[name] for name in names), "backprop.from_dense",
               "Dense layers with biases among the params", sorted(params))
    suffixes = [name.rsplit("_", 1)[-1] for name in params]
    if all(suffix.isdigit() for suffix in suffixes):
        names.sort(key=lambda name: int(name.rsplit("_", 1)[-1]))
    return names


def from_dense(params: dict) -> tuple[list, list]:
    """``(weights, biases)`` in UDL's layout from the params of a ``Sequential`` of ``Dense`` and ``ReLU`` layers.

    The dense layers are taken in the order of their index (``dense_0``, ``dense_2``, ...);
    ``Omega_k = W_k^T`` (``jdl.nn.Dense`` computes ``x W + b``).
    """
    names = _dense_layers(params)
    return [params[name]["w"].T for name in names], [params[name]["b"] for name in names]


def to_dense(params: dict, weights: Sequence, biases: Sequence) -> dict:
    """``params`` with its dense layers' ``w`` and ``b`` replaced by ``Omega_k^T`` and ``beta_k`` (gradients too)."""
    result = dict(params)
    for name, omega, beta in zip(_dense_layers(params), weights, biases, strict=True):
        result[name] = {"w": omega.T, "b": beta}
    return result


class ToyMemo(NamedTuple):
    """The toy function's intermediate values: ``f = (f_0 .. f_3)``, ``h = (h_0 = x, h_1, h_2, h_3)``."""

    f: tuple
    h: tuple


def toy_forward(beta: jax.Array, omega: jax.Array, x: jax.Array) -> tuple[jax.Array, ToyMemo]:
    """``f = beta_3 + omega_3 cos(beta_2 + omega_2 exp(beta_1 + omega_1 sin(beta_0 + omega_0 x)))``, step by step."""
    check_that(beta.shape == (4,) and omega.shape == (4,), "backprop.toy_forward", "beta and omega of shape (4,)",
               f"{beta.shape} and {omega.shape}")
    f0 = beta[0] + omega[0] * x
    h1 = jnp.sin(f0)
    f1 = beta[1] + omega[1] * h1
    h2 = jnp.exp(f1)
    f2 = beta[2] + omega[2] * h2
    h3 = jnp.cos(f2)
    f3 = beta[3] + omega[3] * h3
    return f3, ToyMemo((f0, f1, f2, f3), (x, h1, h2, h3))


def toy_backward(omega: jax.Array, memo: ToyMemo, y: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(dl/dbeta, dl/domega)`` of ``l = sum (f - y)^2`` (over the examples in ``x``), by the chain rule."""
    f0, f1, f2, f3 = memo.f
    dl_df3 = 2.0 * (f3 - y)
    dl_dh3 = omega[3] * dl_df3  # df_3/dh_3 = omega_3
    dl_df2 = -jnp.sin(f2) * dl_dh3  # dh_3/df_2 = -sin(f_2)
    dl_dh2 = omega[2] * dl_df2
    dl_df1 = jnp.exp(f1) * dl_dh2  # dh_2/df_1 = exp(f_1)
    dl_dh1 = omega[1] * dl_df1
    dl_df0 = jnp.cos(f0) * dl_dh1  # dh_1/df_0 = cos(f_0)
    dl_df = jnp.stack([dl_df0, dl_df1, dl_df2, dl_df3])
    dl_dbeta = jnp.sum(dl_df.reshape(4, -1), axis=1)  # df_k/dbeta_k = 1
    dl_domega = jnp.sum((jnp.stack(memo.h) * dl_df).reshape(4, -1), axis=1)  # df_k/domega_k = h_k
    return dl_dbeta, dl_domega


def chain_rule_two_paths(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Seed 000's chain rule over two paths: ``k(h(f(x), g(x)))``, and ``dk/dx`` by hand.

    With ``f = x^2``, ``g = sin x``, ``h = f g`` and ``k = exp(h)``:
    ``dk/dx = dk/dh (dh/df df/dx + dh/dg dg/dx) = e^h (g 2x + f cos x)``: ``x`` reaches ``k``
    through ``f`` and through ``g``, and the two paths' products add.
    """
    f, g = x**2, jnp.sin(x)
    h = f * g
    k = jnp.exp(h)
    dk_dh = k
    dh_df, dh_dg = g, f
    df_dx, dg_dx = 2 * x, jnp.cos(x)
    return k, dk_dh * (dh_df * df_dx + dh_dg * dg_dx)
