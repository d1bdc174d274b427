"""The toy world: procedural scenes and clips with ground truth, a detector, and a small SD-layout model
trained on them (`--model toy`), so edits can be looked at and measured without downloaded weights.

Modules: `world` (vocabulary, scenes, captions), `textures`, `render` (images, clips), `detect`,
`components` (architecture and tokenizer), `train` (the training script), `pipeline` (text -> image),
`gates` (quality gates and model card).
"""

from __future__ import annotations

from pathlib import Path

TOY = "toy"


def model_path() -> Path:
    """Folder of the trained toy model shipped inside the package."""
    return Path(__file__).with_name("model")


def resolve_model_name(model: str) -> str:
    """`toy` -> the shipped model folder's path; any other model name unchanged."""
    return str(model_path()) if model == TOY else model
