"""The layer protocol and the combinators: names, keys, state, transforms, ensembles, errors."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn


def _mlp_layers():
    return [nn.Dense(8), nn.BatchNorm(momentum=0.9), nn.ReLU(), nn.Dropout(0.3), nn.Dense(3)]


def _cnn_layers():
    return [nn.Conv1D(4, 3, padding="SAME"), nn.BatchNorm(), nn.PReLU(), nn.MaxPool1D(2), nn.Flatten(),
            nn.Dropout(0.5), nn.Dense(8), nn.LayerNorm(), nn.GELU(), nn.Dense(3)]


def _apply_one_by_one(layers, params, state, x, key, train):
    """What a Sequential should do, written out: each layer in turn, key fold_in(key, index)."""
    new_state = {}
    for index, layer in enumerate(layers):
        name = f"{layer.name}_{index}"
        child_key = None if key is None else jax.random.fold_in(key, index)
        x, new_state[name] = layer.apply(params[name], state[name], x, key=child_key, train=train)
    return x, new_state


def _slice(tree, i):
    return jax.tree.map(lambda leaf: leaf[i], tree)


# ---------------------------------------------------------------------------------------
# The protocol, for every kind of layer


LAYERS = [
    pytest.param(lambda: nn.Dense(3), (2, 4), id="dense"),
    pytest.param(lambda: nn.Conv2D(3, 2), (2, 4, 4, 2), id="conv2d"),
    pytest.param(lambda: nn.MaxPool1D(2), (2, 4, 2), id="max_pool1d"),
    pytest.param(lambda: nn.GlobalAvgPool(), (2, 4, 2), id="global_avg_pool"),
    pytest.param(lambda: nn.BatchNorm(), (2, 4), id="batch_norm"),
    pytest.param(lambda: nn.LayerNorm(), (2, 4), id="layer_norm"),
    pytest.param(lambda: nn.Dropout(0.5), (2, 4), id="dropout"),
    pytest.param(lambda: nn.Embedding(5, 3), (2, 4), id="embedding"),
    pytest.param(lambda: nn.PReLU(), (2, 4), id="prelu"),
    pytest.param(lambda: nn.Tanh(), (2, 4), id="tanh"),
    pytest.param(lambda: nn.Flatten(), (2, 4, 2), id="flatten"),
    pytest.param(lambda: nn.Residual(nn.Dense(4)), (2, 4), id="residual"),
    pytest.param(lambda: nn.Concat([nn.Dense(2), nn.Tanh()]), (2, 4), id="concat"),
]


@pytest.mark.parametrize("make_layer, shape", LAYERS)
def test_layer_protocol(make_layer, shape, random_params):
    layer = make_layer()
    assert isinstance(layer, nn.Layer) and repr(layer) == layer.description
    with pytest.raises(dataclasses.FrozenInstanceError):
        layer.name = "other"
    dtype = jnp.int32 if layer.name == "embedding" else jnp.float32
    example = jax.ShapeDtypeStruct(shape, dtype)
    x = jnp.ones(shape, dtype)
    params_shapes, state_shapes = jax.eval_shape(layer.init, jax.random.key(0), example)
    for tree in (params_shapes, state_shapes):
        # Plain nested dicts with string keys.
        assert isinstance(tree, dict)
        for path, _ in jax.tree_util.tree_leaves_with_path(tree):
            assert all(isinstance(entry, jax.tree_util.DictKey) and isinstance(entry.key, str) for entry in path)
    assert bool(jax.tree.leaves(state_shapes)) == (layer.name == "batch_norm")  # no state in most layers
    params = random_params(layer, example)
    state = jax.tree.map(lambda s: jnp.ones(s.shape, s.dtype), state_shapes)
    y, new_state = layer.apply(params, state, x, key=jax.random.key(1), train=True)
    assert jax.tree.structure(new_state) == jax.tree.structure(state)
    assert nn.output_shape(layer, params, state, example) == jax.ShapeDtypeStruct(y.shape, y.dtype)
    with pytest.raises(TypeError):
        layer.apply(params, state, x, jax.random.key(1))  # key and train are keyword-only


def test_init_from_shape_dtype_struct_equals_init_from_array(randn, assert_trees_close):
    model = nn.Sequential(_cnn_layers())
    x = randn((2, 8, 3))
    key = jax.random.key(0)
    params, state = model.init(key, x)
    params_struct, state_struct = model.init(key, jax.ShapeDtypeStruct(x.shape, x.dtype))
    assert_trees_close((params_struct, state_struct), (params, state), rtol=0, atol=0)
    shapes = jax.eval_shape(model.init, key, x)
    assert (jax.tree.map(lambda a: (a.shape, a.dtype), shapes)
            == jax.tree.map(lambda a: (a.shape, a.dtype), (params, state)))
    assert params["conv1d_0"]["w"].shape == (3, 3, 4)
    assert params["dense_6"]["w"].shape == (16, 8) and params["dense_9"]["w"].shape == (8, 3)
    assert sorted(state) == sorted(params) and state["batch_norm_1"]["mean"].shape == (4,)
    # Each child is initialised with fold_in(key, index), from the shape the previous one outputs.
    child_params, _ = nn.Dense(8).init(jax.random.fold_in(key, 6), jax.ShapeDtypeStruct((2, 16), jnp.float32))
    assert_trees_close(params["dense_6"], child_params, rtol=0, atol=0)


def test_sequential_transforms_and_one_by_one(randn, random_params, check_transforms):
    model = nn.Sequential(_cnn_layers())
    x = randn((3, 8, 3))
    params = random_params(model, x, scale=0.5)
    state = {name: {} for name in params}
    state["batch_norm_1"] = {"mean": randn((4,), 1), "var": randn((4,), 2, scale=0.1, mean=1.0)}
    key = jax.random.key(1)
    # No vmap over examples here: Flatten(start_axis=1) would see one example as a batch.
    y_train = check_transforms(model, params, state, x, key=key, train=True, vmap=False, grads=True)
    y_eval, _ = jax.jit(model.apply)(params, state, x)
    for train, y in ((True, y_train), (False, y_eval)):
        one_by_one = jax.jit(lambda p, s, v: _apply_one_by_one(_cnn_layers(), p, s, v, key, train))
        expected, _ = one_by_one(params, state, x)
        np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(y_train, y_eval)


# ---------------------------------------------------------------------------------------
# Sequential


def test_sequential_names(randn):
    model = nn.Sequential([nn.Dense(3), nn.ReLU(), nn.Dense(2), nn.Lambda(jnp.abs)])
    params, state = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 4), jnp.float32))
    # (Compared as sets: jax sorts dict keys whenever it rebuilds a pytree.)
    assert set(params) == set(state) == {"dense_0", "relu_1", "dense_2", "lambda_3"}
    assert params["dense_2"]["w"].shape == (3, 2) and params["relu_1"] == {} and model.name == "sequential"
    named = nn.Sequential({"encoder": nn.Dense(3), "act": nn.Tanh(), "head": nn.Dense(2)}, name="net")
    params, _ = jax.eval_shape(named.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert set(params) == {"encoder", "act", "head"} and named.name == "net"
    assert params["head"]["w"].shape == (3, 2)
    # Nested names read like a path.
    nested = nn.Sequential({"block": nn.Sequential([nn.Dense(3), nn.ReLU()]), "head": nn.Dense(1)})
    params, _ = jax.eval_shape(nested.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 4), jnp.float32))
    assert params["block"]["dense_0"]["w"].shape == (4, 3)


def test_sequential_state_threads_through_scan(randn, random_params, assert_trees_close):
    model = nn.Sequential(_mlp_layers()[:3])  # dense, batch_norm, relu
    xs = randn((4, 6, 5))  # 4 steps of a (6, 5) batch
    params = random_params(model, xs[0])
    _, state = jax.eval_shape(model.init, jax.random.key(0), xs[0])
    state = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), state)

    def step(state, x):
        y, state = model.apply(params, state, x, train=True)
        return state, y

    final_state, ys = jax.jit(lambda s: jax.lax.scan(step, s, xs))(state)
    loop_state, loop_ys = state, []
    for x in xs:
        loop_state, y = jax.jit(step)(loop_state, x)
        loop_ys.append(y)
    assert_trees_close((final_state, ys), (loop_state, np.stack(loop_ys)))
    assert float(jnp.max(jnp.abs(final_state["batch_norm_1"]["mean"]))) > 0.01  # the stats moved


def test_sequential_dropout_keys_differ_per_child():
    model = nn.Sequential([nn.Dropout(0.5), nn.Dropout(0.5)])
    x = jnp.ones((16, 16))
    key = jax.random.key(3)
    y, _ = model.apply({"dropout_0": {}, "dropout_1": {}}, {"dropout_0": {}, "dropout_1": {}}, x, key=key, train=True)
    first = nn.Dropout(0.5).apply({}, {}, x, key=jax.random.fold_in(key, 0), train=True)[0]
    expected = nn.Dropout(0.5).apply({}, {}, first, key=jax.random.fold_in(key, 1), train=True)[0]
    np.testing.assert_array_equal(y, expected)
    # Had both children used the same key, every surviving entry would be 4 and a quarter
    # would not be the survival rate; with independent keys 1/4 of the entries survive.
    assert 0.15 < float(jnp.mean(y != 0)) < 0.35


# ---------------------------------------------------------------------------------------
# Residual, Parallel, Concat, Lambda


def test_residual_identity_and_projection(randn, random_params, assert_trees_close):
    x = randn((3, 5))
    identity = nn.Residual(nn.Sequential([nn.Dense(5), nn.Tanh()]))
    params = random_params(identity, x)
    assert list(params) == ["main"]
    y, _ = identity.apply(params, {"main": {"dense_0": {}, "tanh_1": {}}}, x)
    x_np, p = np.asarray(x), jax.tree.map(np.asarray, params)
    np.testing.assert_allclose(y, np.tanh(x_np @ p["main"]["dense_0"]["w"] + p["main"]["dense_0"]["b"]) + x_np,
                               rtol=1e-5, atol=1e-5)

    projection = nn.Residual(nn.Dense(4), shortcut=nn.Dense(4, use_bias=False))
    params = random_params(projection, x)
    assert sorted(params) == ["main", "shortcut"] and params["shortcut"]["w"].shape == (5, 4)
    y, _ = projection.apply(params, {"main": {}, "shortcut": {}}, x)
    p = jax.tree.map(np.asarray, params)
    expected = x_np @ p["main"]["w"] + p["main"]["b"] + x_np @ p["shortcut"]["w"]
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    # Real init: the branches get fold_in(key, 0) and fold_in(key, 1).
    key = jax.random.key(5)
    params, _ = projection.init(key, x)
    assert_trees_close(params["main"], nn.Dense(4).init(jax.random.fold_in(key, 0), x)[0], rtol=0, atol=0)
    assert_trees_close(params["shortcut"], nn.Dense(4, use_bias=False).init(jax.random.fold_in(key, 1), x)[0],
                       rtol=0, atol=0)


def test_residual_state_and_gradients(randn, random_params, check_transforms, finite_differences):
    block = nn.Residual(nn.Sequential([nn.Dense(4), nn.BatchNorm(momentum=0.5)]))
    x = randn((6, 4))
    params = random_params(block, x)
    state = {"main": {"dense_0": {}, "batch_norm_1": {"mean": jnp.zeros(4), "var": jnp.ones(4)}}}
    y = check_transforms(block, params, state, x, train=True, vmap=False, grads=True)
    _, new_state = block.apply(params, state, x, train=True)
    inner = nn.Sequential([nn.Dense(4), nn.BatchNorm(momentum=0.5)])
    inner_y, inner_state = jax.jit(lambda p, s, v: inner.apply(p, s, v, train=True))(params["main"], state["main"], x)
    np.testing.assert_allclose(y, np.asarray(inner_y) + np.asarray(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(new_state["main"]["batch_norm_1"]["mean"], inner_state["batch_norm_1"]["mean"])
    finite_differences(lambda p, v: block.apply(p, state, v, train=True)[0], (params, x))


def test_residual_that_changes_the_shape():
    bad = nn.Residual(nn.Dense(4))
    message = (r"Residual\(Dense\(features=4\)\): expected the main branch to keep the shape of its input \(3, 5\) "
               r"for the sum, got \(3, 4\) from the main branch and \(3, 5\) from the shortcut")
    with pytest.raises(ValueError, match=message):
        bad.init(jax.random.key(0), jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match=message):
        bad.apply({"main": {"w": jnp.zeros((5, 4)), "b": jnp.zeros(4)}}, {"main": {}}, jnp.zeros((3, 5)))


def test_parallel_returns_a_tuple(randn, random_params):
    model = nn.Parallel([nn.Dense(3), nn.Tanh(), nn.Dense(2)])
    x = randn((4, 5))
    params = random_params(model, x)
    assert sorted(params) == ["dense_0", "dense_2", "tanh_1"]
    outputs, state = model.apply(params, {name: {} for name in params}, x)
    assert isinstance(outputs, tuple) and len(outputs) == 3
    x, p = np.asarray(x), jax.tree.map(np.asarray, params)
    np.testing.assert_allclose(outputs[0], x @ p["dense_0"]["w"] + p["dense_0"]["b"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(outputs[1], np.tanh(x), rtol=1e-6)
    np.testing.assert_allclose(outputs[2], x @ p["dense_2"]["w"] + p["dense_2"]["b"], rtol=1e-5, atol=1e-5)
    assert state == {"dense_0": {}, "tanh_1": {}, "dense_2": {}}


def test_parallel_dropout_keys_differ_per_child():
    model = nn.Parallel({"a": nn.Dropout(0.5), "b": nn.Dropout(0.5)})
    x = jnp.ones((8, 16))
    key = jax.random.key(9)
    (a, b), _ = model.apply({"a": {}, "b": {}}, {"a": {}, "b": {}}, x, key=key, train=True)
    assert bool(jnp.any((a == 0) != (b == 0)))
    for index, out in enumerate((a, b)):
        np.testing.assert_array_equal(out, nn.Dropout(0.5).apply({}, {}, x, key=jax.random.fold_in(key, index),
                                                                  train=True)[0])


@pytest.mark.parametrize("axis", [-1, 0])
def test_concat_is_concatenate(axis, randn, random_params, check_transforms):
    x = randn((4, 5))
    branches = [nn.Dense(3), nn.Tanh()] if axis == -1 else [nn.Tanh(), nn.Lambda(lambda v: 2 * v)]
    model = nn.Concat(branches, axis=axis)
    params = random_params(model, x)
    state = {name: {} for name in params}
    y = check_transforms(model, params, state, x, vmap=False)
    outputs, _ = nn.Parallel(branches).apply(params, state, x)
    np.testing.assert_allclose(y, np.concatenate(outputs, axis=axis), rtol=1e-6)
    assert y.shape == ((4, 8) if axis == -1 else (8, 5))


def test_concat_of_mismatched_branches():
    model = nn.Concat([nn.Dense(3), nn.Flatten(start_axis=0)])
    with pytest.raises(ValueError, match=r"Concat\(\[dense_0=Dense\(features=3\), flatten_1=Flatten\(start_axis=0\)\], "
                                         r"axis=-1\): expected branch outputs that differ only along axis -1, "
                                         r"got shapes \[\(2, 3\), \(8,\)\]"):
        model.init(jax.random.key(0), jnp.zeros((2, 4)))


def test_lambda(randn):
    layer = nn.Lambda(jnp.abs)
    x = randn((3, 4))
    params, state = layer.init(jax.random.key(0), x)
    assert params == {} and state == {} and layer.name == "lambda" and repr(layer) == "Lambda(abs)"
    np.testing.assert_array_equal(layer.apply({}, {}, x)[0], jnp.abs(x))
    np.testing.assert_array_equal(jax.jit(lambda v: layer.apply({}, {}, v)[0])(x), jnp.abs(x))
    np.testing.assert_array_equal(nn.Lambda(lambda v: v[:, :2], name="crop").apply({}, {}, x)[0], x[:, :2])


# ---------------------------------------------------------------------------------------
# Ensembles: vmap over init


def test_ensemble_of_eight_models_is_eight_models(randn, assert_trees_close):
    model = nn.Sequential(_mlp_layers())
    x = randn((6, 5))
    init_keys = jax.random.split(jax.random.key(0), 8)
    dropout_keys = jax.random.split(jax.random.key(1), 8)
    params, state = jax.jit(jax.vmap(model.init, in_axes=(0, None)))(init_keys, x)
    assert params["dense_0"]["w"].shape == (8, 5, 8) and state["batch_norm_1"]["var"].shape == (8, 8)

    def apply_one(p, s, key):
        return model.apply(p, s, x, key=key, train=True)

    ys, new_states = jax.jit(jax.vmap(apply_one))(params, state, dropout_keys)
    ys_eval, _ = jax.jit(jax.vmap(lambda p, s: model.apply(p, s, x)))(params, state)
    # Eight separate models (each call jitted, so eight calls cost one compilation).
    init, apply_train, apply_eval = jax.jit(model.init), jax.jit(apply_one), jax.jit(model.apply)
    for i in range(8):
        params_i, state_i = init(init_keys[i], x)
        assert_trees_close((_slice(params, i), _slice(state, i)), (params_i, state_i), rtol=0, atol=0)
        y_i, new_state_i = apply_train(params_i, state_i, dropout_keys[i])
        assert_trees_close((ys[i], _slice(new_states, i)), (y_i, new_state_i))
        assert_trees_close(ys_eval[i], apply_eval(params_i, state_i, x)[0])
    # The members really differ.
    assert not np.allclose(ys[0], ys[1])


# ---------------------------------------------------------------------------------------
# Errors


def test_params_from_another_model(randn):
    mlp = nn.Sequential([nn.Dense(8), nn.ReLU(), nn.Dense(3)])
    cnn = nn.Sequential([nn.Conv1D(4, 3), nn.ReLU(), nn.Flatten(), nn.Dense(3)])
    x = randn((2, 6, 1))
    mlp_params, mlp_state = jax.eval_shape(mlp.init, jax.random.key(0), jax.ShapeDtypeStruct((2, 6), jnp.float32))
    _, cnn_state = jax.eval_shape(cnn.init, jax.random.key(0), x)
    message = (r"Sequential\(\[conv1d_0=Conv\(.*\), relu_1=ReLU\(\), flatten_2=Flatten\(start_axis=1\), "
               r"dense_3=Dense\(features=3\)\]\): expected params with keys \['conv1d_0', 'dense_3', 'flatten_2', "
               r"'relu_1'\], got keys \['dense_0', 'dense_2', 'relu_1'\]; are these params from another model\?")
    with pytest.raises(ValueError, match=message):
        cnn.apply(mlp_params, cnn_state, x)
    with pytest.raises(ValueError, match=message):
        jax.jit(cnn.apply)(mlp_params, cnn_state, x)
    with pytest.raises(TypeError, match=r"Sequential\(.*\): expected params to be a dict with keys .*, got list"):
        cnn.apply([1, 2], cnn_state, x)


def test_combinator_construction_errors():
    with pytest.raises(ValueError, match=r"Sequential: expected at least one layer, got none"):
        nn.Sequential([])
    with pytest.raises(TypeError, match=r"Sequential: expected a list or dict of layers, got a single layer "
                                        r"Dense\(features=3\)"):
        nn.Sequential(nn.Dense(3))
    with pytest.raises(TypeError, match=r"Parallel: expected every child to be a jdl Layer, got \w+ for '1'"):
        nn.Parallel([nn.Dense(3), jnp.abs])


def test_branches_of_different_dtypes_are_refused():
    x = jnp.ones((2, 4), jnp.float32)
    to_bf16 = nn.Lambda(lambda v: v.astype(jnp.bfloat16), name="to_bf16")
    residual = nn.Residual(to_bf16)
    with pytest.raises(TypeError, match=r"Residual\(Lambda\(<lambda>\)\): expected the main branch and the shortcut "
                                        r"to give the same dtype .* got bfloat16 and float32"):
        params, state = residual.init(jax.random.key(0), x)  # init sees shapes only: the sum's dtype is apply's
        residual.apply(params, state, x)
    concat = nn.Concat([to_bf16, nn.Tanh()])
    with pytest.raises(TypeError, match=r"Concat\(.*\): expected branch outputs of one dtype .*bfloat16.*float32"):
        concat.init(jax.random.key(0), x)


# ----------------------------------------------------------------------------- issue 10: dtypes and paths


def test_integer_params_and_state_are_refused_not_cast():
    dense = nn.Dense(3)
    params, state = dense.init(jax.random.key(0), jnp.ones((2, 4)))
    as_int = jax.tree.map(lambda a: a.astype(jnp.int32), params)
    with pytest.raises(TypeError, match=r"Dense\(features=3\): expected params\['b'\] of a floating dtype \(as init "
                                        r"makes it; nothing is cast\), got int32"):
        dense.apply(as_int, state, jnp.ones((2, 4)))
    # Another float width is still the model's params (bfloat16 copies for inference).
    y, _ = dense.apply(jax.tree.map(lambda a: a.astype(jnp.bfloat16), params), state, jnp.ones((2, 4)))
    assert y.shape == (2, 3)
    norm = nn.BatchNorm()
    params, state = norm.init(jax.random.key(0), jnp.ones((2, 4)))
    with pytest.raises(TypeError, match=r"BatchNorm\(.*\): expected state\['mean'\] of a floating dtype"):
        norm.apply(params, jax.tree.map(lambda a: a.astype(jnp.int32), state), jnp.ones((2, 4)))


def test_errors_inside_combinators_name_the_path():
    model = nn.Sequential({"encoder": nn.Sequential([nn.Dense(4), nn.ReLU()]),
                           "block": nn.Residual(nn.Dense(3))})
    with pytest.raises(ValueError, match=r"^Sequential\[block\] Residual\(Dense\(features=3\)\): expected the main "
                                         r"branch to keep the shape"):
        model.init(jax.random.key(0), jnp.ones((2, 5)))
    good = nn.Sequential({"encoder": nn.Sequential([nn.Dense(4), nn.ReLU()]), "head": nn.Dense(2)})
    params, state = good.init(jax.random.key(0), jnp.ones((2, 5)))
    with pytest.raises(TypeError, match=r"^Sequential\[encoder\] Sequential\[dense_0\] Dense\(features=4\): expected "
                                        r"a floating-point input"):
        good.apply(params, state, jnp.ones((2, 5), jnp.int32))
    # A Concat names itself, and an axis outside the outputs' rank is its error, not NumPy's.
    with pytest.raises(ValueError, match=r"^Concat\(\[.*\], axis=5\): expected axis in \[-2, 2\)"):
        nn.Concat([nn.Dense(3), nn.Dense(4)], axis=5).init(jax.random.key(0), jnp.ones((2, 5)))
