"""The object masks at latent resolution: boxes, mask folders or SAM2 tracking; kept in the checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

from longedit.config import EditJob
from longedit.checkpoint import RunState
from longedit.masks import ObjectMasks, build_object_masks
from longedit.models import Backbone
from longedit.progress import JobProgress
from longedit.video import VideoInfo
from longedit.engine.plan import latent_grid
from longedit.engine.prepare import Prepared


def _mask_reader(obj_folder: Path, word: str, frames: int, size: tuple[int, int], info: VideoInfo):
    from longedit.segmentation import load_mask_folder

    # `obj.masks` is DIR/WORD already; the folder reader takes DIR and WORD.
    return load_mask_folder(Path(obj_folder).parent, Path(obj_folder).name, frames, size, info.first_frame, info.every)


def build_masks(
    job: EditJob, prepared: Prepared, grid: tuple[int, int], advance: Callable[[], None] | None = None
) -> ObjectMasks | None:
    """Object masks at latent resolution from boxes, mask folders or SAM2 tracking (`advance()` per tracked frame)."""
    objects = prepared.objects
    if not objects:
        return None
    info, size = prepared.info, prepared.processed_size
    tracker = None
    tracked = [o for o in objects if o.track == "sam2"]
    if tracked:
        from longedit.segmentation import track_masks

        tracker = track_masks(
            info, tracked, model=job.sam2_model, out_size=size, device=job.device, dilate=0,
            box_masks=job.box_masks, min_area=job.min_area, local_files_only=job.local_files_only, progress=False,
        )
        tracker = _counted(tracker, advance)
    source_size = (info.width, info.height)
    return build_object_masks(
        objects, info.frames, source_size, grid, dilate_px=job.mask_dilate,
        folder_reader=lambda folder, word, frames: _mask_reader(folder, word, frames, size, info), tracker=tracker,
    )


def _counted(items: Iterator, advance: Callable[[], None] | None) -> Iterator:
    """`items`, calling `advance()` after each."""
    for item in items:
        yield item
        if advance is not None:
            advance()


def restore_or_build_masks(job: EditJob, prepared: Prepared, backbone: Backbone, state: RunState, tracker: JobProgress
) -> ObjectMasks | None:
    """The run's object masks: from the checkpoint (tracking is not redone on resume) or built now."""
    if state.masks is not None:
        return ObjectMasks(**state.masks)
    tracker.start("masks")
    masks = build_masks(job, prepared, latent_grid(prepared, backbone), lambda: tracker.advance("masks"))
    tracker.finish("masks")
    state.masks = None if masks is None else {"words": masks.words, "latent": masks.latent, "sources": masks.sources}
    return masks
