"""The fully connected autoencoder: shallow or deep, tied or untied, denoising, sparse.

An autoencoder maps ``x in R^d`` to a code ``z in R^{d'}`` (the encoder) and back to a
reconstruction ``x_hat in R^d`` (the decoder), and is trained to make ``x_hat`` close to
``x``. With one linear layer each way, ``d' < d`` and the squared error, it learns the
principal subspace of the data: the span of PCA's first ``d'`` components (Baldi and
Hornik, 1989), which ``tests/models/test_autoencoder.py`` checks against scikit-learn.

* **Deep**: ``Autoencoder((64, 16, 3))`` is ``d -> 64 -> 16 -> 3 -> 16 -> 64 -> d``; the
  decoder mirrors the encoder unless given its own hidden widths (``decoder_features``).
* **Tied** (``tied=True``): decoder layer ``i`` uses the transpose of encoder layer
  ``k - 1 - i``'s kernel, with its own bias; the params hold no decoder kernels.
* **Denoising** (Vincent et al., 2008): ``corruption=nn.MaskingNoise(0.3)`` (or
  ``nn.GaussianNoise(0.1)``) corrupts the input in training only, so
  ``apply(params, state, x, key=k, train=True)`` reconstructs from a corrupted ``x``; the
  loss compares the reconstruction with the clean ``x``. Evaluation is not corrupted.
* **Sparse**: add :func:`jdl.losses.kl_sparsity` (``sum_j KL(rho || rho_hat_j)``, for
  codes in ``(0, 1)``: ``code_activation="sigmoid"``) or :func:`jdl.losses.l1_activity`
  of ``encode(params, x)`` to the reconstruction loss; the code may then be wider than
  the input (overcomplete).

Params are ``{"encoder": {"layer_0": {"w", "b"}, ...}, "decoder": {"layer_0": {"w", "b"},
...}}`` (tied: decoder layers hold only ``"b"``; no ``"b"`` anywhere without a bias);
state is ``{}``. Activations by name: ``activation`` on every hidden layer,
``code_activation`` (by default ``activation``) on the code, ``output_activation`` on the
reconstruction.

Example:
    >>> import jax, jax.numpy as jnp, jdl
    >>> from jdl import models, nn
    >>> model = models.Autoencoder((16, 3), tied=True, corruption=nn.GaussianNoise(0.1))
    >>> x = jax.random.normal(jax.random.key(0), (32, 8))
    >>> params, state = model.init(jax.random.key(1), x)
    >>> sorted(params["encoder"]["layer_1"]), sorted(params["decoder"]["layer_0"])   # tied: no decoder kernels
    (['b', 'w'], ['b'])
    >>> jax.jit(model.encode)(params, x).shape
    (32, 3)
    >>> apply = jax.jit(model.apply, static_argnames="train")
    >>> x_hat, _ = apply(params, state, x, key=jax.random.key(2), train=True)   # denoising
    >>> jdl.losses.mean_squared_error(x_hat, x).shape                           # against the clean x
    ()
"""
from __future__ import annotations

from typing import Any, Callable, Literal

import jax
import jax.numpy as jnp

from jdl import activations
from jdl import init as initializers
from jdl._checks import (
    check_floating_min_rank, check_last_axis, check_positive_int, check_that, check_train_flag,
)
from jdl.nn.core import KW_ONLY, Layer, check_params, child_key, expected_shapes, inside
from jdl.nn.dense import check_features, init_kernel_and_bias

__all__ = ["Autoencoder"]

ACTIVATIONS: dict[str, Callable] = {
    "linear": lambda x: x,
    "relu": activations.relu,
    "sigmoid": activations.sigmoid,
    "tanh": activations.tanh,
    "leaky_relu": activations.leaky_relu,
    "elu": activations.elu,
    "gelu": activations.gelu,
    "softplus": activations.softplus,
}
Activation = Literal["linear", "relu", "sigmoid", "tanh", "leaky_relu", "elu", "gelu", "softplus"]

# The keys that fold into the model's PRNG key: init's two parts, apply's corruption.
ENCODER_KEY, DECODER_KEY = 0, 1
CORRUPTION_KEY = 0


