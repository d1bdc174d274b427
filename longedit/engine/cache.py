"""The shared inversion cache: the job's place in it (key from video, model and settings) or why it has none."""

from __future__ import annotations

import time
from pathlib import Path

from longedit.config import EditJob
from longedit.checkpoint import RunState
from longedit.editor import VideoEditor
from longedit.inversion_cache import InversionCache, SharedInversion, cache_key, key_parts
from longedit.models import Backbone
from longedit.planner import parse_size
from longedit.engine.prepare import Prepared


def shared_inversion(
    job: EditJob, prepared: Prepared, backbone: Backbone, editor: VideoEditor, state: RunState, trajectory: bool
) -> SharedInversion | dict | None:
    """The job's place in the shared inversion cache, or why it has none (a dict for the report);
    None once the inversion is done. Computing the key reads the video and hashes the weights (timed)."""
    if state.phase != "inversion":
        return None
    if job.cache_dir is None:
        return {"state": "off", "note": "no cache folder (longedit edit --cache-dir DIR; on in run and watch)"}
    if job.use_fusion:
        return {"state": "off", "note": "attention fusion records the source attention during the inversion"}
    clock = time.perf_counter()
    prompt = "" if job.effective_inversion_prompt == "empty" else job.source_prompt
    parts = key_parts(
        video=prepared.info, processed_size=prepared.processed_size, frames=prepared.info.frames,
        backbone=backbone, editor=editor, windows=state.windows, inversion_prompt=prompt, trajectory=trajectory,
    )
    state.timing["cache_key_s"] = time.perf_counter() - clock
    return SharedInversion(InversionCache(Path(job.cache_dir), parse_size(job.cache_size)), cache_key(parts), parts)
