"""What every benchmark's report shares: where and when it ran, and markdown tables."""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from typing import Callable, Mapping

import jax

import jdl


def device_description() -> str:
    """The accelerator's kind, or the CPU's model and core count."""
    device = jax.devices()[0]
    if device.platform != "cpu":
        return device.device_kind
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            model = next(line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model} ({os.cpu_count()} cores)"


def git_commit() -> str | None:
    """The checked-out commit (read only; uncommitted changes are not reflected)."""
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        return result.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def provenance() -> dict:
    """The record keys that say where, with what and when a benchmark ran."""
    return {
        "backend": jax.default_backend(),
        "device": device_description(),
        "jax_version": jax.__version__,
        "jdl_version": jdl.__version__,
        "python_version": platform.python_version(),
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def cell(key: str, spec: str = "", scale: float = 1.0) -> Callable[[dict], str]:
    """A column of a table: ``record[key]``, times ``scale`` for numbers, formatted with ``spec``."""
    return lambda record: format(record[key] if scale == 1.0 else scale * record[key], spec)


def markdown_table(columns: Mapping[str, Callable[[dict], str]], records: list[dict], text_columns: int = 0) -> str:
    """A markdown table of one row per record; ``columns`` maps each header to its cell's text.

    The first ``text_columns`` columns are left-aligned, the others (numbers) right-aligned.
    """
    rule = ["---"] * text_columns + ["---:"] * (len(columns) - text_columns)
    rows = [list(columns), rule] + [[text(record) for text in columns.values()] for record in records]
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)
