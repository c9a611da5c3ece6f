"""Input validation shared by every layer, loss and metric: each check under one name.

The first argument, ``where``, is the context that errors start with: a layer (its repr,
``Dense(features=10)``) or a function's name (``"padding_mask"``). Each check runs at
trace time (on shapes and dtypes, never on values), so a bad input fails with a message
that names the function that saw it, what it expected and what it got, instead of an XLA
error deep inside `jit`. Checks of values (token ids in range)
run only on concrete arrays; under `jit` they cannot.
"""
from __future__ import annotations

import functools
import inspect
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Callable, ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def check_that(condition: Any, where: Any, expected: str, got: Any, error: type = ValueError) -> None:
    """The one form of a failed check: ``{where}: expected {expected}, got {got}``.

    ``condition`` is what must hold (a Python bool, decided at trace time).
    """
    if not condition:
        raise error(f"{where}: expected {expected}, got {got}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)  # True is not a count


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_array(where: str, x: Any, what: str = "input") -> None:
    """An array (or a ``jax.ShapeDtypeStruct``) with no empty axis: a result over nothing would be
    empty or undefined (a mean of no values is NaN), so an empty batch or sequence is an error."""
    check_that(hasattr(x, "shape") and hasattr(x, "dtype"), where, f"{what} to be an array", type(x).__name__, TypeError)
    check_that(0 not in tuple(x.shape), where, f"{what} with no empty axis (nothing to compute)",
               f"shape {tuple(x.shape)}")


def _check_dtype_kind(where: str, x: Any, what: str, kinds: tuple, expected: str, hint: str = "") -> None:
    """An array whose dtype is a subtype of one of ``kinds``; ``expected`` says which in words."""
    check_array(where, x, what)
    check_that(any(jnp.issubdtype(x.dtype, kind) for kind in kinds), where, expected,
               f"{jnp.dtype(x.dtype).name} {what} of shape {tuple(x.shape)}{hint}", TypeError)


def check_floating(where: str, x: Any, what: str = "input") -> None:
    _check_dtype_kind(where, x, what, (jnp.floating,), f"a floating-point {what}",
                      "; cast it explicitly (x.astype(jnp.float32))")


def check_integer(where: str, x: Any, what: str = "input") -> None:
    _check_dtype_kind(where, x, what, (jnp.integer,), f"an integer {what}")


def check_real(where: str, x: Any, what: str = "input") -> None:
    """Bool, integer or floating: values that are plain numbers (0/1 labels, -1/+1 targets)."""
    _check_dtype_kind(where, x, what, (jnp.bool_, jnp.integer, jnp.floating),
                      f"real-valued {what} (bool, integer or floating)")


def check_min_rank(where: str, x: Any, min_ndim: int, layout: str, what: str = "input") -> None:
    check_array(where, x, what)
    check_that(x.ndim >= min_ndim, where, f"{what} of rank >= {min_ndim} ({layout})",
               f"rank {x.ndim} with shape {tuple(x.shape)}")


def check_floating_min_rank(where: str, x: Any, min_ndim: int, layout: str, what: str = "input") -> None:
    """A floating ``x`` with at least ``min_ndim`` axes (``layout`` names them): most layers' input."""
    check_floating(where, x, what)
    check_min_rank(where, x, min_ndim, layout, what)


def check_rank(where: str, x: Any, ndim: int | tuple[int, ...], layout: str, what: str = "input") -> None:
    """An array of rank ``ndim`` (or of one of the ranks in a tuple, ``(2, 3)``)."""
    check_array(where, x, what)
    ranks = ndim if isinstance(ndim, tuple) else (ndim,)
    expected = " or ".join(map(str, ranks))
    check_that(x.ndim in ranks, where, f"{what} of rank {expected} ({layout})", f"rank {x.ndim} with shape {tuple(x.shape)}")


def check_int_below(where: Any, name: str, value: Any, low: int, high: int, meaning: str) -> None:
    """An int in ``[low, high)``; ``meaning`` says why ``high`` is excluded."""
    check_int_at_least(where, name, value, low)
    check_that(value < high, where, f"{name} < {high} ({meaning})", repr(value))


def per_example_ints(where: Any, name: str, value: Any, batch: int, low: int, high: int, meaning: str) -> jax.Array:
    """An int (the same for every example) or an integer array of shape ``(batch,)``, as int32.

    Concrete values must lie in ``[low, high]`` (``meaning`` says why); traced ones cannot be checked.
    """
    if _is_int(value):
        value = jnp.full((batch,), value, jnp.int32)
    check_that(hasattr(value, "shape") and hasattr(value, "dtype"), where, f"{name} to be an int or an integer array "
               f"of shape ({batch},)", type(value).__name__, TypeError)
    check_that(jnp.issubdtype(value.dtype, jnp.integer), where, f"integer {name}",
               f"{jnp.dtype(value.dtype).name} {name}", TypeError)
    check_that(tuple(value.shape) == (batch,), where, f"{name} of shape ({batch},) (one per example; nothing is "
               f"broadcast)", f"shape {tuple(value.shape)}")
    if is_concrete(value):
        values = np.asarray(value)
        check_that(values.min() >= low and values.max() <= high, where, f"{name} in [{low}, {high}] ({meaning})",
                   f"{name} from {values.min()} to {values.max()}")
    return value.astype(jnp.int32)


def int_pair(where: Any, name: str, value: Any) -> tuple[int, int]:
    """An int ``n`` (meaning ``(n, n)``) or a pair of ints ``(height, width)``."""
    pair = (value, value) if _is_int(value) else value
    check_that(isinstance(pair, (tuple, list)) and len(pair) == 2 and all(_is_int(v) for v in pair), where,
               f"{name} to be an int or a pair of ints (height, width)", repr(value), TypeError)
    return int(pair[0]), int(pair[1])


def check_same_shape(where: str, a: Any, b: Any, a_name: str, b_name: str) -> None:
    check_array(where, a, a_name)
    check_array(where, b, b_name)
    check_that(tuple(a.shape) == tuple(b.shape), where, f"{a_name} and {b_name} of the same shape (nothing is "
               f"broadcast)", f"{a_name} {tuple(a.shape)} and {b_name} {tuple(b.shape)}")


def check_same_dtype(where: Any, arrays: Any, what: str) -> None:
    """Arrays of one dtype: nothing is cast to make them agree."""
    dtypes = [jnp.dtype(a.dtype).name for a in arrays]
    check_that(len(set(dtypes)) <= 1, where, f"{what} (nothing is cast)", " and ".join(dtypes), TypeError)


def check_positive_int(where: Any, name: str, value: Any) -> None:
    """A configuration size: a positive int (``True`` is not a size)."""
    check_that(_is_int(value) and value > 0, where, f"{name} to be a positive int", repr(value))


def check_rate(where: Any, name: str, value: Any) -> None:
    """A probability that may be zero but not one (dropout, label smoothing): ``[0, 1)``."""
    check_that(_is_real(value) and 0.0 <= value < 1.0, where, f"{name} in [0, 1)", repr(value))


def check_choice(where: Any, name: str, value: Any, choices: tuple) -> None:
    check_that(value in choices, where, f"{name} in {choices}", repr(value))


def check_last_axis(where: Any, x: Any, size: int, source: str, what: str = "input") -> None:
    """``x.shape[-1] == size``: an input that does not fit good params is the input's fault."""
    check_that(x.shape[-1] == size, where, f"{what} with last axis {size} ({source})", f"{what} of shape {tuple(x.shape)}")


def check_keys(where: str, tree: Any, expected: set[str] | list[str], what: str = "params") -> None:
    """Check that a params/state dict has exactly the expected keys."""
    expected = sorted(expected)
    if not isinstance(tree, Mapping):
        raise TypeError(f"{where}: expected {what} to be a dict with keys {expected}, got {type(tree).__name__}")
    check_that(sorted(tree) == expected, where, f"{what} with keys {expected}", f"keys {sorted(tree)}")


def as_shape_struct(x: Any) -> jax.ShapeDtypeStruct:
    """The shape and dtype of an array, a tracer or a `jax.ShapeDtypeStruct`."""
    if isinstance(x, jax.ShapeDtypeStruct):
        return x
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return jax.ShapeDtypeStruct(tuple(x.shape), x.dtype)
    raise TypeError(f"expected an array or a jax.ShapeDtypeStruct as the example input, got {type(x).__name__}")


def is_concrete(x: Any) -> bool:
    """A value that can be read now: not a tracer (under ``jit``) nor a ``jax.ShapeDtypeStruct``."""
    if isinstance(x, jax.core.Tracer):
        return False
    return isinstance(x, (numbers.Number, np.ndarray, np.generic, jax.Array))


def check_token_ids(where: str, ids: Any, vocab_size: int, what: str = "ids") -> None:
    """Integer ids; when they are concrete, every one in ``[0, vocab_size)``.

    Under ``jit`` values cannot be checked: an id out of range then gives NaN (the
    :func:`~jdl.nn.Embedding` rule), never a silently clipped one.
    """
    check_integer(where, ids, what)
    if is_concrete(ids):
        values = np.asarray(ids)
        if values.size and (values.min() < 0 or values.max() >= vocab_size):
            raise ValueError(f"{where}: expected {what} in [0, {vocab_size}) (the vocabulary), "
                             f"got {what} from {values.min()} to {values.max()}")


def check_lengths(where: str, lengths: Any, batch_shape: tuple[int, ...], steps: int) -> None:
    """Integer sequence lengths, one per sequence; when concrete, each in ``[0, steps]``."""
    check_integer(where, lengths, "lengths")
    check_that(tuple(lengths.shape) == tuple(batch_shape), where, f"lengths of shape {tuple(batch_shape)} (one per "
               f"sequence)", f"shape {tuple(lengths.shape)}")
    if is_concrete(lengths):
        values = np.asarray(lengths)
        if values.size and (values.min() < 0 or values.max() > steps):
            raise ValueError(f"{where}: expected lengths in [0, {steps}] (the time axis has {steps} steps), "
                             f"got lengths from {values.min()} to {values.max()}")


def check_int_at_least(where: Any, name: str, value: Any, low: int, *, none_ok: bool = False) -> None:
    """A count: an int ``>= low`` (``True`` is not a count); with ``none_ok``, ``None`` as well."""
    check_that((none_ok and value is None) or (_is_int(value) and value >= low), where,
               f"{name} to be an int >= {low}" + " or None" * none_ok, repr(value))


def check_class_labels(where: str, scores: Any, labels: Any, scores_name: str = "logits", mask: Any = None) -> None:
    """Floating ``scores [..., num_classes]``, integer class ``labels`` of shape ``scores.shape[:-1]``, and
    optionally a bool ``mask`` of the labels' shape (which labels count: ``sequence_mask(lengths, time)``)."""
    check_floating_min_rank(where, scores, 1, "..., num_classes", scores_name)
    check_array(where, labels, "labels")
    expected = tuple(scores.shape[:-1])
    got = f"labels of shape {tuple(labels.shape)}"
    check_that(not (jnp.issubdtype(labels.dtype, jnp.floating) and tuple(labels.shape) == tuple(scores.shape)), where,
               f"integer class labels of shape {expected}", f"{jnp.dtype(labels.dtype).name} {got} (one-hot or "
               f"probabilities?); use softmax_cross_entropy for those", TypeError)
    check_integer(where, labels, "labels")
    check_that(tuple(labels.shape) == expected, where, f"labels of shape {expected} ({scores_name}.shape[:-1], one "
               f"class index per example; nothing is broadcast)", f"{got} for {scores_name} of shape {tuple(scores.shape)}")
    if mask is not None:
        check_bool_mask(where, mask, expected, "the labels'")


def check_bool_mask(where: str, mask: Any, shape: tuple[int, ...], source: str, what: str = "mask") -> None:
    """A boolean ``mask`` of exactly ``shape`` (``source`` says whose shape that is); nothing is cast or broadcast."""
    check_mask_dtype(where, mask, f"a boolean {what}", meaning="True = keep", hint="")
    check_that(tuple(mask.shape) == tuple(shape), where, f"{what} of shape {tuple(shape)} ({source})", tuple(mask.shape))


def check_temperature(where: str, temperature: Any) -> None:
    """A sampling temperature: a number or a scalar array; when concrete, finite and ``>= 0``."""
    check_that(_is_real(temperature) or hasattr(temperature, "shape"), where, "temperature to be a number >= 0",
               type(temperature).__name__, TypeError)
    check_that(np.ndim(temperature) == 0, where, "a scalar temperature", f"shape {tuple(np.shape(temperature))}")
    if is_concrete(temperature) and not (float(temperature) >= 0.0 and np.isfinite(float(temperature))):
        raise ValueError(f"{where}: expected a finite temperature >= 0 (0 is greedy decoding), "
                         f"got {float(temperature)}")


def check_positive(where: Any, name: str, value: Any) -> None:
    """A positive real number (an epsilon, a scale): ``value > 0``."""
    check_that(_is_real(value) and value > 0, where, f"{name} > 0", repr(value))


def check_unit_interval(where: Any, name: str, value: Any) -> None:
    """A weight in ``[0, 1]``, both ends included (a momentum, a mixing coefficient)."""
    check_that(_is_real(value) and 0.0 <= value <= 1.0, where, f"{name} in [0, 1]", repr(value))


def _one_key(key: Any) -> tuple[bool, str]:
    """Whether ``key`` is one PRNG key (a typed ``jax.random.key`` scalar or a raw ``uint32[2]``
    one), and what it is, for the message."""
    dtype, shape = getattr(key, "dtype", None), tuple(getattr(key, "shape", ()))
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) and shape == ()
    raw = dtype == jnp.uint32 and shape == (2,)
    return typed or raw, f"{getattr(dtype, 'name', type(key).__name__)} of shape {shape}"


