"""On-disk store of attention maps (FateZero): fp16 memory-mapped files, one per fused layer.

What: for every fused layer, the attention probabilities `[heads, queries, keys]` of every frame of
every window at every stored edit step, written during DDIM inversion and read back during editing.

Why on disk: FateZero keeps the maps of all steps in memory, which only works for 8-frame clips. Here
the video is long, so maps go to a `np.memmap` file per layer, written and read one (step, window)
slice at a time; host memory holds only the slices in flight (the page cache does the rest) and the
GPU never sees more than one window.

Layout of one layer's file: `[steps, rows, heads, queries, keys]` fp16, where `rows` stacks the batch
frames of every window in order (a window's rows are its own frames plus the prepended anchor, if
any). Slices with fewer keys than the slot (a one-frame window of sparse-causal attention) are
zero-padded on write and cut on read. A `manifest.json` records the slots so a resumed job reopens
the same files.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from longedit.atomic import write_json

MANIFEST = "manifest.json"
BYTES_PER_VALUE = 2  # fp16


@dataclass(frozen=True)
class Slot:
    """One stored layer: its name, kind (`self`/`cross`), steps kept and per-frame map shape."""

    name: str
    kind: str
    steps: int
    heads: int
    queries: int
    keys: int

    @property
    def frame_values(self) -> int:
        return self.heads * self.queries * self.keys


class AttentionDiskStore:
    """Memory-mapped fp16 attention maps per (layer, edit step, window); see the module docstring."""

    def __init__(self, folder: str | Path, slots: list[Slot], window_rows: list[int], create: bool = True) -> None:
        self.folder = Path(folder)
        self.slots = {slot.name: slot for slot in slots}
        self.window_rows = list(window_rows)
        self.offsets = [0]
        for rows in self.window_rows:
            self.offsets.append(self.offsets[-1] + rows)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = {"slots": [asdict(s) for s in slots], "window_rows": self.window_rows}
        manifest_path = self.folder / MANIFEST
        reuse = not create and manifest_path.is_file() and json.loads(manifest_path.read_text()) == manifest
        self.arrays: dict[str, np.memmap] = {}
        for index, slot in enumerate(slots):
            path = self.folder / f"{index:03d}-{slot.kind}.f16"
            mode = "r+" if reuse and path.is_file() else "w+"
            self.arrays[slot.name] = np.memmap(
                path, dtype=np.float16, mode=mode, shape=(max(slot.steps, 1), self.rows, slot.heads, slot.queries, slot.keys)
            )
        if not reuse:
            write_json(manifest_path, manifest, what="the FateZero manifest")

    @property
    def rows(self) -> int:
        return self.offsets[-1]

    def has(self, name: str, step: int) -> bool:
        slot = self.slots.get(name)
        return slot is not None and 0 <= step < slot.steps

    def put(self, name: str, step: int, window: int, maps: torch.Tensor) -> None:
        """Write the maps `[rows of window, heads, queries, keys<=slot]` of `name` at edit step `step`."""
        slot = self.slots[name]
        start, end = self.offsets[window], self.offsets[window + 1]
        if maps.shape[0] != end - start:
            raise ValueError(f"window {window} has {end - start} rows, got maps for {maps.shape[0]}")
        values = maps.detach().to(device="cpu", dtype=torch.float16).numpy()
        target = self.arrays[name]
        target[step, start:end, ..., : values.shape[-1]] = values
        if values.shape[-1] < slot.keys:
            target[step, start:end, ..., values.shape[-1] :] = 0

    def get(self, name: str, step: int, window: int, keys: int | None = None) -> torch.Tensor:
        """The stored maps of `name` at `step` for `window` (fp16 CPU copy), cut to `keys` columns."""
        start, end = self.offsets[window], self.offsets[window + 1]
        values = np.array(self.arrays[name][step, start:end, ..., : keys or self.slots[name].keys])
        return torch.from_numpy(values)

    def flush(self) -> None:
        for array in self.arrays.values():
            array.flush()

    def file_bytes(self) -> int:
        """Bytes the store's map files take (their full size, as allocated)."""
        return sum(int(a.size) * BYTES_PER_VALUE for a in self.arrays.values())

    @staticmethod
    def expected_bytes(slots: list[Slot], window_rows: list[int]) -> int:
        """Bytes of the map files for `slots` over windows with `window_rows` rows each."""
        rows = sum(window_rows)
        return sum(max(s.steps, 1) * rows * s.frame_values * BYTES_PER_VALUE for s in slots)

    def bytes_per_frame(self, frames: int) -> float:
        """Disk footprint per video frame (anchor rows and window overlaps included)."""
        return self.file_bytes() / max(frames, 1)

    def close(self, delete: bool = False) -> None:
        """Flush and drop the maps; `delete` removes the folder too."""
        for array in self.arrays.values():
            array.flush()
            mmap = getattr(array, "_mmap", None)
            if mmap is not None:
                mmap.close()
        self.arrays.clear()
        if delete:
            shutil.rmtree(self.folder, ignore_errors=True)


def spatial_size(size: int, scale: int) -> int:
    """Size of a feature map at `scale` (a power of two) below `size`: each stride-2 conv rounds up."""
    for _ in range(int(math.log2(scale))):
        size = (size + 1) // 2
    return size
