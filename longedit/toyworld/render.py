"""Render toy scenes to pixels and toy clips (moving objects, optional camera pan) with ground truth.

Shapes are drawn with 4x4 supersampled coverage (soft edges, like a real render); the ground-truth
mask of an object is where its coverage exceeds one half and no later object covers it.
"""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from longedit.toyworld.textures import texture
from longedit.toyworld.world import COLOURS, Scene, ToyObject, caption

_SUPERSAMPLE = 4


def shape_coverage(shape: str, cx: float, cy: float, size: float, h: int, w: int) -> np.ndarray:
    """Fraction of each pixel covered by the shape (float32 HxW); pixel (i, j) spans [j, j+1) x [i, i+1)."""
    offsets = (np.arange(_SUPERSAMPLE, dtype=np.float32) + 0.5) / _SUPERSAMPLE
    ys = (np.arange(h, dtype=np.float32)[:, None] + offsets[None, :]).reshape(-1)
    xs = (np.arange(w, dtype=np.float32)[:, None] + offsets[None, :]).reshape(-1)
    y, x = ys[:, None], xs[None, :]
    half = size / 2
    if shape == "circle":
        inside = (x - cx) ** 2 + (y - cy) ** 2 <= half * half
    elif shape == "square":
        inside = (np.abs(x - cx) <= half) & (np.abs(y - cy) <= half)
    elif shape == "triangle":  # upright: apex at the top centre, base along the bottom
        top = cy - half
        inside = (y >= top) & (y <= cy + half) & (np.abs(x - cx) <= (y - top) * 0.5)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return inside.reshape(h, _SUPERSAMPLE, w, _SUPERSAMPLE).mean(axis=(1, 3)).astype(np.float32)


def draw_objects(background: np.ndarray, objects: tuple[ToyObject, ...] | list[ToyObject]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Composite objects (in order) over a float RGB background -> (uint8 image, per-object bool masks)."""
    h, w, _ = background.shape
    image = background.copy()
    masks = []
    for obj in objects:
        alpha = shape_coverage(obj.shape, obj.cx, obj.cy, obj.size, h, w)
        colour = np.asarray(COLOURS[obj.colour], np.float32) / 255.0
        image = image * (1 - alpha[..., None]) + colour * alpha[..., None]
        covered = alpha > 0.5
        masks = [m & ~covered for m in masks]
        masks.append(covered)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8), masks


def render_scene(scene: Scene, size: int = 128) -> tuple[np.ndarray, list[np.ndarray]]:
    """The scene's image (uint8 size x size x 3) and one bool mask per object."""
    return draw_objects(texture(scene.background, size, size, scene.texture_seed), scene.objects)


@dataclass
class ToyClip:
    """Frames (uint8 HxWx3), per-frame per-object masks and boxes, the caption and the scene at frame 0."""

    frames: list[np.ndarray]
    masks: list[list[np.ndarray]]
    objects: list[list[ToyObject]]
    scene: Scene

    @property
    def caption(self) -> str:
        return caption(self.scene)

    def boxes(self, index: int) -> list[tuple[int, int, int, int]]:
        """Box of object `index` in every frame (x0, y0, x1, y1; exclusive), clipped to the frame."""
        h, w = self.frames[0].shape[:2]
        out = []
        for objs in self.objects:
            x0, y0, x1, y1 = objs[index].box
            out.append((max(0, x0), max(0, y0), min(w, x1), min(h, y1)))
        return out


def _eased(s: float) -> float:
    return 0.5 - 0.5 * math.cos(math.pi * s)


def clip_paths(scene: Scene, frames: int, size: int, rng: np.random.Generator, travel: float = 0.5) -> list[list[ToyObject]]:
    """Smooth paths: each object eases from its scene position toward a random target (at most `travel`
    of the frame away), with a gentle sine wobble, always inside the frame."""
    targets = []
    for obj in scene.objects:
        margin = obj.size / 2 + 1
        tx = float(np.clip(obj.cx + rng.uniform(-travel, travel) * size, margin, size - margin))
        ty = float(np.clip(obj.cy + rng.uniform(-travel, travel) * size * 0.5, margin, size - margin))
        targets.append((tx, ty, rng.uniform(0, 2 * math.pi)))
    paths = []
    for i in range(frames):
        s = i / (frames - 1) if frames > 1 else 0.0
        row = []
        for obj, (tx, ty, phase) in zip(scene.objects, targets):
            margin = obj.size / 2 + 1
            e = _eased(s)
            cx = obj.cx + (tx - obj.cx) * e
            cy = obj.cy + (ty - obj.cy) * e + 0.04 * size * math.sin(2 * math.pi * s + phase) * math.sin(math.pi * s)
            row.append(obj.moved(float(np.clip(cx, margin, size - margin)), float(np.clip(cy, margin, size - margin))))
        paths.append(row)
    return paths


def render_clip(scene: Scene, frames: int = 16, size: int = 128, pan: float = 0.15, seed: int = 0, travel: float = 0.5) -> ToyClip:
    """Objects of `scene` moving on smooth paths over its background; the camera pans `pan` of the frame
    (the background slides, the objects' paths are in screen coordinates)."""
    rng = np.random.default_rng(seed)
    extra = int(math.ceil(pan * size)) + 1
    big = texture(scene.background, size + extra, size + extra, scene.texture_seed)
    direction = rng.uniform(0, 2 * math.pi)
    paths = clip_paths(scene, frames, size, rng, travel)
    images, masks = [], []
    for i, objects in enumerate(paths):
        s = i / (frames - 1) if frames > 1 else 0.0
        ox = int(round((0.5 + 0.5 * math.cos(direction) * (2 * s - 1)) * (extra - 1)))
        oy = int(round((0.5 + 0.5 * math.sin(direction) * (2 * s - 1)) * (extra - 1)))
        image, object_masks = draw_objects(big[oy : oy + size, ox : ox + size], objects)
        images.append(image)
        masks.append(object_masks)
    return ToyClip(images, masks, paths, scene)


def write_clip(clip: ToyClip, path: str | Path, fps: Fraction = Fraction(8), audio: bool = False) -> Path:
    """Encode the clip to H.264 (atomically, through `longedit.video.VideoWriter`); `audio` adds a tone."""
    from longedit.samples import make_tone
    from longedit.video import VideoWriter

    path = Path(path)
    h, w = clip.frames[0].shape[:2]
    with tempfile.TemporaryDirectory() as tmp:
        tone = make_tone(Path(tmp) / "tone.mp4", duration_s=len(clip.frames) / float(fps)) if audio else None
        with VideoWriter(path, w, h, Fraction(fps), audio_source=tone, crf=12) as writer:
            for frame in clip.frames:
                writer.write(frame)
    return path
