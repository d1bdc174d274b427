"""Attention pictures: the maps RAD works on (no extra forward), kept on disk, drawn as a video as long
as the source and one strip per word; their paths in the report; bad input fails first."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from longedit import engine
from longedit.attention_pictures import MapStore, heat_colors, outline, safe_word, spread, strip_path
from longedit.cli import main
from longedit.editor import MAP_SCALE, LoopSettings, VideoEditor
from longedit.masks import ObjectMasks, box_to_grid
from longedit.samples import make_clip
from longedit.video import iter_frames, probe
from longedit.words import word_tokens

SOURCE, PROMPT = "a red square on a road", "a yellow duck on a road"


# ------------------------------------------------------------------------------------------ pieces
def test_store_averages_overlapping_windows_and_rerecords_a_resumed_step(tmp_path):
    store = MapStore(tmp_path / "maps.f16", steps=2, frames=6, words=1, grid=(2, 2), create=True)
    store.put(0, 0, 0, 4, torch.full((4, 1, 2, 2), 1.0))
    assert store.recorded_steps() == []  # frames 4, 5 not covered yet
    store.put(0, 1, 2, 6, torch.full((4, 1, 2, 2), 3.0))
    assert store.recorded_steps() == [0]
    assert store.maps[0, :, 0, 0, 0].tolist() == [1.0, 1.0, 2.0, 2.0, 3.0, 3.0]  # overlap averaged
    store.put(5, 0, 0, 6, torch.ones(6, 1, 2, 2))  # past the recorded steps: ignored
    store.close()
    again = MapStore(tmp_path / "maps.f16", steps=2, frames=6, words=1, grid=(2, 2), create=False)
    assert again.recorded_steps() == [0] and float(again.maps[0, 4, 0, 0, 0]) == 3.0  # kept on disk (resume)
    again.put(0, 0, 0, 6, torch.full((6, 1, 2, 2), 5.0))  # the step's first window starts it afresh
    assert again.maps[0, :, 0, 0, 0].tolist() == [5.0] * 6
    again.close(delete=True)
    assert list(tmp_path.iterdir()) == []
    other = MapStore(tmp_path / "maps.f16", steps=3, frames=6, words=1, grid=(2, 2), create=False)
    assert other.recorded_steps() == []  # another shape: a new store, nothing recorded
    other.close(delete=True)


def test_drawing_helpers():
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    border = outline(mask)
    assert border.sum() == 12 and not border[2:4, 2:4].any() and border[1, 1:5].all()
    assert spread(3, [0, 1, 2, 3, 4, 5, 6]) == [0, 3, 6] and spread(6, [2, 5]) == [2, 5]
    assert safe_word("wonder woman!") == "wonder_woman_"
    assert strip_path(Path("/x/clip-edited.mp4"), "duck") == Path("/x/clip-edited.attention-duck.png")


def test_heat_colours_are_turbo_not_jet():
    """Issue 26 item 5: the hand-made jet map (pure blue (0,0,127) at 0, (127,0,0) at 1) is Turbo now."""
    ramp = heat_colors(np.linspace(0.0, 1.0, 101)).astype(int)
    assert ramp.shape == (101, 3) and ramp.dtype == np.int64
    low, high = ramp[0], ramp[-1]
    assert low.tolist() != [0, 0, 127] and low.sum() < 150 and high.sum() < 200  # dark ends, not jet's saturated ones
    assert high[0] > 3 * max(high[1], high[2])  # dark red at 1
    brightest = int(np.argmax(ramp.sum(axis=1)))
    assert 40 <= brightest <= 65 and ramp[brightest][1] > 200  # yellow-green in the middle
    assert (ramp[:, 2].argmax() < ramp[:, 1].argmax() < ramp[:, 0].argmax())  # blue, then green, then red peaks
    assert heat_colors(np.array([-1.0, 2.0])).tolist() == heat_colors(np.array([0.0, 1.0])).tolist()  # clipped


def test_heat_colours_follow_matplotlibs_turbo_table_where_installed():
    colormaps = pytest.importorskip("matplotlib").colormaps
    values = np.linspace(0.0, 1.0, 256)
    exact = np.round(colormaps["turbo"](values)[:, :3] * 255)
    assert np.abs(heat_colors(values).astype(int) - exact).max() <= 1


def test_the_fallback_polynomial_stays_near_turbos_published_ends(monkeypatch):
    """Without matplotlib, Google's fit: within a few levels of Turbo's table at its middle, close at its ends."""
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    ends = heat_colors(np.array([0.0, 1.0])).astype(int)
    published = np.round(np.array([[0.18995, 0.07176, 0.23217], [0.47960, 0.01583, 0.01055]]) * 255)  # Turbo's LUT
    assert np.abs(ends - published).max() <= 35


def test_a_watched_job_with_its_output_elsewhere_gets_paths_relative_to_its_report(tmp_path):
    from longedit.config import EditJob
    from longedit.jobs.worker import _pictures_relative_to

    job = EditJob(input="a.mp4", output=tmp_path / "videos" / "out.mp4", source_prompt="a", prompt="a duck")
    entry = {"video": None, "strips": {"duck": "out.attention-duck.png"}}  # as the engine wrote it, beside the output
    folder = tmp_path / "watched" / "processing" / "job"
    report = _pictures_relative_to({"frames": 3, "attention_pictures": entry}, job, folder)
    assert report == {"frames": 3, "attention_pictures": {
        "video": None, "strips": {"duck": "../../../videos/out.attention-duck.png"}}}
    preview = job.model_copy(update={"preview": True})  # a preview's report sits beside its video too
    assert _pictures_relative_to({"attention_pictures": entry}, preview, tmp_path / "videos")["attention_pictures"] == entry
    assert _pictures_relative_to({"frames": 3}, job, folder) == {"frames": 3}


def test_the_sink_gets_rads_own_maps_at_rad_steps_without_extra_forwards(tiny_backbone):
    words = [word_tokens(tiny_backbone.tokenizer, PROMPT, "duck")]
    settings = LoopSettings(steps=3, guided_steps=2, refine=False, kernel_backend="reference")
    editor = VideoEditor(tiny_backbone, settings, SOURCE, PROMPT, words)
    latents = torch.randn(5, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(5, 1, 8, 8, dtype=torch.bool)
    mask[:, :, 0:4, 4:8] = True
    masks = ObjectMasks(["duck"], mask, ["box"])
    windows = [(0, 3), (2, 5)]
    for index in range(3):
        editor.edit_step(latents, index, windows, masks)
    forwards_without = editor.unet_forwards
    received = []
    editor.map_sink = lambda *args: received.append(args)
    editor.unet_forwards = 0
    for index in range(3):
        editor.edit_step(latents, index, windows, masks)
    assert [(r[0], r[1], r[2], r[3]) for r in received] == [(0, 0, 0, 3), (0, 1, 2, 5), (1, 0, 0, 3), (1, 1, 2, 5)]
    assert editor.unet_forwards == forwards_without  # no forward of its own
    maps = received[0][4]
    assert maps.shape == (3, 1, 8 // MAP_SCALE, 8 // MAP_SCALE)
    anchor, own = editor.window_inputs(latents, 0, 3)
    editor.rad_gradient(anchor, own, editor.schedule.timesteps[0], masks.at_map_resolution(0, 3, MAP_SCALE))
    assert torch.equal(maps, editor._maps.float())  # the very maps the RAD loss was computed from
    no_rad = VideoEditor(tiny_backbone, LoopSettings(steps=3, rad=False, kernel_backend="reference"), SOURCE, PROMPT, words)
    assert no_rad.picture_steps == 3  # without RAD: the guided forward's recorded maps, every step


# ------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """7 frames of 96x64 (processed at 128x64): windows [0,4) [2,6) [3,7)."""
    return make_clip(tmp_path_factory.mktemp("pictures") / "clip.mp4", frames=7, width=96, height=64).path


def _args(clip: Path, out: Path, *extra: str) -> list[str]:
    return ["edit", str(clip), "-o", str(out), "--model", "tiny", "--quiet", "--source-prompt", SOURCE, "--prompt", PROMPT,
            "--steps", "4", "--size", "64", "--window", "4", "--preset", "fast", *extra]


@pytest.mark.slow
def test_attention_video_and_strips_of_an_edit(clip, tmp_path):
    (tmp_path / "reports").mkdir()
    out, video, report_path = tmp_path / "out.mp4", tmp_path / "att.mp4", tmp_path / "reports" / "r.json"
    code = main(_args(clip, out, "--object", "duck=10,10,50,40", "--object", "road=0,44,96,64",
                      "--attention-video", str(video), "--report", str(report_path)))
    assert code == 0
    source, drawn = probe(clip), probe(video)
    assert drawn.frames == source.frames == 7 and drawn.timestamps == source.timestamps
    assert (drawn.width, drawn.height) == (2 * 128, 64)  # one 128x64 panel per word
    report = json.loads(report_path.read_text())
    assert report["attention_pictures"] == {
        "video": "../att.mp4", "strips": {"duck": "../out.attention-duck.png", "road": "../out.attention-road.png"},
    }
    strip = np.asarray(Image.open(tmp_path / "out.attention-duck.png").convert("RGB"))
    assert strip.shape == (14 + 2 * 64, 52 + 6 * 128, 3)  # the 2 RAD steps of 4 x 6 frames, 128x64 cells
    # each cell outlines the duck's region (its latent cells, 8x8 pixels at 128x64) in white
    grid = box_to_grid((10, 10, 50, 40), (96, 64), (16, 8)).numpy()
    rows, cols = np.nonzero(grid)
    expected = (rows.min() * 8, rows.max() * 8 + 7, cols.min() * 8, cols.max() * 8 + 7)
    for top, left in ((14, 52), (14 + 64, 52 + 5 * 128)):  # step 0 at frame 0, step 1 at frame 6
        white = np.nonzero((strip[top : top + 64, left : left + 128] == 255).all(axis=-1))
        assert (white[0].min(), white[0].max(), white[1].min(), white[1].max()) == expected
    assert len(list(iter_frames(video))) == 7
    assert not list(tmp_path.glob(".*"))  # the maps' temp store is gone


@pytest.mark.slow
def test_without_rad_the_strips_show_every_step_and_no_video_is_written(clip, tmp_path):
    out = tmp_path / "out.mp4"
    assert main(_args(clip, out, "--object", "duck=10,10,50,40", "--no-rad", "--attention-strips")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.attention-duck.png", "out.mp4"]
    assert Image.open(tmp_path / "out.attention-duck.png").size == (52 + 6 * 128, 14 + 4 * 64)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--attention-video", "{tmp}/att.mp4"], "no object is given"),
        (["--object", "duck=10,10,50,40", "--attention-video", "{tmp}/out.mp4"], "is the output video"),
        (["--object", "duck=10,10,50,40", "--attention-video", "{tmp}/missing/att.mp4"], "folder"),
        (["--object", "duck=10,10,50,40", "--attention-video", "{clip}"], "is the input video"),
    ],
)
def test_bad_attention_video_fails_before_long_work(clip, tmp_path, capsys, monkeypatch, extra, message):
    def forbidden(*args, **kwargs):
        raise AssertionError("long work started before the input was checked")

    monkeypatch.setattr(engine.runner, "load_backbone", forbidden)
    extra = [e.format(tmp=tmp_path, clip=clip) for e in extra]
    code = main(_args(clip, tmp_path / "out.mp4", *extra))
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and "\n" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_resumed_edit_draws_the_same_pictures_from_the_maps_kept_in_its_work_folder(clip, tmp_path, monkeypatch):
    """Stopped after the first RAD step and resumed: step 0's maps come from the work folder, step 1's from
    the resumed run; the strips equal those of an uninterrupted run pixel for pixel."""
    import threading

    from longedit.config import EditJob
    from longedit.errors import JobInterrupted

    def job(out: Path) -> EditJob:
        return EditJob(input=clip, output=out, source_prompt=SOURCE, prompt=PROMPT, model="tiny", steps=4, size=64,
                       window=4, preset="fast", checkpoint_every=1, attention_strips=True,
                       objects=[{"word": "duck", "box": (10, 10, 50, 40)}])

    engine.run_edit(job(tmp_path / "whole.mp4"), progress=False)
    stop = threading.Event()
    original = MapStore.put

    def put_then_stop(self, step, position, start, end, maps):
        original(self, step, position, start, end, maps)
        if step == 0 and end == 7:  # the last window of the first step
            stop.set()

    monkeypatch.setattr(MapStore, "put", put_then_stop)
    work = tmp_path / "work"
    with pytest.raises(JobInterrupted, match="stopped at edit step 1"):
        engine.run_edit(job(tmp_path / "resumed.mp4"), work_dir=work, progress=False, stop_event=stop)
    assert (work / engine.MAPS_NAME).exists()
    report = engine.run_edit(job(tmp_path / "resumed.mp4"), work_dir=work, progress=False, stop_event=threading.Event())
    assert report["resumed_from"] == {"phase": "edit", "step": 1}
    whole = np.asarray(Image.open(tmp_path / "whole.attention-duck.png"))
    resumed = np.asarray(Image.open(tmp_path / "resumed.attention-duck.png"))
    assert whole.shape == resumed.shape and np.array_equal(whole, resumed)
