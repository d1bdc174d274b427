"""The ledger: an embedded SQLite database of every job's state transitions, attempts and timings.

`DIR/ledger.sqlite` in WAL mode with a busy timeout, so several worker threads and several `watch`
processes on one machine can write at once. Each call opens its own short-lived connection (SQLite
connections must not cross threads) and every write is one `BEGIN IMMEDIATE` transaction.

SQLite's WAL needs shared memory between the processes that use the file: keep `DIR` on a local disk
when several machines watch it (the Ray backend is fine: only its driver writes the ledger).

Tables:
- `jobs`: one row per job (id assigned when the job is claimed): name, state, attempts, paths,
  timestamps, progress (step/total), peak memory, run time, last error, owner.
- `events`: one row per transition (queued, running, done, failed, interrupted) with attempt and detail.

`attempts` counts runs that started and did not end in a clean interruption: a worker killed with
kill -9 counts (the job may be what kills it), a SIGTERM that checkpointed cleanly does not.

A damaged ledger (not a database, or a malformed one) is a one-line `UserError` naming the file and the
fix, not a traceback. `read_only=True` (`longedit status`) never creates the file or its tables and runs
with `query_only`: a zero-byte or table-less ledger reads as holding no jobs and stays as it is.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from longedit.errors import UserError

STATES = ("queued", "running", "done", "failed", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    job_file TEXT,
    folder TEXT,
    input TEXT,
    output TEXT,
    owner TEXT,
    queued_at REAL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL,
    run_seconds REAL NOT NULL DEFAULT 0,
    step INTEGER,
    total INTEGER,
    peak_rss_mb REAL,
    peak_vram_mb REAL,
    error TEXT,
    report TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    at REAL NOT NULL,
    state TEXT NOT NULL,
    attempt INTEGER,
    owner TEXT,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id);
"""

_DAMAGED_CODES = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_FOREIGN_SCHEMA = ("no such column", "no such table", "table jobs has no column")  # a SQLite file, not our ledger

_JOB_COLUMNS = (
    "name job_file folder input output owner queued_at started_at finished_at run_seconds step total "
    "peak_rss_mb peak_vram_mb error report"
).split()


class Ledger:
    """Read and write the ledger at `path` (created on first use); `read_only`: never write to it."""

    def __init__(self, path: Path, *, busy_timeout: float = 30.0, read_only: bool = False) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.read_only = read_only
        if not read_only:
            with self._connect() as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.executescript(_SCHEMA)

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            if self.read_only:  # never created; SQLite's mode=ro would leave WAL side files behind it cannot remove
                uri = f"{self.path.absolute().as_uri()}?mode=rw"
                conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None)
            else:
                conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None)
        except sqlite3.Error as error:
            raise UserError(f"cannot open the ledger '{self.path}' ({error})", "check that it exists and is readable") from error
        conn.row_factory = sqlite3.Row
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            if self.read_only:
                conn.execute("PRAGMA query_only=ON")  # any write statement fails
            yield conn
        except sqlite3.DatabaseError as error:
            damaged = (getattr(error, "sqlite_errorcode", 0) & 0xFF) in _DAMAGED_CODES
            if damaged or str(error).startswith(_FOREIGN_SCHEMA):
                raise self._damaged(error) from error
            raise
        finally:
            conn.close()

    def _damaged(self, error: sqlite3.Error) -> UserError:
        """The one-line error for a ledger SQLite cannot use: which file, and how to start a new one."""
        return UserError(
            f"the ledger '{self.path}' is damaged or not a ledger ({error})",
            f"move it aside (e.g. `mv {self.path} {self.path}.damaged`) and start `longedit watch` again: it starts a "
            "new ledger and finds the jobs in the folders",
        )

    def _readable(self, conn: sqlite3.Connection) -> bool:
        """False for a read-only ledger without tables yet (zero bytes, or created but never written)."""
        if not self.read_only:
            return True
        return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'").fetchone() is not None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taking the write lock up front (no lock upgrade deadlocks)."""
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -------------------------------------------------------------------------------------- writes

    def transition(
        self,
        job_id: str,
        state: str,
        *,
        detail: str = "",
        attempts_delta: int = 0,
        **fields: Any,
    ) -> int:
        """Move job `job_id` to `state` (creating its row if needed), update `fields`, log an event.

        `attempts_delta` adds to the attempt counter in the same transaction; returns the new count.
        """
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        unknown = set(fields) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown ledger columns {sorted(unknown)}")
        now = time.time()
        with self._write() as conn:
            row = conn.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO jobs (id, name, state, queued_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                    (job_id, fields.get("name", job_id), state, now, now),
                )
                attempts = 0
            else:
                attempts = int(row["attempts"])
            attempts = max(0, attempts + attempts_delta)
            sets = {"state": state, "attempts": attempts, "updated_at": now, **fields}
            conn.execute(
                f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in sets)} WHERE id = ?",
                (*sets.values(), job_id),
            )
            conn.execute(
                "INSERT INTO events (job_id, at, state, attempt, owner, detail) VALUES (?, ?, ?, ?, ?, ?)",
                (job_id, now, state, attempts, fields.get("owner"), detail),
            )
        return attempts

    def update(self, job_id: str, **fields: Any) -> None:
        """Set columns of an existing job without a state change (progress, owner...)."""
        unknown = set(fields) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown ledger columns {sorted(unknown)}")
        if not fields:
            return
        fields["updated_at"] = time.time()
        with self._write() as conn:
            conn.execute(
                f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in fields)} WHERE id = ?",
                (*fields.values(), job_id),
            )

    def progress(self, job_id: str, step: int, total: int) -> None:
        """Record how far a running job is (ignored once the job left `running`: a late heartbeat
        must not overwrite the final state)."""
        with self._write() as conn:
            conn.execute(
                "UPDATE jobs SET step = ?, total = ?, updated_at = ? WHERE id = ? AND state = 'running'",
                (step, total, time.time(), job_id),
            )

    def add_run_seconds(self, job_id: str, seconds: float) -> None:
        """Add one attempt's wall time to the job's total run time."""
        with self._write() as conn:
            conn.execute("UPDATE jobs SET run_seconds = run_seconds + ? WHERE id = ?", (seconds, job_id))

    # --------------------------------------------------------------------------------------- reads

    def job(self, job_id: str) -> dict[str, Any] | None:
        """The job row as a dict (None if unknown)."""
        with self._connect() as conn:
            row = conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone() if self._readable(conn) else None
        return _row(row) if row else None

    def jobs(self) -> list[dict[str, Any]]:
        """All jobs, oldest first."""
        with self._connect() as conn:
            rows = conn.execute("SELECT * FROM jobs ORDER BY queued_at, id").fetchall() if self._readable(conn) else []
        return [_row(r) for r in rows]

    def events(self, job_id: str | None = None) -> list[dict[str, Any]]:
        """Transitions in order, of one job or of all."""
        with self._connect() as conn:
            if not self._readable(conn):
                return []
            if job_id is None:
                rows = conn.execute("SELECT * FROM events ORDER BY seq").fetchall()
            else:
                rows = conn.execute("SELECT * FROM events WHERE job_id = ? ORDER BY seq", (job_id,)).fetchall()
        return [dict(r) for r in rows]


def _row(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    if data.get("report"):
        try:
            data["report"] = json.loads(data["report"])
        except ValueError:
            pass
    return data
