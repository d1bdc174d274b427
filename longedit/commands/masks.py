"""`longedit masks`: track boxes with SAM2 and export one PNG per frame per object, plus a preview video.

Output layout: `DIR/WORD/000000.png ...` (single channel, 0/255, source resolution) and
`DIR/preview.mp4` (masks tinted over the source). Everything is written to a hidden temporary folder
next to DIR and renamed into place at the end, so a failed or interrupted run leaves nothing behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Annotated

import typer

from longedit.atomic import disk_error
from longedit.config import DEFAULT_SAM2_MODEL, ObjectSpec, parse_object_args
from longedit.errors import UserError


def _check_words(objects: list[ObjectSpec]) -> None:
    """Every object needs a seed box, and its word becomes a folder name."""
    for obj in objects:
        if obj.box is None and obj.keyframes is None:
            raise UserError(f"--object '{obj.word}' has no box", f"write --object {obj.word}=x0,y0,x1,y1[@FRAME]")
        if obj.word in (".", "..") or any(c in obj.word for c in '/\\:*?"<>|') or obj.word.strip() != obj.word:
            raise UserError(f"word '{obj.word}' cannot be a folder name", "use a plain word such as cat or car")


def _check_output(output: Path, overwrite: bool) -> None:
    """DIR must be new, empty, or replaceable with --overwrite."""
    if output.exists() and not output.is_dir():
        raise UserError(f"output '{output}' is a file", "give a folder path with -o")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise UserError(f"output folder '{output}' is not empty", "choose a new -o folder or pass --overwrite")


def _make_parent(output: Path) -> None:
    """Create DIR's parent (only once the inputs are known to be good) and check it is writable."""
    parent = output.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UserError(f"cannot create the folder '{parent}': {error.strerror}", "choose another -o") from error
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write to '{parent}'", "choose another -o")


def _publish(staging: Path, output: Path) -> None:
    """Move the finished staging folder to `output`, replacing an existing folder only at the very end."""
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.rename(output, old)
        os.rename(staging, output)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(staging, output)


def export_masks(
    input_path: Path,
    objects: list[ObjectSpec],
    output: Path,
    *,
    model: str = DEFAULT_SAM2_MODEL,
    chunk: int = 64,
    dilate: int = 0,
    box_masks: bool = False,
    min_area: int = 0,
    device: str = "auto",
    local_files_only: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Track, write DIR/WORD/%06d.png and DIR/preview.mp4 atomically; returns the number of frames."""
    from longedit.segmentation import MaskFolderWriter, overlay, track_masks
    from longedit.video import VideoWriter, iter_frames, probe

    _check_words(objects)
    _check_output(output, overwrite)
    info = probe(input_path)
    masks = track_masks(
        input_path,
        objects,
        model=model,
        device=device,
        chunk=chunk,
        dilate=dilate,
        box_masks=box_masks,
        min_area=min_area,
        local_files_only=local_files_only,
        progress=progress,
    )
    _make_parent(output)
    staging = output.parent / f".{output.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    staging.mkdir()  # plain mkdir (not mkdtemp) so the folder gets the user's usual permissions
    try:
        writer = MaskFolderWriter(staging, [o.word for o in objects])
        preview = VideoWriter(staging / "preview.mp4", info.width, info.height, info.fps, timestamps=info.timestamps)
        with preview as video:
            for frame_masks, frame in zip(masks, iter_frames(input_path)):
                writer.write(frame_masks)
                video.write(overlay(frame, frame_masks))
        if writer.frames != info.frames:
            raise UserError(
                f"got masks for {writer.frames} of {info.frames} frames of '{input_path}'",
                "the file may be damaged; re-encode it",
            )
        _publish(staging, output)
    except OSError as error:  # a full or read-only disk: one line, no staging folder left
        shutil.rmtree(staging, ignore_errors=True)
        raise (disk_error(error, "masks", output) or error) from error
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return info.frames


def masks(
    input: Annotated[Path, typer.Argument(help="Video to track objects in.", show_default=False)],  # noqa: A002
    object_: Annotated[
        list[str],
        typer.Option(
            "--object",
            help="WORD=x0,y0,x1,y1\\[@FRAME]: an object's box in source pixels on frame FRAME (default 0). "
            "Repeat for more objects; the same WORD with other @FRAMEs adds keyframes.",
            show_default=False,
        ),
    ],
    output: Annotated[
        Path,
        typer.Option(
            "-o", "--output", help="Folder to write WORD/000000.png ... and preview.mp4 to.", show_default=False
        ),
    ],
    sam2_model: Annotated[
        str,
        typer.Option(
            help="SAM2 hub id or local folder (transformers), CKPT.pt[:CONFIG.yaml] (official sam2), "
            "or 'tiny' (random, for tests)."
        ),
    ] = DEFAULT_SAM2_MODEL,
    chunk: Annotated[
        int, typer.Option(help="Frames per SAM2 session; longer videos are tracked in re-seeded chunks.")
    ] = 64,
    dilate: Annotated[int, typer.Option(help="Grow every mask by this many pixels.")] = 0,
    box_masks: Annotated[
        bool, typer.Option("--box-masks", help="Replace each mask by its filled bounding box.")
    ] = False,
    min_area: Annotated[int, typer.Option(help="Masks with fewer pixels than this become empty.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    local_files_only: Annotated[
        bool, typer.Option("--local-files-only", help="Never download the SAM2 model.")
    ] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a non-empty output folder.")] = False,
) -> None:
    """Track objects from boxes with SAM2 and export per-frame mask PNGs plus a preview video."""
    objects = parse_object_args(object_)
    frames = export_masks(
        input,
        objects,
        output,
        model=sam2_model,
        chunk=chunk,
        dilate=dilate,
        box_masks=box_masks,
        min_area=min_area,
        device=device,
        local_files_only=local_files_only,
        overwrite=overwrite,
    )
    words = ", ".join(o.word for o in objects)
    print(f"wrote {frames} frames of masks for {words} to {output} (preview: {output / 'preview.mp4'})")


def register(app: typer.Typer) -> None:
    """Add this module's commands to the app."""
    app.command("masks")(masks)
