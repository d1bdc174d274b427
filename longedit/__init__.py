"""longedit: training-free text editing of long videos (ReAtCo on Stable Diffusion, windowed co-denoising).

The Python API (README, "From Python"): `LongEditPipeline` and the `LongEditOutput` a call returns. They are
imported on first use, so `import longedit` (and the CLI's start) stays light.
"""

__version__ = "0.1.0"
__all__ = ["LongEditOutput", "LongEditPipeline", "__version__"]


def __getattr__(name: str):
    """`from longedit import LongEditPipeline` loads `longedit.pipeline` (torch, diffusers) only then."""
    if name in ("LongEditPipeline", "LongEditOutput"):
        from longedit import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'longedit' has no attribute {name!r}")
