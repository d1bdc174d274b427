"""`LongEditPipeline`: the model loads once, every setting is a keyword, the README example runs as written,
frames in memory or from a file, the step callback sees the loop and can stop it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

import longedit
from longedit import pipeline as pipeline_module
from longedit.config import EditJob
from longedit.errors import UserError
from longedit.pipeline import MODEL_SETTINGS, LongEditPipeline, settings_keywords
from longedit.samples import SampleClip, make_clip
from longedit.video import iter_frames, probe

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = {"source_prompt": "a red square on a road", "prompt": "a yellow duck on a road"}
SMALL = {"steps": 2, "size": 64, "window": 4, "stride": 2, "progress": False}


@pytest.fixture(scope="module")
def loads(tmp_path_factory):
    """A tiny pipeline loaded through a counter; the engine's own loader fails if a call reaches it."""
    mp = pytest.MonkeyPatch()
    count = []
    real = pipeline_module.load_backbone

    def counted(*args, **kwargs):
        count.append(args[0])
        return real(*args, **kwargs)

    def forbidden(*args, **kwargs):
        raise AssertionError("a call loaded the model again")

    mp.setattr(pipeline_module, "load_backbone", counted)
    import longedit.engine.runner

    mp.setattr(longedit.engine.runner, "load_backbone", forbidden)
    pipe = LongEditPipeline.from_pretrained("tiny", device="cpu")
    yield pipe, count
    mp.undo()


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("pipe") / "clip.mp4", frames=5, width=64, height=48, audio=True).path


def test_the_public_names_are_the_pipeline():
    assert longedit.LongEditPipeline is LongEditPipeline
    with pytest.raises(AttributeError):
        longedit.NoSuchThing  # noqa: B018


@pytest.mark.slow
def test_two_calls_load_the_model_once_and_keep_the_source_timing_and_audio(loads, small_clip, tmp_path):
    pipe, count = loads
    first = pipe(video=SampleClip(small_clip, []), objects={"duck": (10, 10, 40, 30)}, **PROMPTS, **SMALL)
    second = pipe(video=str(small_clip), objects={"duck": (10, 10, 40, 30)}, seed=1, **PROMPTS, **SMALL)
    assert count == ["tiny"]  # one load, in from_pretrained
    assert first.report["latent_checksum"] != second.report["latent_checksum"]  # the seed reached the engine
    frames = list(first.frames)
    assert len(frames) == 5 and frames[0].shape == (48, 64, 3) and frames[0].dtype == np.uint8
    saved = first.save(tmp_path / "edited.mp4")
    source, edited = probe(small_clip), probe(saved)
    assert edited.frames == 5 and edited.timestamps == source.timestamps and edited.has_audio
    assert first.report["output"] is None and first.report["settings"]["steps"] == 2


@pytest.mark.slow
def test_a_codec_setting_is_how_save_writes(loads, small_clip, tmp_path):
    """`codec="ffv1"` is usable from Python (the call's own temporary output was always .mp4, which FFV1 cannot
    be written to) and `.save` writes FFV1 into the .mkv it is given."""
    import av

    pipe, _ = loads
    out = pipe(video=small_clip, codec="ffv1", **PROMPTS, **SMALL)
    with av.open(str(out.save(tmp_path / "edited.mkv"))) as container:
        assert container.streams.video[0].codec_context.name == "ffv1"
    with pytest.raises(UserError, match="cannot be written to a '.mp4' file"):
        out.save(tmp_path / "edited.mp4")


@pytest.mark.slow
def test_frames_in_memory_keyframes_and_a_callback_that_stops(loads, small_clip):
    pipe, _ = loads
    video = np.stack(list(iter_frames(small_clip)))
    steps = []

    def stop_after_first(pipe_, step, timestep, kwargs):
        steps.append((step, timestep, kwargs["latents"].shape, kwargs["rad_loss"], kwargs["windows"]))
        return {**kwargs, "stop": True}

    out = pipe(video=video, objects={"duck": [((10, 10, 30, 30), 0), ((30, 10, 50, 30), 4)]},
               callback_on_step_end=stop_after_first, **PROMPTS, **{**SMALL, "steps": 3})
    assert [s[0] for s in steps] == [0]  # stopped after the first of 3 steps
    assert steps[0][2][0] == 5 and steps[0][3] is not None and steps[0][4] == [(0, 4), (1, 5)]
    assert out.report["steps_done"] == 1 and "stopped at edit step 1" in out.report["stopped"]
    assert len(list(out.frames)) == 5

    def frames():  # an iterator of frames (a torch tensor works the same as the array)
        yield from video

    done = pipe(video=frames(), objects={"duck": (10, 10, 30, 30)}, **PROMPTS, **SMALL)
    assert done.report["frames"] == 5 and len(done.report["rad"]["loss"]) == 2


def test_bad_input_is_one_line_before_any_work(loads):
    pipe, _ = loads
    with pytest.raises(UserError, match="unknown key 'stepz'"):
        pipe(video=np.zeros((2, 8, 8, 3), np.uint8), stepz=3, **PROMPTS)
    with pytest.raises(UserError, match=r"must be \(T, H, W, 3\), not \(2, 8, 8\)"):
        pipe(video=np.zeros((2, 8, 8), np.uint8), **PROMPTS)
    with pytest.raises(UserError, match="'model' is not a call setting"):
        pipe(video="clip.mp4", model="toy", **PROMPTS)
    with pytest.raises(UserError, match="cannot read the region of 'duck'"):
        pipe(video=np.zeros((2, 8, 8, 3), np.uint8), objects={"duck": "left"}, **PROMPTS)


def test_every_setting_is_a_keyword_listed_in_the_docstring():
    """The call's settings are EditJob's fields (one declaration) and each is in `__call__`'s docstring."""
    doc = LongEditPipeline.__call__.__doc__
    keywords = settings_keywords()
    assert "steps" in keywords and "window" in keywords and "model" not in keywords
    assert set(keywords) | set(MODEL_SETTINGS) <= set(EditJob.model_fields)
    missing = [name for name in keywords if not re.search(rf"\b{name}\b", doc)]
    assert missing == []
    for name in ("video", "source_prompt", "prompt", "objects", "masks", "fps", "callback_on_step_end", "progress"):
        assert re.search(rf"\b{name}:", doc), name


def readme_python_example() -> str:
    section = ROOT.joinpath("README.md").read_text().split("## From Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1
    return blocks[0]


@pytest.mark.slow
def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_python_example(), "README.md (From Python)", "exec"), {"__name__": "readme"})
    out = capsys.readouterr().out
    assert out.count("RAD loss") == 4  # the callback ran once per step
    assert probe(tmp_path / "toy-edited.mp4").frames == 4
