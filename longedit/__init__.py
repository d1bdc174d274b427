"""longedit: training-free text editing of long videos (ReAtCo on Stable Diffusion, windowed co-denoising)."""

__version__ = "0.1.0"
