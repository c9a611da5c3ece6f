"""Recurrent cells and layers: LSTM and GRU against flax.linen (same weights copied in),
the Elman RNN and the simplified GRU against NumPy loops transcribing the seeds' equations,
padding, reverse, bidirectional, scan against a Python loop, finite differences, errors."""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import init as initializers
from jdl import losses, nn, optim

H, F, T = 4, 3, 5
LENGTHS = np.array([5, 2, 3], np.int32)


# ------------------------------------------------------------------ flax weight mapping


def _to_flax_cell(params, kind):
    """jdl's stacked params -> flax's per-gate Dense params (slices, so gradients flow back)."""
    gates = {"lstm": "ifgo", "gru": "rzn"}[kind]
    w_in, b_in, w_h = params["input"]["w"], params["input"]["b"], params["hidden"]["w"]
    out = {}
    for k, g in enumerate(gates):
        sl = slice(k * H, (k + 1) * H)
        if kind == "lstm":  # flax puts the LSTM's one bias on the hidden side
            out[f"i{g}"] = {"kernel": w_in[:, sl]}
            out[f"h{g}"] = {"kernel": w_h[:, sl], "bias": b_in[sl]}
        else:
            out[f"i{g}"] = {"kernel": w_in[:, sl], "bias": b_in[sl]}
            out[f"h{g}"] = {"kernel": w_h[:, sl]}
    if kind == "gru":
        out["hn"]["bias"] = params["hidden"]["b"]
    return out


def _cells(kind):
    return {"lstm": (nn.LSTMCell(H), fnn.LSTMCell(H)), "gru": (nn.GRUCell(H), fnn.GRUCell(H))}[kind]


def _flat(outputs, carry):
    return jnp.concatenate([outputs.ravel()] + [leaf.ravel() for leaf in jax.tree.leaves(carry)])


def _mask(outputs, lengths):
    if lengths is None:
        return outputs
    valid = jnp.arange(outputs.shape[1])[None, :] < jnp.asarray(lengths)[:, None]
    return jnp.where(valid[..., None], outputs, 0.0)


def _random_carry(cell, batch, seed):
    rng = np.random.default_rng(seed)
    make = lambda: jnp.asarray(rng.standard_normal((batch, H)).astype(np.float32))  # noqa: E731
    return (make(), make()) if cell.is_pair else make()


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cell_matches_flax(kind, randn, compare_with_flax):
    cell, flax_cell = _cells(kind)
    x = randn((3, F), seed=1)
    params = jax.tree.map(lambda a: jnp.asarray(a) * 0.7, cell.init_params(jax.random.key(0), F))
    params["input"]["b"] = randn((len(cell.gates) * H,), seed=2)
    if kind == "gru":
        params["hidden"]["b"] = randn((H,), seed=3)
    carry = _random_carry(cell, 3, seed=4)
    y = compare_with_flax(
        lambda p, v: _flat(*cell(p, carry, v)[::-1]),
        lambda p, v: _flat(*flax_cell.apply({"params": _to_flax_cell(p, kind)}, carry, v)[::-1]),
        params, x,
    )
    assert y.shape == (3 * H * (3 if kind == "lstm" else 2),)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("mode", ["forward", "reverse", "bidirectional"])