def _widths(where: str, name: str, value: Any) -> tuple[int, ...]:
    """An int or a sequence of ints as a tuple of positive ints."""
    widths = (value,) if isinstance(value, int) and not isinstance(value, bool) else value
    check_that(isinstance(widths, (tuple, list)), where, f"{name} to be a positive int or a sequence of them",
               repr(value))
    for width in widths:
        check_positive_int(where, f"every width in {name}", width)
    return tuple(widths)


class Autoencoder(Layer):
    """A fully connected autoencoder ``x -> encoder -> code -> decoder -> x_hat`` on ``[*batch, d]`` inputs.

    Args:
      encoder_features: the widths of the encoder's layers (an int for one layer); the last
        is the code size ``d'``.
      decoder_features: the widths of the decoder's hidden layers; its output layer has the
        input's width ``d``. ``None`` mirrors the encoder (``reversed(encoder_features[:-1])``).
      activation: the hidden layers' activation (``"linear"`` for none).
      code_activation: the code layer's; ``None`` means ``activation``.
      output_activation: the reconstruction's (``"sigmoid"`` for inputs in ``[0, 1]``).
      tied: decoder layer ``i`` uses encoder layer ``k - 1 - i``'s kernel transposed (own
        bias); needs the mirrored decoder.
      corruption: a layer without params applied to the input in training only (the
        denoising autoencoder): ``nn.MaskingNoise``, ``nn.GaussianNoise``, ``nn.Dropout``.
      use_bias, kernel_init, bias_init, param_dtype: as :class:`~jdl.nn.Dense`'s.

    ``apply(params, state, x, *, key=None, train=False) -> (x_hat, state)``;
    ``encode(params, x, *, key=None, train=False) -> code`` (corrupted in training, as in
    ``apply``); ``decode(params, code) -> x_hat``; ``decode(params, encode(params, x, ...))``
    is ``apply``'s reconstruction.
    """

    encoder_features: Any
    decoder_features: Any = None
    _: KW_ONLY
    activation: Activation = "relu"
    code_activation: Activation | None = None
    output_activation: Activation = "linear"
    tied: bool = False
    corruption: Layer | None = None
    use_bias: bool = True
    kernel_init: Callable = initializers.lecun_normal()
    bias_init: Callable = initializers.zeros
    param_dtype: Any = jnp.float32
    name: str = "autoencoder"

    def __post_init__(self):
        where = type(self).__name__
        encoder = _widths(where, "encoder_features", self.encoder_features)
        check_that(encoder, where, "at least one encoder layer (encoder_features)", repr(self.encoder_features))
        mirrored = tuple(reversed(encoder[:-1]))
        decoder = mirrored if self.decoder_features is None else _widths(where, "decoder_features",
                                                                          self.decoder_features)
        check_that(not self.tied or decoder == mirrored, where, f"decoder_features=None or {mirrored} (the "
                   f"encoder's widths mirrored) with tied=True", repr(self.decoder_features))
        check_that(self.corruption is None or isinstance(self.corruption, Layer), where, "corruption to be None or "
                   "a jdl layer without params (nn.MaskingNoise(0.3), nn.GaussianNoise(0.1))",
                   type(self.corruption).__name__, TypeError)
        object.__setattr__(self, "encoder_features", encoder)
        object.__setattr__(self, "decoder_features", None if self.decoder_features is None else decoder)

    @property
    def code_features(self) -> int:
        """``d'``, the code's size."""
        return self.encoder_features[-1]

    @property
    def hidden_decoder_features(self) -> tuple[int, ...]:
        """The decoder's hidden widths (the mirrored encoder's when ``decoder_features`` is None)."""
        if self.decoder_features is None:
            return tuple(reversed(self.encoder_features[:-1]))
        return self.decoder_features

    def _activations(self) -> tuple[list[Callable], list[Callable]]:
        """Each encoder layer's and each decoder layer's activation function."""
        hidden = ACTIVATIONS[self.activation]
        code = ACTIVATIONS[self.code_activation or self.activation]
        encoder = [hidden] * (len(self.encoder_features) - 1) + [code]
        decoder = [hidden] * len(self.hidden_decoder_features) + [ACTIVATIONS[self.output_activation]]
        return encoder, decoder

    # ------------------------------------------------------------------------- init

    def init(self, key, x):
        check_features(self, x)
        if self.corruption is not None:
            with inside(self, "corruption"):
                corruption_params, corruption_state = expected_shapes(self.corruption, x)
            check_that(corruption_params == {} and corruption_state == {}, self, "a corruption layer without params "
                       "or state", f"{self.corruption} with params {corruption_params}", TypeError)
        d = x.shape[-1]
        encoder_sizes = (d,) + self.encoder_features
        params = {"encoder": {}, "decoder": {}}
        encoder_key, decoder_key = (jax.random.fold_in(key, part) for part in (ENCODER_KEY, DECODER_KEY))
        for i, (fan_in, fan_out) in enumerate(zip(encoder_sizes[:-1], encoder_sizes[1:])):
            params["encoder"][f"layer_{i}"] = init_kernel_and_bias(
                jax.random.fold_in(encoder_key, i), (fan_in, fan_out), self.use_bias, self.kernel_init,
                self.bias_init, self.param_dtype)
        decoder_sizes = (self.code_features,) + self.hidden_decoder_features + (d,)
        for i, (fan_in, fan_out) in enumerate(zip(decoder_sizes[:-1], decoder_sizes[1:])):
            layer = init_kernel_and_bias(jax.random.fold_in(decoder_key, i), (fan_in, fan_out), self.use_bias,
                                         self.kernel_init, self.bias_init, self.param_dtype)
            if self.tied:
                del layer["w"]  # the encoder's kernel, transposed
            params["decoder"][f"layer_{i}"] = layer
        return params, {}

    # ------------------------------------------------------------------------- checks

    def _check_input(self, params, state, x) -> None:
        check_features(self, x)
        w = _input_kernel(params)
        if w is not None and w.shape[-1] == self.encoder_features[0]:
            check_last_axis(self, x, w.shape[0], "the params' in_features")
        check_params(self, params, state, x)

    # ------------------------------------------------------------------------- the math

    def _dense(self, h, w, b):
        compute_dtype = jnp.result_type(h.dtype, w.dtype)
        y = jnp.dot(h.astype(compute_dtype), w.astype(compute_dtype))
        return y if b is None else y + b.astype(compute_dtype)

    def _encode(self, params, x):
        encoder_acts, _ = self._activations()
        h = x
        for i, act in enumerate(encoder_acts):
            layer = params["encoder"][f"layer_{i}"]
            h = act(self._dense(h, layer["w"], layer.get("b")))
        return h

    def _decode(self, params, code):
        _, decoder_acts = self._activations()
        num_encoder = len(self.encoder_features)
        h = code
        for i, act in enumerate(decoder_acts):
            layer = params["decoder"][f"layer_{i}"]
            w = params["encoder"][f"layer_{num_encoder - 1 - i}"]["w"].T if self.tied else layer["w"]
            h = act(self._dense(h, w, layer.get("b")))
        return h

    def _corrupt(self, x, key, train):
        if self.corruption is None or not train:
            return x
        with inside(self, "corruption"):
            x, _ = self.corruption.apply({}, {}, x, key=child_key(key, CORRUPTION_KEY), train=True)
        return x

    # ------------------------------------------------------------------------- entry points

    def apply(self, params, state, x, *, key=None, train=False):
        check_train_flag(self, train)
        self._check_input(params, state, x)
        return self._decode(params, self._encode(params, self._corrupt(x, key, train))), state

    def encode(self, params, x, *, key=None, train=False):
        """The code ``[*batch, d']`` of ``x [*batch, d]`` (of a corrupted ``x`` in training, as in ``apply``)."""
        check_train_flag(self, train)
        self._check_input(params, {}, x)
        return self._encode(params, self._corrupt(x, key, train))

    def decode(self, params, code):
        """The reconstruction ``[*batch, d]`` of a code ``[*batch, d']``."""
        check_floating_min_rank(self, code, 1, "*batch, code_features", "code")
        check_last_axis(self, code, self.code_features, "the code size, encoder_features[-1]", "code")
        w = _input_kernel(params)
        d = w.shape[0] if w is not None else 1  # params that do not fit are reported by check_params
        check_params(self, params, {}, jax.ShapeDtypeStruct(tuple(code.shape[:-1]) + (d,), code.dtype))
        return self._decode(params, code)


def _input_kernel(params) -> Any:
    """The encoder's first kernel, where params have one (its rows are the input size ``d``)."""
    try:
        w = params["encoder"]["layer_0"]["w"]
    except (KeyError, TypeError, IndexError):
        return None
    return w if getattr(w, "ndim", 0) == 2 else None
