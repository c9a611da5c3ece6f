"""Recurrent cases: forward plus backward of one LSTM or GRU layer, jdl against flax.linen.

Each timed call is ``jax.value_and_grad`` of ``sum(outputs * r)`` (``r`` a fixed random
cotangent) with respect to the layer's params and its input, jitted:

* jdl: ``nn.LSTM`` / ``nn.GRU`` (batch-major input, the default fused backward pass);
* reference: ``flax.linen.RNN`` over ``OptimizedLSTMCell`` / ``GRUCell``.

The flax side gets the jdl weights, sliced per gate into flax's layout, so both compute
the same function; :func:`check_same` asserts equal losses and input gradients before
anything is timed. Shapes: batch 64, input 128, hidden 256, float32 (or ``--dtype``);
cases ``lstm_t{T}`` and ``gru_t{T}`` for sequence lengths T = 50, 100, 200, 400, so the
records show how time grows with T and that compile time does not (``*_compile_only_s``:
tracing and compiling ahead of time, nothing run; ``*_compile_s`` is the first call,
which also runs once).
"""
from __future__ import annotations

import dataclasses
import functools
import time

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.cases import Budget
from jdl import nn
from jdl.models import count_params

BATCH, FEATURES, HIDDEN = 64, 128, 256
LENGTHS = (50, 100, 200, 400)
# |jdl - flax| <= tolerance * (1 + |flax|), for the loss and every input-gradient entry.
TOLERANCE = {"float32": 1e-4, "bfloat16": 5e-2}


class GradCall:
    """A zero-argument callable: one jitted forward + backward on fixed params and input."""

    def __init__(self, loss, params, x, cotangent):
        # The cotangent is an argument, not a closed-over constant: a constant the size of the
        # outputs would be embedded in the program and make compile time grow with the length.
        self.run = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        self.params, self.x, self.cotangent = params, x, cotangent
        self.donated = None  # nothing is donated: params and input are reused every call

    def __call__(self):
        return self.run(self.params, self.x, self.cotangent)

    def compilations(self) -> int:
        return self.run._cache_size()

    def compile_seconds(self) -> float:
        """Trace and compile only (ahead of time, nothing run): what must not grow with the length."""
        start = time.perf_counter()
        self.run.lower(self.params, self.x, self.cotangent).compile()
        return time.perf_counter() - start


def flax_cell_params(params: dict, gates: str, lstm: bool) -> dict:
    """jdl's stacked params -> flax's per-gate ``i{gate}``/``h{gate}`` Dense params (copies)."""
    hidden = params["hidden"]["w"].shape[0]
    w_in, b_in, w_h = params["input"]["w"], params["input"]["b"], params["hidden"]["w"]
    out = {}
    for k, gate in enumerate(gates):
        columns = slice(k * hidden, (k + 1) * hidden)
        if lstm:  # flax's LSTM keeps its one bias on the hidden side
            out[f"i{gate}"] = {"kernel": jnp.array(w_in[:, columns])}
            out[f"h{gate}"] = {"kernel": jnp.array(w_h[:, columns]), "bias": jnp.array(b_in[columns])}
        else:
            out[f"i{gate}"] = {"kernel": jnp.array(w_in[:, columns]), "bias": jnp.array(b_in[columns])}
            out[f"h{gate}"] = {"kernel": jnp.array(w_h[:, columns])}
    if not lstm:
        out["hn"]["bias"] = jnp.array(params["hidden"]["b"])
    return out


