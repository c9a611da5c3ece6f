"""Building blocks: the gradient transformations the optimizers in :mod:`jdl.optim.alias` chain.

Each block is written by hand from the course's update rule (``seeds/``), with optax's
name, arguments, defaults and order of arithmetic, so a block gives optax's numbers to
the last bit in float32 and can replace optax's block with one import.

================================  ====================================================  =================
block                             rule (``g`` the incoming update)                      used by
================================  ====================================================  =================
``trace``                         ``m = g + decay m`` (or ``(1 - decay) g + decay m``)  sgd, rmsprop
``ema``                           ``m = (1 - decay) g + decay m``, debiased
``scale_by_rss``                  ``g / sqrt(sum g^2 + eps)``                           adagrad
``scale_by_rms``                  ``g / sqrt(E[g^2] + eps)``                            rmsprop
``scale_by_stddev``               ``g / sqrt(E[g^2] - E[g]^2 + eps)``                   rmsprop(centered)
``scale_by_adam``                 ``m_hat / (sqrt(v_hat + eps_root) + eps)``            adam, adamw, nadam
``scale_by_adadelta``             ``sqrt(E[dx^2] + eps) / sqrt(E[g^2] + eps) g``        adadelta
``scale_by_normalized_gradient``  ``g / (sqrt(g^2) + eps)``                             normalized_sgd
``add_decayed_weights``           ``g + weight_decay * params`` (L2 decay)              adamw, adadelta
``add_noise``                     ``g + sqrt(eta / t^gamma) N(0, I)`` (gradient noise)
================================  ====================================================  =================

Every block checks its hyperparameters when built (a decay rate must lie in [0, 1), an
eps must be finite and >= 0) and, at each update, that the updates have the tree structure and leaf
shapes of its state: a ``ValueError`` naming the block, raised at trace time.
Moments live in the params' dtype (bfloat16 params keep bfloat16 moments, as optax);
step counts are int32 and saturate instead of wrapping. Parameters must be floating-point:
an integer param is refused at ``init`` (its moments, and its updates, would be truncated).

``eps = 0`` is allowed, as in optax, because the course's forms need it (Adam with eps
inside the root is ``eps=0, eps_root=eps``; normalized gradients with ``eps=0`` are
``sign(g)``). But with no eps at all, a coordinate whose gradients have all been 0 gives
``0 / 0 = NaN`` in ``scale_by_adam`` (``eps = eps_root = 0``), ``scale_by_rms``,
``scale_by_stddev``, ``scale_by_adadelta`` and ``scale_by_normalized_gradient``; the NaN is
shown, not hidden (``apply_if_finite`` skips such a step). Keep an eps > 0 unless every
gradient is nonzero. (``scale_by_rss`` returns 0 there: AdaGrad's sum is 0 only before any
gradient.)

Example:
    >>> import jax.numpy as jnp
    >>> from jdl import optim
    >>> adam_by_hand = optim.chain(optim.scale_by_adam(b1=0.9, b2=0.999), optim.scale_by_learning_rate(0.1))
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> state = adam_by_hand.init(params)
    >>> updates, state = adam_by_hand.update({"w": jnp.array([0.5, -4.0])}, state)
    >>> [round(u, 4) for u in updates["w"].tolist()]  # Adam's first step is -learning_rate * sign(g)
    [-0.1, 0.1]
"""
from __future__ import annotations

import typing
from typing import Any, Callable, Literal, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np

from jdl._checks import check_that, checks_arguments
from jdl.optim.base import (
    EmptyState,
    GradientTransformation,
    Updates,
    DecayRate,
    NonNegative,
    NonNegativeOrSchedule,
    check_floating_params,
    check_updates,
    safe_increment,
    stateless,
    zero_count,
)

