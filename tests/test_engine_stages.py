"""The engine split into stages changes nothing: a fixed tiny edit gives the same latents and mp4 bytes.

Each edit runs in a fresh interpreter: in a long pytest process the float sums of the tiny model can
differ in the last bits with what ran before (memory layout), which is not what these tests are about.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


#: (latent checksum, `decoded_sha256` of the mp4) of `longedit edit` of the clip below at commit b0b291a (engine.py
#: in one file, before the split into stages), in each environment where b0b291a was run: the float results of
#: the same code moved with the environment (first recorded in November with transformers 5.24.0; on 2026-12-06,
#: transformers 5.25.0 on an AMD EPYC with AVX-512, b0b291a itself gave the second pair, and main agreed with it
#: bit for bit). A change of behaviour gives neither. The container's bytes were equal too on a quiet machine.
#: Under load libx264 (threaded, as every run encodes) was seen to write other P-frames from the same pixels and
#: latents (1 run of 4 run at once: 5% of the values off by up to 12 levels in frames 1, 2, 4, 5), and the test
#: clip's own encode too, so a missed run is repeated (`edit_in_a_fresh_process`).
B0B291A_RESULTS = {
    ("f0823fd482ad51c18a602e27460f865539b5a66306d2bde6c09723417c51eedc",
     "337562ea3826b61036f776954b9e5ec807ced0d0e45fe8696aa79d8f634cb59c"),
    ("28aa0e25067bef07e0a4eb6f974574cad5ce585cb22313e3db3e964a6376dca7",
     "99493c7e672c3196799360a703d4599df2ab04ca2ca7fc087f0af951cb7681cf"),
}
ROOT = Path(__file__).resolve().parents[1]

MAKE_CLIP = """
import sys
from longedit.samples import make_clip
clip, out, report = sys.argv[1:]
make_clip(clip, frames=6, width=64, height=48, audio=True)
"""

CLI_EDIT = MAKE_CLIP + """
from longedit.cli import main
sys.exit(main([
    "edit", clip, "-o", out, "--model", "tiny", "--quiet",
    "--source-prompt", "a red square on a road", "--prompt", "a yellow duck on a road",
    "--steps", "2", "--window", "4", "--stride", "2", "--object", "duck=10,10,40,30", "--report", report,
    "--size", "512",  # b0b291a's default; the default is now the model's native size (64 for tiny)
]))
"""

API_EDIT = MAKE_CLIP + """
import json
from longedit import LongEditPipeline
pipe = LongEditPipeline.from_pretrained("tiny")
edited = pipe(video=clip, source_prompt="a red square on a road", prompt="a yellow duck on a road",
              objects={"duck": (10, 10, 40, 30)}, steps=2, window=4, stride=2, size=512, progress=False)
edited.save(out)
open(report, "w").write(json.dumps(edited.report))
"""


def edit_in_a_fresh_process(code: str, folder: Path, tries: int = 3) -> tuple[str, str]:
    """(latent checksum, `decoded_sha256` of the mp4) of the fixed edit: a 6-frame 64x48 clip with audio,
    2 steps, two windows of 4, one object. A run that misses is repeated, up to `tries` runs in all: libx264
    under load (see B0B291A_RESULTS) encodes the clip (and so its latents) or the output otherwise
    now and then, while a change of behaviour misses every time."""
    result = _edit_once(code, folder)
    while result not in B0B291A_RESULTS and tries > 1:
        tries -= 1
        result = _edit_once(code, folder)
    return result


def _edit_once(code: str, folder: Path) -> tuple[str, str]:
    clip = folder / "clip.mp4"  # made in the fresh process too: nothing of this process's state reaches the edit
    out, report = folder / "out.mp4", folder / "report.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread, as the values were recorded
    result = subprocess.run([sys.executable, "-c", code, str(clip), str(out), str(report)], cwd=ROOT,
                            capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(report.read_text())["latent_checksum"], decoded_sha256(out)


def decoded_sha256(path: Path) -> str:
    """sha256 of a video's decoded RGB frames, their timestamps and its audio packets' bytes."""
    import av

    digest = hashlib.sha256()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            digest.update(frame.to_ndarray(format="rgb24").tobytes())
            digest.update(str(frame.pts).encode())
    with av.open(str(path)) as container:
        for packet in container.demux(audio=0):
            digest.update(bytes(packet))
    return digest.hexdigest()


@pytest.mark.slow
def test_a_fixed_tiny_edit_is_bit_identical_to_the_one_file_engine(tmp_path):
    """`longedit edit --model tiny` of the clip: the report's latent checksum and the sha256 of the written
    mp4 are those of commit b0b291a (before engine.py became the
    `longedit.engine` package of stages)."""
    assert edit_in_a_fresh_process(CLI_EDIT, tmp_path) in B0B291A_RESULTS


@pytest.mark.slow
def test_the_python_api_writes_the_same_bytes_as_the_cli(tmp_path):
    """`LongEditPipeline` runs the same runner: the edit above, called from Python and saved, is the same file."""
    assert edit_in_a_fresh_process(API_EDIT, tmp_path) in B0B291A_RESULTS
