"""Optional: the attention pictures (video and strips of the object words' attention maps)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from longedit import attention_pictures
from longedit.attention_pictures import MapStore
from longedit.checkpoint import RunState
from longedit.config import EditJob
from longedit.editor import VideoEditor
from longedit.masks import ObjectMasks
from longedit.models import Backbone
from longedit.progress import JobProgress
from longedit.video import VideoWriter, iter_frames
from longedit.words import WordTokens
from longedit.engine.keeper import is_fresh
from longedit.engine.plan import latent_grid
from longedit.engine.prepare import Prepared


MAPS_NAME = "attention-maps.f16"


@contextlib.contextmanager
def picture_store(job: EditJob, editor: VideoEditor, state: RunState, work_dir: Path | None, prepared: Prepared,
                  backbone: Backbone) -> Iterator[MapStore | None]:
    """The on-disk store of the word maps for the attention pictures (None when none are asked for), fed by
    the editor's `map_sink`; in the work folder (kept for a resume) or beside the output (removed)."""
    if not job.wants_attention_pictures or not editor.words:
        yield None
        return
    folder = work_dir if work_dir is not None else Path(job.output).resolve().parent
    name = MAPS_NAME if work_dir is not None else f".{Path(job.output).name}.{os.getpid()}.{MAPS_NAME}"
    folder.mkdir(parents=True, exist_ok=True)
    width, height = latent_grid(prepared, backbone)
    grid = (height // editor.map_scale, width // editor.map_scale)
    store = MapStore(folder / name, editor.picture_steps, prepared.info.frames, len(editor.words), grid, create=is_fresh(state))
    editor.map_sink = store.put
    try:
        yield store
    finally:
        editor.map_sink = None
        store.close(delete=work_dir is None)


def draw_attention_pictures(
    job: EditJob, prepared: Prepared, store: MapStore | None, masks: ObjectMasks | None, words: list[WordTokens],
    tracker: JobProgress,
) -> dict:
    """The attention video and strips from the stored maps (one pass over the source frames); the
    report's `attention_pictures`, paths relative to the report's folder (else the output's)."""
    base = attention_pictures.report_base(job.report, job.output)
    if store is None:
        return attention_pictures.report_entry(None, {}, base)
    info, size = prepared.info, prepared.processed_size
    strips = {w.word: attention_pictures.strip_path(Path(job.output), w.word) for w in words}
    video = None if job.attention_video is None else Path(job.attention_video)

    def writer_for(width: int, height: int) -> VideoWriter:
        return VideoWriter(video, width, height, info.fps, timestamps=info.timestamps[: info.frames])

    tracker.start("pictures")
    shown = attention_pictures.render(
        store, iter_frames(info, size=size, end=info.frames), None if masks is None else masks.latent,
        [w.word for w in words], writer_for if video is not None else None, strips, lambda: tracker.advance("pictures"),
    )
    tracker.finish("pictures")
    if not shown:
        return attention_pictures.report_entry(None, {}, base)
    return attention_pictures.report_entry(video, strips, base)