__all__ = [
    "TraceState", "trace",
    "EmaState", "ema",
    "ScaleByRssState", "scale_by_rss",
    "ScaleByRmsState", "ScaleByRmsWithCountState", "scale_by_rms",
    "ScaleByRStdDevState", "ScaleByRStdDevWithCountState", "scale_by_stddev",
    "ScaleByAdamState", "scale_by_adam",
    "ScaleByAdaDeltaState", "scale_by_adadelta",
    "scale_by_normalized_gradient",
    "WeightDecayScheduleState", "add_decayed_weights", "AddNoiseState", "add_noise",
    "check_updates",
]

NesterovForm = Literal["dozat", "textbook"]
NESTEROV_FORMS = typing.get_args(NesterovForm)


# ---------------------------------------------------------------------------------------
# Shared arithmetic (optax's order of operations, so float32 results agree bit for bit)


def _moments_like(where: str, params: Any, value: float = 0.0, dtype: Any = None) -> Any:
    """A state tree shaped as the params, filled with ``value`` (in ``dtype``, default the params').

    The params must be floating: an integer param would get integer moments that truncate.
    """
    check_floating_params(where, params)
    return jax.tree.map(lambda x: jnp.full_like(x, value, dtype=dtype), params)


def _cast(tree: Any, dtype: Any) -> Any:
    return tree if dtype is None else jax.tree.map(lambda x: x.astype(dtype), tree)


def _cast_like(tree: Any, reference: Any) -> Any:
    return jax.tree.map(lambda x, r: x.astype(jnp.asarray(r).dtype), tree, reference)


def _update_moment(updates: Any, moments: Any, decay: Any, order: int) -> Any:
    """Exponential moving average of ``g**order``: ``(1 - decay) g^order + decay m``."""
    return jax.tree.map(lambda g, m: (1 - decay) * (g**order) + decay * m, updates, moments)


def _bias_correction(moment: Any, decay: Any, count: jax.Array) -> Any:
    """``m / (1 - decay**count)``; the factor is formed in full precision (in bfloat16 ``decay**t``
    would round to 1 and divide by zero), then divided in the moment's own dtype."""
    correction = 1 - decay**count
    return jax.tree.map(lambda m: m / correction.astype(m.dtype), moment)


def _canonical_dtype(dtype: Any) -> Any:
    return None if dtype is None else jax.dtypes.canonicalize_dtype(dtype)


# ---------------------------------------------------------------------------------------
# Momentum


class TraceState(NamedTuple):
    trace: Updates  # the momentum m_t, in accumulator_dtype (default: the params' dtype)


@checks_arguments
def trace(
    decay: DecayRate,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
    *,
    moving_average: bool = False,
) -> GradientTransformation:
    r"""Momentum: a trace of past updates (optax's ``trace``), or their moving average.

    With ``g_t`` the incoming update and ``mu = decay``::

        m_t = g_t + mu m_{t-1}                     (trace form, the default)
        m_t = (1 - mu) g_t + mu m_{t-1}            (moving_average=True; seeds/001 "Adding
                                                    Momentum": m <- beta m + (1 - beta) g)
        u_t = m_t                                  (nesterov=False)
        u_t = g_t + mu m_t  [trace]  or  (1 - mu) g_t + mu m_t  [moving average]
                                                   (nesterov=True: the look-ahead step)

    The two forms describe the same algorithm: the moving average is ``(1 - mu)`` times the
    trace, so ``chain(trace(mu, moving_average=True), scale_by_learning_rate(lr))`` equals
    ``chain(trace(mu), scale_by_learning_rate(lr * (1 - mu)))``. The seeds' velocity form
    ``v_t = mu v_{t-1} - lr g_t, w_t = w_{t-1} + v_t`` (seeds/000 "SGD with momentum",
    seeds/002 2.5.1, seeds/003) is ``v_t = -lr m_t`` for a constant ``lr``, i.e. ``trace``
    followed by the learning rate, or exactly ``chain(scale_by_learning_rate(lr), trace(mu))``
    (which also holds with a schedule).

    Args:
        decay: ``mu`` in [0, 1).
        nesterov: return the look-ahead update ``g_t + mu m_t`` instead of ``m_t``.
        accumulator_dtype: dtype of the stored trace (``None``: the params').
        moving_average: accumulate ``(1 - decay) g`` instead of ``g`` (jdl only; optax's
            ``ema(decay, debias=False)`` without Nesterov).

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> momentum = optim.trace(decay=0.5)
        >>> state = momentum.init(jnp.zeros(2))
        >>> updates, state = momentum.update(jnp.array([1.0, 2.0]), state)
        >>> updates, state = momentum.update(jnp.array([1.0, 2.0]), state)
        >>> updates  # g + 0.5 g
        Array([1.5, 3. ], dtype=float32)
    """
    where = "trace"
    accumulator_dtype = _canonical_dtype(accumulator_dtype)
    def accumulate(g, m):
        if moving_average:  # optax's ema arithmetic
            return (1 - decay) * g + decay * m
        return g + decay * m

    def init(params):
        return TraceState(trace=_moments_like(where, params, dtype=accumulator_dtype))

    def update(updates, state, params=None):
        del params
        check_updates(where, updates, state.trace)
        new_trace = jax.tree.map(accumulate, updates, state.trace)
        if nesterov:
            updates = jax.tree.map(accumulate, updates, new_trace)
        else:
            updates = new_trace
        return updates, TraceState(trace=_cast(new_trace, accumulator_dtype))

    return GradientTransformation(init, update)


