"""Recurrent layers: RNN and Bidirectional LSTM/GRU against flax.linen (same weights copied
in), padding, reverse, bidirectional, stacking, finite differences, transforms, errors.
(The cells are tested in test_cells.py, the scan and its fused backward pass in
test_recurrent_scan.py.)"""
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import init as initializers
from jdl import losses, nn, optim
from tests.nn.test_cells import F, H, T
from tests.nn.test_cells import flat as _flat
from tests.nn.test_cells import flax_twins as _cells
from tests.nn.test_cells import random_carry as _random_carry
from tests.nn.test_cells import to_flax_cell as _to_flax_cell

LENGTHS = np.array([5, 2, 3], np.int32)


def _mask(outputs, lengths):
    if lengths is None:
        return outputs
    valid = jnp.arange(outputs.shape[1])[None, :] < jnp.asarray(lengths)[:, None]
    return jnp.where(valid[..., None], outputs, 0.0)


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
    # Jitted: an eager RNN compiles its scan at every call.
    outputs = jax.jit(lambda p, v: layer.apply(p, {}, v, lengths=jnp.asarray(LENGTHS), initial_carry=carry)[0][0])(
        params, x)
    assert outputs.shape == (3, T, 2 * H if mode == "bidirectional" else H)
    assert float(jnp.abs(outputs[1, 2:]).max()) == 0.0 and float(jnp.abs(outputs[1, :2]).min()) > 0.0


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
    # Each nonempty sequence alone, unpadded (no lengths), all in one compilation.
    alone_runs = jax.jit(lambda p, v, c0: {b: layer.apply(p, {}, v[b:b + 1, :n],
                                                          initial_carry=jax.tree.map(lambda c: c[b:b + 1], c0))[0]
                                           for b, n in enumerate(lengths) if n > 0})(params, x, carry)
    for b, n in enumerate(lengths):
        carry_b = jax.tree.map(lambda c: c[b:b + 1], carry)
        if n == 0:
            np.testing.assert_array_equal(jax.tree.map(lambda c: c[b], final), jax.tree.map(lambda c: c[0], carry_b))
        else:
            alone, alone_final = alone_runs[b]
            np.testing.assert_allclose(outputs[b, :n], alone[0], rtol=1e-5, atol=1e-5)
            for got, want in zip(jax.tree.leaves(final), jax.tree.leaves(alone_final)):
                np.testing.assert_allclose(got[b], want[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(outputs[b, n:], 0.0)


def test_bidirectional_equals_forward_plus_reversed_sequences(randn, random_params):
    layer = nn.Bidirectional(nn.GRUCell(H), nn.LSTMCell(H))
    x = randn((3, T, F), seed=40)
    params = random_params(layer, x, seed=41, scale=0.5)
    forward, backward = nn.RNN(nn.GRUCell(H)), nn.RNN(nn.LSTMCell(H))

    @jax.jit  # one compilation for the batch and every sequence alone (eager RNNs compile a scan per call)
    def run(p):
        alone = [(forward.apply(p["forward"], {}, x[b:b + 1, :n])[0],
                  backward.apply(p["backward"], {}, x[b:b + 1, :n][:, ::-1])[0]) for b, n in enumerate(LENGTHS)]
        return layer.apply(p, {}, x, lengths=jnp.asarray(LENGTHS))[0], alone

    (outputs, (fwd_final, bwd_final)), alone = run(params)
    for b, n in enumerate(LENGTHS):
        (fwd, fwd_carry), (bwd, bwd_carry) = alone[b]
        want = jnp.concatenate([fwd[0], bwd[0, ::-1]], axis=-1)
        np.testing.assert_allclose(outputs[b, :n], want, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(outputs[b, n:], 0.0)
        np.testing.assert_allclose(fwd_final[b], fwd_carry[0], rtol=1e-5, atol=1e-5)
        for got, expected in zip(bwd_final, bwd_carry):
            np.testing.assert_allclose(got[b], expected[0], rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------ gradients, transforms


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
    with pytest.raises(ValueError, match=r"LSTMCell\(.*\): expected hidden_size to be a positive int, got 0"):
        nn.LSTMCell(0)
    with pytest.raises(ValueError, match=r"SimpleRNNCell\(.*\): expected activation in \('tanh', 'relu'\), got 'gelu'"):
        nn.SimpleRNNCell(H, activation="gelu")
    x = jnp.zeros((2, T, F))
    with pytest.raises(ValueError, match=r"RNN\(LSTMCell\(hidden_size=4\)\): expected params\['hidden'\] with "
                                         r"keys \['w'\], got keys \['b', 'w'\]"):
        nn.LSTM(H).apply(_zero_params(nn.GRU(H), x.shape), {}, x)


def test_layers_are_values_with_the_old_descriptions():
    assert repr(nn.LSTM(H)) == "RNN(LSTMCell(hidden_size=4))" and isinstance(nn.LSTM(H), nn.RNN)
    gru = nn.GRU(H, reverse=True, time_major=True)
    assert repr(gru) == "RNN(GRUCell(hidden_size=4), time_major=True, reverse=True)"
    assert repr(nn.Bidirectional(nn.GRUCell(H))) == "Bidirectional(GRUCell(hidden_size=4), GRUCell(hidden_size=4))"
    assert (nn.LSTM(H).name, nn.GRU(H).name, nn.RNN(nn.GRUCell(H)).name) == ("lstm", "gru", "rnn")
    stacked = nn.StackedRNN([nn.GRUCell(H), nn.GRUCell(H)])
    assert repr(stacked) == "StackedRNN([GRUCell(hidden_size=4), GRUCell(hidden_size=4)], dropout_rate=0.0)"
    assert stacked == nn.StackedRNN([nn.GRUCell(H), nn.GRUCell(H)]) and hash(stacked) == hash(nn.StackedRNN(
        (nn.GRUCell(H), nn.GRUCell(H))))  # the list is kept as a tuple: layers stay hashable values
    x = jnp.zeros((2, T, F))
    params = _zero_params(stacked, x.shape)
    with pytest.raises(ValueError, match=r"StackedRNN\(.*\): expected params\['layer_1'\]\['input'\]\['w'\] of "
                                         r"shape \(4, 12\), got \(3, 12\)"):
        stacked.apply({"layer_0": params["layer_0"], "layer_1": params["layer_0"]}, {}, x)


# ---------------------------------------------------------------------------------------
# Stacked layers


@pytest.mark.parametrize("bidirectional", [False, True])
def test_stacked_equals_layers_chained_by_hand(bidirectional):
    cells = [nn.LSTMCell(5), nn.GRUCell(4)]
    stacked = nn.StackedRNN(cells, bidirectional=bidirectional, dropout_rate=0.3)
    x = jax.random.normal(jax.random.key(0), (3, 6, 2))
    lengths = jnp.array([6, 2, 4])
    params, state = stacked.init(jax.random.key(1), x)
    make = nn.Bidirectional if bidirectional else nn.RNN

    @jax.jit  # one compilation for the stack and the layers by hand (eager RNNs compile a scan per call)
    def run(p):
        hidden, by_hand = x, []
        for index, cell in enumerate(cells):
            (hidden, carry), _ = make(cell).apply(p[f"layer_{index}"], {}, hidden, lengths=lengths)
            by_hand.append(carry)
        return stacked.apply(p, state, x, lengths=lengths)[0], hidden, by_hand  # eval: no dropout

    (outputs, carries), hidden, by_hand = run(params)
    for index, carry in enumerate(by_hand):
        np.testing.assert_allclose(jax.tree.leaves(carries[index])[0], jax.tree.leaves(carry)[0], rtol=1e-6)
    np.testing.assert_allclose(outputs, hidden, rtol=1e-6)
    assert outputs.shape == (3, 6, 4 * (2 if bidirectional else 1))
    np.testing.assert_array_equal(outputs[1, 2:], 0.0)  # padding stays zero up the stack


def test_stacked_dropout_between_layers():
    stacked = nn.StackedRNN([nn.GRUCell(8), nn.GRUCell(8)], dropout_rate=0.5)
    x = jax.random.normal(jax.random.key(0), (4, 5, 3))
    params, state = stacked.init(jax.random.key(1), x)
    no_dropout = nn.StackedRNN([nn.GRUCell(8), nn.GRUCell(8)], dropout_rate=0.0)

    @jax.jit  # one compilation (eager RNNs compile a scan per call), called twice with the same key
    def run(p, key):
        return (stacked.apply(p, state, x)[0][0], stacked.apply(p, state, x, key=key, train=True)[0][0],
                no_dropout.apply(p, state, x, key=key, train=True)[0][0])

    eval_out, train_out, plain = run(params, jax.random.key(2))
    _, again, _ = run(params, jax.random.key(2))
    assert not np.allclose(train_out, eval_out)  # the mask between the layers changed the top layer's input
    np.testing.assert_array_equal(train_out, again)  # same key, same mask
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


def test_bad_options():
    with pytest.raises(ValueError, match=r"RNN\(.*\): expected implementation in \('fused', 'autodiff'\), got 'cudnn'"):
        nn.RNN(nn.GRUCell(H), implementation="cudnn")
    with pytest.raises(ValueError, match=r"Bidirectional\(.*\): expected time_major to be a bool, got 1"):
        nn.Bidirectional(nn.GRUCell(H), time_major=1)
    with pytest.raises(ValueError, match=r"StackedRNN\(.*\): expected implementation"):
        nn.StackedRNN([nn.GRUCell(H)], implementation="scan")
    with pytest.raises(ValueError, match=r"RNN\(.*\): expected time_chunk to be a positive int, got 0"):
        nn.LSTM(H, time_chunk=0)


@pytest.mark.parametrize("implementation", ["fused", "autodiff"])
def test_padded_steps_reach_no_gradient_whatever_they_hold(implementation):
    """NaN in the padding (garbage, or Embedding's NaN rows for id -1) must not reach the
    weight gradients through 0 x NaN in the backward pass."""
    layer = nn.LSTM(H, implementation=implementation)
    x = jax.random.normal(jax.random.key(0), (2, T, F))
    params, state = layer.init(jax.random.key(1), x)
    lengths = jnp.array([T, 2])
    x = x.at[1, 2:].set(jnp.nan)
    real = (jnp.arange(T) < lengths[:, None])[..., None]

    def loss(p):
        (outputs, _), _ = layer.apply(p, state, x, lengths=lengths)
        return jnp.sum(jnp.where(real, outputs, 0.0))

    value, grads = jax.jit(jax.value_and_grad(loss))(params)
    assert bool(jnp.isfinite(value))
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))
