"""The VAE decode of edited latents gives the same pixels in every run of the same job.

The flaky resume tests (issue 12 item 10) came from here: on CPU the decoder's float output depends on
the latents' memory layout, the torch thread count and the batch size, and one flipped pixel changes
the whole H.264 encode. Same latent values must give the same frames whatever the caller's state.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from longedit import engine
from longedit.latent_decode import cpu_threads, decode_latents


@pytest.fixture(scope="module")
def latents() -> torch.Tensor:
    """Ten frames of latents for the tiny model's 64x64 frames (two chunks of 8 and a short one)."""
    generator = torch.Generator().manual_seed(0)
    return torch.randn(10, 4, 8, 8, generator=generator) * 0.8


def _frames(backbone, latents: torch.Tensor, threads: int) -> np.ndarray:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return np.stack(list(decode_latents(backbone.vae, latents, backbone.device, 8)))
    finally:
        torch.set_num_threads(before)


def test_same_latents_give_the_same_pixels_whatever_layout_threads_or_thread(tiny_backbone, latents):
    reference = _frames(tiny_backbone, latents, 1)
    assert reference.shape == (10, 64, 64, 3) and reference.dtype == np.uint8
    channels_last = latents.contiguous(memory_format=torch.channels_last)  # what the VAE encoder leaves
    for variant, threads in [(latents, 3), (channels_last, 1), (channels_last, 2), (channels_last, 4)]:
        assert np.array_equal(_frames(tiny_backbone, variant, threads), reference), (variant.stride(), threads)
    with ThreadPoolExecutor(1) as pool:  # `watch` runs jobs in worker threads
        assert np.array_equal(pool.submit(_frames, tiny_backbone, channels_last, 2).result(), reference)


def test_engine_decodes_through_it(tiny_backbone, latents):
    expected = np.stack(list(decode_latents(tiny_backbone.vae, latents, tiny_backbone.device, engine.VAE_CHUNK)))
    assert np.array_equal(np.stack(list(engine.decode_latents(tiny_backbone, latents))), expected)


def test_cpu_threads_restores_the_callers_thread_count():
    before = torch.get_num_threads()
    with cpu_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), cpu_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
