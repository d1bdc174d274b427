"""FateZero's source attention regenerated from the inversion trajectory (`--fuse-source recompute`).

Why: at 512x512 with the official layer set (32x32 included) the stored maps are about 4 GB per
frame (5 layers x 8 heads x 1024 queries x 2048 sparse-causal keys in fp16, per self-blend step):
terabytes for a long video. The maps are a pure function of the inversion latents at that step, the
source prompt and the model, so this keeps only the latents (C x h x w fp16 per frame per fused
step, 32 KB at 512x512) and reruns the source pass when the edit needs them.

* inversion (`record`): the latents each window's inversion forward starts from at edit step s go
  to an fp16 memory map `[fused steps, frames, C, h, w]` (only steps that are fused);
* editing (`regenerate`): before the guided pass of window w at a fused step s, the conditional
  source-prompt forward runs on the window's trajectory latents (through the editor's
  `source_forward`, exactly the inversion's input) and the fused layers hand their queries and keys
  to `capture`; the forward stops (`StopForward`) once the last fused layer has been captured;
* `get` then gives the softmax probabilities of a layer, as the disk store would (in fp32, without
  the store's fp16 rounding of the maps; the latents are fp16-rounded instead).

Host and device memory hold one window's queries and keys of the fused layers (about 1/20 of its
self-attention maps), never the maps of a whole step.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from longedit.fatezero.store import BYTES_PER_VALUE, MANIFEST, Slot

TRAJECTORY = "trajectory.f16"

SourcePass = Callable[[torch.Tensor, int, int, int], object]  # (latents, start, end, timestep)


class RecomputedMaps:
    """Source attention of the fused layers, regenerated per (edit step, window); see the module docstring."""

    def __init__(
        self,
        folder: str | Path,
        slots: list[Slot],
        windows: list[tuple[int, int]],
        window_rows: list[int],
        latent_shape: tuple[int, int, int],
        create: bool = True,
    ) -> None:
        self.folder = Path(folder)
        self.slots = {slot.name: slot for slot in slots}
        self.windows = list(windows)
        self.window_rows = list(window_rows)
        self.frames = max(end for _, end in windows)
        self.count = max((s.steps for s in slots), default=0)
        self.folder.mkdir(parents=True, exist_ok=True)
        manifest = {"mode": "recompute", "steps": self.count, "frames": self.frames, "latent": list(latent_shape)}
        manifest_path = self.folder / MANIFEST
        reuse = not create and manifest_path.is_file() and json.loads(manifest_path.read_text()) == manifest
        path = self.folder / TRAJECTORY
        self.array = np.memmap(
            path, dtype=np.float16, mode="r+" if reuse and path.is_file() else "w+",
            shape=(max(self.count, 1), self.frames, *latent_shape),
        )
        if not reuse:
            temporary = manifest_path.with_name(f".{MANIFEST}.{os.getpid()}.tmp")
            temporary.write_text(json.dumps(manifest, indent=2))
            os.replace(temporary, manifest_path)
        self.run: SourcePass | None = None
        self.timesteps: list[int] = []
        self._captured: dict[str, tuple[torch.Tensor, torch.Tensor, float]] = {}
        self._at: tuple[int, int] | None = None
        self.passes = 0
        self.frame_passes = 0

    def connect(self, run: SourcePass, timesteps: list[int]) -> None:
        """Use `run(latents, start, end, timestep)` (the editor's source forward) to regenerate maps."""
        self.run, self.timesteps = run, list(timesteps)

    # ---------------------------------------------------------------------------------- protocol
    def has(self, name: str, step: int) -> bool:
        slot = self.slots.get(name)
        return slot is not None and 0 <= step < slot.steps

    def record(self, step: int, window: int, latents: torch.Tensor) -> None:
        """Keep the latents [frames of window, C, h, w] the inversion forward of edit step `step` starts from."""
        if step < self.count:
            start, end = self.windows[window]
            self.array[step, start:end] = latents.detach().to(device="cpu", dtype=torch.float16).numpy()

    def regenerate(self, step: int, window: int) -> None:
        """Run the source pass of `window` at edit step `step`; the fused layers call `capture`."""
        self.release()
        if step >= self.count or self.run is None:
            return
        start, end = self.windows[window]
        self._at = (step, window)
        latents = torch.from_numpy(self.array[step])
        with torch.no_grad():
            self.run(latents, start, end, self.timesteps[step])
        self.passes += 1
        self.frame_passes += self.window_rows[window]
        missing = [n for n in self.slots if self.has(n, step) and n not in self._captured]
        if missing:
            raise RuntimeError(f"the source pass did not reach the fused layers {missing}")

    def capture(self, name: str, query: torch.Tensor, key: torch.Tensor, scale: float) -> bool:
        """Keep a fused layer's queries and keys; True once every layer fused at this step is captured."""
        step = self._at[0]
        if self.has(name, step):
            self._captured[name] = (query, key, scale)
        return all(n in self._captured for n in self.slots if self.has(n, step))

    def get(self, name: str, step: int, window: int, keys: int | None = None) -> torch.Tensor:
        """The source's attention probabilities [rows, heads, queries, keys] of `name` (fp32, on the device)."""
        if self._at != (step, window) or name not in self._captured:
            raise RuntimeError(f"no regenerated maps of {name} at step {step}, window {window}")
        query, key, scale = self._captured[name]
        probs = (torch.matmul(query.float(), key.float().transpose(-1, -2)) * scale).softmax(dim=-1)
        return probs[..., :keys] if keys is not None else probs

    def release(self) -> None:
        self._captured, self._at = {}, None

    # ------------------------------------------------------------------------------------ disk
    def flush(self) -> None:
        self.array.flush()

    def file_bytes(self) -> int:
        return int(self.array.size) * BYTES_PER_VALUE

    @staticmethod
    def expected_bytes(steps: int, frames: int, latent_shape: tuple[int, int, int]) -> int:
        return max(steps, 1) * frames * int(np.prod(latent_shape)) * BYTES_PER_VALUE

    def bytes_per_frame(self, frames: int) -> float:
        return self.file_bytes() / max(frames, 1)

    def close(self, delete: bool = False) -> None:
        self.release()
        if getattr(self, "array", None) is not None:
            self.array.flush()
            mmap = getattr(self.array, "_mmap", None)
            if mmap is not None:
                mmap.close()
            self.array = None
        if delete:
            shutil.rmtree(self.folder, ignore_errors=True)
