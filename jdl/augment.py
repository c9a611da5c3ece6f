"""Data augmentation: random, label-preserving transformations of a batch of training inputs.

Each random transformation draws one set of parameters per example from a PRNG ``key``
(the same key gives the same result) and applies a deterministic transformation that is
public too, so evaluation and tests can apply a chosen one. Every function is pure, jits,
and ``vmap`` s over keys; arrays are batch-first.

Signals ``x`` of shape ``(batch, length)`` or ``(batch, length, channels)``:

* :func:`shift` by ``k_b`` steps (``k > 0`` moves the signal later, as ``np.roll``):
  ``y[b, t] = x[b, (t - k_b) mod L]`` with ``mode="wrap"``; with ``mode="zeros"``
  ``y[b, t] = x[b, t - k_b]`` where ``0 <= t - k_b < L`` and ``0`` elsewhere.
  :func:`random_shift` draws ``k_b`` uniformly from the integers in ``[-max_shift, max_shift]``.
* :func:`add_gaussian_noise`: ``y = x + sigma * eps``, ``eps ~ N(0, 1)`` entrywise (input noise,
  the seeds' "input noise ... also called data augmentation").
* :func:`random_scale`: ``y[b] = s_b * x[b]``, ``s_b ~ U[min_scale, max_scale]`` (amplitude).

Images ``x`` of shape ``(batch, height, width, channels)``:

* :func:`flip_left_right`: ``y[b, i, j] = x[b, i, W - 1 - j]``; :func:`random_flip_left_right`
  flips each example with probability ``p`` (one Bernoulli draw per example).
* :func:`translate` by ``(dy_b, dx_b)`` pixels (down and right when positive), zero fill:
  ``y[b, i, j] = x[b, i - dy_b, j - dx_b]`` inside the image and ``0`` outside;
  :func:`random_translate` draws both uniformly from the integers in ``[-max_pixels, max_pixels]``.
* :func:`crop` after zero padding by ``p`` on each side: ``y[b] = x'[b, t_b : t_b + h, l_b : l_b + w]``
  with ``x'`` the padded image; :func:`random_crop` draws ``t_b`` and ``l_b`` uniformly from
  ``[0, H + 2p - h]`` and ``[0, W + 2p - w]`` (the CIFAR recipe: ``size=32, padding=4``).

Shifts, translations, flips and crops move values and never compute with them, so they
take any dtype (``uint8`` images too) and a NaN stays NaN where it lands; noise and scaling
need a floating input. Sizes are checked once, at trace time, with the function's name.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import augment
    >>> x = jnp.arange(6.0).reshape(1, 6)
    >>> augment.shift(x, 2)
    Array([[4., 5., 0., 1., 2., 3.]], dtype=float32)
    >>> augment.shift(x, -2, mode="zeros")
    Array([[2., 3., 4., 5., 0., 0.]], dtype=float32)
    >>> images = jnp.zeros((8, 32, 32, 3))
    >>> augment.random_crop(jax.random.key(0), images, 32, padding=4).shape
    (8, 32, 32, 3)
"""
from __future__ import annotations

import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp

from jdl._checks import (
    _is_real, check_choice, check_floating, check_int_at_least, check_int_below, check_key, check_rank,
    check_that, check_unit_interval, int_pair, per_example_ints,
)

__all__ = ["shift", "random_shift", "add_gaussian_noise", "random_scale", "flip_left_right", "random_flip_left_right",
           "translate", "random_translate", "crop", "random_crop"]

SIGNAL_LAYOUT = "batch, length) or (batch, length, channels"
IMAGE_LAYOUT = "batch, height, width, channels"


# ----------------------------------------------------------------------------- the jitted cores
#
# Each public function checks its arguments, then calls one of these: called eagerly (a data
# pipeline outside jit), it runs as one compiled program instead of a dozen small ones.


