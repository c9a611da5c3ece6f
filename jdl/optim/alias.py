"""The optimizers: the course's update rules, each a :func:`~jdl.optim.chain` of building blocks.

Names, argument names, defaults and state layouts mirror optax's ``alias.py``, so
``jdl.optim.adam(1e-3)`` replaces ``optax.adam(1e-3)`` with one import and gives the same
numbers. Every ``learning_rate`` may be a number or a schedule (a function of the step
count). Where the course's form of a rule differs from optax's, an argument selects the
course's form and the docstring gives the mapping:

==================================  ==========================================================
the course (seeds/)                 jdl
==================================  ==========================================================
gradient descent / SGD              ``sgd(lr)``
momentum ``v = a v - lr g``         ``sgd(lr, momentum=a)`` (optax's trace form, ``v = -lr m``)
momentum ``m = b m + (1 - b) g``    ``sgd(lr, momentum=b, moving_average=True)``
                                    (= ``sgd(lr * (1 - b), momentum=b)``)
Nesterov, look-ahead gradient       ``nesterov_lookahead(lr, momentum)``; its look-ahead points
                                    are ``sgd(lr, momentum, nesterov=True)``'s iterates
normalized gradients                ``normalized_sgd(lr, eps)`` (= ``adam(lr, b1=0, b2=0)``)
AdaGrad, sum starting at 0          ``adagrad(lr, initial_accumulator_value=0.0)``
AdaDelta (no learning rate)         ``adadelta()`` (= ``optax.adadelta(1.0)``, see below)
RMSProp, eps inside / outside root  ``rmsprop(lr, eps_in_sqrt=True / False)``
Adam, eps outside the root          ``adam(lr, eps=eps)``
Adam, eps inside the root           ``adam(lr, eps=0.0, eps_root=eps)``
NAdam as in seeds/002               ``nadam(lr, nesterov_form="textbook")``
AdamW / L2 decay                    ``adamw(lr, weight_decay, mask)``, ``add_decayed_weights``
==================================  ==========================================================

Bad hyperparameters (a negative learning rate, a decay rate outside [0, 1)) and gradients
whose tree structure or leaf shapes differ from the state's raise a ``ValueError`` that
names the optimizer and the building block that saw the problem.

Example:
    >>> import jax, jax.numpy as jnp
    >>> from jdl import optim
    >>> loss = lambda params: jnp.sum(params["w"] ** 2)
    >>> params = {"w": jnp.array([1.0, -2.0])}
    >>> optimizer = optim.adam(learning_rate=0.1)
    >>> state = optimizer.init(params)
    >>> @jax.jit
    ... def step(params, state):
    ...     updates, state = optimizer.update(jax.grad(loss)(params), state, params)
    ...     return optim.apply_updates(params, updates), state
    >>> for _ in range(100):
    ...     params, state = step(params, state)
    >>> bool(loss(params) < 1e-2)
    True
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Union

import jax

from jdl.optim.base import (
    GradientTransformation, OptState, Params, ScalarOrSchedule, chain, identity, scale_by_learning_rate,
)
from jdl.optim.transform import (
    add_decayed_weights, scale_by_adadelta, scale_by_adam, scale_by_normalized_gradient, scale_by_rms, scale_by_rss,
    scale_by_stddev, trace,
)

__all__ = [
    "sgd", "LookaheadTransformation", "nesterov_lookahead", "normalized_sgd",
    "adagrad", "adadelta", "rmsprop", "adam", "nadam", "adamw",
]

MaskOrFn = Optional[Union[Any, Callable[[Params], Any]]]


def _named(name: str, build: Callable[[], GradientTransformation]) -> GradientTransformation:
    """Build an optimizer from blocks; errors from a block also name the optimizer called.

    ``adam(-1.0)`` raises ``adam: scale_by_learning_rate: expected learning_rate >= 0, got
    -1.0``: the optimizer the user called, then the block that saw the problem.
    """
    try:
        transform = build()
    except (ValueError, TypeError) as error:
        if type(error) not in (ValueError, TypeError):
            raise
        raise type(error)(f"{name}: {error}") from None

    def update(updates, state, params=None):
        try:
            return transform.update(updates, state, params)
        except ValueError as error:
            if type(error) is not ValueError:
                raise
            raise ValueError(f"{name}: {error}") from None

    return GradientTransformation(transform.init, update)


# ---------------------------------------------------------------------------------------
# Gradient descent and momentum


def sgd(
    learning_rate: ScalarOrSchedule,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    accumulator_dtype: Optional[Any] = None,
    *,
    moving_average: bool = False,
) -> GradientTransformation:
    r"""Stochastic gradient descent, with optional momentum and Nesterov momentum.

    Without momentum: ``w_t = w_{t-1} - lr g_t`` (seeds/000, seeds/001 "SGD").
    With ``momentum=mu`` (optax's trace form, the default)::

        m_t = g_t + mu m_{t-1}
        w_t = w_{t-1} - lr m_t                      (nesterov=False)
        w_t = w_{t-1} - lr (g_t + mu m_t)           (nesterov=True)

    **The course's velocity form** ``v_t = mu v_{t-1} - lr g_t, w_t = w_{t-1} + v_t``
    (seeds/000 "SGD with momentum" with ``v -> -v``, seeds/002 2.5.1, seeds/003) is this with
    ``v_t = -lr m_t``: the same iterates for a constant learning rate (up to rounding). With a
    schedule the velocity form keeps each step's own rate inside ``v``; that is
    :func:`nesterov_lookahead` with the gradient taken at the params.

    **The course's moving-average form** (``moving_average=True``; seeds/001 "Adding
    Momentum")::

        m_t = mu m_{t-1} + (1 - mu) g_t,    w_t = w_{t-1} - lr m_t

    is the trace form with the learning rate scaled by ``1 - mu``:
    ``sgd(lr, mu, moving_average=True)`` equals ``sgd(lr * (1 - mu), mu)`` (also with
    ``nesterov=True``, where the step is ``mu m_t + (1 - mu) g_t``), and equals
    ``optax.chain(optax.ema(mu, debias=False), optax.scale_by_learning_rate(lr))``.

    **Nesterov**: ``nesterov=True`` is the reformulation of Sutskever et al. (2013) in which the
    params held are the look-ahead point, so the gradient is taken at the params; the
    course's form with an explicit look-ahead is :func:`nesterov_lookahead`, whose look-ahead
    points equal this optimizer's iterates.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> optimizer = optim.sgd(learning_rate=0.1, momentum=0.9)
        >>> params = jnp.array([1.0])
        >>> state = optimizer.init(params)
        >>> for _ in range(2):
        ...     updates, state = optimizer.update(2 * params, state)  # gradient of w^2
        ...     params = optim.apply_updates(params, updates)
        >>> params  # 1 - 0.2 = 0.8, then 0.8 - 0.1 (1.6 + 0.9 * 2)
        Array([0.46], dtype=float32)
    """

    def build():
        if momentum is None:
            if nesterov or moving_average:
                raise ValueError("expected a momentum value with nesterov=True or moving_average=True, got None")
            first = identity()
        else:
            first = trace(momentum, nesterov, accumulator_dtype, moving_average=moving_average)
        return chain(first, scale_by_learning_rate(learning_rate))

    return _named("sgd", build)


class LookaheadTransformation(NamedTuple):
    """An optimizer whose gradient is taken at ``lookahead(params, state)``, not at the params."""

    init: Callable[[Params], OptState]
    update: Callable[..., tuple[Any, OptState]]
    lookahead: Callable[[Params, OptState], Params]


def nesterov_lookahead(learning_rate: ScalarOrSchedule, momentum: float = 0.9) -> LookaheadTransformation:
    r"""Nesterov's accelerated gradient in the course's look-ahead form.

    seeds/003 "Nesterov acc. gradient" (seeds/000 and seeds/002 2.5.2 with ``v -> -v``)::

        theta_tilde = theta_{t-1} + mu v_{t-1}            look-ahead point
        v_t         = mu v_{t-1} - lr grad L(theta_tilde)
        theta_t     = theta_{t-1} + v_t

    Call ``optimizer.lookahead(params, state)`` for ``theta_tilde``, take the gradient there,
    and pass it to ``update``. ``update`` itself is momentum in velocity form,
    ``chain(scale_by_learning_rate(lr), trace(mu))``, so taking the gradient at the params
    instead gives classical momentum ``v_t = mu v_{t-1} - lr g_t``.

    **Mapping to optax.** ``optax.sgd(lr, mu, nesterov=True)`` holds the look-ahead point
    ``phi_t = theta_t + mu v_t`` as its params (Sutskever et al. 2013; Bengio et al. 2013):
    substituting gives ``phi_t = phi_{t-1} - lr (g_t + mu m_t)`` with ``m_t = g_t + mu m_{t-1}``
    and ``g_t = grad L(phi_{t-1})``, the trace form of :func:`sgd`. So from the same start
    (``v_0 = 0``, hence ``phi_0 = theta_0``) and a constant learning rate, the sequence
    ``lookahead(theta_t, state_t)`` is exactly the sequence of ``sgd(lr, mu, nesterov=True)``
    params, and ``theta_t = phi_t + lr mu m_t``.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from jdl import optim
        >>> loss = lambda w: jnp.sum(w ** 2)
        >>> optimizer = optim.nesterov_lookahead(learning_rate=0.1, momentum=0.9)
        >>> params = jnp.array([1.0])
        >>> state = optimizer.init(params)
        >>> for _ in range(2):
        ...     grads = jax.grad(loss)(optimizer.lookahead(params, state))
        ...     updates, state = optimizer.update(grads, state)
        ...     params = optim.apply_updates(params, updates)
        >>> params.round(4)  # v = -0.2; look-ahead 0.8 - 0.18, v = -0.18 - 0.1 * 2 * 0.62
        Array([0.496], dtype=float32)
    """

    def build():
        return chain(scale_by_learning_rate(learning_rate), trace(momentum))

    transform = _named("nesterov_lookahead", build)

    def lookahead(params, state):
        velocity = state[1].trace
        return jax.tree.map(lambda p, v: (p + momentum * v).astype(p.dtype), params, velocity)

    return LookaheadTransformation(transform.init, transform.update, lookahead)


def normalized_sgd(learning_rate: ScalarOrSchedule, eps: float = 1e-8) -> GradientTransformation:
    r"""The course's "normalized gradients": ``w_t = w_{t-1} - lr g_t / (sqrt(g_t^2) + eps)``.

    seeds/001 "Normalized Gradients" (``m = g``, ``v = g^2``, no averaging). It equals
    ``optax.adam(lr, b1=0.0, b2=0.0, eps=eps)`` (with ``b = 0`` Adam's moments are the
    current gradient and its square, and the bias corrections are 1) without Adam's two
    stored moments; see :func:`~jdl.optim.scale_by_normalized_gradient`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> optimizer = optim.normalized_sgd(learning_rate=0.1)
        >>> updates, _ = optimizer.update(jnp.array([3.0, -2.0, 5.0]), optimizer.init(jnp.zeros(3)))
        >>> updates
        Array([-0.1,  0.1, -0.1], dtype=float32)
    """
    return _named("normalized_sgd", lambda: chain(
        scale_by_normalized_gradient(eps),
        scale_by_learning_rate(learning_rate),
    ))


# ---------------------------------------------------------------------------------------
# Adaptive learning rates


def adagrad(
    learning_rate: ScalarOrSchedule,
    initial_accumulator_value: float = 0.1,
    eps: float = 1e-7,
) -> GradientTransformation:
    r"""AdaGrad (Duchi et al. 2011): a per-coordinate rate shrinking with the gradients seen.

    seeds/002 2.5.3 and seeds/003::

        G_t = G_{t-1} + g_t^2
        w_t = w_{t-1} - lr g_t / sqrt(G_t + eps)

    The course starts ``G_0 = 0``; optax starts at ``initial_accumulator_value=0.1``: pass
    ``initial_accumulator_value=0.0`` for the course's rule. eps is inside the root in both.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> optimizer = optim.adagrad(learning_rate=1.0, initial_accumulator_value=0.0, eps=0.0)
        >>> state = optimizer.init(jnp.zeros(1))
        >>> updates, state = optimizer.update(jnp.array([3.0]), state)
        >>> updates, state = optimizer.update(jnp.array([4.0]), state)
        >>> updates  # -4 / sqrt(9 + 16)
        Array([-0.8], dtype=float32)
    """
    return _named("adagrad", lambda: chain(
        scale_by_rss(initial_accumulator_value=initial_accumulator_value, eps=eps),
        scale_by_learning_rate(learning_rate),
    ))


def adadelta(
    learning_rate: Optional[ScalarOrSchedule] = None,
    rho: float = 0.9,
    eps: float = 1e-6,
    weight_decay: ScalarOrSchedule = 0.0,
    weight_decay_mask: MaskOrFn = None,
) -> GradientTransformation:
    r"""AdaDelta (Zeiler 2012): step sizes from the ratio of the updates' and gradients' RMS.

    seeds/002 2.5.4::

        E[g^2]_t  = rho E[g^2]_{t-1} + (1 - rho) g_t^2
        dw_t      = -lr sqrt(E[dw^2]_{t-1} + eps) / sqrt(E[g^2]_t + eps) g_t
        E[dw^2]_t = rho E[dw^2]_{t-1} + (1 - rho) (dw_t / lr)^2

    (``E[dw^2]`` tracks the unscaled step, as in optax). The course's rule has no learning
    rate: that is ``learning_rate=None``, the default, which steps *down* the gradient with
    rate 1 and equals ``optax.adadelta(1.0)``. (optax 0.2.8's ``adadelta(None)`` skips the
    final ``-learning_rate`` scaling and so steps *up* the gradient; jdl does not copy that.)
    ``weight_decay`` adds L2 decay to the gradient first (see :func:`add_decayed_weights`).

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> optimizer = optim.adadelta(rho=0.0, eps=1.0)
        >>> updates, _ = optimizer.update(jnp.array([jnp.sqrt(3.0)]), optimizer.init(jnp.zeros(1)))
        >>> updates  # -sqrt(0 + 1) / sqrt(3 + 1) * sqrt(3)
        Array([-0.8660254], dtype=float32)
    """
    rate = 1.0 if learning_rate is None else learning_rate
    return _named("adadelta", lambda: chain(
        add_decayed_weights(weight_decay, mask=weight_decay_mask),
        scale_by_adadelta(rho=rho, eps=eps),
        scale_by_learning_rate(rate),
    ))


def rmsprop(
    learning_rate: ScalarOrSchedule,
    decay: float = 0.9,
    eps: float = 1e-8,
    initial_scale: float = 0.0,
    eps_in_sqrt: bool = True,
    centered: bool = False,
    momentum: Optional[float] = None,
    nesterov: bool = False,
    bias_correction: bool = False,
) -> GradientTransformation:
    r"""RMSProp (Hinton 2012): divide by the root of a moving average of squared gradients.

    seeds/003 "RMS Prop" and seeds/000 (its "AdaDelta" paragraph, ``eta / sqrt(eda_t + eps)``)::

        v_t = decay v_{t-1} + (1 - decay) g_t^2
        w_t = w_{t-1} - lr g_t / sqrt(v_t + eps)      (eps_in_sqrt=True: seeds/000, optax)
        w_t = w_{t-1} - lr g_t / (sqrt(v_t) + eps)    (eps_in_sqrt=False: PyTorch)

    (seeds/003 has no eps: either form with ``eps=0``.) ``centered=True`` divides by the
    root of ``v_t - m_t^2``, ``m_t`` the moving average of the gradients (Graves 2013);
    ``momentum=mu`` adds a velocity ``v = mu v - lr g / sqrt(...)`` after the learning rate
    (Nesterov with ``nesterov=True``); ``bias_correction`` divides the moments by
    ``1 - decay^t``; ``initial_scale`` is ``v_0`` (PyTorch 0, TensorFlow 1).

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> optimizer = optim.rmsprop(learning_rate=0.1, decay=0.75, eps=0.0)
        >>> updates, _ = optimizer.update(jnp.array([2.0]), optimizer.init(jnp.zeros(1)))
        >>> updates  # -0.1 * 2 / sqrt(0.25 * 4)
        Array([-0.2], dtype=float32)
    """

    def build():
        if momentum is None and nesterov:
            raise ValueError("expected a momentum value with nesterov=True, got None")
        scaling = scale_by_stddev if centered else scale_by_rms
        return chain(
            scaling(decay=decay, eps=eps, initial_scale=initial_scale, eps_in_sqrt=eps_in_sqrt,
                    bias_correction=bias_correction),
            scale_by_learning_rate(learning_rate),
            trace(momentum, nesterov) if momentum is not None else identity(),
        )

    return _named("rmsprop", build)


def _adam(name: str, learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, nesterov_form,
          *weight_decay_and_mask) -> GradientTransformation:
    """Adam's scaling, then (given ``weight_decay, mask``: AdamW) decoupled weight decay, then ``-learning_rate``."""

    def build():
        scaling = scale_by_adam(b1, b2, eps, eps_root, mu_dtype, nesterov=nesterov, nesterov_form=nesterov_form)
        decay = [add_decayed_weights(*weight_decay_and_mask)] if weight_decay_and_mask else []
        return chain(scaling, *decay, scale_by_learning_rate(learning_rate))

    return _named(name, build)


def adam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 0.0,
         mu_dtype: Optional[Any] = None, *, nesterov: bool = False,
         nesterov_form: str = "dozat") -> GradientTransformation:
    r"""Adam (Kingma & Ba 2014): momentum and RMS scaling, with bias correction.

    seeds/001 "Adaptive moment estimation (Adam)" and seeds/000::

        m_t = b1 m_{t-1} + (1 - b1) g_t             v_t = b2 v_{t-1} + (1 - b2) g_t^2
        m_hat = m_t / (1 - b1^t)                    v_hat = v_t / (1 - b2^t)
        w_t = w_{t-1} - lr m_hat / (sqrt(v_hat + eps_root) + eps)

    eps outside the root is seeds/001's (and optax's, PyTorch's) form; seeds/000 and seeds/003
    put it inside, ``m_hat / sqrt(v_hat + eps)``: ``adam(lr, eps=0.0, eps_root=eps)``.
    ``eps = eps_root = 0`` is allowed, but then a coordinate whose gradients have all been 0
    gets ``0 / 0 = NaN`` (as optax). ``nesterov=True`` is :func:`nadam`. See
    :func:`~jdl.optim.scale_by_adam`.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> optimizer = optim.adam(learning_rate=0.1)
        >>> updates, _ = optimizer.update(jnp.array([0.5, -3.0]), optimizer.init(jnp.zeros(2)))
        >>> [round(u, 4) for u in updates.tolist()]  # the first step is -lr sign(g)
        [-0.1, 0.1]
    """
    return _adam("adam", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, nesterov_form)