def test_layer_matches_flax(kind, mode, randn, random_params, compare_with_flax):
    """Lengths and a caller's initial carry; flax computes junk past a sequence's end, which
    is masked on its side only, so jdl's zeros there are checked too."""
    cell, flax_cell = _cells(kind)
    x = randn((3, T, F), seed=5)
    if mode == "bidirectional":
        layer = nn.Bidirectional(cell)
        carry = (_random_carry(cell, 3, 6), _random_carry(cell, 3, 7))
        # Two cell instances: flax's RNNs given the same instance do not keep two sets of params apart.
        module = fnn.Bidirectional(fnn.RNN(type(flax_cell)(H)), fnn.RNN(type(flax_cell)(H)), return_carry=True)
        to_flax = lambda p: {"forward_rnn": {"cell": _to_flax_cell(p["forward"], kind)},  # noqa: E731
                             "backward_rnn": {"cell": _to_flax_cell(p["backward"], kind)}}
        options = {}
    else:
        layer = nn.RNN(cell, reverse=mode == "reverse")
        carry = _random_carry(cell, 3, 6)
        module = fnn.RNN(flax_cell, return_carry=True)
        to_flax = lambda p: {"cell": _to_flax_cell(p, kind)}  # noqa: E731
        options = {"reverse": True, "keep_order": True} if mode == "reverse" else {}
    params = random_params(layer, x, seed=10, scale=0.5)

    def jdl_fn(p, v):
        (outputs, final), _ = layer.apply(p, {}, v, lengths=jnp.asarray(LENGTHS), initial_carry=carry)
        return _flat(outputs, final)

    def flax_fn(p, v):
        final, outputs = module.apply({"params": to_flax(p)}, v, seq_lengths=jnp.asarray(LENGTHS),
                                      initial_carry=carry, **options)
        return _flat(_mask(outputs, LENGTHS), final)

    compare_with_flax(jdl_fn, flax_fn, params, x)
    (outputs, _), _ = layer.apply(params, {}, x, lengths=jnp.asarray(LENGTHS), initial_carry=carry)
    assert outputs.shape == (3, T, 2 * H if mode == "bidirectional" else H)
    assert float(jnp.abs(outputs[1, 2:]).max()) == 0.0 and float(jnp.abs(outputs[1, :2]).min()) > 0.0


# ------------------------------------------------------------------ the seeds' equations in NumPy


def _numpy_elman(params, x, h, activation):
    U, W, b = (np.asarray(params["input"]["w"], np.float64).T, np.asarray(params["hidden"]["w"], np.float64).T,
               np.asarray(params["input"]["b"], np.float64))
    outputs = []
    for x_t in np.asarray(x, np.float64):  # a = b + W h + U x, h = tanh(a)
        a = b + W @ h + U @ x_t
        h = np.tanh(a) if activation == "tanh" else np.maximum(a, 0.0)
        outputs.append(h)
    return np.stack(outputs), h


def _numpy_simplified_gru(params, x, m):
    w_in, w_h, b = (np.asarray(params[k][s], np.float64) for k, s in [("input", "w"), ("hidden", "w"), ("input", "b")])
    W_u = np.concatenate([w_h[:, :H], w_in[:, :H]]).T  # acts on [m_{t-1}, x_t]
    W_c = np.concatenate([w_h[:, H:], w_in[:, H:]]).T
    b_u, b_m = b[:H], b[H:]
    sigmoid = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    outputs = []
    for x_t in np.asarray(x, np.float64):
        mx = np.concatenate([m, x_t])
        m_tilde = np.tanh(W_c @ mx + b_m)
        gamma_u = sigmoid(W_u @ mx + b_u)
        m = gamma_u * m_tilde + (1 - gamma_u) * m
        outputs.append(m)
    return np.stack(outputs), m