@functools.partial(jax.jit, static_argnames=("axis", "zeros"))
def _shift_axis(x: jax.Array, amounts: jax.Array, axis: int, zeros: bool) -> jax.Array:
    """Shift each example ``x[b]`` by ``amounts[b]`` along ``axis`` (of ``x``, >= 1): a gather, then a zero fill.

    ``jnp.where`` (not a product with a 0/1 mask) fills, so a NaN moved out leaves a zero behind.
    """
    length = x.shape[axis]
    positions = jnp.arange(length)

    def one(example, amount):
        source = positions - amount
        moved = jnp.take(example, source % length, axis=axis - 1)
        if not zeros:
            return moved
        inside = ((source >= 0) & (source < length)).reshape((length,) + (1,) * (example.ndim - axis))
        return jnp.where(inside, moved, jnp.zeros((), example.dtype))

    return jax.vmap(one)(x, amounts)


@functools.partial(jax.jit, static_argnames=("max_offset", "axes", "zeros"))
def _random_shift_axes(key: jax.Array, x: jax.Array, max_offset: int, axes: tuple[int, ...], zeros: bool) -> jax.Array:
    """Shift along each of ``axes`` by its own draw per example, uniform on ``[-max_offset, max_offset]``."""
    amounts = jax.random.randint(key, (len(axes), x.shape[0]), -max_offset, max_offset + 1)
    for axis, axis_amounts in zip(axes, amounts):
        x = _shift_axis(x, axis_amounts, axis, zeros)
    return x


@jax.jit
def _add_gaussian_noise(key: jax.Array, x: jax.Array, stddev: jax.Array) -> jax.Array:
    return x + stddev * jax.random.normal(key, x.shape, x.dtype)


@jax.jit
def _random_scale(key: jax.Array, x: jax.Array, min_scale: jax.Array, max_scale: jax.Array) -> jax.Array:
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    return x * jax.random.uniform(key, shape, x.dtype, min_scale, max_scale)


@jax.jit
def _random_flip_left_right(key: jax.Array, x: jax.Array, probability: jax.Array) -> jax.Array:
    flip = jax.random.bernoulli(key, probability, (x.shape[0], 1, 1, 1))
    return jnp.where(flip, x[:, :, ::-1, :], x)  # a select: the kept image is returned bit for bit


@functools.partial(jax.jit, static_argnames=("height", "width", "padding"))
def _crop_windows(x: jax.Array, top: jax.Array, left: jax.Array, height: int, width: int, padding: int) -> jax.Array:
    padded = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    channels = x.shape[-1]
    return jax.vmap(lambda image, t, l: jax.lax.dynamic_slice(image, (t, l, 0), (height, width, channels)))(
        padded, top, left)


@functools.partial(jax.jit, static_argnames=("height", "width", "padding"))
def _random_crop(key: jax.Array, x: jax.Array, height: int, width: int, padding: int) -> jax.Array:
    """Offsets uniform on ``[0, H + 2p - h]`` and ``[0, W + 2p - w]``, one pair per example."""
    rows, columns = x.shape[1] + 2 * padding - height, x.shape[2] + 2 * padding - width
    top_key, left_key = jax.random.split(key)
    top = jax.random.randint(top_key, (x.shape[0],), 0, rows + 1)
    left = jax.random.randint(left_key, (x.shape[0],), 0, columns + 1)
    return _crop_windows(x, top, left, height, width, padding)


# ----------------------------------------------------------------------------- signals


def shift(x: jax.Array, amounts: Any, mode: Literal["wrap", "zeros"] = "wrap") -> jax.Array:
    """Shift each signal in time by its own integer ``amounts[b]`` (an int shifts them all alike).

    ``mode="wrap"`` is ``np.roll`` per example (``y[b, t] = x[b, (t - k_b) mod L]``);
    ``mode="zeros"`` drops what leaves the axis and fills with zeros. A zero shift is the identity.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import augment
        >>> augment.shift(jnp.array([[1, 2, 3], [4, 5, 6]]), jnp.array([1, -1]), mode="zeros")
        Array([[0, 1, 2],
               [5, 6, 0]], dtype=int32)
    """
    check_rank("shift", x, (2, 3), SIGNAL_LAYOUT)
    check_choice("shift", "mode", mode, ("wrap", "zeros"))
    length = x.shape[1]
    amounts = per_example_ints("shift", "amounts", amounts, x.shape[0], 1 - length, length - 1,
                           f"the signal has {length} steps; a larger shift leaves nothing of it")
    return _shift_axis(x, amounts, 1, zeros=mode == "zeros")


