"""Mask folders: `DIR/WORD/000000.png`, one single-channel PNG per frame, 0 = background, 255 = object.

This is what `longedit masks` writes and what `--masks DIR` reads, so a user can fix masks in any
image editor between the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from longedit.errors import UserError

FRAME_NAME = "{:06d}.png"


def frame_file(folder: Path, word: str, frame: int) -> Path:
    """Path of one object's mask for one frame."""
    return Path(folder) / word / FRAME_NAME.format(frame)


class MaskFolderWriter:
    """Writes per-frame masks of several objects (one sub-folder per word), frame after frame."""

    def __init__(self, folder: str | Path, words: Sequence[str]) -> None:
        self.folder = Path(folder)
        self.words = list(words)
        self.frames = 0
        for word in self.words:
            (self.folder / word).mkdir(parents=True, exist_ok=True)

    def write(self, masks: np.ndarray) -> None:
        """Save bool [n_words, H, W] as the next frame."""
        if masks.ndim != 3 or masks.shape[0] != len(self.words):
            raise ValueError(f"expected masks [{len(self.words)}, H, W], got {masks.shape}")
        for word, mask in zip(self.words, masks):
            image = Image.fromarray(np.where(mask, 255, 0).astype(np.uint8))  # 2-D uint8 -> mode "L"
            image.save(frame_file(self.folder, word, self.frames), compress_level=3)
        self.frames += 1


def save_mask_folder(folder: str | Path, words: Sequence[str], masks: Iterable[np.ndarray]) -> int:
    """Write every frame of `masks` (bool [n_words, H, W] each) under `folder`; returns the frame count."""
    writer = MaskFolderWriter(folder, words)
    for frame_masks in masks:
        writer.write(frame_masks)
    return writer.frames


def _word_folder(folder: Path, word: str) -> Path:
    """`folder/word`, or `folder` itself when it already is the word's folder (holds 000000.png)."""
    if (folder / word).is_dir():
        return folder / word
    if (folder / FRAME_NAME.format(0)).is_file():
        return folder
    if not folder.is_dir():
        raise UserError(f"mask folder '{folder}' does not exist", "export masks with `longedit masks` or fix --masks")
    raise UserError(
        f"mask folder '{folder}' has no '{word}' sub-folder",
        f"give one PNG per frame in {folder / word}/000000.png ...",
    )


def check_mask_size(folder: str | Path, word: str, width: int, height: int, first_frame: int = 0) -> str | None:
    """Compare the first mask of `folder`/`word` (source frame `first_frame`: an edit of a range starts
    there) with the video's size before any work starts.

    UserError when the folder or its first mask is missing or the masks have another aspect ratio
    (they would be stretched); a notice (what will be done) when they only have another size; else None.
    """
    source = _word_folder(Path(folder), word)
    first = source / FRAME_NAME.format(first_frame)
    if not first.is_file():
        raise UserError(f"mask folder '{source}' has no {first.name}", "masks are named by source frame: 000000.png, 000001.png, ...")
    try:
        with Image.open(first) as image:
            mask_w, mask_h = image.size
    except OSError as error:
        raise UserError(f"cannot read mask '{first}': {error}", "save it as a PNG") from error
    if (mask_w, mask_h) == (width, height):
        return None
    if abs(mask_w * height - mask_h * width) > max(width, height):  # more than a pixel of stretch
        raise UserError(
            f"masks in '{source}' are {mask_w}x{mask_h} but the video is {width}x{height} (another aspect ratio)",
            f"export the masks at {width}x{height}, e.g. with `longedit masks`",
        )
    return f"masks in '{source}' are {mask_w}x{mask_h}, the video is {width}x{height}: scaling the masks to the video"


def check_mask_folders(objects, width: int, height: int, first_frame: int = 0) -> None:
    """`check_mask_size` for every object whose region is a mask folder: an error before any work, or a warning."""
    import warnings

    for obj in objects:
        if obj.masks is not None and obj.track is None:
            notice = check_mask_size(Path(obj.masks).parent, Path(obj.masks).name, width, height, first_frame)
            if notice is not None:
                warnings.warn(notice, UserWarning, stacklevel=2)


def load_mask_folder(
    folder: str | Path, word: str, frames: int, out_size: tuple[int, int] | None = None, first: int = 0, every: int = 1
) -> Iterator[np.ndarray]:
    """Yield `frames` bool [H, W] masks read from `folder/word/%06d.png` (pixels > 127 are the object).

    With `out_size` (width, height) each mask is resized (nearest) to it. The folder is checked now;
    a missing frame raises UserError when it is reached, naming the file. Files are numbered by source
    frame: an edit of a range reads source frames `first`, `first + every`, ... (`longedit.source_range`).
    """
    source = _word_folder(Path(folder), word)
    if not (source / FRAME_NAME.format(first)).is_file():
        raise UserError(
            f"mask folder '{source}' has no {FRAME_NAME.format(first)}", "masks are named by source frame: 000000.png, 000001.png, ..."
        )
    return _read_masks(source, frames, out_size, first, every)


def _read_masks(source: Path, frames: int, out_size: tuple[int, int] | None, first: int = 0, every: int = 1) -> Iterator[np.ndarray]:
    for index in range(first, first + frames * every, every):
        path = source / FRAME_NAME.format(index)
        if not path.is_file():
            raise UserError(
                f"mask '{path}' is missing (frame {index} of {frames})", "give one mask PNG per video frame"
            )
        try:
            with Image.open(path) as image:
                image = image.convert("L")
                if out_size is not None and image.size != tuple(out_size):
                    image = image.resize(tuple(out_size), Image.Resampling.NEAREST)
                yield np.asarray(image) > 127
        except OSError as error:
            raise UserError(f"cannot read mask '{path}': {error}", "save it as a PNG") from error
