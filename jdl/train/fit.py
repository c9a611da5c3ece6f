"""``fit``: the host loop around a compiled training loop.

Each iteration of :func:`fit` runs one *chunk* (``run(train_state, data)``, e.g. a few
epochs of :func:`jdl.train.epoch_loop`, compiled once), then, on the host:

1. averages the chunk's step metrics (``train/loss``, ...) and calls ``evaluate(train_state)``
   (``eval/loss``, ``eval/accuracy``, ...);
2. appends a record to the history, to a JSON-lines file and to TensorBoard if asked;
3. applies the rules on the monitored metric (``eval/loss`` by default, ``mode="min"``):

   * **early stopping with patience** (seed 002, section 2.6.6): with ``patience=P``, stop
     when the metric has not improved for ``P`` consecutive evaluations, and return the
     train state of the best evaluation. "Improved" means better than the best so far
     (``stopping_rule="best"``, Keras's and most libraries' rule) or than the evaluation
     just before (``stopping_rule="previous"``: seed 002's formula, "val_loss_i >=
     val_loss_{i-1} for P consecutive epochs");
   * **the learning rate divided by 10 on a plateau** (seed 002's ResNet recipe): with
     ``plateau_patience=Q``, multiply the learning rate by ``plateau_factor`` (0.1) after
     ``Q`` evaluations without improvement on the best, then count again. This needs the
     optimizer wrapped by :func:`jdl.train.with_lr_factor` (its factor lives in the
     optimizer state, so nothing recompiles);
4. saves a checkpoint every ``checkpoint_every`` chunks and whenever the monitored metric
   improves (with ``checkpoint_dir``), the bookkeeping of these rules and the history in its
   metadata. With ``resume=True`` a new call continues from the latest checkpoint: the same
   numbers as an uninterrupted run, because all randomness comes from the train state.

A non-finite training loss stops the run with ``FloatingPointError`` naming the step
(checkpoints already written stay as they are); NaN is never compared as if it were a number.

Under an ensemble (train states stacked on axis 0 and a vmapped ``run``/``evaluate``), the
history keeps each member's value and the rules read the members' mean.

Example:
    >>> import jax, jax.numpy as jnp, jdl
    >>> from jdl import nn, optim
    >>> x = jax.random.normal(jax.random.key(0), (64, 4)); y = (x[:, 0] > 0).astype(jnp.int32)
    >>> model, optimizer = nn.Dense(2), optim.adam(0.05)
    >>> loss = jdl.losses.softmax_cross_entropy_with_integer_labels
    >>> run = jdl.train.compile_loop(jdl.train.epoch_loop(jdl.train.train_step(model, loss, optimizer), 16, 5))
    >>> evaluate = jax.jit(lambda ts: jdl.train.eval_step(model, loss, metrics={"accuracy": jdl.metrics.accuracy})(ts, (x, y)))
    >>> result = jdl.train.fit(jdl.train.init(model, optimizer, jax.random.key(1), x), run, (x, y), chunks=4,
    ...                        evaluate=evaluate, monitor="eval/accuracy", mode="max", progress=False)
    >>> [record["step"] for record in result.history], result.history[-1]["eval/accuracy"] > 0.9
    ([20, 40, 60, 80], True)
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any, Callable, Literal, NamedTuple

import jax
import numpy as np

from jdl import io
from jdl._checks import PositiveInt, check_that, checks_arguments
from jdl.train.state import TrainState, lr_factor, scale_lr_factor

__all__ = ["fit", "FitResult", "Watch"]


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    ``train_state`` is the best evaluation's when early stopping restored it
    (``restored_best``), else the last one. ``history`` holds one record per chunk: ``step``,
    ``chunk``, ``seconds``, ``lr_factor`` and the metrics (a float, or a list per ensemble
    member).
    """

    train_state: TrainState
    history: list
    best_step: int | None
    best_value: float | None
    stopped_early: bool
    restored_best: bool

    def series(self, name: str) -> np.ndarray:
        """One metric over the history, as an array (``(records,)`` or ``(records, members)``)."""
        return np.asarray([record[name] for record in self.history])


