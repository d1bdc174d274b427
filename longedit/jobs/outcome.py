"""What the exception that ended an attempt means; the one place that decides retry, stop or fail.

* `interrupted`: `JobInterrupted`, a clean stop at a checkpoint (SIGTERM): the job resumes later;
* `failed`: a `UserError` (bad job file, unreadable video, word not in the prompt...), raised here or
  reported back from a Ray task (`user_error` set): retrying cannot fix it, so it never costs a retry;
* `retry`: anything else (out of memory, a dead Ray worker...): worth another attempt, if any are left.
"""

from __future__ import annotations

from typing import Literal

from longedit.errors import JobInterrupted, UserError

Outcome = Literal["interrupted", "failed", "retry"]


def is_user_error(error: BaseException) -> bool:
    """A `UserError`, raised here or reported back from a Ray task (`user_error` set)."""
    return isinstance(error, UserError) or bool(getattr(error, "user_error", False))


def attempt_outcome(error: BaseException) -> Outcome:
    """What the exception that ended an attempt means: interrupted, failed (no retry) or retry."""
    if isinstance(error, JobInterrupted):
        return "interrupted"
    if is_user_error(error):
        return "failed"
    return "retry"
