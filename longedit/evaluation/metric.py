"""The shape of one metric in the eval report: a value with its per-frame list, or null with a reason."""

from __future__ import annotations

from collections.abc import Sequence


def available(value: float | None, per_frame: Sequence[float | None] | None = None, **extra: object) -> dict:
    """A computed metric: `value` (usually the mean), optional per-frame list and extra fields."""
    entry: dict = {"value": value, "reason": None}
    if per_frame is not None:
        entry["per_frame"] = list(per_frame)
    entry.update(extra)
    return entry


def missing(reason: str) -> dict:
    """A metric that could not be computed: null, with the reason next to it."""
    return {"value": None, "reason": reason}


def mean(values: Sequence[float | None]) -> float | None:
    """Mean of the values that are not None; None when there are none."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def failure(what: str, error: BaseException) -> str:
    """One-line reason for a load/run failure: `what: ErrorType: message` (whitespace collapsed, capped)."""
    message = " ".join(str(error).split())
    return f"{what}: {type(error).__name__}: {message}"[:400]
