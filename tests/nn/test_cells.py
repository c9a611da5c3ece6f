"""Recurrent cells: the LSTM and GRU steps against flax.linen (same weights copied in), the
Elman RNN and the simplified GRU against NumPy loops transcribing the seeds' equations, each
cell's hand-written backward step against jax.vjp, the initialisers, the cell as a layer."""
import dataclasses

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn

H, F, T = 4, 3, 5


# ------------------------------------------------------------------ helpers (test_recurrent.py uses them too)


def to_flax_cell(params, kind):
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


def flax_twins(kind):
    return {"lstm": (nn.LSTMCell(H), fnn.LSTMCell(H)), "gru": (nn.GRUCell(H), fnn.GRUCell(H))}[kind]


def flat(outputs, carry):
    return jnp.concatenate([outputs.ravel()] + [leaf.ravel() for leaf in jax.tree.leaves(carry)])


def random_carry(cell, batch, seed):
    rng = np.random.default_rng(seed)
    make = lambda: jnp.asarray(rng.standard_normal((batch, H)).astype(np.float32))  # noqa: E731
    return (make(), make()) if cell.is_pair else make()


ALL_CELLS = [nn.SimpleRNNCell(H), nn.SimpleRNNCell(H, activation="relu"), nn.LSTMCell(H), nn.GRUCell(H),
             nn.SimplifiedGRUCell(H)]


# ------------------------------------------------------------------ against flax and the seeds


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_cell_matches_flax(kind, randn, compare_with_flax):
    cell, flax_cell = flax_twins(kind)
    x = randn((3, F), seed=1)
    params = jax.tree.map(lambda a: jnp.asarray(a) * 0.7, cell.init_params(jax.random.key(0), F))
    params["input"]["b"] = randn((len(cell.gates) * H,), seed=2)
    if kind == "gru":
        params["hidden"]["b"] = randn((H,), seed=3)
    carry = random_carry(cell, 3, seed=4)
    y = compare_with_flax(
        lambda p, v: flat(*cell(p, carry, v)[::-1]),
        lambda p, v: flat(*flax_cell.apply({"params": to_flax_cell(p, kind)}, carry, v)[::-1]),
        params, x,
    )
    assert y.shape == (3 * H * (3 if kind == "lstm" else 2),)


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
    carry = random_carry(cell, 2, seed=22)
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


@pytest.mark.parametrize("cell", ALL_CELLS, ids=lambda c: c.description)
def test_hand_written_backward_step_matches_jax_vjp(cell, randn):
    """Each cell's backward(saved, h_prev, d_carry, d_y) against jax.vjp of its gates_fn."""
    width = len(cell.gates) * H
    pre, rec = randn((3, width), seed=80), randn((3, width), seed=81)
    carry = random_carry(cell, 3, 82)
    d_carry, d_y = random_carry(cell, 3, 83), randn((3, H), seed=84)
    (new_carry, y, saved), vjp = jax.vjp(cell.gates_fn, carry, pre, rec)
    want_carry, want_pre, want_rec = vjp((d_carry, d_y, jax.tree.map(jnp.zeros_like, saved)))
    got_direct, got_pre, got_rec = cell.backward(saved, cell.hidden(carry), d_carry, d_y)
    got_rec = got_pre if got_rec is None else got_rec
    for got, want in [(got_pre, want_pre), (got_rec, want_rec)] + list(zip(jax.tree.leaves(got_direct),
                                                                        jax.tree.leaves(want_carry))):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------ params and the cell as a layer


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


@pytest.mark.parametrize("cell", ALL_CELLS, ids=lambda c: c.description)
def test_cell_is_a_layer(cell, randn, random_params):
    """init gives init_params' params; apply is one step, from the zero carry unless one is given."""
    x = randn((2, F), seed=85)
    params, state = cell.init(jax.random.key(3), x)
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(cell.init_params(jax.random.key(3), F))):
        np.testing.assert_array_equal(got, want)
    assert state == {} and isinstance(cell, nn.Layer)
    params = random_params(cell, x, seed=86, scale=0.5)
    (carry, y), _ = cell.apply(params, {}, x)
    want_carry, want_y = cell(params, cell.initial_carry((2,)), x)
    np.testing.assert_array_equal(y, want_y)
    assert float(jnp.abs(y).max()) > 0.0 and y.shape == (2, H)
    given = random_carry(cell, 2, 87)
    (_, y_given), _ = cell.apply(params, {}, x, carry=given)
    np.testing.assert_array_equal(y_given, cell(params, given, x)[1])
    assert not np.allclose(y_given, y)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cell.hidden_size = 8


def test_cell_reprs_and_values():
    assert repr(nn.LSTMCell(H)) == "LSTMCell(hidden_size=4)"
    assert repr(nn.LSTMCell(H, forget_bias=1.0)) == "LSTMCell(hidden_size=4, forget_bias=1.0)"
    assert repr(nn.SimpleRNNCell(H)) == "SimpleRNNCell(hidden_size=4, activation='tanh')"
    assert nn.GRUCell(H) == nn.GRUCell(H) and hash(nn.GRUCell(H)) == hash(nn.GRUCell(H))
    assert nn.GRUCell(H) != nn.SimplifiedGRUCell(H)
    with pytest.raises(TypeError):
        nn.LSTMCell(H, 1.0)  # options are keyword-only
