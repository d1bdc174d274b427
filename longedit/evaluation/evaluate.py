"""`evaluate_videos`: one streaming pass over the source and edited videos computing every metric.

Memory is flat in video length: one frame of each video (plus a CLIP batch) is held at a time, and only
per-frame scalars are kept for the report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from longedit.config import ObjectSpec
from longedit.errors import UserError
from longedit.evaluation.clip import ClipMetrics, PickScoreMetric, load_clip
from longedit.evaluation.fidelity import PSNR_CAP, background_psnr, background_ssim, load_lpips, to_tensor
from longedit.evaluation.metric import available, mean, missing
from longedit.evaluation.placement import Placement, load_detector
from longedit.evaluation.regions import iter_regions, resolve_objects
from longedit.evaluation.relations import RelationScore, find_relations
from longedit.evaluation.temporal import TemporalConsistency
from longedit.words import check_words_in_prompt


@dataclass
class EvalSettings:
    """What `longedit eval` measures and with which models."""

    prompt: str = ""
    objects: list[str] = field(default_factory=list)  # --object WORD=x0,y0,x1,y1[@FRAME] values
    object_specs: list[ObjectSpec] | None = None  # parsed objects (from a job); replace `objects`/`masks`
    masks: Path | None = None
    margin: int = 8
    clip: str | None = None
    pickscore: str | None = None
    pickscore_processor: str | None = None
    lpips: str = "alex"
    detector: str | None = None
    local_files_only: bool = False
    device: str = "cpu"


def check_same_shape(source, edited) -> tuple[int, int] | None:
    """Frame counts and sizes must match (containers and codecs may differ).

    One exception: an edit of an odd-size source is written one column/row smaller (H.264 4:2:0 needs even
    sizes, `even_size`, the last column/row dropped), so such a pair is compared with the source cropped the
    same way. Returns that (width, height), or None when the sizes are equal.
    """
    from longedit.video.encode import even_size

    if source.frames != edited.frames:
        raise UserError(
            f"'{source.path}' has {source.frames} frames but '{edited.path}' has {edited.frames} frames",
            "compare a video with its own edit, frame for frame",
        )
    if (source.width, source.height) == (edited.width, edited.height):
        return None
    if (edited.width, edited.height) == even_size(source.width, source.height):
        return edited.width, edited.height
    raise UserError(
        f"'{source.path}' is {source.width}x{source.height} but '{edited.path}' is {edited.width}x{edited.height}",
        "edit with --keep-size, or resize one video to the other's size",
    )


#: Rates closer than this (relative) are the same rate written two ways (24 vs 23.976 is 0.1 % apart).
RATE_TOLERANCE = 5e-4


def check_same_rate(source, edited) -> None:
    """The edit must play at the source's frame rate: frames compared one for one are otherwise not the same
    moments (an edit re-encoded at another fps keeps the frame count only by dropping or repeating frames)."""
    if abs(source.fps - edited.fps) > RATE_TOLERANCE * max(source.fps, edited.fps):
        raise UserError(
            f"'{source.path}' runs at {float(source.fps):.3f} fps but '{edited.path}' at {float(edited.fps):.3f} fps",
            "compare a video with its own edit, written at the source's frame rate",
        )


def _fidelity(psnr: list, ssim: list, lpips: list, lpips_reason: str | None) -> dict:
    empty = "the regions cover every frame: no background"
    return {
        "psnr": available(mean(psnr), psnr, cap_db=PSNR_CAP) if mean(psnr) is not None else missing(empty),
        "ssim": available(mean(ssim), ssim) if mean(ssim) is not None else missing(empty),
        "lpips": missing(lpips_reason) if lpips_reason else available(mean(lpips), lpips),
    }


def _relations(relations: list, unbound: dict[str, str], score: RelationScore | None, detector_reason: str | None) -> dict:
    """VISOR-like shares per relation of the prompt, plus a null with the reason for each unbound phrase."""
    out = score.result() if score is not None else {r.name: missing(detector_reason or "") for r in relations}
    out.update({phrase: missing(reason) for phrase, reason in unbound.items()})
    return out


def evaluate_videos(source_path: Path, edited_path: Path, settings: EvalSettings) -> dict:
    """Every metric of `edited_path` against `source_path`, as a JSON-ready dict."""
    from longedit.video import iter_frames, probe
    from longedit.video.encode import crop_note

    source, edited = probe(source_path), probe(edited_path)
    crop = check_same_shape(source, edited)
    check_same_rate(source, edited)
    width, height = crop or (source.width, source.height)
    objects = settings.object_specs if settings.object_specs is not None else resolve_objects(settings.objects, settings.masks)
    if not objects:
        raise UserError("no regions given", "give --object WORD=x0,y0,x1,y1[@FRAME] or --masks DIR")
    words = [o.word for o in objects]
    if settings.prompt.strip():
        check_words_in_prompt(words, settings.prompt)
    regions = iter_regions(objects, source.frames, source.width, source.height, settings.margin)

    lpips_metric, lpips_reason = load_lpips(settings.lpips, settings.local_files_only)
    clip, clip_reason = load_clip(settings.clip, settings.local_files_only, settings.device)
    detector, detector_reason = load_detector(settings.detector, settings.local_files_only, settings.prompt)
    clip_metrics = ClipMetrics(clip, settings.prompt) if clip is not None else None
    pick_model, pick_reason = load_clip(
        settings.pickscore, settings.local_files_only, settings.device, settings.pickscore_processor, "PickScore", "--pickscore"
    )
    pickscore = PickScoreMetric(pick_model, settings.prompt) if pick_model is not None else None
    placement = Placement(detector, words) if detector is not None else None
    relations, unbound = find_relations(settings.prompt, words)
    relation_score = RelationScore(relations) if placement is not None else None
    temporal = TemporalConsistency()
    psnr: list[float | None] = []
    ssim: list[float | None] = []
    lpips: list[float | None] = []

    frames = 0
    for src, edt, masks in zip(iter_frames(source_path), iter_frames(edited_path), regions):
        src, masks = src[:height, :width], masks[:, :height, :width]  # a no-op unless the edit was cropped to even
        union = masks.any(axis=0)
        background = ~union
        src_t, edt_t = to_tensor(src), to_tensor(edt)
        psnr.append(background_psnr(src_t, edt_t, background))
        ssim.append(background_ssim(src_t, edt_t, background))
        if lpips_metric is not None:
            lpips.append(lpips_metric(src_t, edt_t, background))
        temporal.update(src, edt, union)
        if clip_metrics is not None:
            clip_metrics.update(edt)
        if pickscore is not None:
            pickscore.update(edt)
        if placement is not None:
            boxes = placement.update(edt, masks)
            if relation_score is not None:
                relation_score.update(boxes)
        frames += 1
    if frames != source.frames:
        raise UserError(f"decoded {frames} of {source.frames} frames", "a video may be damaged; re-encode it")

    clip_results = clip_metrics.result() if clip_metrics is not None else {
        "frame_consistency": missing(clip_reason or ""), "clip_score": missing(clip_reason or "")
    }
    clip_results["pickscore"] = pickscore.result() if pickscore is not None else missing(pick_reason or "")
    return {
        "source": str(source_path),
        "edited": str(edited_path),
        "frames": frames,
        "width": width,
        "height": height,
        "source_cropped": crop_note(source.width, source.height) if crop else None,
        "prompt": settings.prompt,
        "words": words,
        "margin_px": settings.margin,
        "background": _fidelity(psnr, ssim, lpips, lpips_reason),
        "temporal": temporal.result(),
        "clip": clip_results,
        "placement": placement.result() if placement is not None else {w: missing(detector_reason or "") for w in words},
        "relations": _relations(relations, unbound, relation_score, detector_reason),
        "models": {"clip": settings.clip, "pickscore": settings.pickscore, "lpips": settings.lpips, "detector": settings.detector},
    }