def check_training_key(where: Any, key: Any) -> None:
    """A PRNG key for a stochastic layer in training (dropout): ``None`` is refused, at trace time,
    and so is anything but one key."""
    if key is None:
        raise ValueError(f"{where}: train=True needs a PRNG key, got key=None; call "
                         f"apply(params, state, x, key=jax.random.key(...), train=True)")
    ok, got = _one_key(key)
    check_that(ok, where, "key to be one PRNG key (jax.random.key(seed))", got, TypeError)


def check_key(where: Any, key: Any) -> None:
    """One PRNG key for a keyed function (augmentation, bootstrap draws); a batch of keys is
    ``vmap`` 's job."""
    ok, got = _one_key(key)
    check_that(ok, where, "key to be one PRNG key (jax.random.key(seed); vmap over a batch of keys)", got, TypeError)


def check_train_flag(where: Any, train: Any) -> None:
    """``train`` decides which program is traced, so it must be a Python bool, not a traced value."""
    check_that(isinstance(train, (bool, np.bool_)), where, "train to be a Python bool (under jit, make it static: "
               "jax.jit(f, static_argnames='train'))", type(train).__name__, TypeError)


def check_batch_axes(where: Any, x: Any, batch_shape: tuple[int, ...], trailing: int, what: str, source: str) -> None:
    """``x`` is ``[*batch_shape, <trailing axes>]``, the batch axes of another input (``source``): nothing is
    broadcast (an attention's context and its queries, ``"the input's"``)."""
    batch_shape = tuple(batch_shape)
    check_that(x.ndim == len(batch_shape) + trailing and tuple(x.shape[:len(batch_shape)]) == batch_shape, where,
               f"{what} with {source} batch axes {batch_shape} (nothing is broadcast)", f"{what} of shape {tuple(x.shape)}")


