"""Regions given in source frames, for a job that edits a range of them (`--start`/`--end`/`--every`).

Keyframes (`--object WORD=BOX@FRAME`, `keyframes:`) and mask folders (`DIR/WORD/000123.png`) are numbered by
*source* frame, like `--start` and `--end`: the numbers a player shows, unchanged when the range changes, so masks
made once with `longedit masks` serve every range. The engine edits frames 0..N-1 of the range; `objects_in_range`
turns source keyframes into range frames (boxes interpolated at the range's ends, so the motion is the same).
"""

from __future__ import annotations

from longedit.config import ObjectSpec
from longedit.errors import UserError
from longedit.masks import box_at, validate_objects
from longedit.video.codecs import OutputFormat, output_format, pixel_format_note
from longedit.video.probe import VideoInfo


def is_cut(info: VideoInfo) -> bool:
    """Whether `info` is a part of its source (a start, an end or a step)."""
    return info.first_frame != 0 or info.every != 1 or (info.source_frames not in (0, info.frames))


def validate_in_source(objects: list[ObjectSpec], info: VideoInfo) -> None:
    """Check regions against the whole source (keyframes are source frame numbers)."""
    validate_objects(objects, info.width, info.height, info.source_frames or info.frames)


def _range_index(frame: int, info: VideoInfo) -> float:
    return (frame - info.first_frame) / info.every


def _source_frame(index: int, info: VideoInfo) -> int:
    return info.first_frame + index * info.every


def _keyframes_in_range(obj: ObjectSpec, info: VideoInfo) -> dict[int, tuple]:
    """Range frame -> box: the source keyframes inside the range (rounded to the nearest taken frame), plus
    the interpolated boxes at the range's first and last frame (only the first for a tracked object)."""
    source = obj.keyframe_boxes()
    last = info.frames - 1
    inside = {min(max(round(_range_index(f, info)), 0), last): box for f, box in source.items()
              if 0 <= _range_index(f, info) <= last}
    if obj.track is not None:
        return inside or {0: box_at(source, _source_frame(0, info))}
    ends = {0: box_at(source, _source_frame(0, info)), last: box_at(source, _source_frame(last, info))}
    return {**ends, **inside}


def objects_in_range(objects: list[ObjectSpec], info: VideoInfo) -> list[ObjectSpec]:
    """`objects` with keyframes renumbered to the range's frames (unchanged when the whole source is edited)."""
    if not is_cut(info):
        return objects
    moved = []
    for obj in objects:
        if obj.keyframes is None and not (obj.track is not None and obj.box is not None):
            moved.append(obj)
            continue
        keyframes = _keyframes_in_range(obj, info)
        moved.append(obj.model_copy(update={"box": None, "keyframes": keyframes} if len(keyframes) > 1 or obj.track
                                    else {"box": next(iter(keyframes.values())), "keyframes": None}))
    return moved


def check_range_options(job, info: VideoInfo) -> None:
    """Options that cannot follow a range yet: a one-line UserError before any work."""
    if job.eval and is_cut(info):
        raise UserError("--eval compares the output with the whole source, but --start/--end/--every edit a part of it",
                        "drop --eval, or run `longedit eval` on a source cut to the same range")


def media_notices(info: VideoInfo, output: OutputFormat) -> list[str]:
    """Notes for the summary and the report's warnings: colour the output does not keep."""
    note = pixel_format_note(info.pix_fmt, output)
    return [note] if note else []


def media_report(job, info: VideoInfo) -> dict:
    """The report's media entries: the range edited, the source's rotation and pixel format, the output format."""
    span = None
    if is_cut(info):
        span = {"start_frame": info.first_frame, "end_frame": info.first_frame + (info.frames - 1) * info.every + 1,
                "every": info.every, "source_frames": info.source_frames, "start_s": info.timestamps[0]}
    return {
        "range": span,
        "source_pix_fmt": info.pix_fmt,
        "rotation": {"source_degrees": info.rotation, "written": "upright"} if info.rotation else None,
        "output_format": output_format(job.output, job.codec, job.pix_fmt, job.crf).describe(),
    }
