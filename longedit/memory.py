"""Device-independent memory measurements for the planner and the benchmarks.

Three instruments, each for a different question:

* `TensorMemoryTracker` (a `TorchDispatchMode`): the peak of the bytes held by tensors created
  while it is active (activations, tensors saved for backward, gradients, checkpoint inputs and
  recomputations), on any device. It sees every aten op's outputs and frees a storage's bytes
  when the storage dies (weak reference callback). Kernel-internal workspaces that never become
  tensors are not counted. This is what the planner measures on CPU, where there is no
  `torch.cuda.max_memory_allocated`; it is deterministic (same ops -> same bytes), unlike RSS.
* `saved_tensor_bytes`: bytes autograd packs for backward through `saved_tensors_hooks`
  (distinct storages). It shows what truncation and the fused op keep, but it misses what
  non-reentrant checkpointing keeps (the checkpoint's own hooks intercept the inner saves and
  its inputs are held by a closure), so it overstates nothing and understates checkpointing's
  cost: use the tracker for the full picture.
* `DevicePeak`: the CUDA allocator's peak (`torch.cuda.max_memory_allocated`) when the device is
  CUDA, else the tracker's peak: one interface for "peak bytes of this block of work".
"""

from __future__ import annotations

import sys
import weakref
from contextlib import contextmanager
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class TensorMemoryTracker(TorchDispatchMode):
    """Live and peak bytes of the tensor storages created while the mode is active.

    Tensors that existed before (model weights, inputs) are not counted; views of a tracked
    storage are counted once. Use as a context manager; read `peak` afterwards.
    """

    def __init__(self, round_to: int = 1, label=None) -> None:
        """`round_to`: count each storage rounded up to this many bytes (512: what the CUDA caching
        allocator hands out, for simulated CUDA runs). `label()`: names the code creating a storage
        (e.g. its layer); the live bytes per label at the peak are then kept in `at_peak`."""
        super().__init__()
        self.live = 0
        self.peak = 0
        self.round_to = round_to
        self.label = label
        self.by_label: dict[str, int] = {}
        self.at_peak: dict[str, int] = {}
        self._refs: dict[int, weakref.ref] = {}

    def _release(self, key: int, size: int, label: str | None = None) -> None:
        self._refs.pop(key, None)
        self.live -= size
        if label is not None:
            self.by_label[label] -= size

    def _track(self, tensor: torch.Tensor) -> None:
        if tensor.device.type == "meta":
            return
        storage = tensor.untyped_storage()
        key = id(storage)
        known = self._refs.get(key)
        if known is not None and known() is storage:
            return
        size = -(-storage.nbytes() // self.round_to) * self.round_to
        label = None if self.label is None else self.label()
        self._refs[key] = weakref.ref(storage, lambda _, key=key, size=size, label=label: self._release(key, size, label))
        self.live += size
        if label is not None:
            self.by_label[label] = self.by_label.get(label, 0) + size
        if self.live > self.peak:
            self.peak = self.live
            if label is not None:
                self.at_peak = {k: v for k, v in self.by_label.items() if v}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        return out

    def reset_peak(self) -> None:
        """Start a new peak from the bytes live now."""
        self.peak = self.live


@contextmanager
def saved_tensor_bytes(*ignore: torch.nn.Module) -> Iterator[dict[str, int]]:
    """Count the distinct storages autograd saves for backward inside the block.

    Parameters and buffers of the `ignore` modules are not counted: a convolution saves its
    weight for the input gradient, but the weight is resident anyway, so it costs nothing extra.
    Yields a dict whose `bytes` entry is filled in when the block exits.
    """
    resident = {t.untyped_storage().data_ptr() for m in ignore for t in [*m.parameters(), *m.buffers()]}
    storages: dict[int, int] = {}
    result = {"bytes": 0}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in resident:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield result
    result["bytes"] = sum(storages.values())


class DevicePeak:
    """Peak bytes of a block of work: CUDA allocator peak on CUDA, tensor tracker elsewhere.

    `metric` names what was measured, `peak` is absolute on CUDA (weights included, since they
    live on the device) and relative (bytes created inside the block) on other devices.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak = 0
        self._tracker: TensorMemoryTracker | None = None

    @property
    def metric(self) -> str:
        return "cuda_max_memory_allocated" if self.device.type == "cuda" else "tensor_live_bytes"

    def __enter__(self) -> "DevicePeak":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self._tracker = TensorMemoryTracker()
            self._tracker.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = int(torch.cuda.max_memory_allocated(self.device))
        else:
            assert self._tracker is not None
            self._tracker.__exit__(*exc)
            self.peak = self._tracker.peak


def module_bytes(*modules: torch.nn.Module) -> int:
    """Bytes of the parameters and buffers of `modules` (what stays resident for a whole run)."""
    total = 0
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            total += tensor.numel() * tensor.element_size()
    return total


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes, on Linux, macOS and Windows.

    Windows: psutil's peak working set. POSIX: `getrusage`'s `ru_maxrss` (`resource` is imported here, not at
    module level, so that importing the engine works on Windows). Elsewhere the current RSS, a lower bound.
    """
    import psutil

    info = psutil.Process().memory_info()
    if getattr(info, "peak_wset", None) is not None:
        return int(info.peak_wset)
    try:
        import resource
    except ImportError:
        return int(info.rss)
    # Linux updates ru_maxrss lazily: a few pages under the RSS of this very moment, which is a peak too.
    return max(int(info.rss), ru_maxrss_bytes(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, sys.platform))


def ru_maxrss_bytes(ru_maxrss: int, platform: str) -> int:
    """`ru_maxrss` in bytes: macOS reports bytes, Linux and the BSDs kibibytes."""
    return int(ru_maxrss) * (1 if platform == "darwin" else 1024)


def current_rss_bytes() -> int:
    """This process's resident set size now."""
    import psutil

    return int(psutil.Process().memory_info().rss)