def check_shape(where: Any, x: Any, shape: tuple[int, ...], layout: str, what: str = "input") -> None:
    """An array of exactly ``shape`` (``layout`` names its axes: ``"[*batch, hidden_size]"``)."""
    check_array(where, x, what)
    check_that(tuple(x.shape) == tuple(shape), where, f"{what} of shape {tuple(shape)} ({layout})", f"shape {tuple(x.shape)}")


def check_tuple(where: Any, value: Any, length: int, what: str, meaning: str) -> None:
    """A tuple or list of ``length`` items; ``meaning`` says what they are (``"a pair (c, h)"``)."""
    if not isinstance(value, (tuple, list)) or len(value) != length:
        got = f"{type(value).__name__} of length {len(value)}" if isinstance(value, (tuple, list)) else type(value).__name__
        raise ValueError(f"{where}: expected {what} to be {meaning}, got {got}")


def check_divisible(where: Any, name: str, value: int, by_name: str, by: int, *, note: str = "",
                    source: str = "") -> None:
    """``value % by == 0`` (features split evenly into heads); ``note`` follows the divisor, ``source`` the value."""
    check_that(value % by == 0, where, f"{name} divisible by {by_name}={by}{note}", f"{value}{source}")


def check_mask_dtype(where: Any, mask: Any, what: str = "a boolean mask", *, meaning: str = "True = attend",
                     hint: str = "; pass mask.astype(bool)") -> None:
    """A boolean mask, of any shape: masks are never cast (flax's float 1/0 masks)."""
    check_array(where, mask, "mask")
    check_that(mask.dtype == jnp.bool_, where, f"{what} ({meaning})",
               f"{jnp.dtype(mask.dtype).name} of shape {tuple(mask.shape)}{hint}", TypeError)


