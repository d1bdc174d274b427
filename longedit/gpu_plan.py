"""Plan the window of a GPU job from a machine without that GPU: the memory simulation on the model's architecture.

`longedit validate job.yaml` with `vram: 24GB` on a CPU machine (the night's jobs checked before they go
to the GPU box) cannot probe the GPU, and a CPU probe measures fp32 CPU tensors without the fused op or
checkpointing. Instead the model's architecture is rebuilt from its config files on the meta device (no
weight is read), its weights become fake tensors, and `longedit.simulation` runs one window of the
product's own edit step at two lengths in the job's GPU precision (fp16 for `auto`) with the loop
settings a CUDA run takes; the planner fits its line through them (`longedit.planner.plan_window`). The
VAE's chunked decode does not grow with the window; its peak is checked against the budget separately.
"""

from __future__ import annotations

from dataclasses import replace
import time

import torch

from longedit.errors import UserError
from longedit.planner import HEADROOM, ProbeResult, WindowPlan, format_bytes, parse_size, plan_window
from longedit.simulation import SIM_DEVICE, box_masks, simulate_window, to_fake

GPU = torch.device("cuda")
SIMULATED_PROBE_LENGTHS = (4, 8)  # a window of 8 already holds a full VAE chunk
#: What a GPU holds that no tensor shows, kept off the budget before the planner's 10% headroom: the CUDA
#: context (0.3-0.6 GiB), cuBLAS/cuDNN workspaces and flash attention's fp32 dq accumulator in backward.
CUDA_RESERVE_BYTES = 2**30
GPU_DTYPES = {"auto": torch.float16, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def architecture_backbone(model: str, dtype: torch.dtype, fake_mode, local_files_only: bool = False):
    """A Backbone of `model`'s architecture with fake weights on `SIM_DEVICE` (configs only; `tiny` is built).

    Stable Diffusion layouts only (UNet2DConditionModel): other kinds raise UserError.
    """
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from longedit.models import TINY, _model_source, frozen_backbone, load_tokenizer

    if model == TINY:
        from longedit.random_models import build_tiny_components

        components = build_tiny_components()
        device = SIM_DEVICE
    else:
        source = _model_source(model)
        kwargs = {"local_files_only": local_files_only}
        try:
            unet_config = UNet2DConditionModel.load_config(source, subfolder="unet", **kwargs)
            if unet_config.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
                raise UserError(
                    f"cannot simulate the GPU memory of '{model}': its UNet is {unet_config.get('_class_name')}",
                    "plan on the GPU itself (--vram there), or give --window",
                )
            with torch.device("meta"):
                components = {
                    "unet": UNet2DConditionModel.from_config(unet_config),
                    "vae": AutoencoderKL.from_config(AutoencoderKL.load_config(source, subfolder="vae", **kwargs)),
                    "text_encoder": CLIPTextModel(CLIPTextConfig.from_pretrained(source, subfolder="text_encoder", **kwargs)),
                }
            components["tokenizer"] = load_tokenizer(model, local_files_only)
            components["scheduler"] = DDIMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
        except (OSError, ValueError) as error:
            raise UserError(f"cannot read the configs of model '{model}' to simulate it: {str(error).splitlines()[0][:160]}",
                            "check --model, or give --window") from error
        device = torch.device("meta")
    backbone = frozen_backbone(components, model, device, dtype, "sd")
    for module in (backbone.unet, backbone.text_encoder, backbone.vae):
        to_fake(module, fake_mode)
    backbone.device = SIM_DEVICE
    return backbone


def simulated_probe(backbone, settings, source_prompt: str, prompt: str, words, height: int, width: int, fake_mode):
    """A planner probe that simulates each length (latent `height` x `width`); also keeps the VAE's peak."""
    settings = replace(settings, gradient_checkpointing=True, kernel_backend="triton" if settings.kernel_backend == "auto" else settings.kernel_backend)
    found: dict[str, int] = {}

    def probe(lengths) -> ProbeResult:
        started = time.perf_counter()
        peaks = []
        for length in lengths:

            def inputs(length=length):
                return torch.zeros(length, 4, height, width), box_masks(length, height, width, [w.word for w in words])

            result = simulate_window(backbone, settings, inputs, source_prompt, prompt, words, fake_mode=fake_mode, labels=False)
            phases = result["by_phase"]
            peaks.append(max(phases["inversion"]["peak_bytes"], phases["edit_step"]["peak_bytes"]))
            found["vae_bytes"] = max(phases["vae_encode"]["peak_bytes"], phases["vae_decode"]["peak_bytes"])
        return ProbeResult(tuple(lengths), tuple(peaks), 0, "fake-cuda", time.perf_counter() - started)

    return probe, found


def plan_unseen_gpu(job, settings, words, frames: int, processed_size: tuple[int, int]) -> dict:
    """The window a CUDA run of `job` with `job.vram` would use, planned by simulation; a report dict
    (the plan, its reason, the VAE chunk's peak)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    dtype = GPU_DTYPES[job.dtype]
    backbone = architecture_backbone(job.model, dtype, fake_mode, job.local_files_only)
    width, height = (side // backbone.vae_scale for side in processed_size)
    probe, found = simulated_probe(backbone, settings, job.source_prompt, job.prompt, words, height, width, fake_mode)
    usable = parse_size(job.vram) - CUDA_RESERVE_BYTES
    if usable <= 0:
        raise UserError(f"--vram {job.vram} is below the {format_bytes(CUDA_RESERVE_BYTES)} a CUDA context and its workspaces take",
                        "give the GPU's memory, e.g. 24GB")
    plan: WindowPlan = plan_window(
        frames=frames, device=GPU, window=job.window, stride=job.stride, vram=str(usable), probe=probe,
        default_length=16, probe_lengths=SIMULATED_PROBE_LENGTHS,
    )
    reason = plan.reason.replace(f"--vram {usable}", f"--vram {job.vram} less {format_bytes(CUDA_RESERVE_BYTES)} for the CUDA context and workspaces")
    report = {"length": plan.length, "stride": plan.stride, "source": plan.source, "reason": reason,
              "method": "fake-cuda simulation" if plan.probe else None, "dtype": str(dtype).replace("torch.", "")}
    vae = found.get("vae_bytes")
    if vae is not None and plan.budget_bytes is not None:
        report["vae_chunk_peak_bytes"] = vae
        if vae > HEADROOM * plan.budget_bytes:
            raise UserError(
                f"the VAE decode of 8-frame chunks at {processed_size[0]}x{processed_size[1]} needs about "
                f"{format_bytes(vae / HEADROOM)}, more than --vram {job.vram} allows",
                "give a larger --vram or a smaller --size",
            )
        report["reason"] += f"; the VAE decode chunk peaks at {format_bytes(vae)}"
    return report
