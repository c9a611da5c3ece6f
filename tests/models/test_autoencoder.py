"""The autoencoder: a linear one learns PCA's subspace; tied weights; encode/decode; denoising; sparse penalties."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads
from sklearn.decomposition import PCA

from jdl import losses, nn
from jdl.models.autoencoder import Autoencoder
from jdl.nn.noise import GaussianNoise, MaskingNoise

D, CODE, N = 8, 3, 200


def _randn(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def _pca_data() -> np.ndarray:
    """200 points in 8-D: a 3-D principal subspace (variances 9, 4, 2.25) plus noise of variance 0.01, off-centre."""
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.standard_normal((D, CODE)))
    latent = rng.standard_normal((N, CODE)) * np.array([3.0, 2.0, 1.5])
    return (latent @ basis.T + 0.1 * rng.standard_normal((N, D)) + rng.standard_normal(D)).astype(np.float32)


def _init(model, x, seed=0, scale=0.3):
    """Params of ``model``'s shapes drawn with NumPy, ``N(0, scale^2)`` (biases too, so they are not zero): a
    compiled ``model.init`` costs more than the rest of a test (the truncated normal of each kernel)."""
    shapes, _ = jax.eval_shape(model.init, jax.random.key(0), x)
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda leaf: jnp.asarray(rng.standard_normal(leaf.shape).astype(np.float32) * scale), shapes)


def _shapes(model, x):
    return jax.tree.map(jnp.shape, jax.eval_shape(model.init, jax.random.key(0), x)[0])


def _principal_angles(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The principal angles (radians) between the column spaces of ``a`` and ``b``."""
    q1, _ = np.linalg.qr(a)
    q2, _ = np.linalg.qr(b)
    cosines = np.linalg.svd(q1.T @ q2, compute_uv=False)
    return np.arccos(np.clip(cosines, -1.0, 1.0))


def _train(model, x, steps=4000, learning_rate=0.1):
    """Full-batch Adam (cosine-decayed learning rate) on the mean squared reconstruction error, in one lax.scan."""
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))

    def loss_fn(params):
        return jnp.mean(jnp.square(model.apply(params, {}, x)[0] - x))

    @jax.jit
    def run(params):
        def step(carry, _):
            params, opt_state = carry
            loss, grads = jax.value_and_grad(loss_fn)(params)
            updates, opt_state = optimizer.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), loss
        (params, _), curve = jax.lax.scan(step, (params, optimizer.init(params)), None, length=steps)
        return params, loss_fn(params), curve

    return run(_init(model, x))


@pytest.mark.parametrize("tied", [False, True])
def test_a_linear_autoencoder_learns_the_principal_subspace(tied):
    x = _pca_data()
    model = Autoencoder(CODE, activation="linear", tied=tied)
    params, mse, curve = _train(model, jnp.asarray(x))
    assert float(curve[-1]) < float(curve[0]) / 10

    x64 = x.astype(np.float64)
    pca = PCA(n_components=CODE).fit(x64)
    pca_mse = float(np.mean(np.square(x64 - pca.inverse_transform(pca.transform(x64)))))
    decoder_kernel = params["encoder"]["layer_0"]["w"] if tied else params["decoder"]["layer_0"]["w"].T  # (D, CODE)
    angles = _principal_angles(np.asarray(decoder_kernel, np.float64), pca.components_.T.astype(np.float64))
    # Measured (float32, 4,000 Adam steps): largest angle 2e-5 rad untied, 2e-8 tied; MSE ratio 1 + 4e-5 untied
    # (the encoder's weights off the subspace only see the small noise, and converge slowest), 1 + 2e-7 tied.
    assert angles.max() < 1e-3, angles
    assert abs(float(mse) / pca_mse - 1) < 5e-4, (float(mse), pca_mse)


# --------------------------------------------------------------------------------------------- sparse penalties


def _kl_sparsity_numpy(rho, a):
    a = np.asarray(a, np.float64).reshape(-1, np.shape(a)[-1])
    rho_hat = a.mean(axis=0)
    return np.sum(rho * np.log(rho / rho_hat) + (1 - rho) * np.log((1 - rho) / (1 - rho_hat)))