class Watch(NamedTuple):
    """The bookkeeping of the monitored metric: saved in checkpoints, so a resumed run keeps its counts."""

    best_value: float | None = None
    best_step: int | None = None
    previous_value: float | None = None
    since_best: int = 0  # evaluations without improving on the best (plateau; early stopping "best")
    since_previous: int = 0  # consecutive evaluations not better than the one before (early stopping "previous")
    since_plateau: int = 0  # evaluations without improvement since the last LR cut

    def better(self, value: float, than: float | None, mode: str, min_delta: float) -> bool:
        if than is None:
            return True
        return value < than - min_delta if mode == "min" else value > than + min_delta

    def update(self, value: float, step: int, mode: str, min_delta: float) -> "Watch":
        improved = self.better(value, self.best_value, mode, min_delta)
        rose = self.better(value, self.previous_value, mode, min_delta)
        return Watch(value if improved else self.best_value, step if improved else self.best_step, value,
                     0 if improved else self.since_best + 1, 0 if rose else self.since_previous + 1,
                     0 if improved else self.since_plateau + 1)


# ---------------------------------------------------------------------------------------
# Records: host values of the metrics, written as JSON lines and to TensorBoard


def _host_value(value: Any) -> float | list:
    array = np.asarray(jax.device_get(value), np.float64)
    return float(array) if array.ndim == 0 else array.tolist()


def _chunk_means(metrics: dict, ensemble: bool) -> dict:
    """Each step metric's mean over the chunk: over every axis but an ensemble's leading one."""
    out = {}
    for name, value in metrics.items():
        value = np.asarray(jax.device_get(value), np.float64)
        out[f"train/{name}"] = _host_value(value.reshape(value.shape[0], -1).mean(axis=1) if ensemble
                                           else value.mean())
    return out


def _json_value(value: Any) -> Any:
    """Strict JSON for a metric: a non-finite float is written as the string "NaN", "Infinity" or "-Infinity"."""
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value


def _jsonable(record: dict) -> dict:
    return {name: _json_value(value) for name, value in record.items()}


def _monitored(record: dict, monitor: str) -> float:
    check_that(monitor in record, "jdl.train.fit", f"the monitored metric {monitor!r} among the metrics",
               sorted(k for k in record if "/" in k), KeyError)
    return float(np.mean(record[monitor]))


def _truncate_log(path: str, step: int) -> None:
    """Drop the JSON lines after ``step`` (written after the checkpoint a run resumes from)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        kept = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
    io.atomic_write_bytes(path, "".join(kept).encode())


def _append_line(path: str, record: dict) -> None:
    """One JSON line, appended and flushed to disk: a crash loses at most the line being written."""
    line = json.dumps(_jsonable(record), allow_nan=False) + "\n"
    with open(path, "a") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


class _Outputs:
    """Where records go: the JSON-lines file, TensorBoard, the progress bar."""

    def __init__(self, log_path, tensorboard_dir, progress, desc):
        from tqdm.auto import tqdm

        self.log_path = log_path
        self.writer = _tensorboard_writer(tensorboard_dir) if tensorboard_dir else None
        self.bar = tqdm(total=None, desc=desc, unit="step", disable=not progress)  # known after the first chunk

    def write(self, record: dict, steps_done: int) -> None:
        if self.log_path:
            _append_line(self.log_path, record)
        if self.writer is not None:
            for name, value in record.items():
                if "/" in name or name == "lr_factor":
                    self.writer.add_scalar(name, float(np.mean(value)), record["step"])
            self.writer.flush()
        self.bar.update(steps_done)
        self.bar.set_postfix({k: f"{np.mean(v):.4g}" for k, v in record.items() if "/" in k})

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def _tensorboard_writer(directory: str):
    try:
        from tensorboardX import SummaryWriter
    except ImportError as error:
        raise ImportError("jdl.train.fit(tensorboard_dir=...) needs tensorboardX: pip install 'jdl[tensorboard]'"
                          ) from error
    return SummaryWriter(directory)


# ---------------------------------------------------------------------------------------
# Checkpoints: the train state, with the rules' bookkeeping and the history as metadata


def _copy(train_state: TrainState) -> TrainState:
    """A copy on the device: the next chunk donates (and overwrites) the buffers of the state it gets."""
    return jax.tree.map(lambda leaf: leaf.copy(), train_state)


def _save(manager, train_state: TrainState, step: int, chunk: int, watch: Watch, history: list, monitor: str) -> None:
    value = watch.previous_value
    metrics = {monitor: value} if value is not None and math.isfinite(value) else None
    manager.save(step, train_state, metrics=metrics,
                 metadata={"fit": {"chunk": chunk, "watch": watch._asdict(), "history": [_jsonable(r) for r in history]}})


def _resume(manager, train_state: TrainState):
    """The latest checkpoint's train state, chunk, watch and history; ``None`` if there is none."""
    step = manager.latest_step()
    if step is None:
        return None
    restored = manager.restore(like=train_state, step=step)
    fit_meta = manager.read_metadata(step=step)["metadata"]["fit"]
    history = [{k: _from_json(v) for k, v in record.items()} for record in fit_meta["history"]]
    return restored, fit_meta["chunk"], Watch(**fit_meta["watch"]), history


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return float(value) if value in ("NaN", "Infinity", "-Infinity") else value