def random_shift(key: jax.Array, x: jax.Array, max_shift: int,
                 mode: Literal["wrap", "zeros"] = "wrap") -> jax.Array:
    """:func:`shift` each signal by its own ``k_b``, uniform on the integers in ``[-max_shift, max_shift]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import augment
        >>> augment.random_shift(jax.random.key(0), jnp.ones((4, 10, 2)), 3).shape
        (4, 10, 2)
    """
    check_key("random_shift", key)
    check_rank("random_shift", x, (2, 3), SIGNAL_LAYOUT)
    check_choice("random_shift", "mode", mode, ("wrap", "zeros"))
    check_int_below("random_shift", "max_shift", max_shift, 0, x.shape[1],
                    "the signal's length; a larger shift leaves nothing of the input")
    return _random_shift_axes(key, x, max_shift, (1,), mode == "zeros")


def add_gaussian_noise(key: jax.Array, x: jax.Array, stddev: float) -> jax.Array:
    """``x + stddev * eps``, ``eps ~ N(0, 1)`` drawn in ``x``'s dtype, independently per entry.

    Any shape (signals, images, features); ``stddev = 0`` is the identity.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import augment
        >>> augment.add_gaussian_noise(jax.random.key(0), jnp.ones((2, 3)), 0.0)
        Array([[1., 1., 1.],
               [1., 1., 1.]], dtype=float32)
    """
    check_key("add_gaussian_noise", key)
    check_floating("add_gaussian_noise", x)
    check_that(_is_real(stddev) and stddev >= 0, "add_gaussian_noise", "stddev >= 0", repr(stddev))
    return _add_gaussian_noise(key, x, jnp.asarray(stddev, x.dtype))


def random_scale(key: jax.Array, x: jax.Array, min_scale: float, max_scale: float) -> jax.Array:
    """Multiply each example by its own ``s_b ~ U[min_scale, max_scale]`` (a signal's amplitude).

    Any rank >= 1, batch first; ``min_scale = max_scale = 1`` is the identity.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import augment
        >>> y = augment.random_scale(jax.random.key(0), jnp.ones((3, 4)), 0.5, 2.0)
        >>> bool(jnp.all((y >= 0.5) & (y <= 2.0) & (y == y[:, :1])))
        True
    """
    check_key("random_scale", key)
    check_floating("random_scale", x)
    check_that(x.ndim >= 1, "random_scale", "input of rank >= 1 (batch, ...)", f"rank {x.ndim}")
    check_that(_is_real(min_scale) and _is_real(max_scale) and 0 <= min_scale <= max_scale, "random_scale",
               "0 <= min_scale <= max_scale", f"min_scale={min_scale!r}, max_scale={max_scale!r}")
    return _random_scale(key, x, jnp.asarray(min_scale, x.dtype), jnp.asarray(max_scale, x.dtype))


# ----------------------------------------------------------------------------- images


def flip_left_right(x: jax.Array) -> jax.Array:
    """Mirror every image: ``y[b, i, j] = x[b, i, W - 1 - j]``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import augment
        >>> augment.flip_left_right(jnp.array([1, 2, 3]).reshape(1, 1, 3, 1)).ravel()
        Array([3, 2, 1], dtype=int32)
    """
    check_rank("flip_left_right", x, 4, IMAGE_LAYOUT)
    return x[:, :, ::-1, :]


def random_flip_left_right(key: jax.Array, x: jax.Array, probability: float = 0.5) -> jax.Array:
    """Mirror each image with ``probability`` (one Bernoulli draw per example), else keep it.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import augment
        >>> augment.random_flip_left_right(jax.random.key(0), jnp.zeros((4, 8, 8, 3))).shape
        (4, 8, 8, 3)
    """
    check_key("random_flip_left_right", key)
    check_rank("random_flip_left_right", x, 4, IMAGE_LAYOUT)
    check_unit_interval("random_flip_left_right", "probability", probability)
    return _random_flip_left_right(key, x, jnp.asarray(probability, jnp.float32))


