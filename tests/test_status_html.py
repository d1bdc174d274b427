"""`longedit status DIR --html FILE`: the morning report of a watched folder, run for real on the tiny model.

One watch pass runs a job to done/ and fails one (a word that is not in its prompt); a third job waits
in the inbox. The page is checked as HTML (jobs, states, settings, thumbnails, metrics, the error with
its fix, escaping) and, where Chromium is installed, as pixels of a headless screenshot.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_jobs_helpers import make_video, write_job

from longedit.jobs.html_report import STATE_COLOURS, THUMB_HEIGHT, split_fix

JOB = {"steps": 3, "size": 64, "refine": False}
TRICKY_PROMPT = "a <b>robot</b> & a man talking on a phone in a car"


class Page(HTMLParser):
    """The jobs of the page: per section its data attributes, text, images and table rows."""

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, dict] = {}
        self.current: dict | None = None
        self.classes: list[str] = []
        self.row: list[str] = []
        self.cell: str | None = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.classes.append(attrs.get("class") or "")
        if tag == "section" and "job" in self.classes[-1]:
            self.current = {"state": attrs["data-state"], "text": "", "images": {}, "rows": {}, "classes": set()}
            self.jobs[attrs["data-name"]] = self.current
        elif self.current is not None:
            self.current["classes"].add(self.classes[-1])
            if tag == "img":
                self.current["images"][attrs["alt"]] = attrs["src"]
            elif tag == "tr":
                self.row = []
            elif tag == "td":
                self.cell = ""

    def handle_endtag(self, tag):
        self.classes.pop() if self.classes else None
        if tag == "td" and self.cell is not None:
            self.row.append(self.cell)
            self.cell = None
        elif tag == "tr" and self.current is not None and len(self.row) == 2:
            self.current["rows"][self.row[0]] = self.row[1]
        elif tag == "section":
            self.current = None

    def handle_data(self, data):
        if self.current is not None:
            self.current["text"] += data
        if self.cell is not None:
            self.cell += data


def _image(uri: str) -> Image.Image:
    header, _, payload = uri.partition(",")
    assert header in ("data:image/jpeg;base64", "data:image/png;base64")
    return Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB")


@pytest.fixture(scope="module")
def watched(tmp_path_factory) -> Path:
    """DIR after one `watch --once` pass with the real engine: done/robot, failed/dragon, inbox/later."""
    from longedit.jobs.executor import LocalExecutor
    from longedit.engine import run_edit
    from longedit.jobs.watcher import WatchOptions, Watcher

    root = tmp_path_factory.mktemp("watched")
    inbox = root / "inbox"
    make_video(inbox / "robot.mp4", frames=4)
    write_job(inbox / "robot.yaml", eval=True, **JOB)
    make_video(inbox / "dragon.mp4", frames=4, seed=1)
    write_job(inbox / "dragon.yaml", prompt=TRICKY_PROMPT, objects=[{"word": "dragon", "box": [8, 8, 40, 40]}], **JOB)
    options = WatchOptions(once=True, settle=0.05, poll=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outcomes = Watcher(root, LocalExecutor(run_edit), options).run()
    assert outcomes == {"done": ["robot"], "failed": ["dragon"]}
    make_video(inbox / "later.mp4", frames=4, seed=2)
    write_job(inbox / "later.yaml", **JOB)
    # The attention pictures of the edit report (issue 15 item 2's contract): one strip per word beside the output.
    done = root / "done" / "robot"
    report = json.loads((done / "report.json").read_text())
    strip = np.zeros((16, 64, 3), np.uint8)
    strip[:, :, 2] = 255  # pure blue: easy to find in a screenshot
    Image.fromarray(strip).save(done / "robot-edited.attention-robot.png")
    report["attention_pictures"] = {"video": None, "strips": {"robot": "robot-edited.attention-robot.png"}}
    (done / "report.json").write_text(json.dumps(report))
    return root


def _render(watched: Path, tmp_path: Path) -> Path:
    from longedit.cli import main

    page = tmp_path / "morning.html"
    assert main(["status", str(watched), "--html", str(page)]) == 0
    return page


def test_the_page_shows_every_job_with_state_settings_thumbnails_metrics_and_the_error_fix(watched, tmp_path, capsys):
    page = _render(watched, tmp_path)
    assert capsys.readouterr().out.strip() == f"wrote {page}: 3 job(s): 1 queued, 1 done, 1 failed"
    text = page.read_text(encoding="utf-8")
    parsed = Page()
    parsed.feed(text)
    jobs = parsed.jobs
    assert {name: job["state"] for name, job in jobs.items()} == {"later": "queued", "robot": "done", "dragon": "failed"}

    robot = jobs["robot"]
    assert robot["rows"]["prompt"] == "a robot talking on a phone in a car" and robot["rows"]["steps"] == "3"
    assert robot["rows"]["refine"] == "off" and robot["rows"]["processed size"] == "64x64"
    assert robot["rows"]["UNet forwards"].isdigit()
    assert robot["rows"]["attention of 'robot' in its region"].endswith("(mean over 3 steps)")
    assert "eval background.psnr" in robot["rows"]  # longedit eval's numbers (eval: true)
    source, edited = _image(robot["images"]["source"]), _image(robot["images"]["edited"])
    assert source.size == edited.size == (4 * THUMB_HEIGHT, THUMB_HEIGHT)  # 4 square frames side by side
    assert np.abs(np.asarray(source, float) - np.asarray(edited, float)).mean() > 1  # the edit changed the frames
    strip = np.asarray(_image(robot["images"]["attention of 'robot'"]))
    assert strip.shape == (16, 64, 3) and (strip == [0, 0, 255]).all()
    assert "no attention pictures" not in robot["text"]

    dragon = jobs["dragon"]
    assert "word 'dragon' is not in the prompt" in dragon["text"]
    problem, fix = split_fix(json.loads((watched / "failed" / "dragon" / "error.json").read_text())["message"])
    assert fix and f"fix: {fix}" in dragon["text"] and problem in dragon["text"]
    assert "source" in dragon["images"] and "edited" not in dragon["images"]
    assert "no edited video: the job failed" in dragon["text"]
    assert dragon["rows"]["prompt"] == TRICKY_PROMPT  # shown as text...
    assert "<b>robot</b>" not in text and "&lt;b&gt;robot&lt;/b&gt; &amp; a man" in text  # ...escaped in the markup

    later = jobs["later"]
    assert "source" in later["images"] and "no edited video yet" in later["text"]
    assert "src=\"http" not in text and "src=\"file" not in text  # self-contained: every picture inline


def test_split_fix_reads_the_fix_of_a_user_error_line():
    assert split_fix("word 'x' is not in the prompt (name a word of --prompt)") == ("word 'x' is not in the prompt", "name a word of --prompt")
    assert split_fix("cache folder 'a (b)' is a file (give a folder (any))") == ("cache folder 'a (b)' is a file", "give a folder (any)")
    assert split_fix("CUDA out of memory") == ("CUDA out of memory", None)


def test_a_bad_html_path_is_one_line_and_exit_2(watched, tmp_path, capsys):
    from longedit.cli import main

    assert main(["status", str(watched), "--html", str(tmp_path / "missing" / "r.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write --html") and "(create it first)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "missing").exists()


def _chromium() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def _blocks(shot: np.ndarray, colour: tuple[int, int, int]) -> int:
    """How many 24x24 solid blocks of `colour` the screenshot holds (counted by their top-left corners)."""
    hit = (shot == colour).all(axis=-1)
    corners = hit[1:, 1:] & ~hit[:-1, 1:] & ~hit[1:, :-1]
    count = 0
    for y, x in zip(*np.nonzero(corners)):
        if hit[y + 1 : y + 25, x + 1 : x + 25].all():
            count += 1
    return count


def _find(shot: np.ndarray, picture: np.ndarray, tolerance: float = 6.0) -> bool:
    """Whether `picture` appears in the screenshot at its natural size (mean abs difference below `tolerance`)."""
    height, width = picture.shape[:2]
    picture = picture.astype(np.int16)
    near = (np.abs(shot[: 1 - height or None, : 1 - width or None].astype(np.int16) - picture[0, 0]) <= 12).all(axis=-1)
    for y, x in zip(*np.nonzero(near)):
        if np.abs(shot[y : y + height, x : x + width].astype(np.int16) - picture).mean() < tolerance:
            return True
    return False


def test_headless_chromium_shows_the_jobs(watched, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium binary (chromium, chromium-browser or google-chrome) on PATH: apt-get install chromium")
    page = _render(watched, tmp_path)
    shot_path = tmp_path / "shot.png"
    result = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--force-device-scale-factor=1",
         "--window-size=1200,2400", f"--screenshot={shot_path}", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shot_path.is_file(), result.stderr[-2000:]
    shot = np.asarray(Image.open(shot_path).convert("RGB"))
    assert (shot != 255).any(axis=-1).mean() > 0.02  # not a blank page
    for state, count in (("done", 1), ("failed", 1), ("queued", 1), ("running", 0)):
        assert _blocks(shot, STATE_COLOURS[state]) == count, state
    parsed = Page()
    parsed.feed(page.read_text(encoding="utf-8"))
    robot = parsed.jobs["robot"]["images"]
    assert _find(shot, np.asarray(_image(robot["source"])))  # the source | edited thumbnails were drawn
    assert _find(shot, np.asarray(_image(robot["edited"])))
    assert _find(shot, np.asarray(_image(robot["attention of 'robot'"])))


def _page_links(text: str) -> list[str]:
    class Links(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.hrefs: list[str] = []

        def handle_starttag(self, tag, attrs):
            if tag == "a":
                self.hrefs.append(dict(attrs)["href"])

    links = Links()
    links.feed(text)
    return links.hrefs


def _details(folder: Path, **job) -> dict:
    thumbs = {"source": (None, "source video not found"), "edited": (None, "edited video not found")}
    return {"name": "j", "state": "done", "attempts": 1, "duration": "1s", "started": None, "note": "", "settings": {},
            "thumbs": thumbs, "attention": {}, "attention_video": None, "metrics": [], "error": None, "fix": None,
            "folder": str(folder), "output": None, **job}


def test_a_script_url_as_output_name_is_never_a_clickable_script_link(tmp_path):
    """Issue 22 family 7: an output named `javascript:...` beside the page was an href that ran the script."""
    from urllib.parse import unquote

    from longedit.jobs.html_report import render_html

    hostile = tmp_path / "javascript:alert(document.cookie)"
    hostile.write_bytes(b"not a video")
    video = tmp_path / "sub dir" / "a&b.mp4"
    video.parent.mkdir()
    video.write_bytes(b"x")
    data = {"root": str(tmp_path), "counts": {s: 0 for s in STATE_COLOURS}, "generated_at": 0.0, "details": [
        _details(tmp_path, name="evil", output=str(hostile), attention_video="javascript:alert(2)"),
        _details(tmp_path, name="fine", output=str(video)),
    ]}
    text = render_html(data, tmp_path)
    hrefs = _page_links(text)
    assert hrefs == ["./javascript%3Aalert%28document.cookie%29", "./sub%20dir/a%26b.mp4"]
    for href in hrefs:  # relative file paths that still name the files
        assert ":" not in href and (tmp_path / unquote(href)).is_file()
    assert "javascript:alert(2)" in text and 'href="javascript' not in text  # a missing file is text, not a link


def test_attention_pictures_are_read_only_from_relative_paths_of_files(tmp_path):
    """Relative paths as the worker writes them (beside the report, or up to an output folder elsewhere) are
    read; an absolute path, a URL-like name or a folder in a report is not."""
    from longedit.jobs.html_report import attention_strips

    folder = tmp_path / "done" / "job"
    folder.mkdir(parents=True)
    Image.new("RGB", (8, 4), "red").save(tmp_path / "elsewhere.png")
    Image.new("RGB", (8, 4), "blue").save(folder / "strip.png")
    (folder / "video.mp4").write_bytes(b"x")
    report = {"attention_pictures": {"video": str(folder / "video.mp4"), "strips": {
        "ok": "strip.png", "up": "../../elsewhere.png", "absolute": str(tmp_path / "elsewhere.png"),
        "url": "javascript:alert(1)", "folder": "."}}}
    strips, video = attention_strips(report, folder)
    assert set(strips) == {"ok", "up"} and video is None
    assert attention_strips({"attention_pictures": {"video": "video.mp4"}}, folder)[1] == str(folder / "video.mp4")
