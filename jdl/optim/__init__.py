"""Hand-written optimizers, schedules and clipping with optax's interface and names.

``jdl.optim.adam(1e-3)`` can replace ``optax.adam(1e-3)`` with one import; every rule
is tested step by step against its optax twin (or, where optax has none, against a
transcription of the course's formula).
"""
from jdl.optim.base import (
    EmptyState, GradientTransformation, ScaleByScheduleState, apply_updates, chain, identity, scale,
    scale_by_learning_rate, scale_by_schedule,
)
from jdl.optim.transform import (
    EmaState, ScaleByAdaDeltaState, ScaleByAdamState, ScaleByRmsState, ScaleByRmsWithCountState, ScaleByRssState,
    ScaleByRStdDevState, ScaleByRStdDevWithCountState, TraceState, WeightDecayScheduleState, add_decayed_weights, ema,
    AddNoiseState, add_noise,
    scale_by_adadelta, scale_by_adam, scale_by_normalized_gradient, scale_by_rms, scale_by_rss, scale_by_stddev, trace,
)
from jdl.optim.alias import (
    LookaheadTransformation, adadelta, adagrad, adam, adamw, nadam, nesterov_lookahead, normalized_sgd, rmsprop, sgd,
)
from jdl.optim.clipping import clip, clip_by_block_rms, clip_by_global_norm, clip_by_leaf_norm, global_norm
from jdl.optim.schedule import (
    constant_schedule, cosine_decay_schedule, exponential_decay, join_schedules, linear_schedule,
    piecewise_constant_schedule, polynomial_schedule, warmup_cosine_decay_schedule,
)
from jdl.optim.partition import (
    MaskedNode, MaskedState, MultiTransformState, masked, multi_transform, set_to_zero,
)
from jdl.optim.wrappers import (
    ApplyIfFiniteState, MultiSteps, MultiStepsState, apply_if_finite, has_updated, multi_steps,
)

__all__ = [
    "GradientTransformation", "EmptyState", "ScaleByScheduleState",
    "identity", "chain", "apply_updates", "scale", "scale_by_schedule", "scale_by_learning_rate",
    "constant_schedule", "linear_schedule", "polynomial_schedule", "exponential_decay",
    "cosine_decay_schedule", "warmup_cosine_decay_schedule", "piecewise_constant_schedule",
    "join_schedules",
    "clip", "clip_by_global_norm", "clip_by_leaf_norm", "clip_by_block_rms", "global_norm",
    "multi_steps", "MultiSteps", "MultiStepsState", "has_updated",
    "apply_if_finite", "ApplyIfFiniteState",
    "masked", "MaskedNode", "MaskedState", "multi_transform", "MultiTransformState", "set_to_zero",
    "trace", "TraceState", "ema", "EmaState", "scale_by_rss", "ScaleByRssState",
    "scale_by_rms", "ScaleByRmsState", "ScaleByRmsWithCountState",
    "scale_by_stddev", "ScaleByRStdDevState", "ScaleByRStdDevWithCountState",
    "scale_by_adam", "ScaleByAdamState", "scale_by_adadelta", "ScaleByAdaDeltaState",
    "scale_by_normalized_gradient", "add_decayed_weights", "WeightDecayScheduleState", "add_noise", "AddNoiseState",
    "sgd", "nesterov_lookahead", "LookaheadTransformation", "normalized_sgd",
    "adagrad", "adadelta", "rmsprop", "adam", "nadam", "adamw",
]