class EmaState(NamedTuple):
    count: jax.Array  # steps taken (int32)
    ema: Updates  # the moving average m_t


@checks_arguments
def ema(decay: DecayRate, debias: bool = True, accumulator_dtype: Optional[Any] = None) -> GradientTransformation:
    r"""Exponential moving average of the updates (optax's ``ema``).

    ``m_t = (1 - decay) g_t + decay m_{t-1}``, returned as ``m_t / (1 - decay^t)`` when
    ``debias`` (the bias correction of seeds/001 "Adaptive moment estimation") and as ``m_t``
    otherwise (the seeds' moving-average momentum, also ``trace(decay, moving_average=True)``).

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> average = optim.ema(decay=0.9)
        >>> state = average.init(jnp.zeros(1))
        >>> updates, state = average.update(jnp.array([2.0]), state)
        >>> updates.round(4)  # debiased: 0.1 * 2 / (1 - 0.9)
        Array([2.], dtype=float32)
    """
    where = "ema"
    accumulator_dtype = _canonical_dtype(accumulator_dtype)

    def init(params):
        return EmaState(
            count=zero_count(),
            ema=_moments_like(where, params, dtype=accumulator_dtype),
        )

    def update(updates, state, params=None):
        del params
        check_updates(where, updates, state.ema)
        new_ema = _update_moment(updates, state.ema, decay, 1)
        count = safe_increment(state.count)
        updates = _bias_correction(new_ema, decay, count) if debias else new_ema
        return updates, EmaState(count=count, ema=_cast(new_ema, accumulator_dtype))

    return GradientTransformation(init, update)


# ---------------------------------------------------------------------------------------
# Adaptive scaling


class ScaleByRssState(NamedTuple):
    sum_of_squares: Updates  # G_t = G_0 + sum of g^2


