"""`longedit status DIR --html FILE`: the morning report, one static HTML page over a watched folder.

No server and nothing beside the page: every picture is inline (a `data:` URI). Per job, in the order
of `longedit status`: a coloured state block, the name and state, attempts, duration, the prompts and
settings, a source | edited thumbnail strip (a few frames decoded by streaming, `longedit.video`), the
attention strips of the edit's report (`attention_pictures`, paths relative to the report's folder),
the report's metrics and `longedit eval`'s when the report holds them, and for a failed job its error
with the fix. Every text is escaped; a picture that cannot be made is a line saying why, never a
failed page. Data (`collect_report`) and markup (`render_html`) are separate so each is tested alone.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from longedit import atomic
from longedit.errors import UserError
from longedit.jobs.jobfile import find_companion_video, read_job_mapping
from longedit.jobs.spool import ERROR_NAME, META_NAME, REPORT_NAME, read_json
from longedit.jobs.status import ORDER, _duration, collect_status

#: One solid colour per state: the block left of each job (a screenshot finds the jobs by it).
STATE_COLOURS = {
    "queued": (150, 150, 150), "running": (30, 110, 220), "interrupted": (240, 140, 0),
    "done": (0, 160, 60), "failed": (215, 40, 60),
}
THUMB_FRAMES = 4
THUMB_HEIGHT = 72
MAX_STRIP_WIDTH = 1024
SETTING_KEYS = ("model", "method", "steps", "guidance", "size", "window", "stride", "seed", "preset", "refine", "rad", "irjs",
                "source_noise", "inversion_prompt", "dtype", "device")


# ------------------------------------------------------------------------------------------ data
def _data_uri(image, fmt: str = "JPEG") -> str:
    """A PIL image as an inline `data:` URI (JPEG for thumbnails, PNG for attention strips)."""
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 85} if fmt == "JPEG" else {}))
    return f"data:image/{fmt.lower()};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def thumbnail_strip(path: Path, frames: int = THUMB_FRAMES, height: int = THUMB_HEIGHT) -> tuple[str | None, str]:
    """(data URI or None, note): `frames` evenly spaced frames of the video side by side, `height` px high.

    Frames are decoded one at a time by seeking (`iter_frames` with start/end), never the whole video.
    """
    from PIL import Image

    from longedit.video import iter_frames, probe

    try:
        info = probe(path)
        width = max(2, round(info.width * height / info.height / 2) * 2)
        picks = sorted({round(i * (info.frames - 1) / max(1, frames - 1)) for i in range(frames)})
        strip = Image.new("RGB", (width * len(picks), height), "white")
        for slot, index in enumerate(picks):
            frame = next(iter_frames(path, size=(width, height), start=index, end=index + 1))
            strip.paste(Image.fromarray(frame), (slot * width, 0))
    except Exception as error:  # noqa: BLE001 - a damaged or missing video is a line on the page, not a failed page
        return None, f"no thumbnails: {error or type(error).__name__}"
    return _data_uri(strip), f"frames {', '.join(map(str, picks))} of {info.frames}"


def attention_strips(report: dict, report_dir: Path) -> tuple[dict[str, str], str | None]:
    """({word: data URI}, attention video path or None) from the report's `attention_pictures`."""
    from PIL import Image

    pictures = report.get("attention_pictures") if isinstance(report.get("attention_pictures"), dict) else {}
    strips = {}
    for word, relative in (pictures.get("strips") or {}).items():
        path = _inside(report_dir, relative)
        if path is None:
            continue  # not a file path inside the job's folder: shown as missing below
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if image.width > MAX_STRIP_WIDTH:
                    image = image.resize((MAX_STRIP_WIDTH, max(1, round(image.height * MAX_STRIP_WIDTH / image.width))))
                strips[str(word)] = _data_uri(image, "PNG")
        except OSError:
            continue  # listed but gone: shown as missing below
    video = _inside(report_dir, pictures.get("video"))
    return strips, (str(video) if video else None)


def _inside(folder: Path, relative: Any) -> Path | None:
    """`folder / relative` when `relative` is a relative path (as the engine and the worker write them: beside
    the report, or up to an output folder elsewhere) naming a regular file, else None. An absolute path or a
    URL-like name in a report is never followed."""
    parts = Path(relative).parts if isinstance(relative, str) else ()
    if not parts or Path(relative).is_absolute() or ":" in parts[0]:
        return None
    path = Path(folder) / relative
    try:
        return path if path.is_file() else None
    except OSError:
        return None


