"""`longedit eval`: streaming quality metrics of an edit (source video vs edited video).

Weights-free metrics (background PSNR/SSIM, temporal consistency) are always computed; CLIP, LPIPS and
detector-based placement are computed when their weights load and are `null` with the reason otherwise.
"""

from longedit.evaluation.evaluate import EvalSettings, evaluate_videos
from longedit.evaluation.metric import available, missing

__all__ = ["EvalSettings", "available", "evaluate_videos", "missing"]