@checks_arguments
def scale_by_rss(initial_accumulator_value: NonNegative = 0.1, eps: NonNegative = 1e-7) -> GradientTransformation:
    r"""AdaGrad's scaling: divide by the root of the sum of all squared gradients so far.

    ::

        G_t = G_{t-1} + g_t^2,        G_0 = initial_accumulator_value
        u_t = g_t / sqrt(G_t + eps)   (0 where G_t = 0)

    This is seeds/002 2.5.3 (``G_ii <- G_ii + g^2``, ``w <- w - lr g / sqrt(G_ii + eps)``)
    and seeds/003 (``gamma_t = sum_{T<=t} g_T o g_T``, ``/ sqrt(eps I + gamma_t)``), with eps
    inside the root as in optax. The course starts the sum at 0; optax (and TensorFlow)
    start it at 0.1: ``initial_accumulator_value=0.0`` gives the course's rule exactly.
    (seeds/000 writes the sum up to ``t - 1``, which would divide the first step by
    ``sqrt(eps)``; seeds/002 and /003 include the current gradient, as here.)

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> adagrad_scaling = optim.scale_by_rss(initial_accumulator_value=0.0, eps=0.0)
        >>> state = adagrad_scaling.init(jnp.zeros(2))
        >>> updates, state = adagrad_scaling.update(jnp.array([3.0, -4.0]), state)
        >>> updates  # g / sqrt(g^2)
        Array([ 1., -1.], dtype=float32)
    """
    where = "scale_by_rss"

    def init(params):
        return ScaleByRssState(sum_of_squares=_moments_like(where, params, initial_accumulator_value))

    def update(updates, state, params=None):
        del params
        check_updates(where, updates, state.sum_of_squares)
        sum_of_squares = jax.tree.map(lambda g, s: g * g + s, updates, state.sum_of_squares)
        # Where nothing was ever accumulated the gradient is 0 too: return 0, not 0 / sqrt(eps).
        inverse_root = jax.tree.map(lambda s: jnp.where(s > 0, jax.lax.rsqrt(s + eps), 0.0), sum_of_squares)
        updates = jax.tree.map(lambda r, g: r * g, inverse_root, updates)
        return updates, ScaleByRssState(sum_of_squares=sum_of_squares)

    return GradientTransformation(init, update)


def _inverse_root(eps: float, eps_in_sqrt: bool) -> Callable[[jax.Array], jax.Array]:
    """``1 / sqrt(x + eps)`` (eps inside the root) or ``1 / (sqrt(x) + eps)`` (outside)."""
    if eps_in_sqrt:
        return lambda x: jax.lax.rsqrt(x + eps)
    return lambda x: 1 / (jnp.sqrt(x) + eps)


class ScaleByRmsState(NamedTuple):
    nu: Updates  # E[g^2]_t


class ScaleByRmsWithCountState(NamedTuple):
    count: jax.Array  # steps taken (int32), for the bias correction
    nu: Updates


def _rms_state(count: Any, mu: Any, nu: Any) -> NamedTuple:
    """The state optax keeps for the options chosen; a ``None`` field is one it does not keep."""
    if mu is None:
        return ScaleByRmsState(nu=nu) if count is None else ScaleByRmsWithCountState(count=count, nu=nu)
    if count is None:
        return ScaleByRStdDevState(mu=mu, nu=nu)
    return ScaleByRStdDevWithCountState(count=count, mu=mu, nu=nu)


def _scale_by_rms(where: str, decay: float, eps: float, initial_scale: float, eps_in_sqrt: bool,
                  bias_correction: bool, centered: bool) -> GradientTransformation:
    """RMSProp's scaling ``g / sqrt(v_hat (- m_hat^2 if centered) + eps)``: :func:`scale_by_rms` and
    :func:`scale_by_stddev` (``centered``)."""
    inverse_root = _inverse_root(eps, eps_in_sqrt)

    def init(params):
        count = zero_count() if bias_correction else None
        mu = _moments_like(where, params) if centered else None
        return _rms_state(count, mu, _moments_like(where, params, initial_scale))

    def update(updates, state, params=None):
        del params
        check_updates(where, updates, state.nu)
        nu = _update_moment(updates, state.nu, decay, 2)
        mu = _update_moment(updates, state.mu, decay, 1) if centered else None
        count = safe_increment(state.count) if bias_correction else None
        nu_hat = _bias_correction(nu, decay, count) if bias_correction else nu
        if centered:
            mu_hat = _bias_correction(mu, decay, count) if bias_correction else mu
            nu_hat = jax.tree.map(lambda n, m: n - m * m, nu_hat, mu_hat)  # the variance E[g^2] - E[g]^2
        updates = jax.tree.map(lambda n, g: inverse_root(n) * g, nu_hat, updates)
        return updates, _rms_state(count, mu, nu)

    return GradientTransformation(init, update)