@pytest.mark.parametrize("cell_name", ["tanh", "relu", "simplified_gru"])
def test_seed_cells_match_numpy(cell_name, randn, random_params):
    cell = nn.SimplifiedGRUCell(H) if cell_name == "simplified_gru" else nn.SimpleRNNCell(H, activation=cell_name)
    layer = nn.RNN(cell)
    x = randn((2, T, F), seed=20)
    params = random_params(layer, x, seed=21, scale=0.6)
    carry = _random_carry(cell, 2, seed=22)
    (outputs, final), _ = jax.jit(lambda p, v, c: layer.apply(p, {}, v, initial_carry=c))(params, x, carry)
    for b in range(2):
        if cell_name == "simplified_gru":
            want, want_final = _numpy_simplified_gru(params, x[b], np.asarray(carry[b], np.float64))
        else:
            want, want_final = _numpy_elman(params, x[b], np.asarray(carry[b], np.float64), cell_name)
        np.testing.assert_allclose(outputs[b], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(final[b], want_final, rtol=1e-5, atol=1e-5)
    if cell_name == "relu":
        assert float(outputs.min()) == 0.0 and float(outputs.max()) > 1.0  # ReLU, not tanh


# ------------------------------------------------------------------ padding, reverse, bidirectional


@pytest.mark.parametrize("cell, reverse", [(nn.LSTMCell(H), False), (nn.GRUCell(H), True),
                                           (nn.SimplifiedGRUCell(H), False)])
def test_padded_batch_equals_each_sequence_alone(cell, reverse, randn, random_params):
    lengths = np.array([5, 2, 0, 3], np.int32)
    layer = nn.RNN(cell, reverse=reverse)
    x = randn((4, T, F), seed=30)
    x = jnp.where(jnp.arange(T)[None, :, None] < lengths[:, None, None], x, 1e3)  # loud padding
    params = random_params(layer, x, seed=31, scale=0.5)
    carry = _random_carry(cell, 4, seed=32)
    run = jax.jit(lambda v, c, n: layer.apply(params, {}, v, lengths=n, initial_carry=c)[0])
    outputs, final = run(x, carry, jnp.asarray(lengths))
    for b, n in enumerate(lengths):
        carry_b = jax.tree.map(lambda c: c[b:b + 1], carry)
        if n == 0:
            np.testing.assert_array_equal(jax.tree.map(lambda c: c[b], final), jax.tree.map(lambda c: c[0], carry_b))
        else:
            (alone, alone_final), _ = layer.apply(params, {}, x[b:b + 1, :n], initial_carry=carry_b)
            np.testing.assert_allclose(outputs[b, :n], alone[0], rtol=1e-5, atol=1e-5)
            for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(alone_final)):
                np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(outputs[b, n:], 0.0)


