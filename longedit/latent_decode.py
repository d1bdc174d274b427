"""VAE decoding of edited latents into uint8 frames that are the same in every run of the same job.

The last step of an edit turns float latents into 8-bit pixels, so a difference of one float ulp in
the VAE decoder flips a pixel that sits on a rounding boundary, and the H.264 encoder turns that one
flipped pixel into different encoding decisions (differences of tens of levels after decoding). On
CPU the decoder's float results depend on three things that have nothing to do with the job:

- the memory layout of the latents (the VAE encoder leaves them channels-last, a latent restored
  some other way may be contiguous; oneDNN picks other kernels for each),
- the number of torch intra-op threads (reductions such as GroupNorm and GEMM split the sum per
  thread; the count differs between processes, threads, environments and machines),
- the batch size of each decoder call.

`decode_latents` fixes all three: contiguous latents, chunks at fixed frame offsets (0, chunk,
2*chunk, ...), and one intra-op thread on CPU. One thread costs little: the decoder runs once per
frame, the UNet hundreds of times. On CUDA the thread count plays no part and is left alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

#: Serialises changes of torch's process-wide thread count between concurrent jobs of one process.
_THREADS_LOCK = threading.Lock()


@contextmanager
def cpu_threads(count: int) -> Iterator[None]:
    """Run the block with `count` torch intra-op threads, restoring the previous count afterwards."""
    with _THREADS_LOCK:
        before = torch.get_num_threads()
        torch.set_num_threads(count)
        try:
            yield
        finally:
            torch.set_num_threads(before)


def decode_latents(vae, latents: torch.Tensor, device: torch.device, chunk: int) -> Iterator[np.ndarray]:
    """VAE-decode host latents [F,4,h,w] in chunks of `chunk` frames -> HxWx3 uint8 RGB frames.

    The same latent values give the same pixels whatever their memory layout, the caller's thread
    count or the process (see the module docstring); resumed runs rely on it.
    """
    dtype = next(vae.parameters()).dtype
    scale = vae.config.scaling_factor
    for start in range(0, latents.shape[0], chunk):
        batch = latents[start : start + chunk].to(device=device, dtype=dtype).contiguous() / scale
        if device.type == "cpu":
            with cpu_threads(1), torch.no_grad():
                pixels = vae.decode(batch).sample.float()
        else:
            with torch.no_grad():
                pixels = vae.decode(batch).sample.float()
        pixels = ((pixels.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        yield from pixels
