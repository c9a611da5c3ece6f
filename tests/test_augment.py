"""jdl.augment against NumPy: shifts, translations, flips and crops, their draws, keys, jit/vmap, errors."""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jdl import augment

RNG = np.random.default_rng(0)
# Continuous random values: a shifted, flipped or cropped example matches exactly one candidate.
SIGNALS = RNG.standard_normal((5, 11, 2)).astype(np.float32)
IMAGES = RNG.standard_normal((4, 6, 7, 3)).astype(np.float32)


def _numpy_shift(row, k, zeros):
    """``row`` (length first) moved ``k`` steps later: ``np.roll``, or a zero-filled shift."""
    if not zeros:
        return np.roll(row, k, axis=0)
    out = np.zeros_like(row)
    if k >= 0:
        out[k:] = row[:len(row) - k]
    else:
        out[:k] = row[-k:]
    return out


def _numpy_translate(image, dy, dx):
    return np.swapaxes(_numpy_shift(np.swapaxes(_numpy_shift(image, dy, True), 0, 1), dx, True), 0, 1)


def _numpy_crop(image, top, left, size, padding):
    padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
    return padded[top:top + size[0], left:left + size[1]]


def _the_one(candidates, got):
    """The one candidate parameter whose result equals ``got`` exactly (fails if none or several)."""
    found = [param for param, result in candidates if np.array_equal(result, got)]
    assert len(found) == 1, found
    return found[0]


# ----------------------------------------------------------------------------- deterministic forms


@jax.jit
def _deterministic(signals, images, amounts, dy, dx, top, left):
    return {
        "wrap": augment.shift(signals, amounts),
        "zeros": augment.shift(signals, amounts, mode="zeros"),
        "wrap_2d": augment.shift(signals[..., 0], amounts),
        "zeros_2d": augment.shift(signals[..., 0], amounts, mode="zeros"),
        "no_shift": augment.shift(signals, 0, mode="zeros"),
        "translated": augment.translate(images, dy, dx),
        "no_translation": augment.translate(images, 0, 0),
        "flipped": augment.flip_left_right(images),
        "cropped": augment.crop(images, top, left, (5, 4), padding=2),
        "uncropped": augment.crop(images, 0, 0, (6, 7)),
    }


def test_deterministic_forms_match_numpy():
    amounts = np.array([0, 3, -4, 10, -10], np.int32)
    dy, dx = np.array([0, 2, -5, 1], np.int32), np.array([0, -3, 6, 0], np.int32)
    top, left = np.array([0, 5, 2, 1], np.int32), np.array([0, 7, 3, 4], np.int32)
    got = jax.tree.map(np.asarray, _deterministic(SIGNALS, IMAGES, amounts, dy, dx, top, left))
    for b, k in enumerate(amounts):
        np.testing.assert_array_equal(got["wrap"][b], np.roll(SIGNALS[b], k, axis=0))
        np.testing.assert_array_equal(got["zeros"][b], _numpy_shift(SIGNALS[b], k, zeros=True))
        np.testing.assert_array_equal(got["wrap_2d"][b], np.roll(SIGNALS[b, :, 0], k))
        np.testing.assert_array_equal(got["zeros_2d"][b], _numpy_shift(SIGNALS[b, :, 0], k, zeros=True))
    for b in range(len(IMAGES)):
        np.testing.assert_array_equal(got["translated"][b], _numpy_translate(IMAGES[b], dy[b], dx[b]))
        np.testing.assert_array_equal(got["cropped"][b], _numpy_crop(IMAGES[b], top[b], left[b], (5, 4), 2))
    np.testing.assert_array_equal(got["flipped"], np.flip(IMAGES, axis=2))
    for identity, original in (("no_shift", SIGNALS), ("no_translation", IMAGES), ("uncropped", IMAGES)):
        np.testing.assert_array_equal(got[identity], original)
    # Example 0's zero shift (one of the per-example amounts) is the identity too.
    np.testing.assert_array_equal(got["zeros"][0], SIGNALS[0])


@jax.jit
def _moved(x, nan):
    return (augment.translate(x, 0, 1), augment.crop(x, 1, 1, 2, padding=1),
            augment.shift(nan, 1, mode="zeros"), augment.shift(nan, -1, mode="zeros"))


def test_moving_keeps_the_dtype_and_a_nan_where_it_lands():
    translated, cropped, later, earlier = _moved(jnp.arange(8, dtype=jnp.uint8).reshape(1, 2, 4, 1),
                                                 jnp.array([[jnp.nan, 1.0, 2.0]]))
    assert translated.dtype == cropped.dtype == jnp.uint8
    np.testing.assert_array_equal(translated[0, :, :, 0], [[0, 0, 1, 2], [0, 4, 5, 6]])
    np.testing.assert_array_equal(later, [[0.0, np.nan, 1.0]])
    np.testing.assert_array_equal(earlier, [[1.0, 2.0, 0.0]])  # no NaN left behind


