"""The errors that cross module boundaries.

`UserError`: bad input; one line that names the problem and the fix, the CLI exits 2 without a traceback.
`JobInterrupted`: a run stopped at a checkpoint because it was asked to; the job can resume.
"""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, word, box, job file...). The message is shown as is."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem if fix is None else f"{problem} ({fix})"
        super().__init__(message)
        self.problem = problem
        self.fix = fix


class JobInterrupted(Exception):
    """Raised by `run_edit` (or any runner) when its stop event was set; a checkpoint was saved first."""
