"""The watched folder on disk: its layout, atomic claiming out of the inbox, and moving finished jobs.

```
DIR/
  inbox/        NAME.yaml (+ NAME.mp4 when the job file has no `input`): dropped here by the user
  processing/   NAME/  one folder per claimed job: the job file, its companion video, meta.json,
                       claim-*.json, work/ (checkpoints), the output while it is being written
  done/         NAME/  ... + NAME-edited.mp4 (default output) + report.json
  failed/       NAME/  ... + error.json (message, traceback, timestamps, attempts)
  ledger.sqlite
  tuned/        KEY/   Tune-A-Video models tuned for jobs with `tune:`, one per clip, model and settings
  inversion-cache/  DDIM inversions shared by the jobs (longedit.inversion_cache), unless --no-cache
```

Claiming is one `os.rename` of `inbox/NAME.yaml` into a private staging folder that already holds
our claim file; rename is atomic on one filesystem, so of two workers (threads, processes, or hosts
sharing the folder) exactly one gets the job and the other gets `FileNotFoundError`. The staging
folder is then renamed to `processing/NAME` (`NAME.2`, ... if that name is taken).

Inputs are never modified: the job file is moved unchanged; a companion video (same stem, used
because the job file has no `input`) is moved unchanged with it, so `done/NAME/` or `failed/NAME/`
holds everything needed to inspect or re-queue the job. A video named by `input:` stays where it
is (several jobs may share it).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longedit.atomic import write_json
from longedit.config import CACHE_FOLDER, TUNED_CACHE_FOLDER
from longedit.jobs.claim import Claim, ClaimRecord, Owner, read_latest, remove_claim_files, take_over
from longedit.jobs.jobfile import JOB_SUFFIXES, find_companion_video

STAGING_PREFIX = ".claiming-"
META_NAME = "meta.json"
REPORT_NAME = "report.json"
ERROR_NAME = "error.json"
WORK_NAME = "work"
# Names that mean "still being written" (browsers, rsync, our own temp files) or hidden files.
PARTIAL_SUFFIXES = (".part", ".tmp", ".partial", ".crdownload", ".download", "~")


def is_partial_name(name: str) -> bool:
    """True for names that are hidden or carry a temp/part suffix: never a job, never ready."""
    return name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES)


def write_json_atomic(path: Path, data: Any) -> None:
    """Write a job folder's JSON (meta, report, error) atomically: readers never see half a file."""
    write_json(path, data, what="job file")


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON file's content, None when missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class Spool:
    """Paths of a watched folder."""

    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def processing(self) -> Path:
        return self.root / "processing"

    @property
    def done(self) -> Path:
        return self.root / "done"

    @property
    def failed(self) -> Path:
        return self.root / "failed"

    @property
    def previews(self) -> Path:
        """Previews of jobs (`longedit watch --preview-first`): previews/NAME/, made when first needed."""
        return self.root / "previews"

    @property
    def ledger_path(self) -> Path:
        return self.root / "ledger.sqlite"

    @property
    def tuned(self) -> Path:
        """Tuned models of the jobs with `tune:` (content-addressed, shared by every job and worker)."""
        return self.root / TUNED_CACHE_FOLDER

    @property
    def inversion_cache(self) -> Path:
        """DDIM inversions shared by the jobs (`longedit.inversion_cache`)."""
        return self.root / CACHE_FOLDER

    def create(self) -> "Spool":
        """Make the four folders (idempotent)."""
        for folder in (self.inbox, self.processing, self.done, self.failed):
            folder.mkdir(parents=True, exist_ok=True)
        return self

    def inbox_job_files(self) -> list[Path]:
        """Job files in the inbox (`*.yaml`/`*.yml`, not hidden, not partial), sorted by name."""
        try:
            names = sorted(os.listdir(self.inbox))
        except FileNotFoundError:
            return []
        return [
            self.inbox / n
            for n in names
            if not is_partial_name(n) and n.lower().endswith(JOB_SUFFIXES) and (self.inbox / n).is_file()
        ]

    def processing_folders(self) -> list[Path]:
        """Job folders in processing/ (including staging folders of interrupted claims)."""
        try:
            names = sorted(os.listdir(self.processing))
        except FileNotFoundError:
            return []
        return [self.processing / n for n in names if (self.processing / n).is_dir()]


