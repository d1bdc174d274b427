"""Shared fixtures: small synthetic clips written into pytest temp folders."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from longedit.samples import SampleClip, make_clip


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test` runs two workers) each worker has one core: one torch thread, and
    one OpenMP thread for the CLI subprocesses it starts (two threads per worker oversubscribe the
    2-core machine and run several times slower)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        import torch

        torch.set_num_threads(1)


@pytest.fixture
def clip_factory(tmp_path: Path) -> Callable[..., SampleClip]:
    """make_clip into this test's tmp folder: `clip_factory("a.mp4", frames=10, audio=True)`."""

    def make(name: str = "clip.mp4", **kwargs: object) -> SampleClip:
        return make_clip(tmp_path / name, **kwargs)

    return make


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 6-frame 64x64 clip (24 fps) shared by tests that only read or copy it (never write to it)."""
    return make_clip(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=6, width=64, height=64).path


@pytest.fixture(scope="session")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> SampleClip:
    """A 1,000-frame 64x64 clip (24 fps) shared by tests that only read it."""
    return make_clip(tmp_path_factory.mktemp("long") / "long.mp4", frames=1000, width=64, height=64)


@pytest.fixture(scope="session")
def tiny_backbone():
    """The built-in tiny random SD model on CPU (built once per session; frozen, so sharing is safe)."""
    from longedit.models import load_backbone

    return load_backbone("tiny", device="cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model saved as a diffusers folder, to be loaded back through from_pretrained."""
    from longedit.random_models import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture
def one_torch_thread():
    """One torch thread for tests of many tiny ops: on a shared 2-core machine two threads oversubscribe
    and run several times slower. Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
