"""`longedit masks`: export layout, preview video, options, and one-line errors with nothing left behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from longedit.cli import main
from longedit.commands.masks import export_masks
from longedit.config import ObjectSpec
from longedit.video import probe


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def leftovers(parent: Path, name: str) -> list[str]:
    """Hidden staging/backup folders of a run that wrote to `parent / name`."""
    return [p.name for p in parent.iterdir() if p.name.startswith(f".{name}.")]


def box_arg(box) -> str:
    return ",".join(str(v) for v in box)


def test_masks_writes_pngs_and_a_preview(clip_factory, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip = clip_factory("walk.mp4", frames=10, width=64, height=48)
    out = tmp_path / "out"
    rc = main(
        [
            "masks", str(clip.path),
            "--object", f"cat={box_arg(clip.boxes[0])}",
            "--object", "dog=4,4,30,30@6",
            "-o", str(out), "--sam2-model", "tiny", "--chunk", "4", "--device", "cpu",
        ]
    )  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "masks are meaningless" in captured.err
    assert sorted(p.name for p in out.iterdir()) == ["cat", "dog", "preview.mp4"]
    for word in ("cat", "dog"):
        files = sorted((out / word).iterdir())
        assert [f.name for f in files] == [f"{i:06d}.png" for i in range(10)]
        for file in files:
            image = Image.open(file)
            assert image.mode == "L" and image.size == (64, 48)
            assert set(np.unique(np.asarray(image))) <= {0, 255}
    info = probe(out / "preview.mp4")
    assert (info.frames, info.width, info.height) == (10, 64, 48)
    assert leftovers(tmp_path, "out") == []


def test_masks_options_reach_the_masks(clip_factory, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    clip = clip_factory("opt.mp4", frames=6, width=64, height=48)
    out = tmp_path / "boxes"
    base = ["masks", str(clip.path), "--object", "car=8,8,40,40", "--sam2-model", "tiny"]
    rc = main([*base, "-o", str(out), "--box-masks", "--dilate", "1"])
    assert rc == 0, capsys.readouterr().err
    for file in sorted((out / "car").iterdir()):
        mask = np.asarray(Image.open(file)) > 0
        if mask.any():  # a box (grown by 1 px with a disk: corners stay cut) has full middle rows
            rows = np.flatnonzero(mask.any(axis=1))
            cols = np.flatnonzero(mask.any(axis=0))
            assert mask[rows[1] : rows[-1], cols[0] : cols[-1] + 1].all()
    out_small = tmp_path / "none"
    rc = main([*base, "-o", str(out_small), "--min-area", "100000"])
    assert rc == 0
    assert not any((np.asarray(Image.open(f)) > 0).any() for f in (out_small / "car").iterdir())


def test_masks_refuses_a_non_empty_folder_unless_overwrite(
    clip_factory, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    clip = clip_factory("ow.mp4", frames=3, width=32, height=32)
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    args = ["masks", str(clip.path), "--object", "cat=0,0,16,16", "-o", str(out), "--sam2-model", "tiny"]
    assert main(args) == 2
    assert "not empty" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["cat", "preview.mp4"]
    assert leftovers(tmp_path, "taken") == []


@pytest.mark.parametrize(
    ("object_args", "extra", "message"),
    [
        (["--object", "cat=0,0,90,20"], [], "outside"),
        (["--object", "cat=20,10,10,30"], [], "empty"),
        (["--object", "cat=0,0,10,10@50"], [], "past the end"),
        (["--object", "cat"], [], "no box"),
        (["--object", "cat=1,2,3"], [], "four numbers"),
        (["--object", "cat=0,0,10,10"], ["--sam2-model", "/nonexistent/sam2-folder"], "does not exist"),
        (["--object", "cat=0,0,10,10"], ["--sam2-model", "/nonexistent/sam2.1_hiera_tiny.pt"], "does not exist"),
        (["--object", "cat=0,0,10,10"], ["--chunk", "0"], "chunk"),
        (["--object", "cat=0,0,10,10"], ["--device", "quantum"], "unknown device"),
    ],
)
def test_masks_bad_inputs_exit_2_with_one_line(
    clip_factory, tmp_path: Path, capsys: pytest.CaptureFixture, object_args, extra, message
) -> None:
    clip = clip_factory("bad.mp4", frames=4, width=32, height=32)
    out = tmp_path / "sub" / "out"
    rc = main(["masks", str(clip.path), *object_args, "-o", str(out), "--sam2-model", "tiny", *extra])
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], err
    assert "Traceback" not in err
    assert not out.exists() and not (tmp_path / "sub").exists()


def test_masks_missing_video(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "out"
    video = str(tmp_path / "nope.mp4")
    rc = main(["masks", video, "--object", "cat=0,0,10,10", "-o", str(out), "--sam2-model", "tiny"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "nope.mp4" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []


def test_masks_interrupted_run_leaves_nothing(clip_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import longedit.segmentation.mask_folder as mask_folder

    clip = clip_factory("int.mp4", frames=6, width=32, height=32)
    calls = {"n": 0}
    original = mask_folder.MaskFolderWriter.write

    def flaky(self, masks):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        original(self, masks)

    monkeypatch.setattr(mask_folder.MaskFolderWriter, "write", flaky)
    objects = [ObjectSpec(word="cat", box=(0, 0, 10, 10))]
    with pytest.raises(KeyboardInterrupt):
        export_masks(clip.path, objects, tmp_path / "out", model="tiny", progress=False)
    assert calls["n"] == 3
    assert not (tmp_path / "out").exists() and leftovers(tmp_path, "out") == []
