"""One battery for every public layer and model (the table in ``descriptors.py``).

Each rule holds by construction, not by memory: a new layer joins the table and meets them
all. The rules: ``jit`` gives eager's numbers; ``vmap`` gives a loop's; gradients are
finite; float32, bfloat16 and float64 run; NaN in gives NaN out (never a number); an empty
batch, integer params, another instance's params, missing state and (in training) a
missing key are refused at trace time with the layer's name; the same key gives the same
numbers; the params tree (names and shapes) matches its golden file.
"""
from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.conformance.descriptors import CASES, floating_leaves, public_layer_classes, stack, to_dtype

GOLDEN = pathlib.Path(__file__).parent / "golden"


def build(request):
    """``(case, layer, params, state, x, kwargs, eager output)``, built once per case."""
    case = request.param
    layer = case.make()
    x, kwargs = case.example(0)
    params, state = layer.init(jax.random.key(1), x)
    return case, layer, params, state, x, kwargs, _apply(layer, params, state, x, kwargs, case)


@pytest.fixture(scope="module", params=[case for case in CASES if not case.model], ids=lambda case: case.name)
def built(request):
    return build(request)  # the models' run in test_models.py, so that two workers share the battery


def _apply(layer, params, state, x, kwargs, case, **extra):
    return layer.apply(params, state, x, **kwargs, **case.options, **extra)[0]


def _assert_close(got, want, rtol=1e-5, atol=1e-6):
    for g, w in zip(floating_leaves(got), floating_leaves(want)):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def test_every_public_layer_and_model_is_in_the_table():
    covered = {type(case.make()).__name__ for case in CASES}
    missing = public_layer_classes() - covered
    assert not missing, f"add these to tests/conformance/descriptors.py: {sorted(missing)}"


def _total(out) -> jax.Array:
    return sum(jnp.sum(leaf.astype(jnp.float32)) for leaf in jax.tree.leaves(out) if jnp.issubdtype(leaf.dtype,
                                                                                                    jnp.floating))


def test_jit_vmap_grad_and_bfloat16(built):
    """Under ``jit`` (one compilation for all four): the output matches eager's; ``vmap`` over
    examples 0 and 2 matches each alone; the gradients are finite; bfloat16 params and inputs
    run and agree with float32 to bfloat16's precision."""
    case, layer, params, state, x, kwargs, eager = built
    other = case.example(2)

    def run(p, v, kw, batch):
        def total_and_output(q):
            output = _apply(layer, q, state, v, kw, case)
            return _total(output), output

        # The output comes with the gradient (one forward pass to compile, not two).
        (_, out), grads = jax.value_and_grad(total_and_output, has_aux=True)(p)
        batched = jax.vmap(lambda vi, kwi: _apply(layer, p, state, vi, kwi, case))(*batch)
        low = _apply(layer, *(to_dtype(tree, jnp.bfloat16) for tree in (p, state, v, kw)), case)
        return out, batched, grads, low

    out, batched, grads, low = jax.jit(run)(params, x, kwargs, stack([(x, kwargs), other]))
    _assert_close(low, eager, rtol=0.1, atol=0.1)
    _assert_close(out, eager)
    _assert_close(jax.tree.map(lambda a: a[0], batched), eager)
    _assert_close(jax.tree.map(lambda a: a[1], batched), _apply(layer, params, state, *other, case))
    assert all(np.all(np.isfinite(g)) for g in floating_leaves(grads))


def test_float64(built):
    """float64 params and inputs run in float64 (nothing is cast down; a precision policy gives its
    output dtype) and agree with float32."""
    case, layer, params, state, x, kwargs, eager = built
    with jax.enable_x64(True):
        # Cast inside the program: one compilation, not an eager cast compiled per leaf shape.
        high = jax.jit(lambda *trees: _apply(layer, *(to_dtype(tree, jnp.float64) for tree in trees), case))(
            params, state, x, kwargs)
        want = case.output_dtype or np.float64  # a precision policy casts its output by design
        assert all(leaf.dtype == want for leaf in jax.tree.leaves(high) if jnp.issubdtype(leaf.dtype, jnp.floating))
        _assert_close(high, eager, rtol=1e-4, atol=1e-5)


def test_nan_in_gives_nan_out(built):
    """NaN in the input (or, for ids, in the params) never comes out as a number."""
    case, layer, params, state, x, kwargs, eager = built
    if case.integer_input:
        params = jax.tree.map(lambda a: jnp.full_like(a, jnp.nan), params)
    else:
        x = jnp.full_like(x, jnp.nan)
    out = floating_leaves(_apply(layer, params, state, x, kwargs, case))
    check = np.all if case.all_nan else np.any
    assert all(check(np.isnan(leaf)) for leaf in out), f"{layer}: NaN in, a number out"


def test_refusals(built):
    """Each bad call fails at trace time, naming the layer: nothing is computed from it."""
    case, layer, params, state, x, kwargs, eager = built
    name = type(layer).__name__ if case.name not in ("LSTM", "GRU") else "RNN"
    empty = jax.tree.map(lambda a: a[:0], x)
    with pytest.raises((ValueError, TypeError), match=name):
        jax.eval_shape(lambda v, kw: _apply(layer, params, state, v, kw, case), empty,
                       jax.tree.map(lambda a: a[:0], kwargs))
    if params:
        with pytest.raises(TypeError, match=rf"{name}.*of a floating dtype .*got int32"):
            jax.eval_shape(lambda p: _apply(layer, p, state, x, kwargs, case),
                           jax.tree.map(lambda a: a.astype(jnp.int32), params))
    if case.other is not None:
        other_params, other_state = jax.eval_shape(case.other().init, jax.random.key(1), x)
        with pytest.raises((ValueError, TypeError), match=r"from another model"):
            jax.eval_shape(lambda p, s: _apply(layer, p, s, x, kwargs, case), other_params, other_state)
    with pytest.raises(TypeError, match=rf"{name}.*expected state to be a dict"):
        _apply(layer, params, None, x, kwargs, case)
    if case.stochastic:
        with pytest.raises(ValueError, match=r"needs a PRNG key"):
            _apply(layer, params, state, x, kwargs, case, train=True)


def test_same_key_same_numbers(built):
    case, layer, params, state, x, kwargs, eager = built
    again, _ = layer.init(jax.random.key(1), x)
    _assert_close(again, params, rtol=0, atol=0)
    if case.stochastic:
        first, second = (_apply(layer, params, state, x, kwargs, case, key=jax.random.key(5), train=True)
                         for _ in range(2))
        _assert_close(first, second, rtol=0, atol=0)


def params_tree(params) -> dict:
    """``{"encoder/block_0/w": [4, 5], ...}``: the names and shapes a rename would change."""
    flat = jax.tree_util.tree_flatten_with_path(params)[0]
    return {"/".join(str(getattr(k, "key", k)) for k in path): list(leaf.shape) for path, leaf in flat}


def test_params_tree_matches_its_golden_file(built):
    """A rename or reshape of a model's params is a deliberate change: regenerate with
    ``python -m tests.conformance.update_golden`` and commit the diff."""
    case, layer, params, state, x, kwargs, eager = built
    path = GOLDEN / f"{case.name}.json"
    assert path.exists(), f"no golden file for {case.name}: run python -m tests.conformance.update_golden"
    assert params_tree(params) == json.loads(path.read_text()), f"{case.name}'s params tree changed"