def test_bidirectional_equals_forward_plus_reversed_sequences(randn, random_params):
    layer = nn.Bidirectional(nn.GRUCell(H), nn.LSTMCell(H))
    x = randn((3, T, F), seed=40)
    params = random_params(layer, x, seed=41, scale=0.5)
    (outputs, (fwd_final, bwd_final)), _ = layer.apply(params, {}, x, lengths=jnp.asarray(LENGTHS))
    forward, backward = nn.RNN(nn.GRUCell(H)), nn.RNN(nn.LSTMCell(H))
    for b, n in enumerate(LENGTHS):
        (fwd, fwd_carry), _ = forward.apply(params["forward"], {}, x[b:b + 1, :n])
        (bwd, bwd_carry), _ = backward.apply(params["backward"], {}, x[b:b + 1, :n][:, ::-1])
        want = jnp.concatenate([fwd[0], bwd[0, ::-1]], axis=-1)
        np.testing.assert_allclose(outputs[b, :n], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(outputs[b, n:], 0.0)
        np.testing.assert_allclose(fwd_final[b], fwd_carry[0], rtol=1e-5, atol=1e-5)
        for got, expected in zip(bwd_final, bwd_carry):
            np.testing.assert_allclose(got[b], expected[0], rtol=1e-5, atol=1e-5)


def test_flip_sequences_keeps_padding_at_the_end():
    x = jnp.arange(1, 10, dtype=jnp.float32).reshape(3, 3).T  # time-major [time=3, batch=3]
    flipped = nn.flip_sequences(x, jnp.array([1, 2, 3]))
    np.testing.assert_array_equal(flipped.T, [[1, 2, 3], [5, 4, 6], [9, 8, 7]])  # batch-major rows
    np.testing.assert_array_equal(nn.flip_sequences(flipped, jnp.array([1, 2, 3])), x)


# ------------------------------------------------------------------ scan, gradients, transforms


def test_scan_matches_python_loop(randn, random_params):
    cell = nn.LSTMCell(H)
    layer = nn.LSTM(H)
    x = randn((2, T, F), seed=50)
    params = random_params(layer, x, seed=51, scale=0.5)
    r = randn((2, T, H), seed=52)

    def loop_loss(p, v):
        carry, outputs = cell.initial_carry((2,)), []
        for t in range(T):
            carry, y = cell(p, carry, v[:, t])
            outputs.append(y)
        return jnp.sum(jnp.stack(outputs, axis=1) * r) + jnp.sum(carry[0])

    def scan_loss(p, v):
        (outputs, (c, _)), _ = layer.apply(p, {}, v)
        return jnp.sum(outputs * r) + jnp.sum(c)

    value, grads = jax.jit(jax.value_and_grad(scan_loss, argnums=(0, 1)))(params, x)
    value_ref, grads_ref = jax.jit(jax.value_and_grad(loop_loss, argnums=(0, 1)))(params, x)
    np.testing.assert_allclose(value, value_ref, rtol=1e-5)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert max(float(jnp.abs(g).max()) for g in jax.tree.leaves(grads)) > 1e-2


def test_finite_differences(randn, random_params, finite_differences):
    layer = nn.Bidirectional(nn.LSTMCell(H), nn.GRUCell(H))
    x = randn((2, 3, F), seed=60)
    params = random_params(layer, x, seed=61, scale=0.5)
    lengths = jnp.array([3, 2])

    def fn(p, v):
        (outputs, carries), _ = layer.apply(p, {}, v, lengths=lengths)
        return _flat(outputs, carries)

    finite_differences(fn, (params, x))


def test_transforms(randn, random_params, check_transforms):
    layer = nn.GRU(H, return_carry=False)
    x = randn((3, T, F), seed=70)
    params = random_params(layer, x, seed=71, scale=0.5)
    y = check_transforms(layer, params, {}, x)  # vmap of a single [time, features] sequence
    assert y.shape == (3, T, H)


def test_init():
    params, state = nn.LSTM(H, forget_bias=1.0).init(jax.random.key(0), jax.ShapeDtypeStruct((2, T, 50), jnp.float32))
    assert state == {}
    assert jax.tree.map(jnp.shape, params) == {"input": {"w": (50, 4 * H), "b": (4 * H,)}, "hidden": {"w": (H, 4 * H)}}
    np.testing.assert_array_equal(params["input"]["b"], np.repeat([0.0, 1.0, 0.0, 0.0], H))  # gates i f g o
    for k in range(4):  # each gate's recurrent kernel is orthogonal on its own
        w_k = params["hidden"]["w"][:, k * H:(k + 1) * H]
        np.testing.assert_allclose(w_k.T @ w_k, np.eye(H), atol=1e-5)
    np.testing.assert_allclose(jnp.std(params["input"]["w"]), (1 / 50) ** 0.5, rtol=0.15)  # LeCun normal
    gru, _ = nn.GRU(H).init(jax.random.key(0), jnp.zeros((1, T, F)))
    assert jax.tree.map(jnp.shape, gru["hidden"]) == {"w": (H, 3 * H), "b": (H,)}
    np.testing.assert_array_equal(gru["hidden"]["b"], 0.0)


# ------------------------------------------------------------------ errors


def _zero_params(layer, shape):
    p, _ = jax.eval_shape(layer.init, jax.random.key(0), jax.ShapeDtypeStruct(shape, jnp.float32))
    return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), p)