def check_broadcasts_to(where: Any, x: Any, target: tuple[int, ...], what: str, layout: str, *, min_ndim: int = 0,
                        hint: str = "") -> None:
    """``x`` broadcasts to ``target`` by numpy's rule (from the right), with ``min_ndim`` to ``len(target)`` axes."""
    fits = min_ndim <= x.ndim <= len(target) and all(
        size in (1, want) for size, want in zip(x.shape[::-1], target[::-1]))
    check_that(fits, where, f"a {what} that broadcasts to {tuple(target)} ({layout})", f"shape {tuple(x.shape)}{hint}")


def check_same_axes(where: Any, a: Any, b: Any, axes: slice, names: tuple[str, str], layout: str) -> None:
    """``a.shape[axes] == b.shape[axes]``: axes two inputs share (``layout`` names them); nothing is broadcast."""
    (a_name, b_name), a_axes, b_axes = names, tuple(a.shape[axes]), tuple(b.shape[axes])
    check_that(a_axes == b_axes, where, f"{a_name} and {b_name} with the same {layout}",
               f"{a_name} {tuple(a.shape)} with {a_axes} and {b_name} {tuple(b.shape)} with {b_axes}")


def check_integer_scalar(where: Any, x: Any, what: str) -> None:
    """An integer array of rank 0 (a position, a step index), concrete or traced."""
    check_integer(where, x, what)
    check_rank(where, x, 0, "a scalar", what)


