"""The committed toy model: loads by name, draws what it is told, and edits a toy clip measurably.

Every number is measured by the toy world's detector against ground truth (see longedit.toyworld).
The bounds are stated here; the model card (longedit/toyworld/model/README.md) has the full gates.
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest

from longedit.toyworld import model_path

pytestmark = pytest.mark.slow

MAX_MODEL_MB = 20
MIN_COLOUR_DRAWN = 0.8  # share of single-object captions whose colour the detector finds
MIN_DRAWN = 0.6  # share whose colour *and* shape it agrees with
MIN_NEW_COLOUR_SHARE = 0.5  # frames with an object of the edited colour inside its region
MIN_NEW_OBJECT_SHARE = 0.5  # frames with the edited colour *and* shape inside its region
MAX_BACKGROUND_LOSS_DB = 1.0  # outside the region (8 px margin): edited vs the VAE round trip, both against the source
MAX_SOURCE_REMNANT = 0.1  # of the source circle's area: red left inside the region after the edit
MAX_SEAM_RATIO = 2.5  # frame-to-frame change at window boundaries over the median change elsewhere
MIN_RAD_LOSS_DROP = 0.01  # RAD's loss before minus after its update, mean per guided step (the 4x4 model: < 1e-4)
MAX_SATURATED_CELLS = 0.3  # map cells where softmax(100 A) is a hard argmax (the 4x4 model: ~0.5)
MIN_RAD_MAP_ON_OBJECT = 0.4  # RAD's official map (softmax(100 A), columns 1-75) of a noun, mean over its object's cells


@pytest.fixture(scope="module")
def toy():
    from longedit.models import load_backbone

    return load_backbone("toy", device="cpu")


def test_toy_model_is_a_small_sd_folder_loaded_by_name(toy):
    from longedit.attention import capture_layer_names
    from longedit.toyworld.world import VOCABULARY

    folder = model_path()
    assert (folder / "model_index.json").is_file() and (folder / "README.md").is_file()
    size_mb = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 1e6
    assert size_mb <= MAX_MODEL_MB
    assert toy.name == "toy" and toy.kind == "sd" and toy.vae_scale == 8
    assert len(toy.unet.config.block_out_channels) == 4
    assert capture_layer_names(toy.unet, 4), "an H/32 cross-attention map exists"
    assert all(len(toy.tokenizer.tokenize(w)) == 1 for w in VOCABULARY)
    config = toy.scheduler.config
    assert (config.clip_sample, config.set_alpha_to_one, config.steps_offset) == (False, False, 1)


def test_toy_model_draws_what_it_is_told(toy):
    from longedit.toyworld.detect import agreement, detect, find
    from longedit.toyworld.pipeline import generate
    from longedit.toyworld.world import Scene, ToyObject

    objects = [("red", "circle"), ("blue", "square"), ("yellow", "triangle"), ("green", "square"), ("purple", "circle"), ("white", "triangle")]
    scenes = [Scene(bg, (ToyObject(c, s, 64, 64, 50),)) for (c, s), bg in zip(objects, ["grass", "sand", "water", "sky", "road", "grass"])]
    images = generate(toy, [s.caption for s in scenes], steps=15, guidance=7.5, seed=3)
    found = [detect(image) for image in images]
    colours = [find(f, scene.objects[0].colour) is not None for f, scene in zip(found, scenes)]
    assert np.mean(colours) >= MIN_COLOUR_DRAWN, colours
    hits = [agreement(f, scene.objects)[0] for f, scene in zip(found, scenes)]
    # the model card's gate on 418 held-out objects: 61.2% (the 4x4 parent 62.4%, paired -1.2 [-4.5, +2.4]; 31.6% at 3000 steps)
    assert np.mean(hits) >= MIN_DRAWN, f"colour and shape right for {np.mean(hits):.0%} of objects, below {MIN_DRAWN:.0%}"


def test_object_cells_attend_to_their_noun_as_rad_needs(toy):
    """RAD follows the gradient of its official map: a noun's softmax(100 A) over columns 1-75 must be
    high on its own object, or the inner loss sits at 1 with nothing to follow (the 9000-step model: 0.195,
    the padding columns took ~60% of each object cell's attention)."""
    from longedit.toyworld.gates import HELD_OUT_SEED, attention_localisation, held_out_scenes

    measured = attention_localisation(toy, held_out_scenes(12, seed=HELD_OUT_SEED + 3), steps=5)
    assert measured["official_map_inside"] >= MIN_RAD_MAP_ON_OBJECT, measured
    assert measured["mean_share_inside"] > 3 * measured["mean_area_fraction"], measured


@pytest.fixture(scope="module")
def edits(tmp_path_factory):
    """The demo's edit on a short clip (3 overlapping windows), its frames and its report."""
    from longedit.commands.edit import build_job
    from longedit.config import parse_object_args
    from longedit.engine import run_edit
    from longedit.toyworld.demo_clip import demo_edit
    from longedit.toyworld.render import write_clip
    from longedit.video import iter_frames

    folder = tmp_path_factory.mktemp("toy-edit")
    edit = demo_edit(frames=8)
    source = write_clip(edit.clip, folder / "toy.mp4", fps=Fraction(8))
    job = build_job(
        dict(
            input=source, output=folder / "edited.mp4", model="toy", source_prompt=edit.source_prompt,
            prompt=edit.prompt, steps=10, size=128, window=4, stride=2, report=folder / "report.json",
            objects=parse_object_args(edit.object_args(every=2)),
        )
    )
    run_edit(job, progress=False)
    frames = {name: list(iter_frames(path)) for name, path in (("source", source), ("edited", job.output))}
    return edit, frames, json.loads(job.report.read_text())


def test_edit_replaces_the_source_object_inside_its_region(edits):
    """The red circle is gone from the region in every frame (a fleck of red at the region's edge, under
    MAX_SOURCE_REMNANT of the circle's area, is not the circle); the new colour is there in most."""
    from longedit.toyworld.detect import detect, find
    from longedit.toyworld.scoring import placement_share

    edit, frames, _report = edits
    assert placement_share(frames["source"], edit.boxes, "red", "circle") == 1.0
    assert placement_share(frames["source"], edit.boxes, edit.colour, None) == 0.0
    for index, (frame, source, box) in enumerate(zip(frames["edited"], frames["source"], edit.boxes)):
        circle = find(detect(source), "red", "circle")
        left = find(detect(frame), "red")
        remnant = 0 if left is None or left.inside(box) < 0.6 else left.area
        assert remnant <= MAX_SOURCE_REMNANT * circle.area, f"frame {index}: red blob of {remnant} px left of {circle.area}"
    coloured = placement_share(frames["edited"], edit.boxes, edit.colour, None)
    assert coloured >= MIN_NEW_COLOUR_SHARE, f"{edit.colour} object in its region in {coloured:.0%} of frames"


def test_edit_gives_the_new_object_its_shape(edits):
    from longedit.toyworld.scoring import placement_share

    edit, frames, _report = edits
    shaped = placement_share(frames["edited"], edit.boxes, edit.colour, edit.shape)
    assert shaped >= MIN_NEW_OBJECT_SHARE, f"{edit.colour} {edit.shape} in its region in {shaped:.0%} of frames"


def test_rad_acts_on_the_model_its_loss_falls_at_every_guided_step(edits):
    """RAD's update lowers its own loss: the model's map is graded, not a saturated argmax (issue 25).

    The 4x4 model before the grown one: the loss moved by < 1e-4 per step (softmax(100 A) a hard argmax in
    ~50% of cells). Whether that puts objects in their regions is the benchmark's question, with enough
    samples to resolve it (`benchmarks/rad_effect.py`, RESULTS.md: binding +0.29, interval excluding 0, n = 96):
    this clip's 8 frames cannot resolve it (6/8 vs 4/8 with the 4x4 model, 4/8 vs 4/8 with the grown one)."""
    _edit, _frames, report = edits
    diagnostics = report["rad"]["diagnostics"]
    steps = [s for s in diagnostics["per_step"] if s["loss_before"] is not None and s["loss_after"] is not None]
    assert steps and all(s["loss_after"] < s["loss_before"] for s in steps), steps
    assert diagnostics["mean_loss_drop"] >= MIN_RAD_LOSS_DROP, diagnostics["mean_loss_drop"]
    assert diagnostics["mean_saturated"] <= MAX_SATURATED_CELLS, diagnostics["mean_saturated"]


def test_background_stays_as_close_to_the_source_as_the_vae_allows(toy, edits):
    """IRJS pastes the source latents outside the region and the engine composites the source's pixels
    back after decoding, so the background is at least as good as the VAE's own round trip of the source.
    (Without the pixel paste it measured 21.8 dB vs 24.3 dB: the decoder's global mid-block attention
    leaks the edit into the background.)"""
    from longedit.toyworld.pipeline import decode_latents, encode_images
    from longedit.toyworld.scoring import background_psnr

    edit, frames, _report = edits
    round_trip = decode_latents(toy, encode_images(toy, np.stack(frames["source"])))
    reference = background_psnr(list(round_trip), frames["source"], edit.boxes)
    edited = background_psnr(frames["edited"], frames["source"], edit.boxes)
    assert edited >= reference - MAX_BACKGROUND_LOSS_DB, (edited, reference)


def test_no_seam_at_window_boundaries(edits):
    from longedit.toyworld.scoring import seam_ratio

    edit, frames, _report = edits
    # windows of 4, stride 2 over 8 frames: [0-3], [2-5], [4-7]; frame sets change between 1|2, 3|4 and 5|6
    ratio = seam_ratio(frames["edited"], [2, 4, 6])
    assert ratio <= MAX_SEAM_RATIO, ratio


def test_demo_command_writes_videos_measures_and_a_contact_sheet(tmp_path, capsys):
    from longedit.cli import main
    from longedit.video import probe

    assert main(["demo", "--out", str(tmp_path), "--frames", "6", "--steps", "4", "--window", "6"]) == 0
    out = capsys.readouterr().out
    for name in ("toy.mp4", "toy-edited.mp4", "toy-no-rad.mp4", "toy-no-irjs.mp4", "report.json", "contact-sheet.png"):
        assert (tmp_path / name).is_file(), name
    info = probe(tmp_path / "toy-edited.mp4")
    assert info.frames == 6 and info.has_audio
    measured = json.loads((tmp_path / "measured.json").read_text())
    assert set(measured) == {"edited", "no RAD", "no IRJS"}
    assert "blue square in its region in" in out and "background PSNR" in out
    assert json.loads((tmp_path / "report-no-rad.json").read_text())["rad"]["enabled"] is False


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--frames", "0"], "Invalid value for '--frames'"),
        (["--steps", "0"], "Invalid value for '--steps'"),
        (["--model", "/nonexistent/model"], "model folder '/nonexistent/model' does not exist"),
    ],
)
def test_demo_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, argv, message, capsys):
    from longedit.cli import main

    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), *argv])  # in this process: a subprocess per case paid the imports again
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert not out.exists()
