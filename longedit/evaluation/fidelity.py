"""Background fidelity: PSNR, SSIM (torchmetrics) and LPIPS (when its weights load) outside the regions.

Frames are uint8 HxWx3 RGB; PSNR and SSIM use a data range of 255. PSNR is capped at `PSNR_CAP` dB so
identical backgrounds give a finite number (JSON has no infinity).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from longedit.evaluation.metric import failure

PSNR_CAP = 100.0
_LPIPS_FILES = {  # torchvision backbone checkpoints the torchmetrics LPIPS nets load
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
    "squeeze": "squeezenet1_1-b8a52dc0.pth",
}


def to_tensor(frame: np.ndarray) -> torch.Tensor:
    """uint8 HxWx3 -> float32 [1, 3, H, W] in 0..255."""
    return torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1)[None].float()


def background_psnr(source: torch.Tensor, edited: torch.Tensor, background: np.ndarray) -> float | None:
    """PSNR (dB, range 255) over the background pixels (all channels); None when there are none."""
    if not background.any():
        return None
    keep = torch.from_numpy(background)
    psnr = peak_signal_noise_ratio(edited[0][:, keep].double(), source[0][:, keep].double(), data_range=255.0)
    return min(float(psnr), PSNR_CAP)


def background_ssim(source: torch.Tensor, edited: torch.Tensor, background: np.ndarray) -> float | None:
    """Mean of the SSIM map (Gaussian 11x11, sigma 1.5, range 255, all channels) over the background.

    Computed in float32 (float64 convolutions are ~30x slower on CPU): the variances E[x^2] - mu^2 lose
    about 1e-2 at 255 scale, so values are good to ~2e-4 (identical frames give 1 within ~1e-5).
    """
    if not background.any():
        return None
    _, ssim_map = structural_similarity_index_measure(edited, source, data_range=255.0, return_full_image=True)
    keep = torch.from_numpy(background)
    return float(ssim_map[0][:, keep].mean())


class Lpips:
    """torchmetrics LPIPS on (source, edited with the regions pasted back from the source)."""

    def __init__(self, metric: torch.nn.Module) -> None:
        self.metric = metric

    def __call__(self, source: torch.Tensor, edited: torch.Tensor, background: np.ndarray) -> float:
        keep = torch.from_numpy(background)
        composite = torch.where(keep, edited, source)
        with torch.no_grad():
            return float(self.metric(composite / 255.0, source / 255.0))


def load_lpips(net: str, local_files_only: bool) -> tuple[Lpips | None, str | None]:
    """(LPIPS, None) when torchmetrics' LPIPS and its backbone weights load, else (None, reason)."""
    if net == "none":
        return None, "disabled by --lpips none"
    if net not in _LPIPS_FILES:
        return None, f"unknown LPIPS net '{net}': use alex, vgg or squeeze"
    try:
        import torchvision  # noqa: F401 - torchmetrics' LPIPS needs it
    except ImportError:
        return None, "LPIPS needs torchvision, which is not installed"
    cached = Path(torch.hub.get_dir()) / "checkpoints" / _LPIPS_FILES[net]
    if local_files_only and not cached.is_file():
        return None, f"LPIPS backbone weights not found at {cached} and --local-files-only is set"
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        metric = LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True).eval()
    except Exception as error:  # noqa: BLE001 - any load failure is reported, never guessed around
        return None, failure("LPIPS weights could not be loaded", error)
    return Lpips(metric), None
