#!/usr/bin/env bash
# The GPU benchmark set (H100/H200 or any CUDA GPU). Writes JSON into benchmarks/results-gpu/.
# Run from the repository root with the project's environment active: bash benchmarks/gpu.sh
set -euo pipefail
out="${1:-benchmarks/results-gpu}"
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
# 1. optimized (window from the planner: free memory) vs official ReAtCo settings, full SD 1.5 UNet, 512x512
longedit bench --preset sd15 --frames 16 --steps 50 --json "$out/sd15.json"
# 2. the same with a fixed 16-frame optimized window (comparable across GPUs)
longedit bench --preset sd15 --frames 16 --steps 50 --window 16 --mode optimized --json "$out/sd15-window16.json"
# 2b. the same window simulated on fake tensors (compare its inversion/edit_step phase peaks with step 2's peak VRAM)
longedit bench memory --preset sd15 --window 16 --dtype float16 --json "$out/sd15-window16-simulated.json"
# 3. what the planner picks for a 24 GB card, and whether the run stays under it
longedit bench --preset sd15 --frames 48 --steps 10 --vram 24GB --mode optimized --json "$out/sd15-24gb.json"
# 4. peak VRAM over video length (optimized mode, one process per length)
longedit bench --preset sd15 --steps 2 --frames-sweep 16,100,1000 --json "$out/sd15-sweep.json"
# 5. fused word-attention op vs eager reference, SD 1.5 shapes, fp16
longedit bench kernel --json "$out/kernel.json"
# 6. one Tune-A-Video tuning step at 512x512, 16 frames, full SD 1.5 UNet, fp16: peak VRAM per optimizer
python benchmarks/tune_memory.py step --preset sd15 --size 512 --frames 16 --steps 2 --device cuda --json "$out/tune-step.jsonl"
python benchmarks/tune_memory.py step --preset sd15 --size 512 --frames 16 --steps 2 --device cuda --optimizer adamw8bit --json "$out/tune-step.jsonl" || true  # needs bitsandbytes
