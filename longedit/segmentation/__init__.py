"""Object masks from boxes with SAM2: chunked streaming tracking, post-processing, mask folders.

`track_masks` is what the edit engine and `longedit masks` call; the rest is exposed for tests and
for callers that drive a tracker themselves (`track_stream` over any `TrackerBackend`).
"""

from longedit.segmentation.backends import load_backend, load_sam2_model, resolve_device
from longedit.segmentation.hf_backend import Footprint, HFSam2Backend, session_footprint
from longedit.segmentation.mask_folder import MaskFolderWriter, frame_file, load_mask_folder, save_mask_folder
from longedit.segmentation.postprocess import boxify, dilate, drop_small, logits_to_masks, postprocess
from longedit.segmentation.preview import overlay
from longedit.segmentation.sam2_backend import OfficialSam2Backend
from longedit.segmentation.random_sam2 import build_random_sam2, random_sam2_config
from longedit.segmentation.track import DEFAULT_CHUNK, ObjectSeed, object_seeds, track_masks
from longedit.segmentation.tracker import (
    AnchorFrame,
    ChunkStep,
    Prompt,
    Reseed,
    StreamState,
    StreamStep,
    TrackerBackend,
    track_stream,
)

__all__ = [
    "DEFAULT_CHUNK",
    "AnchorFrame",
    "ChunkStep",
    "Footprint",
    "HFSam2Backend",
    "MaskFolderWriter",
    "ObjectSeed",
    "OfficialSam2Backend",
    "Prompt",
    "Reseed",
    "StreamState",
    "StreamStep",
    "TrackerBackend",
    "boxify",
    "build_random_sam2",
    "dilate",
    "drop_small",
    "frame_file",
    "load_backend",
    "load_mask_folder",
    "load_sam2_model",
    "logits_to_masks",
    "object_seeds",
    "overlay",
    "postprocess",
    "random_sam2_config",
    "resolve_device",
    "save_mask_folder",
    "session_footprint",
    "track_masks",
    "track_stream",
]
