"""`longedit status DIR`: what the watched folder holds, from the ledger and the folders themselves.

Jobs still in the inbox are not in the ledger yet (a job gets its id when it is claimed); they are
listed as `queued` from the folder listing. A `running` job whose worker is gone (killed, rebooted)
is flagged so, and resumes when a watcher starts. A running job's progress over all its phases and
its ETA come from the `progress.json` the engine keeps in the job's work folder (`longedit.progress`);
without one (an older engine, or before its first write) the ledger's checkpointed step/total is shown.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from longedit.errors import UserError
from longedit.jobs.claim import read_latest
from longedit.jobs.ledger import Ledger
from longedit.jobs.scanner import InboxScanner
from longedit.jobs.spool import WORK_NAME, Spool
from longedit.progress import PROGRESS_NAME, format_duration, load_progress_file, remaining_eta

ORDER = ("queued", "running", "interrupted", "done", "failed")


def collect_status(root: Path, *, stale_after: float = 120.0) -> dict[str, Any]:
    """Jobs and counts per state, ready for JSON."""
    spool = Spool(Path(root))
    if not spool.ledger_path.exists() and not spool.inbox.is_dir():
        raise UserError(f"'{root}' is not a watched folder (no inbox/ or ledger.sqlite)", "run `longedit watch DIR` first")
    rows = Ledger(spool.ledger_path, read_only=True).jobs() if spool.ledger_path.exists() else []  # status never writes
    now = time.time()
    jobs: list[dict[str, Any]] = []
    scanner = InboxScanner(spool, probe=lambda path: None)
    for job_file in spool.inbox_job_files():
        try:
            since = job_file.stat().st_mtime
        except FileNotFoundError:
            continue
        _, blocked, _ = scanner.input_of(job_file)
        note = f"in inbox, {blocked.reason}" if blocked is not None and blocked.state == "waiting" else "in inbox"
        jobs.append({"id": None, "name": job_file.stem, "state": "queued", "attempts": 0, "note": note,
                     "queued_at": since, "job_file": str(job_file)})
    for row in rows:
        job = {k: row.get(k) for k in (
            "id", "name", "state", "attempts", "step", "total", "queued_at", "started_at", "finished_at",
            "run_seconds", "peak_rss_mb", "peak_vram_mb", "owner", "folder", "input", "output", "error",
        )}
        job["note"] = (row.get("error") or "") if row["state"] in ("failed", "queued") else ""
        if row["state"] == "running" and row.get("folder"):
            job.update(_live_progress(Path(row["folder"]) / WORK_NAME, now))
            record = read_latest(Path(row["folder"]))
            if record is not None:
                alive, reason = record.liveness(stale_after=stale_after, now=now)
                if not alive:
                    job["note"] = f"{reason}; resumes when a watcher starts"
                    job["eta_s"] = None  # nobody is working on it
        if row["state"] == "interrupted":
            job["note"] = "resumes when a watcher starts"
        if row["state"] == "done":
            job["note"] = row.get("output") or ""
        jobs.append(job)
    jobs.sort(key=lambda j: (ORDER.index(j["state"]) if j["state"] in ORDER else len(ORDER), j.get("queued_at") or 0))
    counts = {state: sum(1 for j in jobs if j["state"] == state) for state in ORDER}
    return {"root": str(spool.root), "counts": counts, "jobs": jobs}


def _live_progress(work_dir: Path, now: float) -> dict[str, Any]:
    """`progress` (share of the whole job done), `phase`, `eta_s` and `preview` of a running job, if it wrote
    them; an unreadable `progress.json` gives only a `note` saying so (the ledger's step/total is shown)."""
    try:
        data = load_progress_file(work_dir)
    except ValueError as error:
        return {"note": f"its {PROGRESS_NAME} is unreadable ({error}); showing the ledger's progress"}
    if data is None:
        return {}
    return {"progress": data["fraction"], "phase": data.get("phase"), "eta_s": remaining_eta(data, now),
            "preview": bool(data.get("preview"))}


def _clock(ts: float | None) -> str:
    return time.strftime("%m-%d %H:%M", time.localtime(ts)) if ts else "-"


def _duration(seconds: float | None) -> str:
    return format_duration(seconds) if seconds else "-"


def _progress_cell(job: dict[str, Any]) -> str:
    """'42% edit' (the whole job, and its phase), 'step/total' from the ledger, or '-'."""
    if job.get("progress") is not None:
        phase = f" {job['phase']}" if job.get("phase") else ""
        preview = " (preview)" if job.get("preview") else ""
        return f"{100 * job['progress']:.0f}%{phase}{preview}"
    if job.get("total"):
        return f"{job.get('step') or 0}/{job['total']}"
    return "-"


def format_table(status: dict[str, Any], now: float | None = None) -> str:
    """The status as a plain text table (one line per job, the note last and never cut) plus a summary line.

    Plain text rather than a terminal widget: it is read in logs, over ssh and through grep.
    """
    now = time.time() if now is None else now
    counts = status["counts"]
    header = ("STATE", "NAME", "ATTEMPTS", "PROGRESS", "ETA", "STARTED", "TIME", "PEAK MEM", "NOTE")
    rows = [header]
    for job in status["jobs"]:
        progress = _progress_cell(job)
        eta = format_duration(job["eta_s"]) if job["state"] == "running" and job.get("eta_s") is not None else "-"
        if job["state"] == "running" and job.get("started_at"):
            spent = _duration(now - job["started_at"])
        else:
            spent = _duration(job.get("run_seconds"))
        memory = " ".join(
            f"{job[key]:.0f}MB{label}" for key, label in (("peak_vram_mb", "(GPU)"), ("peak_rss_mb", "")) if job.get(key)
        ) or "-"
        note = job.get("note") or ""
        if job["state"] == "done" and note:
            note = f"-> {note}"
        rows.append((job["state"], job["name"], str(job.get("attempts") or 0), progress, eta,
                     _clock(job.get("started_at")), spent, memory, note))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = [f"{status['root']}: " + ", ".join(f"{counts[s]} {s}" for s in ORDER)]
    for row in rows:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    return "\n".join(line.rstrip() for line in lines)