# ----------------------------------------------------------------------------- random forms

KEYS = jax.random.split(jax.random.key(1), 64)


@jax.jit
def _draws(keys, signals, images):
    def one(key):
        return {
            "shift_wrap": augment.random_shift(key, signals, 3),
            "shift_zeros": augment.random_shift(key, signals, 3, mode="zeros"),
            "flip": augment.random_flip_left_right(key, images),
            "translate": augment.random_translate(key, images, 2),
            "crop": augment.random_crop(key, images, (5, 6), padding=1),
            "noise": augment.add_gaussian_noise(key, signals, 0.5),
            "scale": augment.random_scale(key, signals, 0.5, 2.0),
        }
    return jax.vmap(one)(keys)


@functools.cache
def _draws_numpy():
    return jax.tree.map(np.asarray, _draws(KEYS, SIGNALS, IMAGES))


def test_random_shifts_are_shifts_by_every_amount_in_range():
    draws = _draws_numpy()
    for mode, zeros in (("shift_wrap", False), ("shift_zeros", True)):
        seen = set()
        for got in draws[mode][:16]:
            for b in range(len(SIGNALS)):
                candidates = [(k, _numpy_shift(SIGNALS[b], k, zeros)) for k in range(-3, 4)]
                seen.add(_the_one(candidates, got[b]))
        assert seen == set(range(-3, 4)), (mode, seen)  # 80 draws of 7 values: each appears


def test_random_flips_flip_about_half_the_examples():
    flips = []
    for got in _draws_numpy()["flip"]:
        for b in range(len(IMAGES)):
            flips.append(_the_one([(False, IMAGES[b]), (True, np.flip(IMAGES[b], axis=1))], got[b]))
    # 256 fair coins: the fraction is within 4 standard errors (0.125) of one half.
    assert abs(np.mean(flips) - 0.5) < 4 * 0.5 / np.sqrt(len(flips))
    never, always = jax.jit(lambda key, x: (augment.random_flip_left_right(key, x, probability=0.0),
                                            augment.random_flip_left_right(key, x, probability=1.0)))(KEYS[0], IMAGES)
    np.testing.assert_array_equal(never, IMAGES)
    np.testing.assert_array_equal(always, np.flip(IMAGES, axis=2))


def test_random_translations_are_translations_within_range():
    seen = set()
    for got in _draws_numpy()["translate"][:12]:
        for b in range(len(IMAGES)):
            candidates = [((dy, dx), _numpy_translate(IMAGES[b], dy, dx)) for dy in range(-2, 3) for dx in range(-2, 3)]
            seen.add(_the_one(candidates, got[b]))
    assert {dy for dy, _ in seen} == set(range(-2, 3)) and {dx for _, dx in seen} == set(range(-2, 3))


def test_random_crops_are_windows_of_the_padded_image():
    # Padded 8 x 9, crops 5 x 6: offsets top in [0, 3], left in [0, 3].
    seen = set()
    for got in _draws_numpy()["crop"][:16]:
        for b in range(len(IMAGES)):
            candidates = [((t, l), _numpy_crop(IMAGES[b], t, l, (5, 6), 1)) for t in range(4) for l in range(4)]
            seen.add(_the_one(candidates, got[b]))
    assert {t for t, _ in seen} == set(range(4)) and {l for _, l in seen} == set(range(4))


def test_noise_and_scale_statistics():
    draws = _draws_numpy()
    noise = draws["noise"] - SIGNALS
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 0.5) < 0.02  # 7,040 draws: standard errors ~0.006
    ratios = draws["scale"] / SIGNALS
    np.testing.assert_allclose(ratios, ratios[:, :, :1, :1] * np.ones_like(ratios), rtol=1e-5)  # one s_b per example
    assert ratios.min() >= 0.5 and ratios.max() <= 2.0 and ratios.max() - ratios.min() > 1.0
    assert draws["noise"].dtype == np.float32
    bfloat16 = jax.ShapeDtypeStruct((2, 3), jnp.bfloat16)
    assert jax.eval_shape(lambda x: augment.add_gaussian_noise(KEYS[0], x, 0.1), bfloat16).dtype == jnp.bfloat16
    np.testing.assert_array_equal(jax.jit(augment.add_gaussian_noise, static_argnums=2)(KEYS[0], SIGNALS, 0.0), SIGNALS)


def test_shapes_kept_same_key_same_result_different_keys_differ():
    draws = _draws_numpy()
    for name, got in draws.items():
        expected = (len(KEYS),) + (IMAGES.shape[:1] + (5, 6, 3) if name == "crop" else
                                   (IMAGES.shape if name in ("flip", "translate") else SIGNALS.shape))
        assert got.shape == expected, name
        assert not all(np.array_equal(got[0], other) for other in got[1:]), name
    # vmap over keys equals one call per key, eager and under jit.
    again = jax.jit(lambda key: augment.random_crop(key, jnp.asarray(IMAGES), (5, 6), padding=1))
    np.testing.assert_array_equal(again(KEYS[3]), draws["crop"][3])
    np.testing.assert_array_equal(augment.random_shift(KEYS[5], jnp.asarray(SIGNALS), 3), draws["shift_wrap"][5])