def nadam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 0.0,
          mu_dtype: Optional[Any] = None, *, nesterov_form: str = "dozat") -> GradientTransformation:
    r"""NAdam (Dozat 2016): Adam whose first moment looks one step ahead.

    seeds/002 2.5.6::

        w_t = w_{t-1} - lr / (sqrt(v_hat) + eps) (b1 m_hat + (1 - b1) g_t / (1 - b1^t))

    with Adam's ``m_hat = m_t / (1 - b1^t)`` and ``v_hat``: ``nesterov_form="textbook"``.
    optax (the default, ``"dozat"``) corrects the momentum term by the *next* step's factor,
    ``b1 m_t / (1 - b1^(t+1))``, as Dozat's paper does with a momentum schedule. The two
    differ by a factor ``(1 - b1^t) / (1 - b1^(t+1))`` on the momentum term, which tends to 1.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> optimizer = optim.nadam(learning_rate=0.1, nesterov_form="textbook")
        >>> updates, _ = optimizer.update(jnp.array([0.5, -3.0]), optimizer.init(jnp.zeros(2)))
        >>> updates.round(4)  # first step: -lr (b1 m_hat + (1 - b1) g / (1 - b1)) = -lr 1.9 sign(g)
        Array([-0.19,  0.19], dtype=float32)
    """
    return _adam("nadam", learning_rate, b1, b2, eps, eps_root, mu_dtype, True, nesterov_form)