@checks_arguments
def scale_by_rms(decay: DecayRate = 0.9, eps: NonNegative = 1e-8, initial_scale: NonNegative = 0.0,
                 eps_in_sqrt: bool = True, bias_correction: bool = False) -> GradientTransformation:
    r"""RMSProp's scaling: divide by the root of a moving average of squared gradients.

    ::

        v_t = decay v_{t-1} + (1 - decay) g_t^2,     v_0 = initial_scale
        v_hat = v_t / (1 - decay^t)                  (bias_correction=True only)
        u_t = g_t / sqrt(v_hat + eps)                (eps_in_sqrt=True, optax's default)
        u_t = g_t / (sqrt(v_hat) + eps)              (eps_in_sqrt=False, PyTorch's)

    seeds/003 "RMS Prop" (``s_t = beta s_{t-1} + (1 - beta) g o g``, ``theta - eta g / sqrt(s_t)``,
    no eps: either placement with ``eps=0``) and seeds/000, whose "AdaDelta" paragraph is this
    rule with eps inside the root (``eta / sqrt(eda_t + eps)``): the default.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> rms = optim.scale_by_rms(decay=0.75, eps=0.0)
        >>> updates, _ = rms.update(jnp.array([2.0]), rms.init(jnp.zeros(1)))
        >>> updates  # 2 / sqrt(0.25 * 4)
        Array([2.], dtype=float32)
    """
    return _scale_by_rms("scale_by_rms", decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered=False)


class ScaleByRStdDevState(NamedTuple):
    mu: Updates  # E[g]_t
    nu: Updates  # E[g^2]_t


class ScaleByRStdDevWithCountState(NamedTuple):
    count: jax.Array  # steps taken (int32), for the bias correction
    mu: Updates
    nu: Updates


@checks_arguments
def scale_by_stddev(decay: DecayRate = 0.9, eps: NonNegative = 1e-8, initial_scale: NonNegative = 0.0,
                    eps_in_sqrt: bool = True, bias_correction: bool = False) -> GradientTransformation:
    r"""Centred RMSProp's scaling: divide by a moving estimate of the gradient's std. deviation.

    ::

        m_t = decay m_{t-1} + (1 - decay) g_t,       m_0 = 0
        v_t = decay v_{t-1} + (1 - decay) g_t^2,     v_0 = initial_scale
        u_t = g_t / sqrt(v_t - m_t^2 + eps)          (or / (sqrt(v_t - m_t^2) + eps))

    (Graves 2013, eq. 38-40), with the optional bias correction of both moments. In bfloat16,
    rounding can make ``v_t - m_t^2`` negative and the result NaN (notably with
    ``bias_correction`` or eps outside the root), in optax as here: keep such params in float32.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> centred = optim.scale_by_stddev(decay=0.5, eps=0.0)
        >>> state = centred.init(jnp.zeros(1))
        >>> updates, state = centred.update(jnp.array([2.0]), state)
        >>> updates  # 2 / sqrt(0.5 * 4 - (0.5 * 2)^2)
        Array([2.], dtype=float32)
    """
    return _scale_by_rms("scale_by_stddev", decay, eps, initial_scale, eps_in_sqrt, bias_correction, centered=True)


class ScaleByAdamState(NamedTuple):
    count: jax.Array  # steps taken (int32)
    mu: Updates  # first moment m_t (in mu_dtype if given)
    nu: Updates  # second moment v_t


