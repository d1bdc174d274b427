"""The toy world: captions, textures, renders, clips and the detector, against ground truth."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from PIL import Image, ImageFilter

from longedit.toyworld.detect import agreement, classify_shape, colour_labels, detect, find, largest_component
from longedit.toyworld.render import render_clip, render_scene, shape_coverage, write_clip
from longedit.toyworld.textures import BRIGHT, MAX_BACKGROUND_SATURATION, MAX_BACKGROUND_VALUE, TEXTURES, texture
from longedit.toyworld.world import (
    BACKGROUNDS,
    COLOURS,
    UNSEEN_BACKGROUNDS,
    Scene,
    ToyObject,
    caption,
    relation_holds,
    sample_scene,
)


def test_captions_list_objects_and_relations():
    red = ToyObject("red", "circle", 30, 60, 30)
    blue = ToyObject("blue", "square", 90, 60, 30)
    assert caption(Scene("grass", (red, blue))) == "a red circle and a blue square on grass"
    assert caption(Scene("sand", (red, blue), "to the left of")) == "a red circle to the left of a blue square on sand"
    assert relation_holds("to the left of", (30, 60), (90, 60))
    assert not relation_holds("to the right of", (30, 60), (90, 60))
    assert relation_holds("above", (50, 10), (50, 90))


def test_sampled_scenes_are_valid_and_varied():
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(300)]
    for scene in scenes:
        colours = [o.colour for o in scene.objects]
        assert 1 <= len(scene.objects) <= 3 and len(set(colours)) == len(colours)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            assert x0 >= 0 and y0 >= 0 and x1 <= 128 and y1 <= 128
        if scene.relation is not None:
            a, b = scene.objects[:2]
            assert relation_holds(scene.relation, (a.cx, a.cy), (b.cx, b.cy))
    assert {s.background for s in scenes} == set(BACKGROUNDS)
    assert {len(s.objects) for s in scenes} == {1, 2, 3}
    assert {o.shape for s in scenes for o in s.objects} == {"circle", "square", "triangle"}
    assert sum(s.relation is not None for s in scenes) > 20


@pytest.mark.parametrize("name", [t for t in TEXTURES if t != "wild"])
def test_backgrounds_are_textured_muted_and_never_detected(name):
    for seed in range(4):
        image = texture(name, 128, 128, seed)
        assert image.std(axis=(0, 1)).max() > 0.01, "a texture, not a flat colour"
        value = image.max(-1)
        saturation = (value - image.min(-1)) / np.maximum(value, 1e-6)
        assert value.max() <= MAX_BACKGROUND_VALUE + 1e-4
        assert saturation[value > BRIGHT].max(initial=0) <= MAX_BACKGROUND_SATURATION + 1e-4
        pixels = (image * 255).round().astype(np.uint8)
        assert (colour_labels(pixels) >= 0).mean() < 0.002
        assert detect(pixels) == []


def test_textures_are_deterministic_and_differ_by_seed():
    assert np.array_equal(texture("grass", 32, 48, 5), texture("grass", 32, 48, 5))
    assert not np.array_equal(texture("grass", 32, 48, 5), texture("grass", 32, 48, 6))
    assert texture("sky", 32, 48, 1).shape == (32, 48, 3)


def test_shape_coverage_areas_match_geometry():
    side = 40.0
    areas = {s: shape_coverage(s, 64, 64, side, 128, 128).sum() for s in ("circle", "square", "triangle")}
    assert areas["square"] == pytest.approx(side * side, rel=0.02)
    assert areas["circle"] == pytest.approx(np.pi * (side / 2) ** 2, rel=0.02)
    assert areas["triangle"] == pytest.approx(side * side / 2, rel=0.03)


def test_render_masks_match_the_objects():
    scene = Scene("road", (ToyObject("yellow", "square", 40, 40, 30), ToyObject("purple", "circle", 90, 90, 30)))
    image, masks = render_scene(scene)
    assert image.shape == (128, 128, 3) and image.dtype == np.uint8
    assert masks[0][30:50, 30:50].all() and not masks[0][80:100, 80:100].any()
    assert np.abs(image[82:98, 82:98].astype(int) - COLOURS["purple"]).max() <= 1
    assert masks[1].sum() == pytest.approx(np.pi * 15**2, rel=0.05)


def _detector_agreement(blur: float) -> tuple[float, float]:
    rng = np.random.default_rng(7)
    hits, ious = [], []
    for _ in range(60):
        scene = sample_scene(rng, backgrounds=BACKGROUNDS + UNSEEN_BACKGROUNDS)
        image, masks = render_scene(scene)
        if blur:
            image = np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(blur)))
        found = detect(image)
        hits += agreement(found, scene.objects)
        assert len(found) == len(scene.objects), "no spurious detections on backgrounds"
        for obj, mask in zip(scene.objects, masks):
            got = find(found, obj.colour)
            ious.append((got.mask & mask).sum() / (got.mask | mask).sum())
    return float(np.mean(hits)), float(np.mean(ious))


def test_detector_names_every_object_on_clean_renders():
    share, iou = _detector_agreement(blur=0)
    assert share == 1.0 and iou > 0.95


def test_detector_tolerates_blur_like_a_decoder():
    share, iou = _detector_agreement(blur=1.2)
    assert share >= 0.95 and iou > 0.8


def test_detector_ignores_specks_and_keeps_the_largest_blob():
    mask = np.zeros((20, 20), bool)
    mask[2:10, 2:10] = True
    mask[15:17, 15:17] = True
    assert largest_component(mask).sum() == 64
    image = np.zeros((64, 64, 3), np.uint8)
    image[5:8, 5:8] = COLOURS["red"]  # 9 pixels: below min_area
    assert detect(image) == []
    blob = shape_coverage("triangle", 32, 32, 30, 64, 64) > 0.5
    assert classify_shape(blob)[0] == "triangle"


def test_clip_moves_objects_smoothly_with_masks(tmp_path):
    scene = Scene("grass", (ToyObject("red", "circle", 30, 64, 32),), texture_seed=3)
    clip = render_clip(scene, frames=12, pan=0.2, seed=1)
    assert len(clip.frames) == len(clip.masks) == 12
    centres = [np.argwhere(m[0]).mean(0) for m in clip.masks]
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    assert steps.max() < 12 and np.linalg.norm(centres[-1] - centres[0]) > 5
    for frame, masks in zip(clip.frames, clip.masks):
        found = find(detect(frame), "red", "circle")
        assert found is not None and (found.mask & masks[0]).sum() / masks[0].sum() > 0.95
    background = ~(clip.masks[0][0] | clip.masks[-1][0])
    assert not np.array_equal(clip.frames[0][background], clip.frames[-1][background]), "the camera pans"
    boxes = clip.boxes(0)
    assert all(0 <= x0 < x1 <= 128 and 0 <= y0 < y1 <= 128 for x0, y0, x1, y1 in boxes)
    path = write_clip(clip, tmp_path / "clip.mp4", fps=Fraction(8), audio=True)
    from longedit.video import iter_frames, probe

    info = probe(path)
    assert info.frames == 12 and info.has_audio
    decoded = next(iter(iter_frames(path)))
    assert np.abs(decoded.astype(int) - clip.frames[0]).mean() < 6
