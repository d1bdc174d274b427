"""The engine split into stages changes nothing: a fixed tiny edit gives the same latents and mp4 bytes."""

from __future__ import annotations

import hashlib
import json

import pytest

from longedit.cli import main
from longedit.samples import make_clip

#: From `longedit edit` of the clip below on main at commit b0b291a (engine.py in one file), before the split.
EXPECTED_LATENT_CHECKSUM = "f0823fd482ad51c18a602e27460f865539b5a66306d2bde6c09723417c51eedc"
EXPECTED_MP4_SHA256 = "40cb99289c3a781432c44f41537dee4b79c91e2f6ffc97a9b114cb08ca258177"


@pytest.mark.slow
def test_a_fixed_tiny_edit_is_bit_identical_to_the_one_file_engine(tmp_path):
    """`longedit edit --model tiny` of a 6-frame 64x48 clip with audio, 2 steps, two windows, one object:
    the report's latent checksum and the sha256 of the written mp4 equal the values recorded on main at
    commit b0b291a (before engine.py became the `longedit.engine` package of stages)."""
    clip = make_clip(tmp_path / "clip.mp4", frames=6, width=64, height=48, audio=True).path
    out, report = tmp_path / "out.mp4", tmp_path / "report.json"
    code = main([
        "edit", str(clip), "-o", str(out), "--model", "tiny", "--quiet",
        "--source-prompt", "a red square on a road", "--prompt", "a yellow duck on a road",
        "--steps", "2", "--window", "4", "--stride", "2", "--object", "duck=10,10,40,30", "--report", str(report),
        "--size", "512",  # b0b291a's default; the default is now the model's native size (64 for tiny)
    ])
    assert code == 0
    assert json.loads(report.read_text())["latent_checksum"] == EXPECTED_LATENT_CHECKSUM
    assert hashlib.sha256(out.read_bytes()).hexdigest() == EXPECTED_MP4_SHA256


@pytest.mark.slow
def test_the_python_api_writes_the_same_bytes_as_the_cli(tmp_path):
    """`LongEditPipeline` runs the same runner: the edit above, called from Python and saved, is the same file."""
    from longedit import LongEditPipeline

    clip = make_clip(tmp_path / "clip.mp4", frames=6, width=64, height=48, audio=True).path
    pipe = LongEditPipeline.from_pretrained("tiny")
    out = pipe(video=clip, source_prompt="a red square on a road", prompt="a yellow duck on a road",
               objects={"duck": (10, 10, 40, 30)}, steps=2, window=4, stride=2, size=512, progress=False)
    assert out.report["latent_checksum"] == EXPECTED_LATENT_CHECKSUM
    assert hashlib.sha256(out.save(tmp_path / "api.mp4").read_bytes()).hexdigest() == EXPECTED_MP4_SHA256