@dataclass
class JobFolder:
    """A claimed job folder and what we know about the job in it."""

    folder: Path
    claim: Claim
    meta: dict[str, Any]
    progress: Any = None  # a CheckpointProgress while an attempt runs (read by the heartbeat)

    @property
    def job_id(self) -> str:
        return self.meta["id"]

    @property
    def name(self) -> str:
        return self.meta["name"]

    @property
    def job_file(self) -> Path:
        return self.folder / self.meta["job_file"]

    @property
    def inbox(self) -> Path:
        return Path(self.meta["inbox"])

    @property
    def work_dir(self) -> Path:
        return self.folder / WORK_NAME

    def companion(self) -> Path | None:
        """The companion video: in the job folder, or still in the inbox if a crash stopped its move."""
        stem = Path(self.meta["job_file"]).stem
        return find_companion_video(self.folder, stem) or find_companion_video(self.inbox, stem)

    def adopt_companion(self) -> None:
        """Finish moving the companion video next to the job file (after a crash between the renames)."""
        stem = Path(self.meta["job_file"]).stem
        if not self.meta.get("companion") or find_companion_video(self.folder, stem):
            return
        source = self.inbox / self.meta["companion"]
        try:
            os.rename(source, self.folder / source.name)
        except OSError:
            pass  # gone or another filesystem: the job reads it in place

    def follow(self, target: Path) -> None:
        """The folder was renamed to `target` (by us, its owner)."""
        self.folder = target
        self.claim.moved(target)


def _new_job_id(name: str) -> str:
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def _free_target(parent: Path, name: str) -> Path:
    """`parent/name`, or `parent/name.2`, `.3`, ... when taken."""
    target, n = parent / name, 1
    while target.exists():
        n += 1
        target = parent / f"{name}.{n}"
    return target


def publish(staging: Path, parent: Path, name: str) -> Path:
    """Rename `staging` to a free `parent/name[.n]`; returns where it ended up."""
    while True:
        target = _free_target(parent, name)
        try:
            os.rename(staging, target)
            return target
        except OSError as error:
            if target.exists():  # somebody took the name between our check and the rename
                continue
            raise error


def claim_from_inbox(spool: Spool, job_file: Path, owner: Owner, companion: Path | None) -> JobFolder | None:
    """Atomically take `job_file` out of the inbox; None if another worker took it first.

    `companion` is the same-stem video to move along (only when the job file has no `input`).
    """
    name = job_file.stem
    staging = spool.processing / f"{STAGING_PREFIX}{owner.token}"
    staging.mkdir()
    claim = Claim.create(staging, owner, note="claimed from inbox")
    meta = {
        "id": _new_job_id(name),
        "name": name,
        "job_file": job_file.name,
        "inbox": str(job_file.parent.resolve()),
        "companion": companion.name if companion is not None else None,
        "claimed_at": time.time(),
    }
    write_json_atomic(staging / META_NAME, meta)
    try:
        os.rename(job_file, staging / job_file.name)
    except FileNotFoundError:
        shutil.rmtree(staging, ignore_errors=True)
        return None
    job = JobFolder(staging, claim, meta)
    job.adopt_companion()
    job.follow(publish(staging, spool.processing, name))
    return job


def adopt_folder(spool: Spool, folder: Path, record: ClaimRecord | None, owner: Owner, reason: str) -> JobFolder | None:
    """Take over a processing/ folder whose claim is free; None if we lost the race or it is empty.

    A staging folder (its owner died while claiming) is published first if the job file made it in,
    and removed otherwise (the job file is still in the inbox, nothing was claimed).
    """
    claim = take_over(folder, record, owner, note=f"taken over: {reason}")
    if claim is None:
        return None
    meta = read_json(folder / META_NAME)
    staging = folder.name.startswith(STAGING_PREFIX)
    if staging and (meta is None or not (folder / meta["job_file"]).exists()):
        shutil.rmtree(folder, ignore_errors=True)  # died before the job file moved in: nothing was claimed
        return None
    if meta is None:  # not made by a watcher: let the worker fail it with a clear error
        meta = {"id": _new_job_id(folder.name), "name": folder.name, "job_file": "job.yaml",
                "inbox": str(spool.inbox.resolve()), "companion": None, "claimed_at": time.time()}
        write_json_atomic(folder / META_NAME, meta)
    job = JobFolder(folder, claim, meta)
    if staging:
        job.adopt_companion()
        job.follow(publish(folder, spool.processing, meta["name"]))
    return job


def finish(job: JobFolder, parent: Path) -> Path:
    """Move a job folder we own to done/ or failed/ and drop its claim files."""
    job.follow(publish(job.folder, parent, job.name))
    remove_claim_files(job.folder)
    return job.folder


def free_folders(spool: Spool, stale_after: float) -> list[tuple[Path, ClaimRecord | None, str]]:
    """processing/ folders that nobody holds: (folder, current claim, why it is free)."""
    free = []
    now = time.time()
    for folder in spool.processing_folders():
        record = read_latest(folder)
        if record is None:
            try:
                age = now - folder.stat().st_mtime
            except FileNotFoundError:
                continue
            if age > stale_after:
                free.append((folder, None, "no claim file"))
            continue
        alive, reason = record.liveness(stale_after=stale_after, now=now)
        if not alive:
            free.append((folder, record, reason))
    return free
