"""Every path a job writes, checked against every path it reads and against each other before any work.

A job writes its output video, its report, its attention video and strips (a preview: the `.preview`
files of `longedit.config.preview_job`) and, with a work folder, checkpoints into that folder. None of
them may be an input (the video, a mask folder), lie inside a mask folder, be another of them, or be
(or lie in) the work folder, which `longedit run` and `watch` delete when the job is done; no input may
lie in the work folder either. Paths are compared resolved, symlinks followed, so `out.mp4 -> clip.mp4`
is the input. A report that is a folder, and a work folder that is a file or cannot be written (missing
rights, a read-only disk), fail here too, not after hours of work.

`removed_on_failure` is the other half of "nothing partial left": a run that fails after it published
its output (a full disk while the attention pictures or the report are written) removes the files it
wrote, so exit 2 never leaves an output without its pictures and report.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from longedit.config import EditJob, as_run
from longedit.errors import UserError

F = TypeVar("F", bound=Callable[..., Any])


def _resolved(path: Path | str) -> Path:
    return Path(path).expanduser().resolve()


def read_paths(job: EditJob) -> list[tuple[str, Path]]:
    """(name, path) of what the job reads: the input video and its mask folders."""
    paths = [("the input video", Path(job.input))]
    if job.masks is not None:
        paths.append(("the --masks folder", Path(job.masks)))
    for obj in job.resolved_objects():
        if obj.masks is not None:
            paths.append((f"the mask folder of '{obj.word}'", Path(obj.masks)))
    return paths


def written_files(job: EditJob) -> list[tuple[str, Path]]:
    """(name, path) of the files `job` writes (give it `as_run(job)`: a preview writes its own files)."""
    files = [("the output video", Path(job.output))]
    if job.report is not None:
        files.append(("the report", Path(job.report)))
    if job.attention_video is not None:
        files.append(("the attention video", Path(job.attention_video)))
    if job.wants_attention_pictures:
        from longedit.attention_pictures import strip_path

        files += [(f"the attention strip of '{o.word}'", strip_path(Path(job.output), o.word)) for o in job.objects]
    return files


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def _same(a: Path, b: Path) -> bool:
    """Same resolved path, or the same existing file under two names (a hard link)."""
    if a == b:
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_job_paths(job: EditJob, work_dir: Path | None = None) -> None:
    """UserError when a path the job writes would destroy an input or another of its outputs (see module)."""
    reads = [(name, path, _resolved(path)) for name, path in read_paths(job)]
    writes = [(name, path, _resolved(path)) for name, path in written_files(job)]
    for index, (name, path, target) in enumerate(writes):
        for read_name, read_path, source in reads:
            if _same(target, source) or (source.is_dir() and _inside(target, source)):
                where = "is" if _same(target, source) else "lies inside"
                raise UserError(f"{name} '{path}' {where} {read_name} '{read_path}'",
                                "give every output its own new name; inputs are never overwritten")
        for other_name, other_path, other in writes[:index]:
            if _same(target, other):
                raise UserError(f"{name} '{path}' is {other_name} '{other_path}'", "give each file the job writes its own name")
        if target.is_dir():
            raise UserError(f"{name} '{path}' is a folder", "give a file name, e.g. out.mp4 or report.json")
    if work_dir is not None:
        _check_work_dir(Path(work_dir), reads, writes)


def _check_work_dir(work_dir: Path, reads: list, writes: list) -> None:
    folder = _resolved(work_dir)
    for name, path, target in reads + writes:
        if _inside(target, folder) or _inside(folder, target):
            raise UserError(f"--work-dir '{work_dir}' holds {name} '{path}' (its checkpoints are deleted when the job is done)",
                            "give --work-dir a folder of its own")
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--work-dir '{work_dir}' is a file", "give a folder; it is created when missing")
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create --work-dir '{work_dir}': '{existing}' is a file", "give a folder path")
    if not writable(existing):
        raise UserError(f"cannot write checkpoints into --work-dir '{work_dir}': '{existing}' is read-only or not yours",
                        "pick a folder you can write to")


def writable(folder: Path) -> bool:
    """Whether a file can be created in `folder` now (rights and a read-only disk; the probe leaves no file)."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def removed_on_failure(run: F) -> F:
    """Decorator of a runner `run(job, ...)`: when it raises, the files of `written_files(job)` it created or
    replaced are removed (files it left untouched stay), so a failed run leaves no output behind."""

    @functools.wraps(run)
    def wrapper(job: EditJob, *args: Any, **kwargs: Any) -> Any:
        files = [_resolved(path) for _, path in written_files(as_run(job))]
        before = {path: _identity(path) for path in files}
        try:
            return run(job, *args, **kwargs)
        except BaseException:
            for path in files:
                now = _identity(path)
                if now is not None and now != before[path] and path.is_file():
                    path.unlink(missing_ok=True)
            raise

    return wrapper  # type: ignore[return-value]
