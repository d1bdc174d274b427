"""Publishing files atomically: write a hidden temp file beside the target, fsync, rename.

Readers (a player, `watch`, another worker) see the whole old file or the whole new one, never half a
file; a crash or a full disk leaves the target untouched and removes its own temp file. A full,
read-only or forbidden disk (ENOSPC, EDQUOT, EROFS, EACCES/EPERM) becomes a one-line `UserError`
naming what could not be written, where, and the space it needs when the caller knows it.

`atomic_write` is the context manager for files written from Python; `AtomicFile` is the same steps
for writers that need the temp path and finish later (the video writer); `write_json` is the
one-liner for JSON documents (reports, job metadata, manifests); `atomic_folder` publishes a whole
folder (a tuned model) by one rename.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from longedit.errors import UserError

#: errno values that mean "this disk cannot take the file", not a bug: they become UserError.
DISK_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def human_size(nbytes: int) -> str:
    """Human size, e.g. 1.5 MB."""
    value = float(nbytes)
    for unit in ("bytes", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def disk_error(error: OSError, what: str, path: Path, needed: int | None = None) -> UserError | None:
    """The UserError for a disk that cannot take `path` (full, quota, read-only, forbidden); None otherwise."""
    if error.errno not in DISK_ERRORS:
        return None
    reason = os.strerror(error.errno).lower()
    need = f"; it needs about {human_size(needed)}" if needed else ""
    fix = "free some space or pick a folder on another disk" if error.errno in (errno.ENOSPC, errno.EDQUOT) else (
        "pick a folder you can write to"
    )
    return UserError(f"cannot write {what} '{path}': {reason}{need}", fix)


class AtomicFile:
    """A hidden temp file beside `target`; `commit()` publishes it, `discard()` removes it."""

    def __init__(self, target: str | Path, what: str = "file", suffix: str = ".tmp", needed: int | None = None) -> None:
        self.target = Path(target)
        self.what = what
        self.needed = needed
        self.temp = self.target.parent / f".{self.target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{suffix}"

    def fail(self, error: OSError) -> BaseException:
        """Remove the temp file; the UserError to raise instead of `error` when the disk is at fault, else `error`."""
        self.discard()
        return disk_error(error, self.what, self.target, self.needed) or error

    def commit(self) -> None:
        """fsync the temp file and rename it onto the target (the temp file is gone either way)."""
        try:
            fd = os.open(self.temp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.temp, self.target)
        except OSError as error:
            raise self.fail(error) from error

    def discard(self) -> None:
        """Remove the temp file (no error when it is already gone)."""
        try:
            self.temp.unlink(missing_ok=True)
        except OSError:
            pass


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (permission errors count as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


#: Temp names beside a target NAME: `.NAME.PID[.RANDOM].part|tmp` (this module, the video writer, the mask
#: staging folder), `.NAME.PID.trajectory` and `.NAME.PID.attention` (a run without a work folder).
TEMP_NAME = re.compile(r"^\.(?P<target>.+?)\.(?P<pid>\d{1,10})\.(?:[0-9a-f]{8}\.)?(?:part|tmp|trajectory|attention)$")


def parse_temp_name(name: str) -> tuple[str, int] | None:
    """(target name, pid) of a temp name made by a longedit process, None for any other name."""
    match = TEMP_NAME.match(name)
    return (match["target"], int(match["pid"])) if match else None


def _remove(path: Path) -> bool:
    """Remove a file or a folder (a FateZero store); False when it could not be removed."""
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except OSError:
        return False
    return True


def remove_stale_temps(target: str | Path) -> list[Path]:
    """Remove temp files and folders of `target` (`.NAME.PID.*`: partial video, report, trajectory, attention
    store) whose process is gone: leftovers of killed runs.

    Temp files of live processes (another writer of the same name right now) are left alone. Returns
    what was removed.
    """
    target = Path(target)
    try:
        names = os.listdir(target.parent)
    except OSError:
        return []
    removed = []
    for name in names:
        parsed = parse_temp_name(name)
        if parsed is None or parsed[0] != target.name or parsed[1] == os.getpid() or _pid_alive(parsed[1]):
            continue
        if _remove(target.parent / name):
            removed.append(target.parent / name)
    return removed


def remove_foreign_temps(folder: str | Path) -> list[Path]:
    """Remove every temp file or folder `.NAME.PID.*` in `folder` not made by this process.

    For a folder that no other process may write into any more (a finished job's folder, whose claim we
    hold): whatever other processes left there is stale, wherever they ran (a Ray worker's pid means
    nothing on this host).
    """
    folder = Path(folder)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    removed = []
    for name in names:
        parsed = parse_temp_name(name)
        if parsed is not None and parsed[1] != os.getpid() and _remove(folder / name):
            removed.append(folder / name)
    return removed


@contextmanager
def atomic_write(
    target: str | Path, mode: str = "w", *, what: str = "file", encoding: str | None = "utf-8", needed: int | None = None
) -> Iterator[IO[Any]]:
    """Open a temp file beside `target` for writing; on a clean exit it replaces `target` atomically.

    `mode` is "w" (text) or "wb"; on any exception the temp file is removed and `target` is untouched,
    and a full or read-only disk raises a one-line UserError instead of the OSError.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write writes new files: mode must be 'w' or 'wb', not {mode!r}")
    file = AtomicFile(target, what, needed=needed)
    try:
        with open(file.temp, mode, encoding=None if "b" in mode else encoding) as handle:
            yield handle
            handle.flush()
    except OSError as error:
        raise file.fail(error) from error
    except BaseException:
        file.discard()
        raise
    file.commit()


def write_json(path: str | Path, data: Any, what: str = "file") -> None:
    """Write `data` as indented JSON to `path` atomically (values JSON cannot hold are written as str)."""
    text = json.dumps(data, indent=2, default=str)
    with atomic_write(path, what=what, needed=len(text.encode("utf-8"))) as handle:
        handle.write(text)


@contextmanager
def atomic_folder(target: str | Path, what: str = "folder") -> Iterator[Path]:
    """A hidden temp folder beside `target` to fill; on a clean exit it is renamed to `target` at once.

    Readers see no folder or the whole folder. A `target` that exists when the rename happens raises
    `FileExistsError` (another writer finished first: the caller decides whether that is fine); the
    temp folder is removed on any failure, and a full or read-only disk raises a one-line UserError.
    """
    import shutil

    target = Path(target)
    temp = target.parent / f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        temp.mkdir(parents=True)
        yield temp
        try:
            os.rename(temp, target)  # atomic; refuses a non-empty target on POSIX
        except OSError as error:
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY) or target.exists():
                raise FileExistsError(errno.EEXIST, f"{what} '{target}' already exists") from error
            raise
    except OSError as error:
        shutil.rmtree(temp, ignore_errors=True)
        translated = None if isinstance(error, FileExistsError) else disk_error(error, what, target)
        if translated is None:
            raise
        raise translated from error
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