def test_cifar_recipe_shapes():
    images = jax.ShapeDtypeStruct((2, 32, 32, 3), jnp.uint8)
    out = jax.eval_shape(lambda key, x: augment.random_crop(key, x, 32, padding=4), KEYS[0], images)
    assert (out.shape, out.dtype) == ((2, 32, 32, 3), jnp.uint8)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("call, error, message", [
    (lambda: augment.shift(jnp.ones((4,)), 1), ValueError, r"^shift: expected input of rank 2 or 3 .*got rank 1"),
    (lambda: augment.shift(jnp.ones((2, 5)), 1, mode="reflect"), ValueError, r"^shift: expected mode in"),
    (lambda: augment.shift(jnp.ones((2, 5)), jnp.ones(2)), TypeError, r"^shift: expected integer amounts, got float32"),
    (lambda: augment.shift(jnp.ones((2, 5)), jnp.ones(3, int)), ValueError, r"^shift: expected amounts of shape \(2,\)"),
    (lambda: augment.shift(jnp.ones((2, 5)), 5), ValueError, r"^shift: expected amounts in \[-4, 4\]"),
    (lambda: augment.random_shift(KEYS[0], jnp.ones((2, 5)), -1), ValueError,
     r"^random_shift: expected max_shift to be an int >= 0, got -1"),
    (lambda: augment.random_shift(KEYS[0], jnp.ones((2, 5)), 5), ValueError, r"^random_shift: expected max_shift < 5"),
    (lambda: augment.random_shift(KEYS[0], jnp.ones((2, 5)), 1.5), ValueError, r"^random_shift: expected max_shift to be an int"),
    (lambda: augment.random_shift(KEYS, jnp.ones((2, 5)), 1), TypeError, r"^random_shift: expected key to be one PRNG key"),
    (lambda: augment.random_shift(None, jnp.ones((2, 5)), 1), TypeError, r"^random_shift: expected key"),
    (lambda: augment.add_gaussian_noise(KEYS[0], jnp.ones((2, 5), int), 0.1), TypeError,
     r"^add_gaussian_noise: expected a floating-point input, got int32"),
    (lambda: augment.add_gaussian_noise(KEYS[0], jnp.ones((2, 5)), -0.1), ValueError,
     r"^add_gaussian_noise: expected stddev >= 0, got -0.1"),
    (lambda: augment.random_scale(KEYS[0], jnp.ones((2, 5)), 2.0, 1.0), ValueError,
     r"^random_scale: expected 0 <= min_scale <= max_scale"),
    (lambda: augment.random_flip_left_right(KEYS[0], jnp.ones((2, 5, 5))), ValueError,
     r"^random_flip_left_right: expected input of rank 4 \(batch, height, width, channels\), got rank 3"),
    (lambda: augment.random_flip_left_right(KEYS[0], jnp.ones((2, 5, 5, 1)), 1.5), ValueError,
     r"^random_flip_left_right: expected probability in \[0, 1\]"),
    (lambda: augment.random_translate(KEYS[0], jnp.ones((2, 5, 3, 1)), 3), ValueError,
     r"^random_translate: expected max_pixels < 3"),
    (lambda: augment.translate(jnp.ones((2, 5, 3, 1)), 0, -3), ValueError, r"^translate: expected dx in \[-2, 2\]"),
    (lambda: augment.random_crop(KEYS[0], jnp.ones((2, 5, 5, 1)), 8, padding=1), ValueError,
     r"^random_crop: expected a crop no larger than the padded image \(7, 7\).*got size \(8, 8\)"),
    (lambda: augment.random_crop(KEYS[0], jnp.ones((2, 5, 5, 1)), (3, 0)), ValueError,
     r"^random_crop: expected a positive crop size"),
    (lambda: augment.random_crop(KEYS[0], jnp.ones((2, 5, 5, 1)), 3, padding=-1), ValueError,
     r"^random_crop: expected padding to be an int >= 0"),
    (lambda: augment.random_crop(KEYS[0], jnp.ones((2, 5, 5, 1)), "3"), TypeError,
     r"^random_crop: expected size to be an int or a pair of ints"),
    (lambda: augment.crop(jnp.ones((2, 5, 5, 1)), 3, 0, 3), ValueError, r"^crop: expected top in \[0, 2\]"),
    (lambda: augment.crop(jnp.ones((2, 0, 5, 1)), 0, 0, 3), ValueError, r"^crop: expected input with no empty axis"),
])
def test_errors(call, error, message):
    with pytest.raises(error, match=message):
        call()
