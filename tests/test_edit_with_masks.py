"""Masks from SAM2 drive the edit: `masks` -> `edit --masks DIR` round trip and `edit --track sam2`."""

import json

import pytest

from longedit.cli import main
from longedit.video import probe

BASE = ["--model", "tiny", "--quiet", "--source-prompt", "a red square on a road", "--prompt", "a yellow duck on a road",
        "--steps", "1", "--size", "64", "--window", "4", "--stride", "2"]


@pytest.mark.slow
def test_masks_folder_round_trip_into_edit(clip, tmp_path):
    masks = tmp_path / "masks"
    assert main(["masks", str(clip), "--object", "duck=8,8,40,40", "-o", str(masks), "--sam2-model", "tiny"]) == 0
    assert len(list((masks / "duck").glob("*.png"))) == 6
    report_path = tmp_path / "report.json"
    out = tmp_path / "out.mp4"
    assert main(["edit", str(clip), "-o", str(out), "--masks", str(masks), "--report", str(report_path), *BASE]) == 0
    report = json.loads(report_path.read_text())
    assert probe(out).frames == 6
    assert report["masks"]["summary"]["duck"]["source"] == "folder"
    assert list(report["rad"]["attention_in_mask"]) == ["duck"]


@pytest.mark.slow
def test_track_sam2_drives_the_edit(clip, tmp_path):
    report_path = tmp_path / "report.json"
    out = tmp_path / "out.mp4"
    code = main(["edit", str(clip), "-o", str(out), "--object", "duck=8,8,40,40", "--track", "sam2",
                 "--sam2-model", "tiny", "--report", str(report_path), *BASE])
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["masks"]["summary"]["duck"]["source"] == "sam2"
    assert probe(out).frames == 6


def test_missing_mask_folder_exits_2(clip, tmp_path, capsys):
    code = main(["edit", str(clip), "-o", str(tmp_path / "o.mp4"), "--object", "duck", "--masks", str(tmp_path / "nope"), *BASE])
    err = capsys.readouterr().err
    assert code == 2 and "does not exist" in err and "Traceback" not in err
