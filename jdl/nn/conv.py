"""Convolutions over 1, 2 or 3 spatial axes, channels last (``NWC``, ``NHWC``).

A convolution slides a kernel of shape ``(*window, in_channels // groups, features)``
across the input; each output position is a dot product of the window with the kernel
(sparse interactions and parameter sharing, in the course's words). Along one axis of
size ``N`` with kernel ``F``, stride ``S``, padding ``P`` on each side and dilation ``D``,
the output has

    floor((N + 2P - D (F - 1) - 1) / S) + 1

positions, which for ``D = 1`` is the course's ``(N - F + 2P) / S + 1``
(:func:`conv_output_size` computes it).

Padding is ``"SAME"`` (output ``ceil(N / S)``), ``"VALID"`` (no padding), ``"CAUSAL"``
(1-D only: ``D (F - 1)`` zeros on the left, so position ``t`` sees only ``<= t``), an
int (that many zeros on both sides of every spatial axis), a sequence of ints (one per
axis) or a sequence of ``(low, high)`` pairs.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import nn
    >>> conv = nn.Conv1D(25, 5, strides=2, padding=1)
    >>> params, state = conv.init(jax.random.key(0), jnp.zeros((8, 40, 1)))
    >>> params["w"].shape
    (5, 1, 25)
    >>> conv.apply(params, state, jnp.ones((8, 40, 1)))[0].shape  # (40 - 5 + 2) // 2 + 1
    (8, 19, 25)
"""
from __future__ import annotations

import itertools
import math
import typing
from collections.abc import Sequence
from dataclasses import field
from typing import Any, Callable, ClassVar, Literal

import jax
import jax.numpy as jnp
from jax import lax

from jdl import init as initializers
from jdl._checks import PositiveInt, check_divisible, check_floating, check_min_rank, check_that
from jdl.nn.core import KW_ONLY, Layer, check_params, inferring_shapes
from jdl.nn.dense import init_kernel_and_bias

PADDING_STRINGS = ("SAME", "VALID", "CAUSAL")
Implementation = Literal["auto", "xla", "matmul"]
IMPLEMENTATIONS = typing.get_args(Implementation)


def conv_output_size(input_size: int, kernel_size: int, stride: int = 1, padding=0, dilation: int = 1) -> int:
    """Output length along one axis: ``floor((N + P_lo + P_hi - D (F - 1) - 1) / S) + 1``.

    ``padding`` is an int (both sides), a ``(low, high)`` pair, ``"VALID"`` or ``"SAME"``.
    With ``dilation = 1`` and symmetric padding this is the course's ``(N - F + 2P)/S + 1``.
    """
    if isinstance(padding, str):
        mode = padding.upper()
        if mode == "SAME":
            return -(-input_size // stride)
        if mode == "VALID":
            padding = (0, 0)
        else:
            raise ValueError(f"conv_output_size: expected padding 'SAME', 'VALID' or ints, got {padding!r}")
    low, high = (padding, padding) if isinstance(padding, int) else tuple(padding)
    effective_kernel = dilation * (kernel_size - 1) + 1
    return (input_size + low + high - effective_kernel) // stride + 1


def check_output_sizes(where, spatial, window, strides, padding, dilation) -> None:
    """Every spatial axis must leave at least one output position (nothing silently empty; an
    empty axis, which SAME would pad into an empty output, is refused by the input checks)."""
    pads = [(0, 0)] * len(window) if padding == "VALID" else padding
    if padding == "SAME":
        return  # ceil(N / S) >= 1 for any N >= 1
    for axis, (size, k, s, p, d) in enumerate(zip(spatial, window, strides, pads, dilation)):
        check_that(conv_output_size(size, k, s, p, d) >= 1, where, f"spatial axis {axis} of at least "
                   f"{d * (k - 1) + 1 - p[0] - p[1]} (the window {d * (k - 1) + 1} minus padding {tuple(p)})", size)


def _as_tuple(value, n: int, what: str, where) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value,) * n
    value = tuple(value)
    if len(value) != n or not all(isinstance(v, int) for v in value):
        raise ValueError(f"{where}: expected {what} to be an int or {n} ints, got {value!r}")
    return value