@checks_arguments
def scale_by_adam(b1: DecayRate = 0.9, b2: DecayRate = 0.999, eps: NonNegative = 1e-8, eps_root: NonNegative = 0.0,
                  mu_dtype: Optional[Any] = None, *, nesterov: bool = False,
                  nesterov_form: NesterovForm = "dozat") -> GradientTransformation:
    r"""Adam's scaling (Kingma & Ba 2014, Algorithm 1), optionally with Nesterov momentum.

    ::

        m_t = b1 m_{t-1} + (1 - b1) g_t              v_t = b2 v_{t-1} + (1 - b2) g_t^2
        m_hat = m_t / (1 - b1^t)                     v_hat = v_t / (1 - b2^t)
        u_t = m_hat / (sqrt(v_hat + eps_root) + eps)

    This is seeds/001 "Adaptive moment estimation (Adam)" (eps outside the root). seeds/000
    and seeds/003 put eps inside the root, ``m_hat / sqrt(v_hat + eps)``: that is
    ``eps=0, eps_root=eps``. (seeds/002 2.5.5 writes the update without bias correction;
    seeds/003's correction ``s / (1 - beta)`` lacks the power ``t``; both read as typos of
    the rule above.)

    With ``nesterov=True`` (NAdam), ``m_hat`` becomes

    * ``nesterov_form="dozat"`` (optax, Dozat 2016 with a constant ``b1``)::

          m_hat = b1 m_t / (1 - b1^(t+1)) + (1 - b1) g_t / (1 - b1^t)

    * ``nesterov_form="textbook"`` (seeds/002 2.5.6)::

          m_hat = b1 m_t / (1 - b1^t) + (1 - b1) g_t / (1 - b1^t)

    The two differ only in the power of the first term's correction and agree as t grows.

    Args:
        b1, b2: decay rates of the first and second moments, in [0, 1).
        eps: added to the root (outside it); eps_root: added under the root. With both 0, a
            coordinate whose gradients have all been 0 gets ``0 / 0 = NaN`` (as optax).
        mu_dtype: dtype of the stored first moment (``None``: the params').
        nesterov: NAdam's look-ahead first moment.
        nesterov_form: which NAdam correction, see above.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> adam_scaling = optim.scale_by_adam()
        >>> state = adam_scaling.init(jnp.zeros(2))
        >>> updates, state = adam_scaling.update(jnp.array([0.5, -3.0]), state)
        >>> updates.round(4)  # the first step is sign(g)
        Array([ 1., -1.], dtype=float32)
    """
    where = "scale_by_adam"
    mu_dtype = _canonical_dtype(mu_dtype)
    textbook = nesterov_form == "textbook"

    def init(params):
        return ScaleByAdamState(
            count=zero_count(),
            mu=_moments_like(where, params, dtype=mu_dtype),
            nu=_moments_like(where, params),
        )

    def update(updates, state, params=None):
        del params
        check_updates(where, updates, state.nu)
        mu = _update_moment(updates, state.mu, b1, 1)
        nu = _update_moment(updates, state.nu, b2, 2)
        count = safe_increment(state.count)
        if nesterov:
            momentum_count = count if textbook else safe_increment(count)
            mu_hat = jax.tree.map(
                lambda m, g: b1 * m + (1 - b1) * g,
                _bias_correction(mu, b1, momentum_count),
                _bias_correction(updates, b1, count),
            )
        else:
            mu_hat = _bias_correction(mu, b1, count)
        nu_hat = _bias_correction(nu, b2, count)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v + eps_root) + eps), mu_hat, nu_hat)
        return updates, ScaleByAdamState(count=count, mu=_cast(mu, mu_dtype), nu=_cast_like(nu, state.nu))

    return GradientTransformation(init, update)


class ScaleByAdaDeltaState(NamedTuple):
    e_g: Updates  # E[g^2]_t
    e_x: Updates  # E[dx^2]_t, the moving average of squared updates