# ---------------------------------------------------------------------------------------
# The loop


class _Rules(NamedTuple):
    monitor: str
    mode: str
    min_delta: float
    patience: int | None
    stopping_rule: str
    plateau_patience: int | None
    plateau_factor: float

    def stop(self, watch: Watch) -> bool:
        count = watch.since_best if self.stopping_rule == "best" else watch.since_previous
        return self.patience is not None and count >= self.patience

    def cut_lr(self, watch: Watch) -> bool:
        return self.plateau_patience is not None and watch.since_plateau >= self.plateau_patience


def _check_rules(train_state: TrainState, evaluate: Any, rules: _Rules) -> None:
    needs_monitor = rules.patience is not None or rules.plateau_patience is not None
    check_that(not (needs_monitor and evaluate is None and rules.monitor.startswith("eval/")), "jdl.train.fit",
               f"evaluate=... to watch {rules.monitor!r} (patience/plateau_patience)", "evaluate=None")
    check_that(rules.plateau_patience is None or lr_factor(train_state.opt_state) is not None, "jdl.train.fit",
               "with plateau_patience, an optimizer wrapped by jdl.train.with_lr_factor(optimizer)",
               "an optimizer state without its factor")
    check_that(0 < rules.plateau_factor < 1, "jdl.train.fit", "plateau_factor in (0, 1)", rules.plateau_factor)


def _record(train_state, metrics, evaluate, ensemble, chunk, seconds) -> dict:
    record = {"step": int(np.max(jax.device_get(train_state.step))), "chunk": chunk}
    record.update(_chunk_means(metrics, ensemble))
    if evaluate is not None:
        record.update({f"eval/{name}": _host_value(value) for name, value in evaluate(train_state).items()})
    factor = lr_factor(train_state.opt_state)
    record["lr_factor"] = _host_value(factor) if factor is not None else 1.0
    record["seconds"] = seconds
    return record


def _check_finite_loss(record: dict) -> None:
    loss = record.get("train/loss")
    if loss is not None and not np.all(np.isfinite(loss)):
        raise FloatingPointError(f"jdl.train.fit: the training loss is {loss} in the chunk ending at step "
                                 f"{record['step']}; stopping (checkpoints already written are intact)")