def check_max_length(where: Any, x: Any, max_length: int, axis: int = -2, what: str = "input") -> None:
    """At most ``max_length`` positions along ``x``'s sequence ``axis`` (a table or cache of fixed size)."""
    check_that(x.shape[axis] <= max_length, where, f"a sequence of at most max_length={max_length} positions (axis "
               f"{axis})", f"{what} of shape {tuple(x.shape)} with {x.shape[axis]}")


def check_token_id(where: Any, name: str, value: Any, vocab_size: int, vocabulary: str = "the vocabulary") -> None:
    """One configured token id (``bos_id``, ``pad_id``): an int in ``[0, vocab_size)``."""
    check_that(_is_int(value) and 0 <= value < vocab_size, where, f"{name} in [0, {vocab_size}) ({vocabulary})", repr(value))


# ----------------------------------------------------------------------------- declared checks
#
# A configuration value is checked where it is declared: a layer's field or a function's
# parameter annotated with one of the types below (``features: PositiveInt``,
# ``activation: Literal["tanh", "relu"]``, ``use_bias: bool``, ``b1: DecayRate``) is checked by
# :func:`check_declared` (a layer, on construction) or :func:`checks_arguments` (a function,
# on each call), with the message the named check gives. ``X | None`` lets ``None`` through.