@checks_arguments
def scale_by_adadelta(rho: DecayRate = 0.9, eps: NonNegative = 1e-6) -> GradientTransformation:
    r"""AdaDelta's scaling (Zeiler 2012): the ratio of two running RMS values.

    seeds/002 2.5.4::

        E[g^2]_t  = rho E[g^2]_{t-1} + (1 - rho) g_t^2
        dx_t      = sqrt(E[dx^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) * g_t
        E[dx^2]_t = rho E[dx^2]_{t-1} + (1 - rho) dx_t^2

    The course's ``Delta w_t = -dx_t``: the minus sign (and any learning rate) is applied by
    the :func:`~jdl.optim.scale_by_learning_rate` that follows in :func:`~jdl.optim.adadelta`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> adadelta_scaling = optim.scale_by_adadelta(rho=0.0, eps=1.0)
        >>> state = adadelta_scaling.init(jnp.zeros(1))
        >>> updates, state = adadelta_scaling.update(jnp.array([jnp.sqrt(3.0)]), state)
        >>> updates  # sqrt(0 + 1) / sqrt(3 + 1) * sqrt(3)
        Array([0.8660254], dtype=float32)
    """
    where = "scale_by_adadelta"

    def init(params):
        return ScaleByAdaDeltaState(e_g=_moments_like(where, params), e_x=_moments_like(where, params))

    def update(updates, state, params=None):
        del params
        check_updates(where, updates, state.e_g)
        e_g = _update_moment(updates, state.e_g, rho, 2)
        updates = jax.tree.map(
            lambda g, g_square, dx_square: (jnp.sqrt(dx_square + eps) / jnp.sqrt(g_square + eps)) * g,
            updates, e_g, state.e_x,
        )
        e_x = _update_moment(updates, state.e_x, rho, 2)
        return updates, ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)

    return GradientTransformation(init, update)


@checks_arguments
def scale_by_normalized_gradient(eps: NonNegative = 1e-8) -> GradientTransformation:
    r"""The course's "normalized gradients": ``u = m / (sqrt(v) + eps)`` with ``m = g, v = g^2``.

    seeds/001 "Normalized Gradients" (``m <- dL/dphi``, ``v <- (dL/dphi)^2``,
    ``phi <- phi - alpha m / (sqrt(v) + eps)``): every coordinate moves by about the learning
    rate, whatever its gradient's size ("makes good progress, but will not converge"). It is
    Adam without averaging: ``scale_by_adam(b1=0, b2=0, eps=eps)`` gives the same numbers,
    with no state to store. As ``eps -> 0`` it is ``sign(g)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> normalize = optim.scale_by_normalized_gradient(eps=0.0)
        >>> updates, _ = normalize.update(jnp.array([3.0, -2.0, 5.0]), normalize.init(jnp.zeros(3)))
        >>> updates  # the seeds' worked example
        Array([ 1., -1.,  1.], dtype=float32)
    """
    return stateless("scale_by_normalized_gradient",
                     lambda updates: jax.tree.map(lambda g: g / (jnp.sqrt(g**2) + eps), updates))


# ---------------------------------------------------------------------------------------
# Weight decay


class WeightDecayScheduleState(NamedTuple):
    count: jax.Array  # steps taken (int32), the argument of the weight-decay schedule


def _expand_mask(where: str, mask: Any, updates: Any) -> Any:
    """One static bool per leaf of ``updates`` from a mask that may be a prefix of its tree."""
    try:
        flags = jax.tree.map(lambda flag, subtree: jax.tree.map(lambda _: flag, subtree), mask, updates)
    except ValueError as error:
        raise ValueError(f"{where}: expected mask with the tree structure of the params (or a prefix of it), got "
                         f"{jax.tree.structure(mask)} for params {jax.tree.structure(updates)}") from error
    for flag in jax.tree.leaves(flags):
        check_that(isinstance(flag, (bool, np.bool_)), where, "mask leaves to be Python bools (the mask must be "
                   "static)", repr(flag), TypeError)
    return jax.tree.map(bool, flags)