def test_kl_sparsity_and_l1_activity_against_numpy_and_their_gradients():
    rho = 0.05
    a = jnp.asarray(1 / (1 + np.exp(-2 * np.asarray(_randn((6, 5, 7), seed=1)))))  # 2 batch axes: 30 examples
    n = 30

    @jax.jit
    def run(a):
        kl, kl_grad = jax.value_and_grad(lambda v: losses.kl_sparsity(rho, v))(a)
        l1, l1_grad = jax.value_and_grad(losses.l1_activity)(a)
        return kl, kl_grad, l1, l1_grad

    kl, kl_grad, l1, l1_grad = run(a)
    np.testing.assert_allclose(kl, _kl_sparsity_numpy(rho, a), rtol=1e-5)
    rho_hat = np.asarray(a, np.float64).reshape(n, 7).mean(axis=0)
    closed_form = (-rho / rho_hat + (1 - rho) / (1 - rho_hat)) / n
    np.testing.assert_allclose(kl_grad, np.broadcast_to(closed_form, a.shape), rtol=1e-5)
    np.testing.assert_allclose(l1, np.abs(np.asarray(a)).sum() / n, rtol=1e-6)
    np.testing.assert_allclose(l1_grad, np.sign(np.asarray(a)) / n, rtol=1e-6)
    with jax.enable_x64(True):  # finite differences in float64
        a64 = np.asarray(a, np.float64)
        check_grads(jax.jit(lambda v: losses.kl_sparsity(rho, v)), (a64,), order=1, modes=["rev"], atol=1e-5,
                    rtol=1e-5, eps=1e-5)
        assert jax.eval_shape(lambda v: losses.kl_sparsity(rho, v), a64).dtype == jnp.float64


def test_kl_sparsity_is_zero_at_the_target_and_safe_at_the_edges():
    @jax.jit
    def run(at_target, edges, nan):
        kl_edges, grad_edges = jax.value_and_grad(lambda v: losses.kl_sparsity(0.1, v))(edges)
        return losses.kl_sparsity(0.1, at_target), kl_edges, grad_edges, losses.kl_sparsity(0.1, nan)

    at_target = jnp.full((4, 3), 0.1)
    edges = jnp.array([[0.0, 1.0, 0.5], [0.0, 1.0, 0.5]])  # a dead unit and a saturated one: clipped, not inf
    nan = jnp.array([[0.1, jnp.nan], [0.1, 0.2]])
    zero, kl_edges, grad_edges, kl_nan = run(at_target, edges, nan)
    assert abs(float(zero)) < 1e-6
    assert np.isfinite(float(kl_edges)) and float(kl_edges) > _kl_sparsity_numpy(0.1, [[0.5]])
    assert np.all(np.isfinite(np.asarray(grad_edges)))
    assert np.isnan(float(kl_nan))  # NaN stays NaN
    assert np.isnan(float(losses.l1_activity(nan)))


def test_sparse_penalty_errors():
    a = jnp.full((2, 3), 0.5)
    for rho in (0.0, 1.0, -0.1, True, "0.1", jnp.array(0.1)):
        with pytest.raises(ValueError, match=r"kl_sparsity: expected rho \(the target mean activation\) in \(0, 1\)"):
            losses.kl_sparsity(rho, a)
    for fn in (lambda v: losses.kl_sparsity(0.1, v), losses.l1_activity):
        with pytest.raises(TypeError, match=r"(kl_sparsity|l1_activity): expected a floating-point activations"):
            fn(jnp.ones((2, 3), jnp.int32))
        with pytest.raises(ValueError, match=r"no empty axis"):
            fn(jnp.ones((0, 3)))
        with pytest.raises(ValueError, match=r"activations of rank >= 1"):
            fn(jnp.float32(0.5))


# --------------------------------------------------------------------------------------------- the model


def _dense(h, layer, w=None):
    w = layer["w"] if w is None else w
    return h @ np.asarray(w, np.float64) + (np.asarray(layer["b"], np.float64) if "b" in layer else 0.0)


