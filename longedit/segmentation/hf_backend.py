"""SAM2 tracking with transformers' `Sam2VideoModel`, streamed one frame at a time.

How the model is driven (transformers >= 4.56, checked on 5.23):
- one `Sam2VideoInferenceSession` per chunk, created empty (streaming mode, no video given);
- prompts go straight into the session like `Sam2VideoProcessor.add_inputs_to_inference_session`
  does: a box becomes two points labelled 2 and 3 (`add_point_inputs`), a mask is resized to the model
  size and binarised (`add_mask_inputs`), and `obj_with_new_inputs` lists the prompted objects;
- each frame is preprocessed here (resize to `image_size`, ImageNet mean/std: what
  `Sam2VideoVideoProcessor` does, without its torchvision dependency) and passed as
  `model(session, frame=pixels, frame_idx=i)`, which adds it to the session, runs memory attention
  over the previous frames' memories and returns low-res mask logits per object.
The processor classes are not used because they need torchvision.

The session keeps every frame's pixels and outputs; most of that is never read again (SAM2 reads the
conditioning frames, the last `num_maskmem - 1` frame memories and the last
`max_object_pointers_in_encoder - 1` object pointers). `trim=True` deletes the rest after each frame,
which does not change any result (tested) and keeps a session's size flat within a chunk too.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from longedit.segmentation.tracker import AnchorFrame, ChunkStep, Prompt

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Footprint:
    """What a session retains: frames of pixels, per-frame outputs, and the bytes of all its tensors."""

    frames: int
    outputs: int
    tensor_bytes: int


def _tensor_bytes(value: object) -> int:
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_tensor_bytes(v) for v in value)
    return 0


def session_footprint(session) -> Footprint:
    """Size of a `Sam2VideoInferenceSession`: how much per-frame state it holds right now."""
    outputs = sum(len(d) for per_obj in session.output_dict_per_obj.values() for d in per_obj.values())
    tensors = (
        _tensor_bytes(session.processed_frames or {})
        + _tensor_bytes(session.output_dict_per_obj)
        + _tensor_bytes(session.point_inputs_per_obj)
        + _tensor_bytes(session.mask_inputs_per_obj)
        + _tensor_bytes(session.cache._vision_features)
    )
    return Footprint(frames=len(session.processed_frames or {}), outputs=outputs, tensor_bytes=tensors)


class HFSam2Backend:
    """`TrackerBackend` over a loaded `Sam2VideoModel`; frames are decoded at (image_size, image_size)."""

    name = "transformers"

    def __init__(self, model, device: torch.device, dtype: torch.dtype = torch.float32, *, trim: bool = True) -> None:
        self.model = model
        self.device = device
        self.dtype = dtype
        self.trim = trim
        self.image_size = int(model.config.image_size)
        self.work_size = (self.image_size, self.image_size)
        # Frames older than this are never read again by the memory attention (see module docstring).
        self.memory_frames = max(model.config.num_maskmem, model.config.max_object_pointers_in_encoder) - 1
        self._mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
        self.session = None  # the live session while a chunk is being tracked

    def new_session(self):
        """An empty streaming session (video size = work size, so prompts are in work-space pixels)."""
        from transformers import Sam2VideoInferenceSession

        return Sam2VideoInferenceSession(
            video_height=self.image_size,
            video_width=self.image_size,
            inference_device=self.device,
            inference_state_device=self.device,
            video_storage_device=self.device,
            dtype=self.dtype,
        )

    def preprocess(self, frame: np.ndarray) -> torch.Tensor:
        """RGB uint8 [H, W, 3] -> normalised [3, S, S] on the device (bilinear, antialiased if shrinking)."""
        pixels = torch.from_numpy(np.ascontiguousarray(frame)).to(self.device).permute(2, 0, 1).float() / 255.0
        if pixels.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            pixels = F.interpolate(pixels[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
        return ((pixels - self._mean) / self._std).to(self.dtype)

    def _prompt_mask(self, mask: np.ndarray) -> torch.Tensor:
        """Bool [h, w] -> float [1, 1, S, S] in {0, 1}, resized like `process_new_mask_for_video_frame`."""
        tensor = torch.from_numpy(np.asarray(mask, dtype=bool)).to(self.device).float()[None, None]
        if tensor.shape[-2:] != (self.image_size, self.image_size):
            tensor = F.interpolate(
                tensor, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False, antialias=True
            )
            tensor = (tensor >= 0.5).float()
        return tensor

    def _add_prompts(self, session, frame_idx: int, prompts: Sequence[Prompt]) -> None:
        """Write prompts into the session exactly as the transformers processor would."""
        for prompt in prompts:
            obj_idx = session.obj_id_to_idx(prompt.obj_id)
            if prompt.box is not None:
                x0, y0, x1, y1 = (float(v) for v in prompt.box)
                coords = torch.tensor([[[[x0, y0], [x1, y1]]]], dtype=torch.float32)
                labels = torch.tensor([[[2, 3]]], dtype=torch.int32)
                session.add_point_inputs(obj_idx, frame_idx, {"point_coords": coords, "point_labels": labels})
                session.remove_mask_inputs(obj_idx, frame_idx)
            else:
                session.add_mask_inputs(obj_idx, frame_idx, self._prompt_mask(prompt.mask))
                session.remove_point_inputs(obj_idx, frame_idx)
        if prompts:
            session.obj_with_new_inputs = [p.obj_id for p in prompts]

    def _trim(self, session, frame_idx: int) -> None:
        """Forget per-frame state the model will never read again (results are unchanged)."""
        for idx in [i for i in (session.processed_frames or {}) if i != frame_idx]:
            del session.processed_frames[idx]
        oldest_kept = frame_idx - self.memory_frames + 1
        for obj_idx, outputs in session.output_dict_per_obj.items():
            for stored in outputs.values():
                current = stored.get(frame_idx)
                if current is not None:
                    current.pop("high_res_masks", None)  # only used inside the forward that made it
            non_cond = outputs["non_cond_frame_outputs"]
            for idx in [i for i in non_cond if i < oldest_kept]:
                del non_cond[idx]
            for per_frame in (
                session.frames_tracked_per_obj[obj_idx],
                session.mask_inputs_per_obj[obj_idx],
                session.point_inputs_per_obj[obj_idx],
            ):
                for idx in [i for i in per_frame if i < frame_idx]:
                    del per_frame[idx]

    def step(self, session, frame_idx: int, frame: np.ndarray, prompts: Sequence[Prompt] = ()):
        """Stream one frame (with its prompts) into `session`; returns the model's output for it."""
        self._add_prompts(session, frame_idx, prompts)
        output = self.model(inference_session=session, frame=self.preprocess(frame), frame_idx=frame_idx)
        if self.trim:
            self._trim(session, frame_idx)
        return output

    def track_chunk(
        self, anchors: Sequence[AnchorFrame], frames: Iterable[tuple[np.ndarray, list[Prompt]]]
    ) -> Iterator[ChunkStep]:
        """A fresh session: anchors first (outputs discarded), then one step per streamed frame."""
        session = self.session = self.new_session()
        try:
            frame_idx = 0
            for anchor in anchors:
                self.step(session, frame_idx, anchor.frame, anchor.prompts)
                frame_idx += 1
            for frame, prompts in frames:
                output = self.step(session, frame_idx, frame, prompts)
                frame_idx += 1
                yield ChunkStep(list(output.object_ids), output.pred_masks[:, 0].float())
        finally:
            self.session = None
            session.reset_inference_session()

    def footprint(self) -> Footprint | None:
        """Footprint of the live session (None between chunks)."""
        return None if self.session is None else session_footprint(self.session)