def translate(x: jax.Array, dy: Any, dx: Any) -> jax.Array:
    """Move each image ``dy[b]`` pixels down and ``dx[b]`` right (ints move all alike), filling with zeros.

    ``y[b, i, j] = x[b, i - dy_b, j - dx_b]`` inside the image, ``0`` outside; ``(0, 0)`` is the identity.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import augment
        >>> augment.translate(jnp.arange(1, 5).reshape(1, 2, 2, 1), 1, 0)[0, :, :, 0]
        Array([[0, 0],
               [1, 2]], dtype=int32)
    """
    check_rank("translate", x, 4, IMAGE_LAYOUT)
    batch, height, width, _ = x.shape
    dy = per_example_ints("translate", "dy", dy, batch, 1 - height, height - 1, f"the image has {height} rows")
    dx = per_example_ints("translate", "dx", dx, batch, 1 - width, width - 1, f"the image has {width} columns")
    return _shift_axis(_shift_axis(x, dy, 1, zeros=True), dx, 2, zeros=True)


def random_translate(key: jax.Array, x: jax.Array, max_pixels: int) -> jax.Array:
    """:func:`translate` each image by its own ``(dy_b, dx_b)``, each uniform on the integers in ``[-max_pixels, max_pixels]``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import augment
        >>> augment.random_translate(jax.random.key(0), jnp.ones((4, 8, 8, 1)), 2).shape
        (4, 8, 8, 1)
    """
    check_key("random_translate", key)
    check_rank("random_translate", x, 4, IMAGE_LAYOUT)
    check_int_below("random_translate", "max_pixels", max_pixels, 0, min(x.shape[1], x.shape[2]),
                    "the image's smaller side; a larger shift leaves nothing of the input")
    return _random_shift_axes(key, x, max_pixels, (1, 2), True)


def _crop_geometry(where: str, x: Any, size: Any, padding: Any) -> tuple[int, int, int]:
    """``(h, w, p)`` checked: a crop no larger than the padded image."""
    check_rank(where, x, 4, IMAGE_LAYOUT)
    crop_height, crop_width = int_pair(where, "size", size)
    check_that(crop_height > 0 and crop_width > 0, where, "a positive crop size", repr(size))
    check_int_at_least(where, "padding", padding, 0)
    padded = (x.shape[1] + 2 * padding, x.shape[2] + 2 * padding)
    check_that(crop_height <= padded[0] and crop_width <= padded[1], where, f"a crop no larger than the padded image "
               f"{padded} (input {tuple(x.shape[1:3])} + 2 * padding={padding})", f"size {(crop_height, crop_width)}")
    return crop_height, crop_width, padding


def crop(x: jax.Array, top: Any, left: Any, size: int | tuple[int, int], padding: int = 0) -> jax.Array:
    """Zero-pad each image by ``padding`` on every side, then cut the window at ``(top[b], left[b])``.

    ``size`` is ``(h, w)`` or an int for a square; offsets index the padded image, each in
    ``[0, H + 2p - h]`` and ``[0, W + 2p - w]`` (concrete ones are checked; under ``jit`` an offset
    out of range is clamped into it, ``lax.dynamic_slice`` 's rule).

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import augment
        >>> augment.crop(jnp.arange(1, 5).reshape(1, 2, 2, 1), 0, 0, 2, padding=1)[0, :, :, 0]
        Array([[0, 0],
               [0, 1]], dtype=int32)
    """
    height, width, padding = _crop_geometry("crop", x, size, padding)
    batch = x.shape[0]
    rows, columns = x.shape[1] + 2 * padding - height, x.shape[2] + 2 * padding - width
    top = per_example_ints("crop", "top", top, batch, 0, rows, "row offsets into the padded image")
    left = per_example_ints("crop", "left", left, batch, 0, columns, "column offsets into the padded image")
    return _crop_windows(x, top, left, height, width, padding)


def random_crop(key: jax.Array, x: jax.Array, size: int | tuple[int, int], padding: int = 0) -> jax.Array:
    """:func:`crop` each image at its own offsets, uniform over every window of the padded image.

    ``random_crop(key, x, 32, padding=4)`` on CIFAR's 32 x 32 images is the ResNet paper's recipe
    (pad by 4, crop back to 32: translations of up to 4 pixels with zero fill).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import augment
        >>> augment.random_crop(jax.random.key(0), jnp.ones((2, 10, 10, 3)), (8, 6)).shape
        (2, 8, 6, 3)
    """
    check_key("random_crop", key)
    height, width, padding = _crop_geometry("random_crop", x, size, padding)
    return _random_crop(key, x, height, width, padding)
