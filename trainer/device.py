"""Where and in which precision the model runs."""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    bf16: bool
    channels_last: bool

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        """Host tensor -> device, non-blocking from pinned memory on CUDA."""
        return batch.to(self.device, non_blocking=self.cuda)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        """The memory format the model was prepared for."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model


def _cpu_capability(probe: str) -> bool:
    """One of torch.cpu's instruction-set probes (private, absent from older torch)."""
    found = getattr(torch.cpu, probe, None)
    return bool(found()) if found is not None else False


def cpu_has_amx() -> bool:
    return _cpu_capability("_is_amx_tile_supported")


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16: the CPU has bf16 instructions."""
    return cpu_has_amx() or _cpu_capability("_is_avx512_bf16_supported")


def cpu_vendor() -> str:
    """The CPU's vendor as Linux names it ("GenuineIntel", "AuthenticAMD"); "" elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "vendor_id":
                    return value.strip()
    except OSError:
        pass
    return ""


def bf16_is_faster_on_cpu(has_bf16: bool, has_amx: bool, vendor: str) -> bool:
    """Whether bf16 speeds a conv net up on this CPU (docs/benchmarks.md, machines A to E).

    AMX computes bf16 in tiles: about 3x fp32 on a ResNet-18. Without AMX, AVX512-BF16 trained
    2.4x faster than fp32 on an AMD CPU, and *slower* on an Intel one (AMX hidden by its
    hypervisor: forward 0.78x, training step 0.70x). A rule of the CPU's identity, not a
    timing: every process on a machine must choose the same precision, or two of them embed
    the same images differently.
    """
    if has_amx:
        return True
    return has_bf16 and vendor != "GenuineIntel"


@functools.cache
def cpu_prefers_bf16() -> bool:
    """bf16_is_faster_on_cpu for this CPU (read once: every model load asks)."""
    return bf16_is_faster_on_cpu(cpu_has_bf16(), cpu_has_amx(), cpu_vendor())


def resolve(device: str = "auto", precision: str = "auto", channels_last: bool = True) -> Runtime:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
    if precision == "auto":
        bf16 = (dev.type == "cuda" and torch.cuda.is_bf16_supported()) or (
            dev.type == "cpu" and cpu_prefers_bf16()
        )
    else:
        bf16 = precision == "bf16"
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return Runtime(device=dev, bf16=bf16, channels_last=channels_last)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS
        return os.cpu_count() or 1