def split_fix(message: str) -> tuple[str, str | None]:
    """(problem, fix) of a `UserError` line "problem (fix)"; (message, None) when it has no trailing fix."""
    text = message.strip()
    if not text.endswith(")"):
        return text, None
    depth = 0
    for position in range(len(text) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(text[position], 0)
        if depth == 0:
            problem, fix = text[:position].rstrip(), text[position + 1 : -1].strip()
            return (problem, fix) if problem and fix else (text, None)
    return text, None


def _existing(path: str | None, folder: Path | None) -> Path | None:
    """`path` if it exists, else the file of that name in the job's folder (a companion video moved with it)."""
    if not path:
        return None
    candidate = Path(path)
    if candidate.is_file():
        return candidate
    if folder is not None and (folder / candidate.name).is_file():
        return folder / candidate.name
    return None


def _source_video(report: dict, job: dict, keys: dict, job_file: Path | None, folder: Path | None) -> Path | None:
    """The job's input: as the report or ledger names it, as its job file names it, or its companion video."""
    named = report.get("input") or job.get("input")
    if not named and job_file is not None and isinstance(keys.get("input"), str):
        named = str(job_file.parent / keys["input"])
    found = _existing(named, folder)
    if found is None and job_file is not None:
        try:
            found = find_companion_video(job_file.parent, job_file.stem)
        except UserError:  # two candidates: the job fails on that too; no thumbnail here
            return None
    return found


def _job_file(job: dict, folder: Path | None) -> Path | None:
    """The job's file to show its settings from; never a symbolic link (it may point at anything)."""
    if job.get("job_file") and _plain_file(Path(job["job_file"])):
        return Path(job["job_file"])
    if folder is None:
        return None
    meta = read_json(folder / META_NAME) or {}
    name = meta.get("job_file") or f"{job['name']}.yaml"
    return folder / name if _plain_file(folder / name) else None


def _plain_file(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


def _mean(values: list) -> float | None:
    numbers = [v for v in values if isinstance(v, (int, float))]
    return sum(numbers) / len(numbers) if numbers else None


def report_metrics(report: dict) -> list[tuple[str, str]]:
    """(name, value) rows of an edit report: the loop's numbers, then `longedit eval`'s when present."""
    rows: list[tuple[str, str]] = []
    timing, memory = report.get("timing") or {}, report.get("memory") or {}
    if report.get("frames") is not None:
        rows.append(("frames", f"{report['frames']} at {report.get('fps', 0):.3f} fps, {len(report.get('windows') or [])} windows"))
    if timing.get("total_s") is not None:
        rows.append(("edit time", f"{timing['total_s']:.1f} s ({timing.get('frames_per_s', 0):.3f} frames/s)"))
    if report.get("unet_forwards") is not None:
        rows.append(("UNet forwards", str(report["unet_forwards"])))
    cache = ((report.get("inversion") or {}).get("cache") or {}).get("state")
    if cache:
        rows.append(("inversion cache", str(cache)))
    rad = report.get("rad") or {}
    for word, shares in (rad.get("attention_in_mask") or {}).items():
        share = _mean(shares)
        if share is not None:
            rows.append((f"attention of '{word}' in its region", f"{share:.3f} (mean over {len(shares)} steps)"))
    losses = [v for v in rad.get("loss") or [] if isinstance(v, (int, float))]
    if losses:
        rows.append(("RAD loss, first / last guided step", f"{losses[0]:.4f} / {losses[-1]:.4f}"))
    mae = (report.get("irjs") or {}).get("background_latent_mae")
    if isinstance(mae, (int, float)):
        rows.append(("background latent MAE", f"{mae:.4f}"))
    psnr = (report.get("background_paste") or {}).get("decoded_background_psnr_db")
    if isinstance(psnr, (int, float)):
        rows.append(("decoded background PSNR", f"{psnr:.2f} dB"))
    for key, label in (("peak_vram_bytes", "peak GPU memory"), ("peak_rss_bytes", "peak host memory")):
        if isinstance(memory.get(key), (int, float)):
            rows.append((label, f"{memory[key] / 2**20:.0f} MB"))
    evaluation = report.get("eval")
    if isinstance(evaluation, dict):
        rows += [(f"eval {name}", value) for name, value in eval_metrics(evaluation)]
    return rows


def eval_metrics(evaluation: dict, prefix: str = "") -> list[tuple[str, str]]:
    """`longedit eval`'s numbers flattened: every {"value": ...} entry, n/a with its reason when null."""
    if "value" not in evaluation and evaluation.get("reason") and not prefix:
        return [("", f"n/a ({evaluation['reason']})")]
    rows = []
    for key, entry in evaluation.items():
        name = f"{prefix}{key}"
        if isinstance(entry, dict) and "value" in entry:
            value = entry["value"]
            rows.append((name, f"{value:.4g}" if isinstance(value, (int, float)) else f"n/a ({entry.get('reason')})"))
        elif isinstance(entry, dict):
            rows += eval_metrics(entry, f"{name}.")
    return rows


def job_details(job: dict, now: float) -> dict[str, Any]:
    """Everything the page shows of one job of `collect_status`, pictures included."""
    folder = Path(job["folder"]) if job.get("folder") else None
    report = (read_json(folder / REPORT_NAME) if folder else None) or {}
    error = (read_json(folder / ERROR_NAME) if folder else None) or {}
    job_file = _job_file(job, folder)
    keys: dict[str, Any] = {}
    if job_file is not None:
        try:
            keys = read_job_mapping(job_file)
        except UserError as problem:
            keys = {"job file": str(problem)}
    settings = {k: keys[k] for k in ("source_prompt", "prompt") if k in keys}
    if keys.get("objects"):
        settings["objects"] = json.dumps(keys["objects"])
    effective = report.get("settings") or {}
    for key in SETTING_KEYS:
        value = effective.get(key, keys.get(key))
        if value is None and key in ("model", "dtype", "device"):
            value = report.get(key)
        if value is not None:
            settings[key] = value
    if report.get("processed_size"):
        settings["processed size"] = "x".join(map(str, report["processed_size"]))
    if job["state"] == "running" and job.get("started_at"):
        seconds = now - job["started_at"]
    else:
        seconds = job.get("run_seconds")
    source = _source_video(report, job, keys, job_file, folder)
    edited = _existing(report.get("output") or job.get("output"), folder) if job["state"] == "done" else None
    missing = {"source": "source video not found", "edited": {
        "done": "edited video not found", "failed": "no edited video: the job failed"}.get(job["state"], "no edited video yet")}
    pictures = {label: thumbnail_strip(path) if path is not None else (None, missing[label])
                for label, path in (("source", source), ("edited", edited))}
    strips, attention_video = attention_strips(report, folder) if folder and report else ({}, None)
    message = error.get("message") or (job.get("error") if job["state"] == "failed" else None)
    problem, fix = split_fix(message) if message else (None, None)
    if message and fix is None:
        fix = "see the traceback in error.json; fix the cause, then move the job file back into inbox/ to run it again"
    return {
        "name": job["name"], "state": job["state"], "attempts": job.get("attempts") or 0,
        "duration": _duration(seconds), "started": job.get("started_at"), "note": job.get("note") or "",
        "settings": settings, "thumbs": pictures, "attention": strips, "attention_video": attention_video,
        "metrics": report_metrics(report) if report else [], "error": problem, "fix": fix,
        "folder": str(folder) if folder else None, "output": str(edited) if edited else None,
    }


def collect_report(root: Path, *, stale_after: float = 120.0, now: float | None = None) -> dict[str, Any]:
    """`collect_status` plus, per job, `job_details`."""
    now = time.time() if now is None else now
    status = collect_status(root, stale_after=stale_after)
    return {**status, "generated_at": now, "details": [job_details(job, now) for job in status["jobs"]]}


# ---------------------------------------------------------------------------------------- markup
TEMPLATE = "morning_report.html"


def _text(value: Any) -> str:
    """A setting's value as the page shows it: switches as on/off, the rest as written."""
    return ("on" if value else "off") if isinstance(value, bool) else str(value)


def safe_link(path: str | os.PathLike | None, base: Path) -> str | None:
    """A link from the page's folder `base` to the existing file `path`, or None (then the page shows text).

    Built only from a relative file path, each part percent-quoted (so ':' never starts a scheme such as
    `javascript:`), and prefixed with `./` so the first part is never read as one; the folder can be copied as a unit.
    """
    if not path:
        return None
    try:
        target = Path(path).resolve()
        if not target.is_file():
            return None
        relative = Path(os.path.relpath(target, Path(base).resolve()))
    except (OSError, ValueError):  # unreadable, or on another drive: no relative link exists
        return None
    link = "/".join(quote(part, safe="") for part in relative.parts)
    return link if link.startswith("../") else f"./{link}"


def _environment(base: Path):
    """The Jinja2 environment of the page: autoescape on, `setting` and `safe_link` filters."""
    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("longedit.jobs", "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=False, lstrip_blocks=False, keep_trailing_newline=True,
    )
    environment.filters["setting"] = _text
    environment.filters["safe_link"] = lambda path: safe_link(path, base)
    return environment


def render_html(data: dict[str, Any], base: Path) -> str:
    """The page for `collect_report`'s data (the `templates/morning_report.html` Jinja2 template, autoescaped);
    links are relative to `base` (the page's folder)."""
    jobs = [{**job, "colour": "rgb({},{},{})".format(*STATE_COLOURS.get(job["state"], (0, 0, 0)))} for job in data["details"]]
    return _environment(base).get_template(TEMPLATE).render(
        root=str(data["root"]), counts=", ".join(f"{data['counts'][s]} {s}" for s in ORDER),
        stamp=time.strftime("%Y-%m-%d %H:%M", time.localtime(data["generated_at"])), jobs=jobs,
    )


def write_html_report(root: Path, path: Path, *, stale_after: float = 120.0) -> dict[str, Any]:
    """Write the morning report of watched folder `root` to `path` (atomically); returns its data."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"--html '{path}' is a folder", "give a file name such as report.html")
    if not path.parent.resolve().is_dir():
        raise UserError(f"cannot write --html '{path}': folder '{path.parent}' does not exist", "create it first")
    data = collect_report(Path(root), stale_after=stale_after)
    page = render_html(data, path.parent.resolve())
    with atomic.atomic_write(path, what="the HTML report", needed=len(page.encode("utf-8"))) as handle:
        handle.write(page)
    return data
