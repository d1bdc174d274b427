"""Find the toy world's objects in an image by colour and name their shapes (numpy only).

Backgrounds are muted by construction (textures.py), so a pixel that is saturated and bright, or
near white, belongs to an object. Each colour's largest 4-connected blob is one detection; its shape
(circle, square, upright triangle) comes from two blur-tolerant features: how bottom-heavy the blob is
and how much of its bounding box it fills.
Good enough to score the model's own outputs: it tolerates blur, soft edges and slightly wrong hues.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from longedit.toyworld.render import shape_coverage
from longedit.toyworld.world import COLOURS, ToyObject

MIN_SATURATION = 0.55
MIN_VALUE = 0.55
WHITE_MAX_SATURATION = 0.2
WHITE_MIN_VALUE = 0.85
MAX_HUE_DISTANCE = 35.0  # degrees from the palette colour's hue
_NAMES = tuple(COLOURS)


def _hsv(image: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rgb = image.astype(np.float32) / 255.0
    high, low = rgb.max(axis=-1), rgb.min(axis=-1)
    chroma = high - low
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    safe = np.maximum(chroma, 1e-6)
    hue = np.where(high == r, np.mod((g - b) / safe, 6.0), np.where(high == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    return hue * 60.0, chroma / np.maximum(high, 1e-6), high


_PALETTE_HUES = {name: _hsv(np.array([[rgb]], np.uint8))[0][0, 0] for name, rgb in COLOURS.items() if name != "white"}


def colour_labels(image: np.ndarray) -> np.ndarray:
    """Per-pixel index into COLOURS (-1: background), from an HxWx3 uint8 image."""
    hue, sat, val = _hsv(image)
    labels = np.full(hue.shape, -1, np.int8)
    coloured = (sat >= MIN_SATURATION) & (val >= MIN_VALUE)
    best = np.full(hue.shape, MAX_HUE_DISTANCE, np.float32)
    for name, centre in _PALETTE_HUES.items():
        distance = np.abs(np.mod(hue - centre + 180.0, 360.0) - 180.0)
        closer = coloured & (distance < best)
        labels[closer], best[closer] = _NAMES.index(name), distance[closer]
    labels[(sat <= WHITE_MAX_SATURATION) & (val >= WHITE_MIN_VALUE)] = _NAMES.index("white")
    return labels


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 4-connected component of a bool mask (min-label propagation, vectorised)."""
    if not mask.any():
        return mask
    h, w = mask.shape
    big = h * w + 1
    labels = np.where(mask, np.arange(h * w).reshape(h, w), big)
    while True:
        padded = np.pad(labels, 1, constant_values=big)
        neighbours = np.minimum.reduce(
            [labels, padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]]
        )
        updated = np.where(mask, neighbours, big)
        if np.array_equal(updated, labels):
            break
        labels = updated
    values, counts = np.unique(labels[mask], return_counts=True)
    return labels == values[np.argmax(counts)]


@dataclass(frozen=True)
class Detection:
    """One found object: its colour, best-fitting shape (and that fit's IoU), pixels and box."""

    colour: str
    shape: str
    iou: float
    mask: np.ndarray
    box: tuple[int, int, int, int]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    @property
    def centre(self) -> tuple[float, float]:
        ys, xs = np.nonzero(self.mask)
        return float(xs.mean()) + 0.5, float(ys.mean()) + 0.5

    def inside(self, box: tuple[int, int, int, int]) -> float:
        """Share of the detection's pixels inside `box` (x0, y0, x1, y1; exclusive)."""
        x0, y0, x1, y1 = box
        return float(self.mask[max(0, y0) : y1, max(0, x0) : x1].sum()) / max(self.area, 1)


def shape_features(blob: np.ndarray) -> tuple[float, float]:
    """(share of the blob's pixels in the lower half of its box, blob area / box area).

    Ideal shapes: circle (0.50, 0.785), square (0.50, 1.0), upright triangle (0.75, 0.5). Blur (a
    decoder's) rounds corners and tips, moving all three toward the circle, so the thresholds below sit
    between the blurred shapes measured on VAE reconstructions, not between the ideal ones.
    """
    ys, xs = np.nonzero(blob)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    lower = float((ys + 0.5 > (y0 + y1) / 2).mean())
    return lower, float(blob.sum()) / float((y1 - y0) * (x1 - x0))


def classify_shape(blob: np.ndarray) -> tuple[str, float]:
    """The blob's shape from `shape_features`, and the IoU of that shape's template fitted to its box."""
    lower, fill = shape_features(blob)
    if lower >= 0.57 or (fill < 0.70 and lower >= 0.52):
        shape = "triangle"
    elif fill >= 0.87:
        shape = "square"
    else:
        shape = "circle"
    ys, xs = np.nonzero(blob)
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    template = shape_coverage(shape, (x0 + x1) / 2, (y0 + y1) / 2, ((x1 - x0) + (y1 - y0)) / 2, *blob.shape) > 0.5
    return shape, float((template & blob).sum()) / max(float((template | blob).sum()), 1.0)


def detect(image: np.ndarray, min_area: int = 30) -> list[Detection]:
    """Every colour's largest blob of at least `min_area` pixels, as a Detection."""
    labels = colour_labels(image)
    found = []
    for index, name in enumerate(_NAMES):
        blob = largest_component(labels == index)
        if blob.sum() < min_area:
            continue
        ys, xs = np.nonzero(blob)
        shape, iou = classify_shape(blob)
        found.append(Detection(name, shape, iou, blob, (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)))
    return found


def find(detections: list[Detection], colour: str, shape: str | None = None) -> Detection | None:
    """The detection of `colour` (and `shape`, if given), or None."""
    for detection in detections:
        if detection.colour == colour and (shape is None or detection.shape == shape):
            return detection
    return None


def agreement(detections: list[Detection], objects: list[ToyObject] | tuple[ToyObject, ...]) -> list[bool]:
    """For each object: was it found with its colour and its shape?"""
    return [find(detections, obj.colour, obj.shape) is not None for obj in objects]