def test_lengths_beyond_time_axis():
    layer = nn.LSTM(H)
    params, x = _zero_params(layer, (3, T, F)), jnp.zeros((3, T, F))
    with pytest.raises(ValueError, match=r"RNN\(LSTMCell\(hidden_size=4\)\): expected lengths in \[0, 5\] "
                                         r"\(the time axis has 5 steps\), got lengths from 2 to 7"):
        layer.apply(params, {}, x, lengths=jnp.array([5, 2, 7]))
    with pytest.raises(ValueError, match=r"RNN\(LSTMCell\(hidden_size=4\)\): expected lengths of shape \(3,\)"):
        layer.apply(params, {}, x, lengths=jnp.array([5, 2]))
    with pytest.raises(TypeError, match=r"RNN\(LSTMCell\(hidden_size=4\)\): expected an integer lengths"):
        layer.apply(params, {}, x, lengths=jnp.array([5.0, 2.0, 1.0]))
    # Under jit the values cannot be checked: a length above the time axis acts as the time axis.
    run = jax.jit(lambda n: layer.apply(params, {}, x + 1.0, lengths=n)[0])
    for got, want in zip(jax.tree.leaves(run(jnp.array([9, 5, 5]))), jax.tree.leaves(run(jnp.array([5, 5, 5])))):
        np.testing.assert_array_equal(got, want)


def test_wrong_feature_size():
    layer = nn.GRU(H)
    params = _zero_params(layer, (2, T, F))
    pattern = r"RNN\(GRUCell\(hidden_size=4\)\): expected input with last axis 3 .*got input of shape \(2, 5, 7\)"
    with pytest.raises(ValueError, match=pattern):
        layer.apply(params, {}, jnp.zeros((2, T, 7)))
    with pytest.raises(ValueError, match=pattern):
        jax.jit(layer.apply)(params, {}, jnp.zeros((2, T, 7)))
    with pytest.raises(ValueError, match=r"GRUCell\(hidden_size=4\): expected input with last axis 3"):
        nn.GRUCell(H)(params, jnp.zeros((2, H)), jnp.zeros((2, 7)))
    with pytest.raises(ValueError, match=r"RNN\(GRUCell\(hidden_size=4\)\): expected input of rank >= 2"):
        layer.apply(params, {}, jnp.zeros((F,)))


def test_wrong_initial_carry():
    lstm, gru, bi = nn.LSTM(H), nn.GRU(H), nn.Bidirectional(nn.GRUCell(H))
    x = jnp.zeros((2, T, F))
    lstm_params, gru_params, bi_params = (_zero_params(layer, x.shape) for layer in (lstm, gru, bi))
    with pytest.raises(ValueError, match=r"RNN\(LSTMCell\(hidden_size=4\)\): expected initial_carry\['h'\] of "
                                         r"shape \(2, 4\) \(\[\*batch, hidden_size\]\), got shape \(2, 5\)"):
        lstm.apply(lstm_params, {}, x, initial_carry=(jnp.zeros((2, H)), jnp.zeros((2, 5))))
    with pytest.raises(ValueError, match=r"RNN\(LSTMCell\(hidden_size=4\)\): expected initial_carry to be a pair"):
        lstm.apply(lstm_params, {}, x, initial_carry=jnp.zeros((2, H)))
    with pytest.raises(ValueError, match=r"RNN\(GRUCell\(hidden_size=4\)\): expected initial_carry of shape "
                                         r"\(2, 4\).*got shape \(3, 4\)"):
        jax.jit(lambda c: gru.apply(gru_params, {}, x, initial_carry=c))(jnp.zeros((3, H)))
    with pytest.raises(ValueError, match=r"Bidirectional\(GRUCell\(hidden_size=4\), GRUCell\(hidden_size=4\)\): "
                                         r"expected initial_carry\[1\] of shape \(2, 4\)"):
        bi.apply(bi_params, {}, x, initial_carry=(jnp.zeros((2, H)), jnp.zeros((2, 2 * H))))
    with pytest.raises(ValueError, match=r"GRUCell\(hidden_size=4\): expected carry of shape \(2, 4\)"):
        nn.GRUCell(H)(gru_params, jnp.zeros((H,)), jnp.zeros((2, F)))


