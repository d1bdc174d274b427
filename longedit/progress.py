"""One progress measure for a whole job (every phase), with an ETA; shown as one bar and saved for `status`.

A job's phases (decode, masks, inversion, RAD steps, edit steps, encode) count different units
(frames, window-steps) of very different cost. Each phase has a prior cost per unit, in
"frame-forwards" (one UNet forward of one frame); they only fix the ratios between phases. Once some
work has run, each phase's time per unit is its own measured rate, and a phase not started yet is
estimated from its prior cost times the speed measured so far (seconds per prior unit over the
phases already run). So the ETA covers the whole job from the first measured unit on, and sharpens
as phases run. The clock is injectable (tests).

`JobProgress.snapshot()` is what `progress.json` in the work folder holds (written atomically at most
every `write_every` seconds and at every phase change); `read_progress_file` is what `longedit status`
reads. This module imports no torch: status stays light.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longedit import atomic

PROGRESS_NAME = "progress.json"
BAR_SCALE = 1000  # the bar counts permille of the whole job
MAX_PROGRESS_BYTES = 1 << 20  # a real progress.json is well under 4 KB; a bigger one is not read


@dataclass
class Phase:
    """One phase: `total` units of prior cost `cost` each; `done` units took `seconds`."""

    name: str
    total: float
    cost: float
    done: float = 0.0
    seconds: float = 0.0

    @property
    def measured(self) -> bool:
        return self.done > 0 and self.seconds > 0


def format_duration(seconds: float | None) -> str:
    """H:MM:SS or M:SS; '-' when unknown."""
    if seconds is None:
        return "-"
    seconds = int(round(max(0.0, seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class JobProgress:
    """Counts the work of every phase of one job; `fraction()` and `eta_s()` cover the whole job.

    `advance(name, units)` books `units` done in phase `name` and the time since the previous event
    (`start`, `advance`) to that phase. `path`: where to keep `progress.json` (None: nowhere).
    `bar`: show one tqdm bar for the job.
    """

    def __init__(
        self,
        phases: list[Phase],
        *,
        path: Path | None = None,
        bar: bool = False,
        preview: bool = False,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        write_every: float = 1.0,
    ) -> None:
        self.phases = {p.name: p for p in phases if p.total > 0}
        self.path = path
        self.preview = preview
        self.clock = clock
        self.wall = wall
        self.write_every = write_every
        self.current: str | None = None
        self._last = clock()
        self._written = float("-inf")
        self._bar = None
        if bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=BAR_SCALE, desc="job: starting", bar_format="{percentage:3.0f}%|{bar}| {desc}")

    # ------------------------------------------------------------------------------------- booking
    def seed(self, name: str, done: float, seconds: float) -> None:
        """Work of an earlier run of this job (a resume): `done` units that took `seconds`."""
        if name in self.phases:
            phase = self.phases[name]
            phase.done, phase.seconds = min(done, phase.total), seconds

    def start(self, name: str) -> None:
        """Phase `name` begins now (time since the last event is not booked to any phase)."""
        self._last = self.clock()
        if name in self.phases:
            self.current = name
            self._changed(force=True)

    def advance(self, name: str, units: float = 1.0) -> None:
        """`units` more done in phase `name`, with the time since the last event."""
        now = self.clock()
        if name in self.phases:
            phase = self.phases[name]
            phase.done = min(phase.total, phase.done + units)
            phase.seconds += now - self._last
            self.current = name
        self._last = now
        self._changed(force=False)

    def finish(self, name: str) -> None:
        """Phase `name` is complete (whatever its count said)."""
        if name in self.phases:
            remaining = self.phases[name].total - self.phases[name].done
            self.advance(name, remaining)
            self._changed(force=True)

    # ----------------------------------------------------------------------------------- estimates
    def _speed(self) -> float | None:
        """Seconds per prior cost unit over the measured phases, None before any measurement."""
        measured = [p for p in self.phases.values() if p.measured]
        cost = sum(p.done * p.cost for p in measured)
        return sum(p.seconds for p in measured) / cost if cost > 0 else None

    def _rate(self, phase: Phase, speed: float | None) -> float | None:
        """Estimated seconds per unit of `phase`."""
        if phase.measured:
            return phase.seconds / phase.done
        return None if speed is None else phase.cost * speed

    def eta_s(self) -> float | None:
        """Seconds left for the whole job; None until some work was measured."""
        speed = self._speed()
        if speed is None:
            return None
        return sum((p.total - p.done) * self._rate(p, speed) for p in self.phases.values())

    def fraction(self) -> float:
        """Share of the whole job done, weighted by each phase's estimated time."""
        speed = self._speed()
        rates = {n: (self._rate(p, speed) if speed is not None else p.cost) for n, p in self.phases.items()}
        total = sum(p.total * rates[n] for n, p in self.phases.items())
        done = sum(p.done * rates[n] for n, p in self.phases.items())
        return 1.0 if total <= 0 else min(1.0, done / total)

    def snapshot(self) -> dict[str, Any]:
        """What `progress.json` holds."""
        return {
            "fraction": round(self.fraction(), 4),
            "eta_s": None if (eta := self.eta_s()) is None else round(eta, 1),
            "phase": self.current,
            "phases": [{"name": p.name, "done": p.done, "total": p.total} for p in self.phases.values()],
            "preview": self.preview,
            "updated_at": self.wall(),
        }

    # ------------------------------------------------------------------------------------- outputs
    def _changed(self, force: bool) -> None:
        now = self.clock()
        if not force and now - self._written < self.write_every:
            return
        self._written = now
        if self._bar is not None:
            phase = self.phases.get(self.current) if self.current else None
            where = f"{phase.name} {phase.done:.0f}/{phase.total:.0f}" if phase else ""
            self._bar.n = round(self.fraction() * BAR_SCALE)
            self._bar.set_description_str(f"job: {where}, ETA {format_duration(self.eta_s())}", refresh=False)
            self._bar.refresh()
        if self.path is not None:
            atomic.write_json(self.path, self.snapshot(), what="the progress file")

    def close(self) -> None:
        """Write the last state and close the bar."""
        self._changed(force=True)
        if self._bar is not None:
            self._bar.close()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _progress_problem(data: Any) -> str | None:
    """What is wrong with a parsed `progress.json` (None: the fields `status` reads have their types)."""
    if not isinstance(data, dict):
        return "not a JSON object"
    if not _is_number(data.get("fraction")) or not 0 <= data["fraction"] <= 1:
        return "'fraction' is not a number from 0 to 1"
    for key in ("eta_s", "updated_at"):
        if data.get(key) is not None and not _is_number(data[key]):
            return f"'{key}' is not a number"
    if data.get("phase") is not None and not isinstance(data["phase"], str):
        return "'phase' is not a string"
    if data.get("preview") is not None and not isinstance(data["preview"], bool):
        return "'preview' is not true or false"
    return None


