"""The optimizer cases: update throughput of each jdl optimizer against its optax twin.

Each case runs one optimizer, ``jdl.optim.X`` on one side and ``optax.X`` with the same
hyperparameters on the other, on the same pytree of about 10M parameters
(:func:`param_shapes`: a small Transformer-like model, 72 leaves from 384 to ~1.9M
elements) and the same fixed random gradient pytree. One timed call is ``K`` steps
(``update`` then ``apply_updates``) in a ``lax.scan``, jitted with the
``(params, opt_state)`` carry donated, so both sides update their buffers in place;
the gradients are a (non-donated) argument, read afresh at every step: step ``t`` uses
``grads * factors[t]`` with ``factors`` an array of ones, so that XLA cannot hoist the
gradient-only part of the update out of the loop (with the very same gradients at
every step it does, into param-sized temporaries, which times other memory traffic).

Before anything is timed, the params after the first call (``K`` steps) must agree
leaf by leaf: ``|jdl - optax| <= rtol * (|optax| + rms(optax leaf))`` with ``rtol``
``1e-5`` in float32 (``2e-2`` in bfloat16); otherwise the two sides would not time the
same computation, and the run stops.

An update is memory-bound: per step an ideal implementation reads the params, the
gradients and each state buffer once and writes the params and each state buffer once,
``bytes_per_step = param_bytes * (2 + grad_reads + 2 * state_buffers)``, where
``state_buffers`` is the number of param-sized buffers the rule needs (Adam: 2, the
moments) and ``grad_reads`` is 2 where the rule needs a global reduction over the
gradients before it can scale them (``clip_by_global_norm``), else 1. Dividing by the
measured step time gives bytes per second; dividing that by the bytes per second of a
memory-bandwidth baseline gives the fraction of the machine's limit that each side
reaches. The baseline is a jitted ``x * a + b`` on one float32 array holding half of
``bytes_per_step`` (read ``x``, write ``y``: the same bytes moved), ``K`` times in a
``lax.scan`` with ``x`` donated, timed in the same rounds as the two sides (jdl, optax,
baseline, jdl, ...), so that all three see the same machine load.

A case whose jdl function does not exist (yet) raises :class:`SkipCase`; the runner
prints a note and goes on.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jdl.optim
from benchmarks.cases import Budget, Config
from jdl.models import count_params

# Params agree after the first call: |jdl - ref| <= rtol * (|ref| + rms(ref leaf)).
PARAM_RTOL = {"float32": 1e-5, "bfloat16": 2e-2}
PARAM_SCALE = 0.05  # params ~ N(0, PARAM_SCALE^2)
GRAD_SCALE = 0.01  # grads ~ N(0, GRAD_SCALE^2): global norm ~ 30, so clip_by_global_norm(1) clips


class SkipCase(Exception):
    """The case cannot run here (its jdl function does not exist yet): note it and go on."""


# --------------------------------------------------------------------------- the pytree


def param_shapes(d: int = 384, vocab: int = 5000, context: int = 512, hidden: int = 1536,
                 blocks: int = 4, classes: int = 1000, patch: int = 16) -> dict:
    """The leaf shapes of a small Transformer-like model: 9.90M params in 72 leaves.

    Mixed sizes as in a real model: a few big matrices (embedding 5000x384, MLP
    384x1536), many medium ones and many small vectors (biases, norm scales).
    """
    def norm():
        return {"scale": (d,), "bias": (d,)}

    shapes = {
        "stem": {"w": (patch, patch, 3, d), "b": (d,)},
        "embed": {"tokens": (vocab, d), "positions": (context, d)},
    }
    for i in range(blocks):
        shapes[f"block_{i}"] = {
            "norm_1": norm(),
            "attn": {name: (d, d) for name in ("w_q", "w_k", "w_v", "w_o")}
            | {name: (d,) for name in ("b_q", "b_k", "b_v", "b_o")},
            "norm_2": norm(),
            "mlp": {"w_1": (d, hidden), "b_1": (hidden,), "w_2": (hidden, d), "b_2": (d,)},
        }
    shapes["norm"] = norm()
    shapes["head"] = {"w": (d, classes), "b": (classes,)}
    return shapes


def random_tree(key: jax.Array, shapes: dict, scale: float, dtype) -> dict:
    """Normal(0, scale^2) leaves with the given shapes, each from its own key, on the device."""
    leaves, treedef = jax.tree.flatten(shapes, is_leaf=lambda x: isinstance(x, tuple))
    return jax.tree.unflatten(treedef, _draw(key, jnp.float32(scale), tuple(leaves), jnp.dtype(dtype)))


@functools.partial(jax.jit, static_argnums=(2, 3))
def _draw(key, scale, shapes: tuple, dtype) -> list:
    """One program for every leaf (compiled once per tree of shapes), not one draw per distinct shape."""
    keys = jax.random.split(key, len(shapes))
    return [(scale * jax.random.normal(k, shape, jnp.float32)).astype(dtype) for k, shape in zip(keys, shapes)]


def tree_bytes(tree) -> int:
    return int(sum(np.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree)))


def _copy(tree):
    """A copy with its own buffers: each side donates its params, which would delete shared ones."""
    return jax.tree.map(lambda a: jnp.array(a, copy=True), tree)


# --------------------------------------------------------------------------- the loops


class UpdateLoop:
    """A zero-argument callable: each call runs ``steps`` optimizer steps on fixed gradients.

    The ``(params, opt_state)`` carry is donated to each call and replaced by its result,
    so the optimizer keeps stepping. Same interface as :class:`benchmarks.cases.TrainLoop`.
    """

    def __init__(self, optimizer, apply_updates: Callable, params, grads, steps: int):
        def run(carry, grads, factors):
            def step(carry, factor):
                params, opt_state = carry
                # Step t's gradients are grads * factors[t] (all ones, but XLA cannot know):
                # with the same grads at every step, XLA would hoist the optimizer's
                # gradient-only work (lr * g, (1 - b2) * g**2, ...) out of the loop into
                # param-sized temporaries, and time a different memory traffic.
                step_grads = jax.tree.map(lambda g: g * factor.astype(g.dtype), grads)
                updates, opt_state = optimizer.update(step_grads, opt_state, params)
                return (apply_updates(params, updates), opt_state), None

            return jax.lax.scan(step, carry, factors)[0]

        self.run = jax.jit(run, donate_argnums=0)
        self.carry = (params, optimizer.init(params))
        self.grads = grads
        self.factors = jnp.ones((steps,), jnp.float32)
        self.state_bytes = tree_bytes(self.carry[1])
        self.donated: bool | None = None  # known after the first call

    def __call__(self):
        old_leaf = jax.tree.leaves(self.carry)[0] if self.donated is None else None
        self.carry = self.run(self.carry, self.grads, self.factors)
        if old_leaf is not None:
            self.donated = old_leaf.is_deleted()
        return self.carry

    def compilations(self) -> int:
        return self.run._cache_size()

    def compiled(self):
        """The compiled program (from jit's cache once the loop has been called: no recompilation)."""
        return self.run.lower(self.carry, self.grads, self.factors).compile()


def compiled_bytes_per_step(compiled) -> float | None:
    """XLA's cost analysis of the compiled loop: bytes accessed, the loop body (one step) counted once."""
    try:
        analysis = compiled.cost_analysis()
    except Exception:  # noqa: BLE001 -- a backend without cost analysis: report nothing
        return None
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    value = (analysis or {}).get("bytes accessed")
    return None if value is None else float(value)


def program_signature(compiled) -> collections.Counter:
    """The optimized HLO as a multiset of instructions, without names, metadata or source locations.

    Two sides with equal signatures run the same program (the same fusions, the same
    arithmetic in the same order): any difference in their times is noise.
    """
    text = re.sub(r", metadata=\{[^}]*\}", "", compiled.as_text())
    text = re.sub(r"%[\w.\-]+", "%_", text)
    lines = (line.strip() for line in text.splitlines())
    return collections.Counter(line for line in lines
                               if "=" in line and not line.startswith("HloModule") and not re.match(r"\d+ \{", line))


class BandwidthBaseline:
    """``x <- x * a + b`` on one float32 array of ``num_bytes / 8`` elements, ``steps`` times per call."""

    A, B = 0.5, 1.0  # x converges to 2: no overflow, no denormals

    def __init__(self, num_bytes: int, steps: int):
        self.size = max(num_bytes // 8, 1)  # read 4 bytes, write 4 bytes per element
        self.bytes_per_step = 8 * self.size

        def run(x):
            return jax.lax.scan(lambda x, _: (x * self.A + self.B, None), x, None, length=steps)[0]

        self.run = jax.jit(run, donate_argnums=0)
        self.x = jnp.ones((self.size,), jnp.float32)

    def __call__(self):
        self.x = self.run(self.x)
        return self.x


# --------------------------------------------------------------------------- the check


def check_params(jdl_out, ref_out, *, initial: list[np.ndarray], dtype: str) -> dict:
    """Assert the two sides' params agree after the first call; report how closely.

    Also reports how closely the displacements ``params - initial`` agree (relative to
    the largest reference displacement of each leaf), a stricter view of the same.
    """
    jdl_params, ref_params = jdl_out[0], ref_out[0]
    if jax.tree.structure(jdl_params) != jax.tree.structure(ref_params):
        raise AssertionError(f"jdl and optax params differ in structure: {jax.tree.structure(jdl_params)} vs "
                             f"{jax.tree.structure(ref_params)}")
    rtol = PARAM_RTOL[dtype]
    worst, worst_update, failures = 0.0, 0.0, []
    paths = [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(ref_params)]
    for path, a, b, p0 in zip(paths, jax.tree.leaves(jdl_params), jax.tree.leaves(ref_params), initial):
        a = np.asarray(jnp.asarray(a, jnp.float32))
        b = np.asarray(jnp.asarray(b, jnp.float32))
        if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            failures.append(f"{path}: not finite")
            continue
        scale = np.abs(b) + np.sqrt(np.mean(np.square(b)))
        relative = float(np.max(np.abs(a - b) / scale))
        worst = max(worst, relative)
        if relative > rtol:
            failures.append(f"{path}: max |jdl - optax| / (|optax| + rms) = {relative:.3g}")
        moved = np.max(np.abs(b - p0))
        if moved > 0:
            worst_update = max(worst_update, float(np.max(np.abs((a - p0) - (b - p0))) / moved))
    if failures:
        raise AssertionError(
            "jdl and optax disagree, so they are not timing the same computation (params after the first "
            f"call, rtol {rtol}, {dtype}): " + "; ".join(failures[:5]) + (" ..." if len(failures) > 5 else "")
        )
    return {"max_rel_param_diff": worst, "max_rel_update_diff": worst_update, "rtol": rtol}


# --------------------------------------------------------------------------- the cases

LR = 1e-3


@dataclasses.dataclass(frozen=True)
class OptimizerCase:
    """One optimizer on both sides; ``build(config)`` returns everything the harness needs.

    ``make(lib)`` builds the optimizer from a library namespace: ``jdl.optim`` or
    ``optax`` (the same call on both sides); ``ref_make`` overrides the optax side where
    the twin is spelled differently. ``requires`` names the ``jdl.optim`` functions the
    jdl side needs; the case is skipped while one is missing.
    """

    name: str
    description: str
    make: Callable[[Any], Any]
    requires: tuple[str, ...]
    state_buffers: int  # param-sized buffers an ideal implementation keeps
    shapes: dict = dataclasses.field(default_factory=param_shapes, compare=False)  # the params' leaf shapes
    grad_reads: int = 1  # 2: a global reduction over the gradients before the update (global norm)
    ref_make: Callable[[Any], Any] | None = None
    budget: Budget = Budget(steps_per_call=10, rounds=21, quick_steps_per_call=4, quick_rounds=5)
    backend_budgets: dict = dataclasses.field(
        default_factory=lambda: {"gpu": Budget(steps_per_call=50, rounds=31, quick_steps_per_call=20, quick_rounds=11)})
    kind: str = "optimizer_update"

    def settings(self, config: Config) -> tuple[int, int]:
        return self.backend_budgets.get(jax.default_backend(), self.budget).choose(config)

    def missing(self) -> list[str]:
        return [name for name in self.requires if not hasattr(jdl.optim, name)]

    def build(self, config: Config) -> dict:
        missing = self.missing()
        if missing:
            raise SkipCase(f"jdl.optim has no {', '.join(missing)} (yet)")
        dtype = jnp.dtype(config.dtype)
        steps, rounds = self.settings(config)
        try:
            jdl_optimizer = self.make(jdl.optim)
        except TypeError as error:  # the function exists but lacks an argument optax has
            raise SkipCase(f"jdl.optim cannot build {self.description}: {error}") from None
        ref_optimizer = (self.ref_make or self.make)(optax)

        shapes = self.shapes
        params_key, grads_key = jax.random.split(jax.random.key(0))
        params = random_tree(params_key, shapes, PARAM_SCALE, dtype)
        grads = random_tree(grads_key, shapes, GRAD_SCALE, dtype)  # shared, never donated
        # Copies (np.array, not a zero-copy np.asarray view, which would keep jax from donating the buffer).
        initial = [np.array(jnp.asarray(leaf, jnp.float32), copy=True) for leaf in jax.tree.leaves(params)]
        jdl_loop = UpdateLoop(jdl_optimizer, jdl.optim.apply_updates, _copy(params), grads, steps)
        ref_loop = UpdateLoop(ref_optimizer, optax.apply_updates, params, grads, steps)

        param_bytes = tree_bytes(params)
        bytes_per_step = param_bytes * (2 + self.grad_reads + 2 * self.state_buffers)

        baseline = BandwidthBaseline(bytes_per_step, steps)

        def finish(timing) -> dict:
            baseline_bps = baseline.bytes_per_step / timing.baseline_s
            jdl_bps, ref_bps = bytes_per_step / timing.jdl_s, bytes_per_step / timing.ref_s
            jdl_compiled, ref_compiled = jdl_loop.compiled(), ref_loop.compiled()
            return {
                "bytes_per_step": bytes_per_step,
                "param_bytes": param_bytes,
                "state_buffers": self.state_buffers,
                "grad_reads": self.grad_reads,
                "jdl_state_bytes": jdl_loop.state_bytes,
                "ref_state_bytes": ref_loop.state_bytes,
                "jdl_compiled_bytes_per_step": compiled_bytes_per_step(jdl_compiled),
                "ref_compiled_bytes_per_step": compiled_bytes_per_step(ref_compiled),
                "same_compiled_program": program_signature(jdl_compiled) == program_signature(ref_compiled),
                "jdl_bytes_per_s": jdl_bps,
                "ref_bytes_per_s": ref_bps,
                "baseline_s": timing.baseline_s,
                "baseline_min_s": timing.baseline_min_s,
                "baseline_bytes_per_s": baseline_bps,
                "jdl_bandwidth_fraction": jdl_bps / baseline_bps,
                "ref_bandwidth_fraction": ref_bps / baseline_bps,
            }

        return {
            "jdl_call": jdl_loop,
            "ref_call": ref_loop,
            "baseline": baseline,
            "check": lambda jdl_out, ref_out: check_params(jdl_out, ref_out, initial=initial, dtype=config.dtype),
            "check_key": "param_check",
            "ref_name": "optax",
            "steps_per_call": steps,
            "rounds": rounds,
            "num_params": count_params(params),
            "record": {"num_leaves": len(jax.tree.leaves(params))},
            "finish": finish,
        }


def _clipped_sgd(clipper: str, *args):
    return lambda lib: lib.chain(getattr(lib, clipper)(*args), lib.sgd(LR))


def _normalized_reference(lib):
    # g / (|g| + eps) is Adam with b1 = b2 = 0 (no averaging, bias corrections of 1).
    return lib.adam(LR, b1=0.0, b2=0.0, eps=1e-8)


OPTIMIZER_CASES = {
    case.name: case
    for case in (
        OptimizerCase("sgd_update", f"sgd({LR})", lambda o: o.sgd(LR), ("sgd",), 0),
        OptimizerCase("momentum_update", f"sgd({LR}, momentum=0.9)", lambda o: o.sgd(LR, momentum=0.9),
                      ("sgd",), 1),
        OptimizerCase("nesterov_update", f"sgd({LR}, momentum=0.9, nesterov=True)",
                      lambda o: o.sgd(LR, momentum=0.9, nesterov=True), ("sgd",), 1),
        OptimizerCase("adagrad_update", "adagrad(1e-2)", lambda o: o.adagrad(1e-2), ("adagrad",), 1),
        OptimizerCase("adadelta_update", "adadelta(1.0, rho=0.9, eps=1e-6)",
                      lambda o: o.adadelta(1.0, rho=0.9, eps=1e-6), ("adadelta",), 2),
        OptimizerCase("rmsprop_update", f"rmsprop({LR}, decay=0.9, eps=1e-8)",
                      lambda o: o.rmsprop(LR, decay=0.9, eps=1e-8), ("rmsprop",), 1),
        OptimizerCase("rmsprop_centered_update", f"rmsprop({LR}, decay=0.9, eps=1e-8, centered=True)",
                      lambda o: o.rmsprop(LR, decay=0.9, eps=1e-8, centered=True), ("rmsprop",), 2),
        OptimizerCase("rmsprop_momentum_update",
                      f"rmsprop({LR}, decay=0.9, eps=1e-8, centered=True, momentum=0.9)",
                      lambda o: o.rmsprop(LR, decay=0.9, eps=1e-8, centered=True, momentum=0.9), ("rmsprop",), 3),
        OptimizerCase("adam_update", f"adam({LR})", lambda o: o.adam(LR), ("adam",), 2),
        OptimizerCase("adamw_update", f"adamw({LR}, weight_decay=1e-4)",
                      lambda o: o.adamw(LR, weight_decay=1e-4), ("adamw",), 2),
        OptimizerCase("nadam_update", f"nadam({LR})", lambda o: o.nadam(LR), ("nadam",), 2),
        OptimizerCase("normalized_sgd_update", f"normalized_sgd({LR}, eps=1e-8) vs optax.adam({LR}, b1=0, b2=0)",
                      lambda o: o.normalized_sgd(LR, eps=1e-8), ("normalized_sgd",), 0,
                      ref_make=_normalized_reference),
        OptimizerCase("clip_update", f"chain(clip(0.005), sgd({LR}))", _clipped_sgd("clip", 0.005),
                      ("chain", "clip", "sgd"), 0),
        OptimizerCase("clip_by_global_norm_update", f"chain(clip_by_global_norm(1.0), sgd({LR}))",
                      _clipped_sgd("clip_by_global_norm", 1.0), ("chain", "clip_by_global_norm", "sgd"), 0,
                      grad_reads=2),
    )
}
