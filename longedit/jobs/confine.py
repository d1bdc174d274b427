"""Where a job file may write, and what a watched folder accepts from the people who share it.

A job file is data from someone else (a colleague dropping jobs into a shared watched folder, a file
mailed around for `longedit run`), so:

- its `output`, `report` and `attention_video` (and the strips beside the output) must lie in the job's
  own folder - the job file's folder for `run` and `validate`, `processing/NAME/` (later `done/NAME/`)
  for `watch` - or under a folder the operator allows with `--output-root DIR`; its `cache_dir` and
  `tune.cache_dir` in the job's folder, the watched folder or an output root: `../` and absolute paths
  elsewhere are refused before the job starts;
- a job never writes over a file it did not create. In a watched folder: before its first attempt none
  of the files it will write may exist, and it may not take the names the folder uses itself
  (meta.json, report.json, error.json, claim files, work/). Under `run` and `validate`: a file it
  would write that exists already is refused unless `run` wrote it - each finished job records its
  files (path, size, mtime) in `.longedit-outputs.json` in the job file's folder, so a rerun replaces
  its own output, but not one somebody edited since (or one longedit never wrote). `longedit edit -o`,
  where a person types the name, overwrites as it always has;
- a job file, or an input named relative to the watched folder, that is a symlink to somewhere outside
  the watched folder is refused (a link to a secret must not be read, let alone echoed);
- error messages name the key, never its value.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Sequence
from pathlib import Path

from longedit.atomic import write_json
from longedit.config import EditJob, as_run
from longedit.errors import UserError
from longedit.output_paths import read_paths, written_files

#: Names inside a watch job's folder that the watched folder writes itself (`longedit.jobs.spool`).
RESERVED_NAMES = re.compile(r"^(meta\.json|report\.json|error\.json|claim-\d+\.json|work)$")
OUTPUT_KEYS = ("output", "report", "attention_video")
#: The record, in a job file's folder, of the files `longedit run` wrote there (path -> size, mtime_ns).
OUTPUTS_MANIFEST = ".longedit-outputs.json"
_KEY_OF = {"the output video": "'output'", "the report": "'report'", "the attention video": "'attention_video'"}


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == folder or path.is_relative_to(folder) for folder in folders)


def _resolved(path: Path | str) -> Path:
    return Path(path).expanduser().resolve()


def check_write_places(job: EditJob, own_folder: Path, label: str, *, output_roots: Sequence[Path] = (),
                       cache_roots: Sequence[Path] = ()) -> None:
    """UserError when the job file's outputs leave `own_folder` (or an `output_roots` folder), or its cache
    folders leave those and `cache_roots`; the message names the key, not the path it holds."""
    allowed = [_resolved(own_folder), *(_resolved(root) for root in output_roots)]
    fix = f"write it inside the job's folder '{own_folder}'" + (
        " or an --output-root folder" if output_roots else "; an operator can allow another folder with --output-root DIR")
    for key in OUTPUT_KEYS:
        value = getattr(job, key)
        if value is not None and not _inside(_resolved(value), allowed):
            raise UserError(f"job file '{label}': '{key}' points outside the job's folder", fix)
    caches = [("cache_dir", job.cache_dir), ("tune.cache_dir", job.tune.cache_dir if job.tune is not None else None)]
    roots = allowed + [_resolved(root) for root in cache_roots]
    for key, value in caches:
        if value is not None and not _inside(_resolved(value), roots):
            raise UserError(f"job file '{label}': '{key}' points outside the job's folder", fix)


def check_watch_job(job: EditJob, job_folder: Path, watched: Path, label: str, *,
                    first_attempt: bool) -> None:
    """The watched folder's own rules for a claimed job (see the module docstring)."""
    root = Path(watched).absolute()
    for name, path in read_paths(job):
        check_link(Path(path), root, f"job file '{label}': {name}")
    folder = _resolved(job_folder)
    for name, path in written_files(as_run(job)):
        target = _resolved(path)
        if target.is_relative_to(folder) and RESERVED_NAMES.match(target.relative_to(folder).parts[0]):
            raise UserError(f"job file '{label}': {name} takes a name the watched folder uses itself",
                            "name it differently, e.g. NAME-edited.mp4")
        if first_attempt and os.path.lexists(path):
            raise UserError(f"job file '{label}': {name} would overwrite an existing file",
                            "a job never writes over a file it did not create: pick a new name")


def check_link(path: Path, watched: Path, what: str) -> None:
    """UserError when `path`, named inside the watched folder, is (or goes through) a link out of it."""
    root = Path(watched).absolute()
    lexical = Path(os.path.normpath(Path(path).expanduser().absolute()))
    if lexical.is_relative_to(root) and not _resolved(lexical).is_relative_to(_resolved(root)):
        raise UserError(f"{what} is a symbolic link out of the watched folder",
                        "copy the file into the watched folder instead of linking to it")


def _output_files(job: EditJob) -> list[tuple[str, Path]]:
    """(key as the job file spells it, resolved path) of every file the job writes; strips go with 'output'."""
    return [(_KEY_OF.get(name, "an attention strip beside 'output'"), _resolved(path))
            for name, path in written_files(as_run(job))]


def _manifest_key(path: Path, folder: Path) -> str:
    """`path` relative to the job file's folder (so the folder may move), absolute when outside it."""
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)


def _fingerprint(path: Path) -> dict[str, int] | None:
    """Size and mtime of the regular file at `path` (a link is not one); None when there is none."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns} if stat.S_ISREG(info.st_mode) else None


def _read_manifest(folder: Path) -> dict[str, dict[str, int]]:
    """The folder's output record; an unreadable or damaged one counts as empty (it only ever allows)."""
    try:
        data = json.loads((folder / OUTPUTS_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, dict)} if isinstance(data, dict) else {}


def check_own_outputs(job: EditJob, own_folder: Path, label: str) -> None:
    """UserError when a file the job would write exists and is not one `run` wrote there, unchanged since
    (`record_outputs`); the message names the key, not the path it holds."""
    folder = _resolved(own_folder)
    manifest = _read_manifest(folder)
    inputs = {_resolved(path) for _, path in read_paths(job)}
    for key, path in _output_files(job):
        if not os.path.lexists(path) or path in inputs:
            continue  # an output over an input gets its own message (`longedit.output_paths.check_job_paths`)
        recorded = manifest.get(_manifest_key(path, folder))
        current = _fingerprint(path)
        if current is None or recorded is None or {k: recorded.get(k) for k in current} != current:
            raise UserError(f"job file '{label}': {key} names an existing file that longedit did not write "
                            "(or that was changed since)",
                            "a job never writes over a file it did not create: move that file away or pick a new name")


def record_outputs(job: EditJob, own_folder: Path) -> None:
    """Record the files the finished job wrote in the folder's `OUTPUTS_MANIFEST`, so a rerun may replace
    them; entries whose file is gone are dropped. Not safe against two processes at once (a lost entry
    only makes a later rerun refuse)."""
    folder = _resolved(own_folder)
    manifest = {k: v for k, v in _read_manifest(folder).items()
                if os.path.lexists(folder / k)}
    for _, path in _output_files(job):
        current = _fingerprint(path)
        if current is not None:
            manifest[_manifest_key(path, folder)] = current
    write_json(folder / OUTPUTS_MANIFEST, dict(sorted(manifest.items())), what="the job's output record")