def load_progress_file(work_dir: Path) -> dict[str, Any] | None:
    """The job's `progress.json` in `work_dir`, None when there is none; ValueError (saying what is wrong)
    when it is there but is not JSON or its fields have the wrong types (a work folder others can write)."""
    path = Path(work_dir) / PROGRESS_NAME
    try:
        if path.stat().st_size > MAX_PROGRESS_BYTES:
            raise ValueError(f"is larger than {MAX_PROGRESS_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except UnicodeDecodeError as error:
        raise ValueError("is not UTF-8 text") from error
    except OSError as error:
        raise ValueError(f"cannot be read ({error.strerror or error})") from error
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:  # RecursionError: nested thousands deep
        raise ValueError("is not JSON") from error
    problem = _progress_problem(data)
    if problem is not None:
        raise ValueError(problem)
    return data


def read_progress_file(work_dir: Path) -> dict[str, Any] | None:
    """The job's `progress.json` in `work_dir`, None when missing or unreadable (see `load_progress_file`)."""
    try:
        return load_progress_file(work_dir)
    except ValueError:
        return None


def remaining_eta(data: dict[str, Any], now: float | None = None) -> float | None:
    """The ETA of a progress snapshot as of `now`: its eta less the time since it was written."""
    eta = data.get("eta_s")
    if eta is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, float(eta) - max(0.0, now - float(data.get("updated_at") or now)))