@checks_arguments
def fit(train_state: TrainState, run: Callable, data: Any, *, chunks: PositiveInt, evaluate: Callable | None = None,
        ensemble: bool = False, monitor: str = "eval/loss", mode: Literal["min", "max"] = "min",
        min_delta: float = 0.0, patience: PositiveInt | None = None,
        stopping_rule: Literal["best", "previous"] = "best", plateau_patience: PositiveInt | None = None,
        plateau_factor: float = 0.1, checkpoint_dir: str | None = None, checkpoint_every: PositiveInt = 1,
        keep_checkpoints: PositiveInt = 3, resume: bool = True, log_path: str | None = None,
        tensorboard_dir: str | None = None, progress: bool = True, desc: str = "fit") -> FitResult:
    """Train for ``chunks`` calls of ``run(train_state, data) -> (train_state, step metrics)``.

    Returns a :class:`FitResult`; the ``train_state`` passed in is donated to ``run``. See
    the module docstring for the rules.

    Args:
        run, data: one chunk of training, e.g. ``compile_loop(epoch_loop(step, batch, epochs))``.
        chunks: how many calls of ``run`` in all (a resumed run counts those already done).
        evaluate: ``evaluate(train_state) -> {name: scalar}`` after every chunk (jit it); its
            values are recorded as ``eval/<name>``, the chunk's step metrics as ``train/<name>``.
        ensemble: the train state is a stack of members (``compile_loop(..., ensemble=True)``).
        monitor, mode, min_delta: the watched metric, whether lower or higher is better, and
            by how much a value must beat another to count as better.
        patience, stopping_rule: early stopping (``None``: off) and what a value is compared with.
        plateau_patience, plateau_factor: the learning-rate cut (``None``: off).
        checkpoint_dir, checkpoint_every, keep_checkpoints, resume: checkpoints every so many
            chunks and at each improvement, the last ``keep_checkpoints`` and the best kept;
            with ``resume``, continue from the latest one found in ``checkpoint_dir``.
        log_path: JSON lines, one record per chunk (rewritten from where a resumed run starts).
        tensorboard_dir: scalars for TensorBoard (needs ``tensorboardX``).
        progress, desc: the tqdm bar.
    """
    rules = _Rules(monitor, mode, min_delta, patience, stopping_rule, plateau_patience, plateau_factor)
    _check_rules(train_state, evaluate, rules)
    manager = _manager(checkpoint_dir, keep_checkpoints, monitor, mode)
    first_chunk, watch, history = 0, Watch(), []
    check_that(manager is None or resume or manager.latest_step() is None, "jdl.train.fit",
               "an empty checkpoint_dir with resume=False (or resume=True to continue it)",
               f"steps {manager.steps() if manager is not None else []} in {checkpoint_dir}", FileExistsError)
    resumed = _resume(manager, train_state) if manager is not None and resume else None
    if resumed is not None:
        train_state, first_chunk, watch, history = resumed
    if log_path:
        _truncate_log(log_path, history[-1]["step"] if history else 0)
    best = _best_at_start(manager, train_state, watch, patience)
    outputs = _Outputs(log_path, tensorboard_dir, progress, desc)
    stopped = False
    try:
        for chunk in range(first_chunk + 1, chunks + 1):
            start, step_before = time.perf_counter(), int(np.max(jax.device_get(train_state.step)))
            train_state, metrics = run(train_state, data)
            record = _record(train_state, metrics, evaluate, ensemble, chunk, time.perf_counter() - start)
            _check_finite_loss(record)
            if outputs.bar.total is None:
                outputs.bar.total = chunks * (record["step"] - step_before)
            watch, improved = _watch(watch, record, rules)
            if improved and patience is not None:
                best = _copy(train_state)
            if rules.cut_lr(watch):
                train_state = train_state._replace(opt_state=scale_lr_factor(train_state.opt_state, plateau_factor))
                watch = watch._replace(since_plateau=0)
            history.append(record)
            outputs.write(record, record["step"] - step_before)
            stopped = rules.stop(watch)
            if manager is not None and (chunk % checkpoint_every == 0 or improved or stopped or chunk == chunks):
                _save(manager, train_state, record["step"], chunk, watch, history, monitor)
            if stopped:
                break
    finally:
        outputs.close()
    restore = patience is not None and best is not None
    return FitResult(best if restore else train_state, history, watch.best_step, watch.best_value, stopped, restore)


def _watch(watch: Watch, record: dict, rules: _Rules) -> tuple[Watch, bool]:
    """The watch after this record, and whether the monitored metric improved on the best."""
    if rules.monitor not in record and rules.patience is None and rules.plateau_patience is None:
        return watch, False
    value = _monitored(record, rules.monitor)
    if math.isnan(value):  # NaN never improves: it counts as an evaluation without improvement
        return watch._replace(previous_value=None, since_best=watch.since_best + 1,
                              since_previous=watch.since_previous + 1, since_plateau=watch.since_plateau + 1), False
    new = watch.update(value, record["step"], rules.mode, rules.min_delta)
    return new, new.best_step == record["step"] and new.best_step != watch.best_step


def _manager(checkpoint_dir, keep_checkpoints, monitor, mode):
    if checkpoint_dir is None:
        return None
    from jdl.checkpoint import CheckpointManager

    return CheckpointManager(checkpoint_dir, max_to_keep=keep_checkpoints, best_metric=monitor, best_mode=mode)


def _best_at_start(manager, train_state, watch: Watch, patience) -> TrainState | None:
    """At a resume, the best evaluation's state (from its checkpoint); else none yet."""
    if patience is None or watch.best_step is None or manager is None:
        return None
    if watch.best_step in manager.steps():
        return manager.restore(like=train_state, step=watch.best_step)
    return _copy(train_state)