def check_same(jdl_out, ref_out, dtype: str) -> dict:
    (jdl_loss, (_, jdl_dx)), (ref_loss, (_, ref_dx)) = jdl_out, ref_out
    as_np = lambda a: np.asarray(jnp.asarray(a, jnp.float32))  # noqa: E731
    tolerance = TOLERANCE[dtype]
    loss_diff = abs(float(jdl_loss) - float(ref_loss))
    dx_diff = np.abs(as_np(jdl_dx) - as_np(ref_dx))
    if loss_diff > tolerance * (1 + abs(float(ref_loss))) or np.any(dx_diff > tolerance * (1 + np.abs(as_np(ref_dx)))):
        raise AssertionError(f"jdl and flax disagree, so they are not timing the same computation: loss "
                             f"{float(jdl_loss)} vs {float(ref_loss)}, max |d input| difference {dx_diff.max()}")
    return {"jdl_loss": float(jdl_loss), "ref_loss": float(ref_loss), "max_abs_input_grad_diff": float(dx_diff.max())}


@dataclasses.dataclass(frozen=True)
class RecurrentCase:
    name: str
    kind_of_cell: str  # "lstm" or "gru"
    steps: int  # sequence length
    budget: Budget = Budget(steps_per_call=1, rounds=15, quick_steps_per_call=1, quick_rounds=5)
    kind: str = "recurrent_fwd_bwd"

    @property
    def description(self) -> str:
        flax_cell = "OptimizedLSTMCell" if self.kind_of_cell == "lstm" else "GRUCell"
        return (f"{self.kind_of_cell.upper()} layer forward + backward (params and input), batch {BATCH}, time "
                f"{self.steps}, input {FEATURES}, hidden {HIDDEN}; flax nn.RNN({flax_cell})")

    def build(self, config) -> dict:
        dtype = jnp.dtype(config.dtype)
        lstm = self.kind_of_cell == "lstm"
        x_key, r_key, init_key = jax.random.split(jax.random.key(0), 3)
        x = jax.random.normal(x_key, (BATCH, self.steps, FEATURES), jnp.float32).astype(dtype)
        r = jax.random.normal(r_key, (BATCH, self.steps, HIDDEN), jnp.float32).astype(dtype)
        cell = (nn.LSTMCell if lstm else nn.GRUCell)(HIDDEN, param_dtype=dtype)
        layer = nn.RNN(cell, return_carry=False)
        params, _ = layer.init(init_key, x)

        def jdl_loss(p, v, cotangent):
            return jnp.sum((layer.apply(p, {}, v)[0] * cotangent).astype(jnp.float32))

        flax_cell = (fnn.OptimizedLSTMCell if lstm else fnn.GRUCell)(HIDDEN, dtype=dtype, param_dtype=dtype)
        module = fnn.RNN(flax_cell)
        ref_params = {"cell": flax_cell_params(params, "ifgo" if lstm else "rzn", lstm)}
        expected = jax.eval_shape(module.init, init_key, x)["params"]
        if jax.tree.map(jnp.shape, expected) != jax.tree.map(jnp.shape, ref_params):
            raise AssertionError(f"{self.name}: flax's params differ in shape from the mapped jdl params")

        def ref_loss(p, v, cotangent):
            return jnp.sum((module.apply({"params": p}, v) * cotangent).astype(jnp.float32))

        jdl_call, ref_call = GradCall(jdl_loss, params, x, r), GradCall(ref_loss, ref_params, x, r)
        return {
            "jdl_call": jdl_call,
            "ref_call": ref_call,
            "ref_name": "flax",
            "check": functools.partial(check_same, dtype=config.dtype),
            "check_key": "agreement",
            "steps_per_call": 1,
            "rounds": self.budget.choose(config)[1],  # one forward + backward per call, whatever --steps-per-call
            "num_params": count_params(params),
            "record": {"batch": BATCH, "time": self.steps, "input_features": FEATURES, "hidden": HIDDEN,
                       "cell": self.kind_of_cell, "jdl_compile_only_s": jdl_call.compile_seconds(),
                       "ref_compile_only_s": ref_call.compile_seconds()},
        }


RECURRENT_CASES = {
    case.name: case
    for kind in ("lstm", "gru")
    for case in (RecurrentCase(f"{kind}_t{steps}", kind, steps) for steps in LENGTHS)
}