class Constraint(NamedTuple):
    """The check ``check(where, name, value)`` that an ``Annotated`` type carries."""

    check: Callable[[Any, str, Any], None]


def check_bool(where: Any, name: str, value: Any) -> None:
    """A switch: ``True`` or ``False`` (``1`` or ``"yes"`` are not silently taken for ``True``)."""
    check_that(isinstance(value, (bool, np.bool_)), where, f"{name} to be a bool", repr(value))


def check_non_negative_int(where: Any, name: str, value: Any) -> None:
    check_int_at_least(where, name, value, 0)


PositiveInt = Annotated[int, Constraint(check_positive_int)]
NonNegativeInt = Annotated[int, Constraint(check_non_negative_int)]
Positive = Annotated[float, Constraint(check_positive)]
Rate = Annotated[float, Constraint(check_rate)]
UnitInterval = Annotated[float, Constraint(check_unit_interval)]
Key = Annotated[jax.Array, Constraint(lambda where, name, value: check_key(where, value))]  # one typed PRNG key


def _constraint_of(hint: Any) -> tuple[Callable | None, bool]:
    """The check a type hint declares, and whether ``None`` is allowed."""
    none_ok = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        none_ok = len(members) < len(typing.get_args(hint))
        if len(members) != 1:
            return None, none_ok
        hint = members[0]
    if typing.get_origin(hint) is Annotated:
        checks = [m.check for m in hint.__metadata__ if isinstance(m, Constraint)]
        return (checks[0] if checks else None), none_ok
    if typing.get_origin(hint) is Literal:
        choices = typing.get_args(hint)
        return (lambda where, name, value: check_choice(where, name, value, choices)), none_ok
    if hint is bool:
        return check_bool, none_ok
    return None, none_ok


@functools.cache
def declared_checks(owner: Any) -> tuple[tuple[str, Callable, bool], ...]:
    """``(name, check, none_ok)`` for each annotated field or parameter of ``owner`` that declares one.

    Resolved on first use, when every name the annotations mention exists.
    """
    hints = typing.get_type_hints(owner, include_extras=True)
    declared = []
    for name, hint in hints.items():
        if name == "return" or typing.get_origin(hint) is ClassVar:
            continue
        check, none_ok = _constraint_of(hint)
        if check is not None:
            declared.append((name, check, none_ok))
    return tuple(declared)


def check_declared(where: Any, owner: Any, values: Any) -> None:
    """Run ``owner``'s declared checks on ``values`` (a dataclass instance, or a mapping of arguments)."""
    read = values.get if isinstance(values, Mapping) else functools.partial(getattr, values)
    for name, check, none_ok in declared_checks(owner):
        value = read(name, None) if isinstance(values, Mapping) else read(name)
        if not (none_ok and value is None):
            check(where, name, value)


def checks_arguments(fn: Callable) -> Callable:
    """Decorate ``fn`` so that each call checks the arguments whose annotations declare a check."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def checked(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        check_declared(fn.__qualname__, fn, bound.arguments)
        return fn(*args, **kwargs)

    return checked
