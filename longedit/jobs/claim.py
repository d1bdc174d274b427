"""Claim files: who runs a job folder right now, and whether that owner is gone.

A job folder holds numbered claim files `claim-000001.json`, `claim-000002.json`, ...; the highest
number is the current claim. Each is created *exclusively* (hard link of a fully written temp file,
so a reader never sees half a claim), which makes every hand-over race-free: to take over a folder
whose current claim is generation g, a worker creates generation g+1; of two workers trying at once
exactly one succeeds, the other gets `FileExistsError` and moves on. Nothing is ever overwritten.

A claim records the owner's hostname, pid, process start time (so a recycled pid after a reboot is
not mistaken for the owner) and a random token (tells apart claims of one process). The owner touches
its claim file every few seconds; the file's mtime is the heartbeat.

A claim is *free* (the folder may be taken over) when
- it is a released claim (the owner stopped cleanly, e.g. on SIGTERM, and wrote a release), or
- its owner is on this host and its pid is gone, a zombie, or belongs to a newer process, or
- its heartbeat is older than `stale_after` seconds (the only test possible for other hosts).
An owner on this host whose pid is alive is never considered stale by heartbeat: a laptop that slept
for an hour must not get its running job stolen by a second watcher on the same machine.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

CLAIM_RE = re.compile(r"^claim-(\d{6,})\.json$")


@dataclass(frozen=True)
class Owner:
    """A process (and one claim of it) that holds a job folder."""

    host: str
    pid: int
    started: float
    token: str

    @classmethod
    def current(cls) -> "Owner":
        """This process, with a fresh token for one claim."""
        pid = os.getpid()
        return cls(host=socket.gethostname(), pid=pid, started=_process_start(pid) or 0.0, token=uuid.uuid4().hex)

    def label(self) -> str:
        """'host:pid' for logs and the ledger."""
        return f"{self.host}:{self.pid}"


def _process_start(pid: int) -> float | None:
    """Start time of process `pid` (None if there is no such process or it is a zombie)."""
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return None
        return process.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


@dataclass(frozen=True)
class ClaimRecord:
    """One claim file as read from disk."""

    path: Path
    generation: int
    owner: Owner | None  # None when the file could not be read (being written, or damaged)
    released: bool
    claimed_at: float
    heartbeat: float  # the file's mtime (wall clock)

    def liveness(self, *, stale_after: float, now: float | None = None) -> tuple[bool, str]:
        """(alive, reason): whether the owner still holds the folder, and why not when it does not."""
        now = time.time() if now is None else now
        age = now - self.heartbeat
        if self.released:
            return False, "released by its owner"
        if self.owner is None:
            # An unreadable claim: either being written right now (fallback without hard links) or damaged.
            return (age <= stale_after), f"unreadable claim file, last touched {age:.0f} s ago"
        owner = self.owner
        if owner.host == socket.gethostname():
            if owner.pid == os.getpid() and abs(owner.started - (_process_start(owner.pid) or 0.0)) < 1.0:
                return True, "held by this process"
            started = _process_start(owner.pid)
            if started is None:
                return False, f"owner {owner.label()} is gone"
            if abs(started - owner.started) > 1.0:
                return False, f"owner {owner.label()} is gone (pid reused by another process)"
            return True, f"held by live process {owner.label()}"
        if age > stale_after:
            return False, f"owner {owner.label()} sent no heartbeat for {age:.0f} s"
        return True, f"held by {owner.label()} (heartbeat {age:.0f} s ago)"


def claim_path(folder: Path, generation: int) -> Path:
    """Path of claim file number `generation` in `folder`."""
    return folder / f"claim-{generation:06d}.json"


def read_latest(folder: Path) -> ClaimRecord | None:
    """The current (highest-numbered) claim of `folder`, or None if it has none (or vanished)."""
    try:
        names = os.listdir(folder)
    except (FileNotFoundError, NotADirectoryError):
        return None
    generations = sorted((int(m.group(1)), name) for name in names if (m := CLAIM_RE.match(name)))
    for generation, name in reversed(generations):
        path = folder / name
        try:
            mtime = path.stat().st_mtime
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            continue  # removed meanwhile (folder finished and cleaned): look at the previous one
        except (OSError, ValueError):
            return ClaimRecord(path, generation, None, False, 0.0, mtime)
        owner = Owner(**data["owner"]) if data.get("owner") else None
        return ClaimRecord(
            path=path,
            generation=generation,
            owner=owner,
            released=bool(data.get("released")),
            claimed_at=float(data.get("at", mtime)),
            heartbeat=mtime,
        )
    return None


def _create_exclusive(path: Path, payload: dict) -> None:
    """Create `path` holding `payload`, failing with FileExistsError if it exists.

    The content is written to a private temp file first and hard-linked into place, so the claim
    appears complete or not at all. Filesystems without hard links fall back to O_EXCL creation.
    """
    text = json.dumps(payload, indent=1)
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    temp.write_text(text, encoding="utf-8")
    try:
        os.link(temp, path)
    except (OSError, NotImplementedError) as error:
        if isinstance(error, FileExistsError):
            raise
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
    finally:
        temp.unlink(missing_ok=True)


class Claim:
    """A claim this process holds on a job folder (generation `generation`)."""

    def __init__(self, folder: Path, generation: int, owner: Owner) -> None:
        self.folder = folder
        self.generation = generation
        self.owner = owner

    @property
    def path(self) -> Path:
        return claim_path(self.folder, self.generation)

    @classmethod
    def create(cls, folder: Path, owner: Owner, *, after: int = 0, note: str = "") -> "Claim":
        """Claim `folder` as generation `after + 1`; FileExistsError if someone else got there first."""
        generation = after + 1
        payload = {"owner": asdict(owner), "at": time.time(), "note": note}
        _create_exclusive(claim_path(folder, generation), payload)
        return cls(folder, generation, owner)

    def moved(self, folder: Path) -> None:
        """Follow the job folder after this owner renamed it."""
        self.folder = folder

    def heartbeat(self) -> None:
        """Touch the claim file (its mtime is the heartbeat). Silent if the folder moved away."""
        try:
            os.utime(self.path)
        except FileNotFoundError:
            pass

    def still_held(self) -> bool:
        """True while our claim is still the folder's current claim (nobody took over)."""
        latest = read_latest(self.folder)
        return latest is not None and latest.owner is not None and latest.owner.token == self.owner.token and (
            not latest.released
        )

    def release(self, reason: str) -> bool:
        """Hand the folder back (next generation, marked released); False if someone took over already."""
        payload = {"owner": asdict(self.owner), "at": time.time(), "released": True, "note": reason}
        try:
            _create_exclusive(claim_path(self.folder, self.generation + 1), payload)
        except (FileExistsError, FileNotFoundError):
            return False
        self.generation += 1
        return True


def take_over(folder: Path, record: ClaimRecord | None, owner: Owner, note: str) -> Claim | None:
    """Claim a folder whose current claim `record` is free; None if another worker won the race."""
    try:
        return Claim.create(folder, owner, after=record.generation if record else 0, note=note)
    except (FileExistsError, FileNotFoundError):
        return None


def remove_claim_files(folder: Path) -> None:
    """Delete the claim files of a finished job folder (they mean nothing in done/ or failed/)."""
    for name in os.listdir(folder):
        if CLAIM_RE.match(name):
            (folder / name).unlink(missing_ok=True)