def test_bad_construction_and_params():
    with pytest.raises(TypeError, match=r"RNN: expected a jdl recurrent Cell"):
        nn.RNN(fnn.LSTMCell(H))
    with pytest.raises(ValueError, match=r"LSTMCell: expected hidden_size to be a positive int, got 0"):
        nn.LSTMCell(0)
    with pytest.raises(ValueError, match=r"SimpleRNNCell: expected activation 'tanh' or 'relu', got 'gelu'"):
        nn.SimpleRNNCell(H, activation="gelu")
    x = jnp.zeros((2, T, F))
    with pytest.raises(ValueError, match=r"RNN\(LSTMCell\(hidden_size=4\)\): expected params\['hidden'\] with "
                                         r"keys \['w'\], got keys \['b', 'w'\]"):
        nn.LSTM(H).apply(_zero_params(nn.GRU(H), x.shape), {}, x)


# ---------------------------------------------------------------------------------------
# Stacked layers


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_equals_layers_chained_by_hand(bidirectional):
    cells = [nn.LSTMCell(5), nn.GRUCell(4)]
    stacked = nn.StackedRNN(cells, bidirectional=bidirectional, dropout_rate=0.3)
    x = jax.random.normal(jax.random.key(0), (3, 6, 2))
    lengths = jnp.array([6, 2, 4])
    params, state = stacked.init(jax.random.key(1), x)
    (outputs, carries), _ = stacked.apply(params, state, x, lengths=lengths)  # eval: no dropout
    make = nn.Bidirectional if bidirectional else nn.RNN
    hidden = x
    for index, cell in enumerate(cells):
        (hidden, carry), _ = make(cell).apply(params[f"layer_{index}"], {}, hidden, lengths=lengths)
        np.testing.assert_allclose(jax.tree.leaves(carries[index])[0], jax.tree.leaves(carry)[0], rtol=1e-6)
    np.testing.assert_allclose(outputs, hidden, rtol=1e-6)
    assert outputs.shape == (3, 6, 4 * (2 if bidirectional else 1))
    np.testing.assert_array_equal(outputs[1, 2:], 0.0)  # padding stays zero up the stack


def test_stacked_dropout_between_layers():
    stacked = nn.StackedRNN([nn.GRUCell(8), nn.GRUCell(8)], dropout_rate=0.5)
    x = jax.random.normal(jax.random.key(0), (4, 5, 3))
    params, state = stacked.init(jax.random.key(1), x)
    (eval_out, _), _ = stacked.apply(params, state, x)
    (train_out, _), _ = stacked.apply(params, state, x, key=jax.random.key(2), train=True)
    (again, _), _ = stacked.apply(params, state, x, key=jax.random.key(2), train=True)
    assert not np.allclose(train_out, eval_out)  # the mask between the layers changed the top layer's input
    np.testing.assert_array_equal(train_out, again)  # same key, same mask
    no_dropout = nn.StackedRNN([nn.GRUCell(8), nn.GRUCell(8)], dropout_rate=0.0)
    (plain, _), _ = no_dropout.apply(params, state, x, key=jax.random.key(2), train=True)
    np.testing.assert_allclose(plain, eval_out, rtol=1e-6)
    with pytest.raises(ValueError, match=r"Dropout\(rate=0.5\): train=True needs a PRNG key"):
        stacked.apply(params, state, x, train=True)
    with pytest.raises(ValueError, match=r"StackedRNN\(.*\): expected initial_carry to be a tuple of 2 carries"):
        stacked.apply(params, state, x, initial_carry=jnp.zeros((4, 8)))
    with pytest.raises(ValueError, match=r"StackedRNN: expected at least one cell"):
        nn.StackedRNN([])


