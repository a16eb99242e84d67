"""Where and in which precision the model runs."""

from __future__ import annotations

import contextlib
import functools
import os
import time
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


def cpu_has_bf16() -> bool:
    """AMX or AVX512-BF16: the CPU has bf16 instructions (whether they pay: cpu_bf16_pays)."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # pragma: no cover - older torch
        return False


# Having bf16 instructions does not make bf16 faster. A ResNet-18 training step ran 2.4x its
# fp32 speed on an AMD CPU with AVX512-BF16, and more with Intel's AMX; but on an Intel CPU with
# AVX512-BF16 and no AMX, a convolution took twice its fp32 time and a ResNet-18 forward 1.28x
# (docs/benchmarks.md, machine E). The flags cannot tell these apart, so one convolution is
# timed in both precisions, once per process, and bf16 is used where it is clearly faster.
BF16_MIN_GAIN = 1.2


def conv_bf16_gain(reps: int = 3) -> float:
    """fp32 time over bf16-autocast time of one 3x3 convolution of a CNN's size (batch 16, 64
    channels, 32x32, channels_last), the best of `reps` each after a warm-up (about 0.1 s)."""
    conv = torch.nn.Conv2d(64, 64, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(16, 64, 32, 32).contiguous(memory_format=torch.channels_last)

    def best(bf16: bool) -> float:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            conv(x)  # the first call picks and prepares the kernel
            times = []
            for _ in range(reps):
                start = time.perf_counter()
                conv(x)
                times.append(time.perf_counter() - start)
        return min(times)

    return best(False) / best(True)


@functools.lru_cache(maxsize=1)
def cpu_bf16_pays() -> bool:
    """Whether bf16 autocast runs a CNN faster than fp32 on this CPU (measured once)."""
    return cpu_has_bf16() and conv_bf16_gain() >= BF16_MIN_GAIN


def resolve(device: str = "auto", precision: str = "auto", channels_last: bool = True) -> Runtime:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
    if precision == "auto":
        bf16 = (dev.type == "cuda" and torch.cuda.is_bf16_supported()) or (
            dev.type == "cpu" and cpu_bf16_pays()
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
