"""The demo's toy clip and edit: a red circle crossing grass, turned into a blue square in its path."""

from __future__ import annotations

from dataclasses import dataclass

from longedit.toyworld.render import ToyClip, render_clip
from longedit.toyworld.world import Scene, ToyObject

SOURCE_PROMPT = "a red circle on grass"
PROMPT = "a blue square on grass"
WORD, COLOUR, SHAPE = "square", "blue", "square"


@dataclass
class DemoEdit:
    """The source clip and what the edit asks for: `word` of `prompt` in `boxes` (one per frame)."""

    clip: ToyClip
    source_prompt: str
    prompt: str
    word: str
    colour: str
    shape: str
    boxes: list[tuple[int, int, int, int]]

    def object_args(self, every: int = 4) -> list[str]:
        """`--object` keyframes (every `every` frames and the last) over the source object's path."""
        frames = sorted(set(range(0, len(self.boxes), every)) | {len(self.boxes) - 1})
        return [f"{self.word}={','.join(str(v) for v in self.boxes[f])}@{f}" for f in frames]


def demo_edit(frames: int = 24, size: int = 128, seed: int = 0, object_size: float = 0.42, pan: float = 0.1) -> DemoEdit:
    """A red circle moving left to right over grass (camera panning), to become a blue square."""
    side = object_size * size
    circle = ToyObject("red", "circle", side / 2 + 4, size * 0.55, side)
    scene = Scene("grass", (circle,), texture_seed=seed + 11)
    clip = render_clip(scene, frames=frames, size=size, pan=pan, seed=seed, travel=0.45)
    return DemoEdit(clip, SOURCE_PROMPT, PROMPT, WORD, COLOUR, SHAPE, clip.boxes(0))