def test_deep_autoencoder_shapes_and_forward_pass_against_numpy():
    model = Autoencoder((16, 8, 3), activation="relu", code_activation="sigmoid", output_activation="sigmoid")
    x = _randn((5, 7, 10))                                   # two batch axes
    assert jax.eval_shape(model.init, jax.random.key(0), x)[1] == {}
    assert _shapes(model, x) == {"encoder": {"layer_0": {"w": (10, 16), "b": (16,)}, "layer_1": {"w": (16, 8), "b": (8,)},
                                  "layer_2": {"w": (8, 3), "b": (3,)}},
                      "decoder": {"layer_0": {"w": (3, 8), "b": (8,)}, "layer_1": {"w": (8, 16), "b": (16,)},
                                  "layer_2": {"w": (16, 10), "b": (10,)}}}
    params = _init(model, x)  # nonzero biases

    run = jax.jit(lambda p, v: (model.apply(p, {}, v)[0], model.encode(p, v)))
    x_hat, code = run(params, x)
    assert x_hat.shape == x.shape and code.shape == (5, 7, 3)

    relu, sigmoid = (lambda z: np.maximum(z, 0)), (lambda z: 1 / (1 + np.exp(-z)))
    h = np.asarray(x, np.float64)
    for name, act in zip(["layer_0", "layer_1", "layer_2"], [relu, relu, sigmoid]):
        h = act(_dense(h, params["encoder"][name]))
    np.testing.assert_allclose(code, h, rtol=1e-5, atol=1e-6)
    for name, act in zip(["layer_0", "layer_1", "layer_2"], [relu, relu, sigmoid]):
        h = act(_dense(h, params["decoder"][name]))
    np.testing.assert_allclose(x_hat, h, rtol=1e-5, atol=1e-6)
    assert np.all((np.asarray(code) > 0) & (np.asarray(code) < 1))

    # A decoder of its own widths.
    other = Autoencoder((6, 2), decoder_features=(4, 5), activation="tanh")
    other_shapes = _shapes(other, jax.ShapeDtypeStruct((3, 9), jnp.float32))
    assert [other_shapes["decoder"][f"layer_{i}"]["w"] for i in range(3)] == [(2, 4), (4, 5), (5, 9)]
    assert Autoencoder(4).encoder_features == (4,) and Autoencoder([5, 2]).encoder_features == (5, 2)


