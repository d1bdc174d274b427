"""What runs one edit: the engine's `run_edit`, or any callable with its signature (tests, plugins).

A runner is called as `runner(job, work_dir=..., progress=..., stop_event=...)` and returns the
report dict. It raises `longedit.errors.JobInterrupted` after checkpointing when `stop_event` is set;
`longedit.jobs.executor` runs runners and decides what their errors mean.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from longedit.config import EditJob
from longedit.errors import UserError


class Runner(Protocol):
    def __call__(
        self,
        job: EditJob,
        *,
        work_dir: Path | None = None,
        progress: bool = True,
        stop_event: threading.Event | None = None,
    ) -> dict[str, Any]: ...


def resolve_runner(spec: str | Callable[..., dict] | None) -> Callable[..., dict]:
    """The runner named by `spec`: None -> `longedit.engine.run_edit`; 'module:function' -> that callable."""
    if callable(spec):
        return spec
    if spec is None:
        from longedit.engine import run_edit

        return run_edit
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise UserError(f"runner '{spec}' is not of the form module:function", "e.g. longedit.engine:run_edit")
    try:
        module = importlib.import_module(module_name)
        return getattr(module, attribute)
    except (ImportError, AttributeError) as error:
        raise UserError(f"cannot load runner '{spec}': {error}", "check the module path") from None


def peak_memory(report: dict[str, Any]) -> tuple[float | None, float | None]:
    """(peak host RSS, peak GPU memory) in MB from the engine's report `memory` section (None if absent)."""
    memory = report.get("memory") if isinstance(report.get("memory"), dict) else {}

    def mb(key: str) -> float | None:
        value = memory.get(key)
        return float(value) / 2**20 if isinstance(value, (int, float)) else None

    return mb("peak_rss_bytes"), mb("peak_vram_bytes")