def normalize_padding(padding, kernel_size: Sequence[int], dilation: Sequence[int], where):
    """Padding as lax takes it: ``"SAME"``/``"VALID"`` or a list of ``(low, high)`` pairs."""
    n = len(kernel_size)
    if isinstance(padding, str):
        mode = padding.upper()
        check_that(mode in PADDING_STRINGS, where, f"padding in {PADDING_STRINGS}, an int or pairs", repr(padding))
        if mode == "CAUSAL":
            if n != 1:
                raise ValueError(f"{where}: padding 'CAUSAL' is for 1-D inputs, got {n} spatial axes")
            return [(dilation[0] * (kernel_size[0] - 1), 0)]
        return mode
    if isinstance(padding, int):
        return [(padding, padding)] * n
    padding = list(padding)
    if len(padding) == n and all(isinstance(p, int) for p in padding):
        return [(p, p) for p in padding]
    if len(padding) == n and all(isinstance(p, Sequence) and len(p) == 2 for p in padding):
        return [tuple(int(v) for v in p) for p in padding]
    raise ValueError(f"{where}: expected padding to be one of {PADDING_STRINGS}, an int, {n} ints or {n} (low, "
                     f"high) pairs, got {padding!r}")


def fold_batch_axes(x, num_spatial: int):
    """Reshape ``(*batch, *spatial, C)`` to ``(B, *spatial, C)``; returns the leading shape to restore."""
    leading = x.shape[: x.ndim - num_spatial - 1]
    return x.reshape((math.prod(leading),) + x.shape[len(leading):]), leading


def frozen(value):
    """Lists (of lists) as tuples, so that a layer holding them stays hashable."""
    return tuple(frozen(v) for v in value) if isinstance(value, (list, tuple)) else value


def check_spatial_input(where, x, num_spatial: int) -> None:
    """A floating channels-last input with ``num_spatial`` spatial axes and any batch axes."""
    check_floating(where, x)
    layout = "*batch, " + ", ".join(f"spatial_{i}" for i in range(num_spatial)) + ", channels"
    check_min_rank(where, x, num_spatial + 1, layout)