def test_tied_weights():
    model = Autoencoder((6, 3), tied=True, activation="tanh")
    x = _randn((4, 10))
    # The tied params hold no decoder kernels: only biases, one per decoder layer.
    assert _shapes(model, x)["decoder"] == {"layer_0": {"b": (6,)}, "layer_1": {"b": (10,)}}
    count = lambda shapes: sum(np.prod(s) for s in jax.tree.leaves(shapes, is_leaf=lambda s: isinstance(s, tuple)))  # noqa: E731
    assert count(_shapes(Autoencoder((6, 3), activation="tanh"), x)) - count(_shapes(model, x)) == 3 * 6 + 6 * 10
    params = _init(model, x)

    def with_kernels(p, w1_encoder, w1_decoder):
        """The tied params, with encoder layer 1's kernel as the encoder reads it and as the decoder does."""
        return ({"encoder": {**p["encoder"], "layer_1": {**p["encoder"]["layer_1"], "w": w1_encoder}},
                 "decoder": p["decoder"]},
                {"encoder": {**p["encoder"], "layer_1": {**p["encoder"]["layer_1"], "w": w1_decoder}},
                 "decoder": p["decoder"]})

    @jax.jit
    def run(p, v):
        w1 = p["encoder"]["layer_1"]["w"]
        code = model.encode(p, v)
        moved = model.decode(with_kernels(p, w1, 2 * w1)[1], code)

        # Gradients reach the shared kernel from both sides: the tied gradient is the sum of the two uses.
        def untied_loss(w1_encoder, w1_decoder):
            p_encoder, p_decoder = with_kernels(p, w1_encoder, w1_decoder)
            return jnp.sum(jnp.square(model.decode(p_decoder, model.encode(p_encoder, v)) - v))

        both_uses = jax.grad(untied_loss, argnums=(0, 1))(w1, w1)
        tied_grad = jax.grad(lambda q: jnp.sum(jnp.square(model.apply(q, {}, v)[0] - v)))(p)
        return model.apply(p, {}, v)[0], code, model.decode(p, code), moved, both_uses, tied_grad

    x_hat, code, decoded, decoded_moved, both_uses, tied_grad = run(params, x)
    enc, dec = params["encoder"], params["decoder"]
    h = np.tanh(_dense(np.tanh(_dense(np.asarray(x, np.float64), enc["layer_0"])), enc["layer_1"]))
    np.testing.assert_allclose(code, h, rtol=1e-5, atol=1e-6)
    h = np.tanh(_dense(h, dec["layer_0"], np.asarray(enc["layer_1"]["w"]).T))   # decoder layer i: W_{k-1-i}^T
    h = _dense(h, dec["layer_1"], np.asarray(enc["layer_0"]["w"]).T)            # linear output
    np.testing.assert_allclose(x_hat, h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(decoded, x_hat, rtol=1e-6, atol=1e-6)
    assert np.max(np.abs(np.asarray(decoded_moved) - np.asarray(decoded))) > 1e-3  # the decoder reads the encoder's w
    np.testing.assert_allclose(tied_grad["encoder"]["layer_1"]["w"], both_uses[0] + both_uses[1], rtol=1e-5,
                               atol=1e-6)
    assert np.max(np.abs(np.asarray(both_uses[1]))) > 1e-3  # the decoder's use counts


def test_encode_and_decode_compose_to_apply_and_corruption_only_in_training():
    rate = 0.5
    model = Autoencoder((6, 3), activation="sigmoid", corruption=MaskingNoise(rate))
    clean = Autoencoder((6, 3), activation="sigmoid")
    x = _randn((8, 10)) + 3.0
    params = _init(model, x)
    key = jax.random.key(7)

    @jax.jit
    def run(p, v):
        evaluation = model.apply(p, {}, v)[0]
        training = model.apply(p, {}, v, key=key, train=True)[0]
        composed_eval = model.decode(p, model.encode(p, v))
        composed_train = model.decode(p, model.encode(p, v, key=key, train=True))
        mask = jax.random.bernoulli(jax.random.fold_in(key, 0), 1 - rate, v.shape)  # the corruption's key
        by_hand = clean.apply(p, {}, jnp.where(mask, v, 0.0))[0]
        # Without corruption, training is evaluation and needs no key.
        return (evaluation, training, composed_eval, composed_train, by_hand, clean.apply(p, {}, v)[0],
                clean.apply(p, {}, v, train=True)[0])

    evaluation, training, composed_eval, composed_train, by_hand, without_corruption, clean_train = run(params, x)
    np.testing.assert_allclose(composed_eval, evaluation, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(composed_train, training, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(evaluation, without_corruption, rtol=1e-6, atol=1e-6)   # evaluation: not corrupted
    np.testing.assert_allclose(training, by_hand, rtol=1e-6, atol=1e-6)                # training: x masked
    assert np.max(np.abs(np.asarray(training) - np.asarray(evaluation))) > 1e-3
    np.testing.assert_array_equal(clean_train, without_corruption)


def test_a_denoising_autoencoder_learns_to_remove_the_noise():
    """Trained on (corrupted input -> clean x), the reconstruction of a corrupted point is nearer the clean point
    than the corrupted point is."""
    x = jnp.asarray(_pca_data())
    model = Autoencoder(CODE, activation="linear", corruption=GaussianNoise(1.0))
    optimizer = optax.adam(optax.cosine_decay_schedule(0.1, 1000))

    @jax.jit
    def run(params, key):
        def loss_fn(p, k):
            return jnp.mean(jnp.square(model.apply(p, {}, x, key=k, train=True)[0] - x))  # the clean x

        def step(carry, k):
            p, opt_state = carry
            grads = jax.grad(loss_fn)(p, k)
            updates, opt_state = optimizer.update(grads, opt_state, p)
            return (optax.apply_updates(p, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), jax.random.split(key, 1000))
        noisy = x + jax.random.normal(jax.random.key(99), x.shape)
        return jnp.mean(jnp.square(noisy - x)), jnp.mean(jnp.square(model.apply(params, {}, noisy)[0] - x))

    noise_mse, denoised_mse = run(_init(model, x), jax.random.key(1))
    print(float(noise_mse), float(denoised_mse))
    assert float(denoised_mse) < 0.5 * float(noise_mse), (float(denoised_mse), float(noise_mse))


def test_a_sparse_autoencoder_holds_its_mean_activation_near_rho():
    """Reconstruction error plus ``beta * kl_sparsity(rho, code)``: after training, the code units' mean activation
    is within 20% of ``rho`` (here 0.1, with 20 sigmoid code units for 8 inputs: more units than inputs)."""
    x = jnp.asarray(_pca_data())
    x = (x - x.mean(0)) / x.std(0)
    model, rho, beta = Autoencoder(20, code_activation="sigmoid"), 0.1, 0.5
    optimizer = optax.adam(optax.cosine_decay_schedule(0.03, 1500))

    def loss_fn(params):
        code = model.encode(params, x)
        return jnp.mean(jnp.square(model.decode(params, code) - x)) + beta * losses.kl_sparsity(rho, code)

    @jax.jit
    def run(params):
        def step(carry, _):
            params, opt_state = carry
            updates, opt_state = optimizer.update(jax.grad(loss_fn)(params), opt_state, params)
            return (optax.apply_updates(params, updates), opt_state), None

        (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, length=1500)
        return jnp.mean(model.encode(params, x)), jnp.mean(model.encode(_init(model, x), x))

    trained, initial = run(_init(model, x))
    assert abs(float(trained) - rho) < 0.2 * rho, float(trained)
    assert abs(float(initial) - rho) > 0.2 * rho  # it starts far from rho (about 1/2): the penalty moved it


def test_errors():
    x = _randn((4, 10))
    model = Autoencoder((6, 3), corruption=MaskingNoise(0.5))
    params, state = jax.eval_shape(model.init, jax.random.key(0), x)  # the checks run on shapes
    with pytest.raises(ValueError, match=r"Autoencoder\[corruption\] MaskingNoise\(rate=0.5\): train=True needs a "
                                         r"PRNG key"):
        model.apply(params, state, x, train=True)
    with pytest.raises(ValueError, match=r"Autoencoder\(.*\): expected input with last axis 10 \(the params' "
                                         r"in_features\), got input of shape \(4, 9\)"):
        model.apply(params, state, x[:, :9])
    with pytest.raises(TypeError, match=r"Autoencoder\(.*floating-point input.*int32"):
        model.apply(params, state, x.astype(jnp.int32))
    with pytest.raises(ValueError, match=r"Autoencoder\(.*no empty axis"):
        model.apply(params, state, x[:0])
    with pytest.raises(TypeError, match=r"train to be a Python bool"):
        jax.jit(lambda v, t: model.apply(params, state, v, train=t))(x, True)
    other_params, _ = jax.eval_shape(Autoencoder((6, 2)).init, jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"Autoencoder\(.*params\['decoder'\]\['layer_0'\]\['w'\] of shape "
                                         r"\(3, 6\).*from another model"):
        model.apply(other_params, state, x)
    tied_params, _ = jax.eval_shape(Autoencoder((6, 3), tied=True).init, jax.random.key(0), x)
    with pytest.raises(ValueError, match=r"from another model"):
        model.apply(tied_params, state, x)
    with pytest.raises(ValueError, match=r"Autoencoder\(.*expected code with last axis 3 \(the code size"):
        model.decode(params, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match=r"from another model"):
        model.decode(other_params, jnp.ones((4, 3)))
    with pytest.raises(ValueError, match=r"from another model"):
        model.decode({"w": jnp.ones(3)}, jnp.ones((4, 3)))
    # Configuration, on construction.
    for bad, match in [(dict(encoder_features=()), "at least one encoder layer"),
                       (dict(encoder_features=(4, 0)), "every width in encoder_features to be a positive int"),
                       (dict(encoder_features=2.5), "encoder_features to be a positive int or a sequence"),
                       (dict(encoder_features=(4,), decoder_features=(True,)), "every width in decoder_features"),
                       (dict(encoder_features=(4, 2), decoder_features=(5,), tied=True),
                        r"decoder_features=None or \(4,\) \(the encoder's widths mirrored\) with tied=True"),
                       (dict(encoder_features=3, activation="swish"), "activation in"),
                       (dict(encoder_features=3, output_activation=None), "output_activation in"),
                       (dict(encoder_features=3, tied=1), "tied to be a bool")]:
        with pytest.raises(ValueError, match=match):
            Autoencoder(**bad)
    assert repr(Autoencoder((5, 2), tied=True)) == "Autoencoder(encoder_features=(5, 2), tied=True)"
    with pytest.raises(TypeError, match=r"corruption to be None or a jdl layer"):
        Autoencoder(3, corruption=lambda v: v)
    with pytest.raises(TypeError, match=r"Autoencoder\(.*a corruption layer without params"):
        Autoencoder(3, corruption=nn.Dense(10)).init(jax.random.key(0), x)
