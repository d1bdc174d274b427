"""One-shot Tune-A-Video tuning of a source clip: the backbone of the paper's pipeline, made here.

ReAtCo edits with a Stable Diffusion UNet that Tune-A-Video first tuned on the source clip (official
`train_tuneavideo.py`). `longedit tune` makes that model without a forked UNet: the base model's
`UNet2DConditionModel` gets Tune-A-Video's temporal layers from `longedit.backbones.tuneavideo`, the
named modules are trained on the clip, and the result is a Tune-A-Video folder that `longedit edit
--model FOLDER` loads like any other (backbone detected from its `unet/config.json`).

Modules:
- `clip`: the clip's VAE posteriors encoded once, streamed into a memory map on disk, and the
  windows of frames each step trains on (anywhere in a long clip, with a frame stride);
- `optim`: mixed precision, AdamW / bitsandbytes' 8-bit AdamW, DeepSpeed ZeRO-2 with CPU offload,
  their availability checks (one-line errors before any long work) and optimizer state bytes;
- `trainer`: `tune_clip`, the training loop (accelerate), checkpoints, resume and the written folder;
- `cache`: tuned folders of jobs, content-addressed by clip bytes, base model, prompt and settings.
"""
