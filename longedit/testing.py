"""Helpers for tests and smoke runs: a tiny model saved as a real diffusers folder.

Tests load it back through `longedit.models.load_backbone(folder)`, i.e. the same `from_pretrained`
path a real Stable Diffusion folder takes.
"""

from __future__ import annotations

from pathlib import Path

from longedit.tiny import build_tiny_components


def save_tiny_model(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny random SD model as a diffusers folder (model_index.json, unet/, vae/, ...)."""
    from diffusers import StableDiffusionPipeline

    folder = Path(folder)
    components = build_tiny_components(seed)
    pipeline = StableDiffusionPipeline(
        **components, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder
