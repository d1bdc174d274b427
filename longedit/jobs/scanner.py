"""Decide which inbox job files are complete and may be claimed.

A file that is still being written must never start a job. A job file is *ready* when
- its name is not hidden and has no temp suffix (`*.part`, `*.tmp`, ... are ignored entirely);
- it and its input video have the same size and mtime in two scans at least `settle` seconds apart;
- the input video opens (`longedit.video.probe`).

A job file that is stable but not valid YAML, or whose input is stable but does not open for
`corrupt_after` seconds, is also *ready*: claiming it lets the worker fail it into `failed/` with a
clear `error.json` instead of leaving it in the inbox forever. A job whose input does not exist yet
*waits* (the video may be copied after the job file); one whose input has a `.part`/`.tmp` sibling
*waits* too (`--once` does not wait for either; a long-running watcher picks the job up later).

The scanner keeps what it saw last time in memory: a new watcher starts over (two scans again).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import ValidationError

from longedit.config import EditJob
from longedit.errors import UserError
from longedit.jobs.confine import check_link
from longedit.jobs.jobfile import find_companion_video, read_job_mapping
from longedit.jobs.spool import PARTIAL_SUFFIXES, Spool

State = Literal["ready", "settling", "waiting"]
Signature = tuple[int, int, int]  # size, mtime_ns, inode


@dataclass(frozen=True)
class InboxEntry:
    """One job file of the inbox and whether it can be claimed now."""

    job_file: Path
    state: State
    reason: str
    companion: Path | None = None  # the same-stem video to move along (job file without `input`)

    @property
    def name(self) -> str:
        return self.job_file.stem


def _settings_valid(data: dict) -> bool:
    """Whether the job's keys and values validate, whatever its input/output paths turn out to be."""
    try:
        EditJob.model_validate({**data, "input": data.get("input") or "-", "output": data.get("output") or "-"})
    except ValidationError:
        return False
    return True


def _signature(path: Path) -> Signature | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _default_probe(path: Path) -> None:
    from longedit.video import probe

    probe(path)


class InboxScanner:
    """Stateful readiness check over successive scans of one inbox."""

    def __init__(
        self,
        spool: Spool,
        *,
        settle: float = 2.0,
        corrupt_after: float | None = None,
        probe: Callable[[Path], None] = _default_probe,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.spool = spool
        self.settle = settle
        self.corrupt_after = 3 * settle if corrupt_after is None else corrupt_after
        self.probe = probe
        self.clock = clock
        self._seen: dict[Path, tuple[Signature, float, int]] = {}  # path -> (signature, since, scans)
        self._probed: dict[Path, tuple[Signature, str | None]] = {}  # path -> (signature, error or None)

    def _stable_for(self, path: Path, now: float) -> float | None:
        """Seconds `path` has kept its signature, counting from the first scan that saw it; None if not
        yet seen unchanged in two scans (or missing)."""
        sig = _signature(path)
        if sig is None:
            self._seen.pop(path, None)
            return None
        previous = self._seen.get(path)
        if previous is None or previous[0] != sig:
            self._seen[path] = (sig, now, 1)
            return None
        self._seen[path] = (sig, previous[1], previous[2] + 1)
        return now - previous[1]

    def _probe_error(self, video: Path) -> str | None:
        """The probe error of `video` (cached per signature), None when it opens."""
        sig = _signature(video)
        cached = self._probed.get(video)
        if cached is not None and cached[0] == sig:
            return cached[1]
        try:
            self.probe(video)
            error = None
        except UserError as exc:
            error = str(exc)
        except Exception as exc:  # a probe bug must not stop the watcher
            error = f"{type(exc).__name__}: {exc}"
        if sig is not None:
            self._probed[video] = (sig, error)
        return error

    def scan(self) -> list[InboxEntry]:
        """Look at every job file of the inbox once; returns them with their state."""
        now = self.clock()
        entries = []
        current = set()
        for job_file in self.spool.inbox_job_files():
            current.add(job_file)
            entries.append(self._check(job_file, now, current))
        for path in list(self._seen):
            if path not in current:
                self._seen.pop(path, None)
                self._probed.pop(path, None)
        return entries

    def _check(self, job_file: Path, now: float, current: set[Path]) -> InboxEntry:
        # Both files are watched from the first scan on, so the video's settle time runs in parallel.
        stable = self._stable_for(job_file, now)
        video, decided, is_companion = self.input_of(job_file)
        video_stable = None
        if video is not None:
            current.add(video)
            video_stable = self._stable_for(video, now)
        if stable is None or stable < self.settle:
            return InboxEntry(job_file, "settling", "job file is new or still changing")
        if decided is not None:
            return decided
        assert video is not None
        if video_stable is None or video_stable < self.settle:
            return InboxEntry(job_file, "settling", f"input '{video.name}' is new or still changing")
        companion = video if is_companion else None
        error = self._probe_error(video)
        if error is None:
            return InboxEntry(job_file, "ready", "complete", companion)
        if video_stable < self.corrupt_after:
            return InboxEntry(job_file, "settling", f"input '{video.name}' does not open yet")
        return InboxEntry(job_file, "ready", f"input does not open ({error}); the worker will fail it", companion)

    def input_of(self, job_file: Path) -> tuple[Path | None, InboxEntry | None, bool]:
        """(input video if it exists, else the entry that says why the job cannot go yet; whether the
        video is the companion found because the job file has no `input`)."""
        try:
            check_link(job_file, self.spool.root, "job file")  # a link to a secret is never read
            data = read_job_mapping(job_file)
        except UserError:
            return None, self._failing(job_file, "job file is not valid; the worker will fail it"), False
        if not _settings_valid(data):  # a typo fails now, not after waiting for an input that may never come
            return None, self._failing(job_file, "job file has invalid keys or values; the worker will fail it"), False
        raw_input = data.get("input")
        if raw_input in (None, ""):
            try:
                video = find_companion_video(job_file.parent, job_file.stem)
            except UserError:
                return None, InboxEntry(job_file, "ready", "ambiguous input; the worker will fail it"), False
            if video is None:
                partial = [p.name for p in self._partials(job_file.parent) if p.name.startswith(job_file.stem + ".")]
                if partial:
                    return None, InboxEntry(job_file, "waiting", f"input video is still being written ({partial[0]})"), False
                return None, InboxEntry(job_file, "waiting", f"no video {job_file.stem}.mp4/.mov/.mkv beside it yet"), False
            return video, None, True
        if not isinstance(raw_input, str):
            return None, self._failing(job_file, "'input' is not a path; the worker will fail it"), False
        video = Path(raw_input).expanduser()
        video = video if video.is_absolute() else job_file.parent / video
        if not video.exists():
            partial = [p.name for p in self._partials(video.parent) if p.name.startswith(video.name)]
            if partial:
                return None, InboxEntry(job_file, "waiting", f"input '{video.name}' is still being written ({partial[0]})"), False
            return None, InboxEntry(job_file, "waiting", f"input '{video}' does not exist yet"), False
        return video, None, False

    @staticmethod
    def _failing(job_file: Path, reason: str) -> InboxEntry:
        """A job file the worker will fail: its same-stem video (if any, complete) leaves the inbox with it."""
        try:
            companion = find_companion_video(job_file.parent, job_file.stem)
        except UserError:  # ambiguous: leave the videos where they are
            companion = None
        return InboxEntry(job_file, "ready", reason, companion)

    @staticmethod
    def _partials(folder: Path) -> list[Path]:
        try:
            return [folder / n for n in os.listdir(folder) if n.lower().endswith(PARTIAL_SUFFIXES)]
        except OSError:
            return []