class Conv(Layer):
    """An N-d convolution, channels last; ``len(kernel_size)`` is the number of spatial axes.

    The input is ``(*batch, *spatial, in_channels)`` with any number of batch axes (none
    too). Params are ``{"w": (*kernel_size, in_channels // groups, features), "b": (features,)}``.
    Argument names and order follow ``flax.linen.Conv``. ``implementation`` picks how it is computed
    (see :func:`convolve`); every choice gives the same numbers.
    """

    features: PositiveInt
    kernel_size: int | Sequence[int]
    strides: int | Sequence[int] = 1
    padding: Any = "SAME"
    kernel_dilation: int | Sequence[int] = 1
    feature_group_count: PositiveInt = 1
    _: KW_ONLY
    use_bias: bool = True
    dtype: Any = None
    param_dtype: Any = jnp.float32
    kernel_init: Callable = field(default=initializers.lecun_normal(), repr=False)
    bias_init: Callable = field(default=initializers.zeros, repr=False)
    implementation: Implementation = "auto"
    name: str = "conv"
    always_shown: ClassVar[tuple] = ("strides", "padding")

    def __post_init__(self):
        kernel_size = (self.kernel_size,) if isinstance(self.kernel_size, int) else tuple(self.kernel_size)
        for name, value in (("kernel_size", kernel_size), ("strides", self.strides), ("padding", self.padding),
                            ("kernel_dilation", self.kernel_dilation)):
            object.__setattr__(self, name, frozen(value))
        n = len(kernel_size)
        if not 1 <= n <= 3 or not all(isinstance(k, int) and k > 0 for k in kernel_size):
            raise ValueError(f"{self}: expected 1 to 3 positive kernel sizes, got {kernel_size!r}")
        check_divisible(self, "features", self.features, "feature_group_count", self.feature_group_count)
        # The forms lax takes, derived once (not fields: the repr shows the arguments as given).
        window_strides = _as_tuple(self.strides, n, "strides", self)
        dilation = _as_tuple(self.kernel_dilation, n, "kernel_dilation", self)
        object.__setattr__(self, "_window_strides", window_strides)
        object.__setattr__(self, "_dilation", dilation)
        object.__setattr__(self, "_lax_padding", normalize_padding(self.padding, kernel_size, dilation, self))

    def check_input(self, x):
        n = len(self.kernel_size)
        check_spatial_input(self, x, n)
        check_divisible(self, "input channels", x.shape[-1], "feature_group_count", self.feature_group_count,
                        source=f" (input of shape {tuple(x.shape)})")
        check_output_sizes(self, x.shape[x.ndim - n - 1: -1], self.kernel_size, self._window_strides,
                           self._lax_padding, self._dilation)

    def init(self, key, x):
        self.check_input(x)
        kernel_shape = self.kernel_size + (x.shape[-1] // self.feature_group_count, self.features)
        params = init_kernel_and_bias(key, kernel_shape, self.use_bias, self.kernel_init, self.bias_init,
                                      self.param_dtype)
        return params, {}

    def apply(self, params, state, x, *, key=None, train=False):
        check_params(self, params, state, x)  # init's check_input included

        w = params["w"]
        compute_dtype = self.dtype or jnp.result_type(x.dtype, w.dtype)
        batched, leading = fold_batch_axes(x.astype(compute_dtype), len(self.kernel_size))
        y = convolve(batched, w.astype(compute_dtype), self._window_strides, self._lax_padding, self._dilation,
                     self.feature_group_count, self.implementation)
        if self.use_bias:
            y = y + params["b"].astype(compute_dtype)
        return y.reshape(leading + y.shape[1:]), state


# Above this many bytes of gathered windows, "auto" leaves a CPU convolution to XLA.
_MATMUL_WINDOWS_LIMIT_BYTES = 64 * 2**20
# Above this many kernel taps too: each tap is one more gathered view, and from 7 x 7 on XLA's
# convolution both runs (ResNet's 7 x 7 stride-2 stem, batch 4 at 224: 67 ms against 154 ms forward
# and backward) and compiles (0.3 s against 2.5 s; AlexNet's 11 x 11: 0.3 s against 3.9 s) faster.
_MATMUL_MAX_TAPS = 25


def convolve(x, w, strides, padding, dilation, feature_group_count: int = 1, implementation: str = "auto"):
    """Convolve ``x`` ``(B, *spatial, C)`` with ``w`` ``(*window, C // groups, O)``.

    ``implementation``:

    * ``"xla"``: ``lax.conv_general_dilated``, which accelerators run with their fused
      convolution kernels (cuDNN on GPU).
    * ``"matmul"``: gather the ``prod(window)`` shifted, strided views of the padded input
      and contract them with the kernel in one ``einsum`` (im2col). XLA's CPU convolution
      is slow for the small kernels and channel counts of 1-D models, and its backward
      pass slower still; this form is several times faster there, and under ``vmap``
      over the kernel (an ensemble) it stays a batched matmul instead of becoming a
      grouped convolution.
    * ``"auto"`` (default): ``"matmul"`` on CPU when the gathered views stay under
      64 MiB and the kernel has at most 25 taps (5 x 5), ``"xla"`` otherwise.
    """
    n = w.ndim - 2
    window = w.shape[:n]
    if isinstance(padding, str):
        effective = tuple(d * (k - 1) + 1 for k, d in zip(window, dilation))
        padding = lax.padtype_to_pads(x.shape[1:-1], effective, strides, padding)
    if inferring_shapes.get():
        # Only the output's shape is asked for (a network's init infers its layers' shapes, traced,
        # never run): the one primitive traces faster than the matmul form's prod(window) slices and
        # einsum, and both give the same shape (tracing ResNet-110's init: 1.6 -> 1.0 s, ResNet-152's
        # 1.95 -> 1.6 s, GoogLeNet's 2.3 -> 1.9 s).
        implementation = "xla"
    if implementation == "auto":
        out_sizes = [conv_output_size(size, k, s, p, d)
                     for size, k, s, p, d in zip(x.shape[1:-1], window, strides, padding, dilation)]
        windows_bytes = x.shape[0] * math.prod(out_sizes) * math.prod(window) * x.shape[-1] * x.dtype.itemsize
        on_cpu = jax.default_backend() == "cpu"
        small = windows_bytes <= _MATMUL_WINDOWS_LIMIT_BYTES and math.prod(window) <= _MATMUL_MAX_TAPS
        implementation = "matmul" if on_cpu and small else "xla"
    if implementation == "xla":
        return lax.conv_general_dilated(
            x, w, window_strides=strides, padding=padding, rhs_dilation=dilation,
            dimension_numbers=_dimension_numbers(n), feature_group_count=feature_group_count,
        )
    return _convolve_by_matmul(x, w, strides, padding, dilation, feature_group_count)


def _convolve_by_matmul(x, w, strides, padding, dilation, groups):
    n = w.ndim - 2
    window = w.shape[:n]
    padded = jnp.pad(x, [(0, 0)] + [tuple(p) for p in padding] + [(0, 0)])
    out_sizes = [(padded.shape[1 + i] - dilation[i] * (window[i] - 1) - 1) // strides[i] + 1 for i in range(n)]
    views = []
    for offset in itertools.product(*(range(k) for k in window)):
        index = [slice(None)]
        for i, k_i in enumerate(offset):
            start = k_i * dilation[i]
            index.append(slice(start, start + strides[i] * (out_sizes[i] - 1) + 1, strides[i]))
        views.append(padded[tuple(index)])
    windows = jnp.stack(views, axis=-2)  # (B, *out, prod(window), C)
    kernel = w.reshape((-1,) + w.shape[n:])  # (prod(window), C // groups, O)
    if groups == 1:
        return jnp.einsum("...kc,kco->...o", windows, kernel)
    in_per_group, out_per_group = kernel.shape[1], kernel.shape[2] // groups
    windows = windows.reshape(windows.shape[:-1] + (groups, in_per_group))
    kernel = kernel.reshape(kernel.shape[0], in_per_group, groups, out_per_group)
    y = jnp.einsum("...kgc,kcgo->...go", windows, kernel)
    return y.reshape(y.shape[:-2] + (groups * out_per_group,))


def _dimension_numbers(num_spatial: int) -> lax.ConvDimensionNumbers:
    # Channels last for input and output; kernel (*window, in, out).
    rank = num_spatial + 2
    activations = (0, rank - 1) + tuple(range(1, rank - 1))
    kernel = (rank - 1, rank - 2) + tuple(range(rank - 2))
    return lax.ConvDimensionNumbers(activations, kernel, activations)


def Conv1D(features: int, kernel_size: int, strides: int = 1, padding="SAME", kernel_dilation: int = 1,
           feature_group_count: int = 1, **kwargs) -> Conv:
    """A 1-D convolution over ``(*batch, length, channels)``: a :class:`Conv` named ``"conv1d"``."""
    kwargs.setdefault("name", "conv1d")
    return Conv(features, _as_tuple(kernel_size, 1, "kernel_size", "Conv1D"), strides, padding,
                kernel_dilation, feature_group_count, **kwargs)


def Conv2D(features: int, kernel_size: int | Sequence[int], strides=1, padding="SAME", kernel_dilation=1,
           feature_group_count: int = 1, **kwargs) -> Conv:
    """A 2-D convolution over ``(*batch, height, width, channels)``: a :class:`Conv` named ``"conv2d"``."""
    kwargs.setdefault("name", "conv2d")
    return Conv(features, _as_tuple(kernel_size, 2, "kernel_size", "Conv2D"), strides, padding,
                kernel_dilation, feature_group_count, **kwargs)