def test_gradient_clipping_keeps_a_long_sequence_stable():
    """Length 200, a tanh RNN whose recurrent weights (orthogonal x 2.5) make gradients explode:
    plain SGD diverges to NaN; the same SGD after clip_by_global_norm(1) stays finite and bounded.

    (At this scale the forward dynamics are chaotic, so whether the clipped loss ends lower
    depends on rounding: the fused and autodiff gradients agree to 1e-5 at the first step
    but their trajectories part later. Stability is what clipping buys; it is what we test.)"""
    cell = nn.SimpleRNNCell(16, recurrent_kernel_init=initializers.orthogonal(scale=2.5))
    model = nn.Sequential({"rnn": nn.RNN(cell, return_carry=False),
                           "last": nn.Lambda(lambda y: y[:, -1], name="last"), "out": nn.Dense(1)})
    x = jax.random.normal(jax.random.key(0), (32, 200, 1))
    y = jnp.mean(x[:, -20:, 0], axis=1, keepdims=True)  # the mean of the last 20 inputs
    params, state = model.init(jax.random.key(1), x)

    def loss(p):
        return jnp.mean(losses.squared_error(model.apply(p, state, x)[0], y))

    def train(optimizer, steps=100):
        def step(carry, _):
            p, s = carry
            value, grads = jax.value_and_grad(loss)(p)
            updates, s = optimizer.update(grads, s, p)
            return (optim.apply_updates(p, updates), s), (value, optim.global_norm(grads))

        return jax.jit(lambda p: jax.lax.scan(step, (p, optimizer.init(p)), None, length=steps)[1])(params)

    plain_losses, _ = train(optim.sgd(0.3))
    clipped_losses, grad_norms = train(optim.chain(optim.clip_by_global_norm(1.0), optim.sgd(0.3)))
    plain_losses, clipped_losses = np.asarray(plain_losses), np.asarray(clipped_losses)
    assert float(np.max(np.asarray(grad_norms))) > 1e6  # the gradients do explode
    assert not np.all(np.isfinite(plain_losses)) or plain_losses.max() > 100 * plain_losses[0]
    assert np.all(np.isfinite(clipped_losses))
    assert clipped_losses.max() < 5 * clipped_losses[0]  # bounded: the updates are at most 0.3 long


# ------------------------------------------------------------------ the fused backward pass

ALL_CELLS = [nn.SimpleRNNCell(H), nn.SimpleRNNCell(H, activation="relu"), nn.LSTMCell(H), nn.GRUCell(H),
             nn.SimplifiedGRUCell(H)]


@pytest.mark.parametrize("cell", ALL_CELLS, ids=lambda c: c.description)
def test_hand_written_backward_step_matches_jax_vjp(cell, randn):
    """Each cell's backward(saved, h_prev, d_carry, d_y) against jax.vjp of its gates_fn."""
    width = len(cell.gates) * H
    pre, rec = randn((3, width), seed=80), randn((3, width), seed=81)
    carry = _random_carry(cell, 3, 82)
    d_carry, d_y = _random_carry(cell, 3, 83), randn((3, H), seed=84)
    (new_carry, y, saved), vjp = jax.vjp(cell.gates_fn, carry, pre, rec)
    want_carry, want_pre, want_rec = vjp((d_carry, d_y, jax.tree.map(jnp.zeros_like, saved)))
    got_direct, got_pre, got_rec = cell.backward(saved, cell.hidden(carry), d_carry, d_y)
    got_rec = got_pre if got_rec is None else got_rec
    for got, want in [(got_pre, want_pre), (got_rec, want_rec)] + list(zip(jax.tree.leaves(got_direct),
                                                                        jax.tree.leaves(want_carry))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cell, steps, chunk", [(ALL_CELLS[1], T, None), (ALL_CELLS[2], 11, 4), (ALL_CELLS[3], 9, 3),
                                                (ALL_CELLS[4], T, 2)], ids=lambda v: getattr(v, "description", v))
