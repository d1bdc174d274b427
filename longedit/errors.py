"""User-facing errors: one line that names the problem and the fix; the CLI exits 2 without a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input from the user (file, word, box, job file...). The message is shown as is."""

    exit_code = 2

    def __init__(self, problem: str, fix: str | None = None) -> None:
        message = problem if fix is None else f"{problem} ({fix})"
        super().__init__(message)
        self.problem = problem
        self.fix = fix
