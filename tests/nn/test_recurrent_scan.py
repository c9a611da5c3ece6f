"""The scan that runs a cell: against a Python loop of cell steps, the fused custom VJP
against JAX differentiating the plain scan (lengths, reverse, chunks, second order),
time-major against batch-major, flip_sequences and the chunk sizes."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import nn
from jdl.nn.recurrent_scan import time_chunk_size
from tests.nn.test_cells import ALL_CELLS, F, H, T
from tests.nn.test_cells import random_carry as _random_carry


def test_flip_sequences_keeps_padding_at_the_end():
    x = jnp.arange(1, 10, dtype=jnp.float32).reshape(3, 3).T  # time-major [time=3, batch=3]
    flipped = nn.flip_sequences(x, jnp.array([1, 2, 3]))
    np.testing.assert_array_equal(flipped.T, [[1, 2, 3], [5, 4, 6], [9, 8, 7]])  # batch-major rows
    np.testing.assert_array_equal(nn.flip_sequences(flipped, jnp.array([1, 2, 3])), x)


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


def test_time_chunk_size():
    assert time_chunk_size(5) == 5
    assert time_chunk_size(100) == 10  # a divisor near 8: no padding
    assert time_chunk_size(400) == 8
    for steps in range(1, 1000):  # chunks of 4 to 16 steps, at most 3 steps of padding
        size = time_chunk_size(steps)
        padding = -(-steps // size) * size - steps
        assert (size == steps if steps <= 8 else 4 <= size <= 16) and padding <= 3, (steps, size)
