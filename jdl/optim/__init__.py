"""Hand-written optimizers, schedules and clipping with optax's interface and names.

``jdl.optim.adam(1e-3)`` can replace ``optax.adam(1e-3)`` with one import; every rule
is tested step by step against its optax twin (or, where optax has none, against a
transcription of the course's formula).
"""
from jdl.optim.base import (
    EmptyState,
    GradientTransformation,
    ScaleByScheduleState,
    apply_updates,
    chain,
    identity,
    scale,
    scale_by_learning_rate,
    scale_by_schedule,
)

__all__ = [
    "GradientTransformation", "EmptyState", "ScaleByScheduleState",
    "identity", "chain", "apply_updates", "scale", "scale_by_schedule", "scale_by_learning_rate",
]
