"""Helpers for tests and smoke runs: a tiny model saved as a real model folder (see `longedit.random_models`).

Tests load it back through `longedit.models.load_backbone(folder)`, i.e. the same `from_pretrained`
path a real Stable Diffusion folder takes.
"""

from longedit.random_models import save_tiny_model  # noqa: F401 - re-export for the tests

__all__ = ["save_tiny_model"]
