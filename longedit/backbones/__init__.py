"""Backbones: the UNet families longedit edits with, one file per kind, found through a registry.

* `registry`: kind name -> its `BackboneKind` (see `kind`: adapter, UNet loader, random UNet, folder
  saver, detection rule, temporal layers). Kinds: `sd` (Stable Diffusion), `t2v` (diffusers
  text-to-video UNet3D), `tuneavideo` (Tune-A-Video checkpoints). The registry imports no torch, so
  `longedit.config` can validate `backbone:` with it.
* `detect`: `resolve_backbone_kind` / `detect_backbone_kind` from `unet/config.json`;
  `unet_files`: reading that config and the weight names without loading the UNet.
* `adapters.adapter_for(kind)`: how `VideoEditor` calls that UNet (batch layout, anchor frame, processors).

This package imports nothing itself (importing a submodule stays light). Random models of every
kind (tests, benchmarks) are built in `longedit.random_models`.
"""