def test_fused_gradients_equal_autodiff(cell, steps, chunk, randn, random_params):
    """Params, inputs and initial carry, with lengths and reverse, time-major, in several chunks
    (11 steps in chunks of 4: one padded step): the fused custom VJP against JAX
    differentiating the plain scan."""
    x = randn((steps, 3, F), seed=90)
    layers = {impl: nn.RNN(cell, reverse=True, time_major=True, implementation=impl, time_chunk=chunk)
              for impl in ("fused", "autodiff")}
    params = random_params(layers["fused"], x, seed=91, scale=0.5)
    carry = _random_carry(cell, 3, 92)
    r = randn((steps, 3, H), seed=93)
    lengths = jnp.asarray([steps, 2, steps - 1])

    def loss(impl):
        def fn(p, v, c):
            (outputs, final), _ = layers[impl].apply(p, {}, v, lengths=lengths, initial_carry=c)
            return jnp.sum(outputs * r) + sum(jnp.sum(leaf ** 2) for leaf in jax.tree.leaves(final))
        return jax.jit(jax.value_and_grad(fn, argnums=(0, 1, 2)))

    value, grads = loss("fused")(params, x, carry)
    value_ref, grads_ref = loss("autodiff")(params, x, carry)
    np.testing.assert_allclose(value, value_ref, rtol=1e-6)
    assert jax.tree.structure(grads) == jax.tree.structure(grads_ref)
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_ref)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_time_major_equals_batch_major_and_second_order_gradients(randn, random_params):
    cell = nn.LSTMCell(H)
    batch_major, time_major = nn.RNN(cell), nn.RNN(cell, time_major=True)
    x = randn((2, T, F), seed=95)
    params = random_params(batch_major, x, seed=96, scale=0.5)
    (outputs, carry), _ = batch_major.apply(params, {}, x)
    (outputs_tm, carry_tm), _ = time_major.apply(params, {}, jnp.swapaxes(x, 0, 1))
    np.testing.assert_allclose(jnp.swapaxes(outputs_tm, 0, 1), outputs, rtol=1e-6)
    np.testing.assert_allclose(carry_tm[1], carry[1], rtol=1e-6)

    # Reverse over reverse (a Hessian-vector product) goes through the hand-written backward.
    def hvp(layer):
        loss = lambda p: jnp.sum(layer.apply(p, {}, x)[0][0] ** 2)  # noqa: E731
        grad_dot = lambda p: sum(jnp.vdot(g, v) for g, v in zip(jax.tree.leaves(jax.grad(loss)(p)),  # noqa: E731
                                                               jax.tree.leaves(params)))
        return jax.jit(jax.grad(grad_dot))(params)

    for got, want in zip(jax.tree.leaves(hvp(batch_major)), jax.tree.leaves(hvp(nn.RNN(cell, implementation="autodiff")))):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    # Forward mode needs the autodiff implementation; the fused one says so (JAX's error).
    autodiff = nn.RNN(cell, implementation="autodiff")
    tangent = jax.tree.map(jnp.ones_like, params)
    _, jvp_out = jax.jvp(lambda p: autodiff.apply(p, {}, x)[0][0], (params,), (tangent,))
    assert jvp_out.shape == outputs.shape
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(lambda p: batch_major.apply(p, {}, x)[0][0], (params,), (tangent,))


def test_bad_options():
    with pytest.raises(ValueError, match=r"RNN: expected implementation to be one of \('fused', 'autodiff'\), got 'cudnn'"):
        nn.RNN(nn.GRUCell(H), implementation="cudnn")
    with pytest.raises(ValueError, match=r"Bidirectional: expected time_major to be a bool, got 1"):
        nn.Bidirectional(nn.GRUCell(H), time_major=1)
    with pytest.raises(ValueError, match=r"StackedRNN: expected implementation"):
        nn.StackedRNN([nn.GRUCell(H)], implementation="scan")
    with pytest.raises(ValueError, match=r"RNN: expected time_chunk to be a positive int or None, got 0"):
        nn.LSTM(H, time_chunk=0)


def test_time_chunk_size():
    assert nn.recurrent.time_chunk_size(5) == 5
    assert nn.recurrent.time_chunk_size(100) == 10  # a divisor near 8: no padding
    assert nn.recurrent.time_chunk_size(400) == 8
    for steps in range(1, 1000):  # chunks of 4 to 16 steps, at most 3 steps of padding
        size = nn.recurrent.time_chunk_size(steps)
        padding = -(-steps // size) * size - steps
        assert (size == steps if steps <= 8 else 4 <= size <= 16) and padding <= 3, (steps, size)