def adamw(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8, eps_root: float = 0.0,
          mu_dtype: Optional[Any] = None, weight_decay: ScalarOrSchedule = 1e-4, mask: MaskOrFn = None, *,
          nesterov: bool = False, nesterov_form: str = "dozat") -> GradientTransformation:
    r"""AdamW (Loshchilov & Hutter 2019): Adam with decoupled weight decay.

    ::

        w_t = w_{t-1} - lr (m_hat / (sqrt(v_hat + eps_root) + eps) + weight_decay w_{t-1})

    The decay is added after Adam's scaling, so it is not divided by ``sqrt(v_hat)`` as an L2
    term in the loss would be; it is multiplied by the learning rate (as optax and PyTorch).
    ``mask`` (a tree of bools or a function of the params) selects the leaves decayed; Adam's
    scaling applies to all.

    Example:
        >>> import jax.numpy as jnp
        >>> from jdl import optim
        >>> params = {"w": jnp.array([1.0]), "b": jnp.array([1.0])}
        >>> optimizer = optim.adamw(0.1, weight_decay=0.5, mask={"w": True, "b": False})
        >>> grads = {"w": jnp.array([2.0]), "b": jnp.array([2.0])}
        >>> updates, _ = optimizer.update(grads, optimizer.init(params), params)
        >>> round(updates["w"].item(), 4), round(updates["b"].item(), 4)  # -0.1 (1 + 0.5 * 1), -0.1 * 1
        (-0.15, -0.1)
    """
    return _adam("adamw", learning_rate, b1, b2, eps, eps_root, mu_dtype, nesterov, nesterov_form, weight_decay, mask)
