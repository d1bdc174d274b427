"""An `EditJob` from keyword values: the one way the CLI, `demo` and `LongEditPipeline` build one.

Job files (`longedit run`, `watch`, Ray) are read by `longedit.jobs.jobfile.load_job`, which names the
file and key in its messages; both validate against the same declaration (`longedit.config.EditJob`).
"""

from __future__ import annotations

from pydantic import ValidationError

from longedit.config import EditJob
from longedit.errors import UserError


def validation_message(error: ValidationError, where: str = "") -> str:
    """One line out of a pydantic error: the first problem, named by its key."""
    first = error.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "value"
    if first["type"] == "extra_forbidden":
        return f"{where}unknown key '{key}' (check the spelling)"
    if first["type"] == "missing":
        return f"{where}'{key}' is required"
    return f"{where}'{key}': {first['msg']}"


def build_job(values: dict, fix: str = "see longedit edit --help") -> EditJob:
    """EditJob from keyword values; those left None fall back to the declared defaults. A bad value is a
    one-line `UserError` naming the key, with `fix`."""
    try:
        return EditJob(**{k: v for k, v in values.items() if v is not None})
    except ValidationError as error:
        raise UserError(validation_message(error), fix) from error