@checks_arguments
def add_decayed_weights(
    weight_decay: NonNegativeOrSchedule = 0.0,
    mask: Optional[Union[Any, Callable[[Any], Any]]] = None,
) -> GradientTransformation:
    r"""L2 weight decay as a transformation: ``u = g + weight_decay * params``.

    Followed by the learning rate this is the gradient of ``loss + weight_decay/2 |w|^2``;
    placed after an adaptive scaling (as in :func:`~jdl.optim.adamw`) it is decoupled weight
    decay (Loshchilov & Hutter 2019). ``weight_decay`` may be a schedule of the step count.
    ``mask`` (a tree of bools with the params' structure or a prefix of it, or a function
    of the params returning one) limits the decay to the leaves marked ``True``, e.g. no
    decay on biases: ``mask=lambda p: jax.tree.map(lambda x: x.ndim > 1, p)``.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> params = {"w": jnp.array([2.0]), "b": jnp.array([2.0])}
        >>> decay = optim.add_decayed_weights(0.5, mask={"w": True, "b": False})
        >>> grads = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
        >>> updates, _ = decay.update(grads, decay.init(params), params)
        >>> updates["w"], updates["b"]
        (Array([2.], dtype=float32), Array([1.], dtype=float32))
    """
    where = "add_decayed_weights"
    scheduled = callable(weight_decay)

    def init(params):
        del params
        return WeightDecayScheduleState(count=zero_count()) if scheduled else EmptyState()

    def update(updates, state, params=None):
        if scheduled:
            rate, state = weight_decay(state.count), WeightDecayScheduleState(count=safe_increment(state.count))
        else:
            rate = weight_decay
            if isinstance(rate, (int, float)) and rate == 0:  # nothing to add; params not needed
                return updates, state
        check_that(params is not None, where, "params (the decay is weight_decay * params)", "None")
        check_updates(where, updates, params, "params")
        if mask is None:
            flags = jax.tree.map(lambda _: True, updates)
        else:
            flags = _expand_mask(where, mask(updates) if callable(mask) else mask, updates)
        updates = jax.tree.map(lambda flag, g, p: g + rate * p if flag else g, flags, updates, params)
        return updates, state

    return GradientTransformation(init, update)


class AddNoiseState(NamedTuple):
    """The step count ``t`` (int32) and the key the next step's noise is drawn from."""

    count: jax.Array
    rng_key: jax.Array


def add_noise(eta: NonNegative, gamma: NonNegative, key: Union[jax.Array, int] = 0) -> GradientTransformation:
    r"""Gradient noise (Neelakantan et al., 2015): ``u = g + sigma_t n``, ``n ~ N(0, I)``, ``sigma_t^2 = eta / t^gamma``.

    Noise on the gradient is the course's "noise on the weights" applied to the step: it
    helps a deep network's optimiser leave flat regions and poor minima early, and is
    annealed away (``gamma = 0.55`` in the paper) so that late steps are the plain gradient's.
    ``t`` counts steps from 1. Each step splits the state's key into the next state's key and
    this step's, then one key per leaf (in tree order): optax's ``add_noise`` draws, so the
    two give the same noise for the same key.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import optim
        >>> noisy = optim.add_noise(eta=0.01, gamma=0.55, key=jax.random.key(0))
        >>> grads = {"w": jnp.zeros(3)}
        >>> updates, state = noisy.update(grads, noisy.init(grads))
        >>> updates["w"].shape, int(state.count)
        ((3,), 1)
    """
    eta, gamma = float(eta), float(gamma)
    check_that(np.isfinite(eta) and eta >= 0, "add_noise", "eta (the noise's base variance) finite and >= 0", eta)
    check_that(np.isfinite(gamma) and gamma >= 0, "add_noise", "gamma (the annealing exponent) finite and >= 0", gamma)
    base_key = jax.random.key(key) if isinstance(key, int) else key

    def init(params):
        del params
        return AddNoiseState(count=zero_count(), rng_key=base_key)

    def update(updates, state, params=None):
        del params
        count = safe_increment(state.count)
        stddev = jnp.sqrt(eta / count.astype(jnp.float32) ** gamma)
        next_key, step_key = jax.random.split(state.rng_key)
        leaves, treedef = jax.tree.flatten(updates)
        keys = jax.random.split(step_key, len(leaves))
        noisy = [g + stddev.astype(g.dtype) * jax.random.normal(k, g.shape, g.dtype) for g, k in zip(leaves, keys)]
        return jax.tree.unflatten(treedef, noisy), AddNoiseState(count=count, rng_key=next_key)

    return GradientTransformation(init, update)
