"""Score edits of toy clips against ground truth: placement by the detector, background fidelity,
seams between windows, and a contact sheet to look at."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from longedit.toyworld.detect import detect, find

Box = tuple[int, int, int, int]


def in_region(frame: np.ndarray, colour: str, shape: str | None, box: Box, min_inside: float = 0.6) -> bool:
    """Whether the detector finds a `colour` `shape` (any shape if None) with at least `min_inside` of its
    pixels in `box`."""
    found = find(detect(frame), colour, shape)
    return found is not None and found.inside(box) >= min_inside


def placement_share(frames: list[np.ndarray], boxes: list[Box], colour: str, shape: str | None) -> float:
    """Share of frames where the object (colour and shape) is found inside that frame's box."""
    return float(np.mean([in_region(f, colour, shape, b) for f, b in zip(frames, boxes)]))


def outside_mask(shape: tuple[int, int], box: Box, margin: int) -> np.ndarray:
    """True outside `box` grown by `margin` pixels."""
    h, w = shape
    x0, y0, x1, y1 = box
    mask = np.ones((h, w), bool)
    mask[max(0, y0 - margin) : min(h, y1 + margin), max(0, x0 - margin) : min(w, x1 + margin)] = False
    return mask


def background_psnr(frames: list[np.ndarray], sources: list[np.ndarray], boxes: list[Box], margin: int = 8) -> float:
    """PSNR (dB) over all pixels outside the (grown) boxes, edited vs source."""
    errors = []
    for frame, source, box in zip(frames, sources, boxes):
        keep = outside_mask(frame.shape[:2], box, margin)
        errors.append((frame[keep].astype(np.float64) - source[keep].astype(np.float64)) ** 2)
    mse = float(np.mean(np.concatenate(errors)))
    return 10 * np.log10(255.0**2 / max(mse, 1e-10))


def seam_ratio(
    frames: list[np.ndarray], boundaries: list[int], masks: list[np.ndarray] | None = None, statistic: str = "max"
) -> float:
    """Frame-to-frame change at window boundaries over the median change elsewhere.

    `boundaries`: indices i where frames i-1 and i come from different window sets; `masks`
    (optional, True = compare) restricts the difference to some pixels; `statistic`: "max" (the worst
    boundary; grows with the number of boundaries) or "mean" (the typical boundary, for comparing
    window plans with different numbers of boundaries). ~1 means no visible seam.
    """
    diffs = []
    for i in range(1, len(frames)):
        delta = np.abs(frames[i].astype(np.float64) - frames[i - 1].astype(np.float64)).mean(-1)
        keep = masks[i] & masks[i - 1] if masks is not None else np.ones(delta.shape, bool)
        diffs.append(float(delta[keep].mean()))
    at = [diffs[i - 1] for i in boundaries if 0 < i < len(frames)]
    elsewhere = [d for j, d in enumerate(diffs, start=1) if j not in boundaries]
    if not at or not elsewhere:
        return 1.0
    summary = max(at) if statistic == "max" else float(np.mean(at))
    return summary / max(float(np.median(elsewhere)), 1e-6)


def contact_sheet(rows: dict[str, list[np.ndarray]], path: str | Path, columns: int = 6, boxes: list[Box] | None = None) -> Path:
    """PNG with one labelled row per video (`columns` evenly spaced frames); boxes drawn on all rows but the first."""
    path = Path(path)
    length = min(len(frames) for frames in rows.values())
    picks = np.linspace(0, length - 1, min(columns, length)).round().astype(int)
    h, w = next(iter(rows.values()))[0].shape[:2]
    label_w = 96
    sheet = Image.new("RGB", (label_w + len(picks) * (w + 2), len(rows) * (h + 2) + 14), "white")
    draw = ImageDraw.Draw(sheet)
    for c, index in enumerate(picks):
        draw.text((label_w + c * (w + 2) + 2, 1), f"frame {index}", fill="black")
    for r, (label, frames) in enumerate(rows.items()):
        y = 14 + r * (h + 2)
        draw.text((4, y + h // 2 - 6), label, fill="black")
        for c, index in enumerate(picks):
            x = label_w + c * (w + 2)
            sheet.paste(Image.fromarray(frames[index]), (x, y))
            if boxes is not None and r > 0:
                x0, y0, x1, y1 = boxes[index]
                draw.rectangle((x + x0, y + y0, x + x1 - 1, y + y1 - 1), outline=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def paired_interval(on: list[float], off: list[float], resamples: int = 4000, seed: int = 0) -> dict:
    """Mean of on - off, its paired bootstrap 95% interval, and the n an interval of half-width 0.1 needs."""
    diff = np.asarray(on, float) - np.asarray(off, float)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(resamples, len(diff)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    spread = float(diff.std(ddof=1)) if len(diff) > 1 else float("nan")
    return {"n": len(diff), "on": float(np.mean(on)), "off": float(np.mean(off)), "diff": float(diff.mean()),
            "low": float(low), "high": float(high), "n_for_0.1": math.ceil((1.96 * spread / 0.1) ** 2) if spread > 0 else None}
