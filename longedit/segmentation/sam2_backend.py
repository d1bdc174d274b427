"""Optional backend: Meta's official `sam2` package (`.pt` checkpoint + Hydra config).

Imported only when a `.pt` checkpoint is chosen (`pip install longedit[sam2]`). The official video
predictor reads a whole video from a folder of JPEGs, so each chunk's frames (anchors first) are
written to a temporary folder, tracked with `init_state` / `add_new_points_or_box` / `add_new_mask` /
`propagate_in_video`, and the folder is deleted: memory and disk stay bounded by the chunk length.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from longedit.errors import UserError
from longedit.segmentation.tracker import AnchorFrame, ChunkStep, Prompt

INSTALL_HINT = "pip install longedit[sam2]"

# checkpoint file stem -> config name inside the sam2 package (Hydra looks configs up there)
_CONFIGS = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
}


def split_checkpoint_spec(spec: str) -> tuple[Path, str | None]:
    """`CKPT.pt` or `CKPT.pt:CONFIG.yaml` -> (checkpoint, config name or None)."""
    match = re.match(r"^(?P<ckpt>.+\.pt):(?P<config>[^:]+\.ya?ml)$", spec)
    if match:
        return Path(match["ckpt"]).expanduser(), match["config"]
    return Path(spec).expanduser(), None


def config_for(checkpoint: Path, config: str | None) -> str:
    """The Hydra config name for a checkpoint: given explicitly, or known from the official file names."""
    if config is not None:
        return config
    name = checkpoint.stem.lower()
    for stem, cfg in _CONFIGS.items():
        if name.startswith(stem):
            return cfg
    raise UserError(
        f"cannot tell which SAM2 config goes with checkpoint '{checkpoint.name}'",
        "pass it as --sam2-model CKPT.pt:configs/sam2.1/sam2.1_hiera_t.yaml",
    )


def is_checkpoint_spec(model: str) -> bool:
    """True when `model` names an official `.pt` checkpoint (optionally with `:CONFIG.yaml`)."""
    return split_checkpoint_spec(model)[0].suffix == ".pt"


class OfficialSam2Backend:
    """`TrackerBackend` over `sam2.build_sam.build_sam2_video_predictor`."""

    name = "sam2"

    def __init__(self, predictor, device: torch.device) -> None:
        self.predictor = predictor
        self.device = device
        size = int(getattr(predictor, "image_size", 1024))
        self.work_size = (size, size)

    @classmethod
    def load(cls, spec: str, device: torch.device) -> OfficialSam2Backend:
        """Build the predictor from `CKPT.pt[:CONFIG]`; UserError when the package or file is missing."""
        checkpoint, config = split_checkpoint_spec(spec)
        if not checkpoint.is_file():
            raise UserError(f"SAM2 checkpoint '{checkpoint}' does not exist", "download it or fix --sam2-model")
        try:
            from sam2.build_sam import build_sam2_video_predictor  # noqa: PLC0415 - optional extra
        except ImportError as error:
            raise UserError("the official SAM2 backend needs the sam2 package", INSTALL_HINT) from error
        config_name = config_for(checkpoint, config)
        try:
            predictor = build_sam2_video_predictor(config_name, str(checkpoint), device=str(device))
        except Exception as error:  # Hydra/torch raise many types; the message is what matters
            raise UserError(
                f"cannot load SAM2 checkpoint '{checkpoint}' with config '{config_name}': {error}",
                "check that the checkpoint matches the config",
            ) from error
        return cls(predictor, device)

    def _autocast(self):
        if self.device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def track_chunk(
        self, anchors: Sequence[AnchorFrame], frames: Iterable[tuple[np.ndarray, list[Prompt]]]
    ) -> Iterator[ChunkStep]:
        """Write the chunk as JPEGs, prompt it, propagate forward, yield the non-anchor frames."""
        with tempfile.TemporaryDirectory(prefix="longedit-sam2-") as folder:
            prompts_at: list[tuple[int, Prompt]] = []
            count = 0
            for anchor in anchors:
                Image.fromarray(anchor.frame).save(Path(folder) / f"{count:05d}.jpg", quality=95)
                prompts_at += [(count, p) for p in anchor.prompts]
                count += 1
            first_new = count
            for frame, prompts in frames:
                Image.fromarray(frame).save(Path(folder) / f"{count:05d}.jpg", quality=95)
                prompts_at += [(count, p) for p in prompts]
                count += 1
            if count == first_new:
                return
            joined: dict[int, int] = {}
            for index, prompt in prompts_at:
                joined.setdefault(prompt.obj_id, index)
            with torch.inference_mode(), self._autocast():
                state = self.predictor.init_state(video_path=folder, offload_video_to_cpu=True)
                for index, prompt in prompts_at:
                    if prompt.box is not None:
                        self.predictor.add_new_points_or_box(
                            inference_state=state, frame_idx=index, obj_id=prompt.obj_id, box=np.asarray(prompt.box)
                        )
                    else:
                        self.predictor.add_new_mask(
                            inference_state=state, frame_idx=index, obj_id=prompt.obj_id, mask=prompt.mask
                        )
                try:
                    for index, obj_ids, logits in self.predictor.propagate_in_video(state):
                        if index < first_new:
                            continue
                        rows = [i for i, o in enumerate(obj_ids) if joined.get(o, count) <= index]
                        yield ChunkStep([int(obj_ids[i]) for i in rows], logits[rows, 0].float())
                finally:
                    self.predictor.reset_state(state)
