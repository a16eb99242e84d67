"""Which precision `auto` picks on a CPU: bf16 only where it is measured to be faster."""

import math

import pytest
import torch

from trainer import device
from trainer.device import BF16_MIN_GAIN, conv_bf16_gain, cpu_bf16_pays, resolve


@pytest.fixture(autouse=True)
def measured_anew():
    cpu_bf16_pays.cache_clear()
    yield
    cpu_bf16_pays.cache_clear()


@pytest.mark.parametrize(("has", "gain", "bf16"), [
    (False, 3.0, False),  # no bf16 instructions: nothing is timed
    (True, 0.5, False),   # instructions, slower kernels (AVX512-BF16 without AMX, machine E)
    (True, BF16_MIN_GAIN - 0.01, False),
    (True, BF16_MIN_GAIN, True),
    (True, 2.4, True),    # AMX, or AMD's AVX512-BF16 (machine A)
])
def test_auto_uses_bf16_on_a_cpu_only_where_it_is_faster(monkeypatch, has, gain, bf16):
    timed = []
    monkeypatch.setattr(device, "cpu_has_bf16", lambda: has)
    monkeypatch.setattr(device, "conv_bf16_gain", lambda: timed.append(1) or gain)
    assert resolve("cpu").bf16 is bf16
    assert resolve("cpu").bf16 is bf16
    assert len(timed) == (1 if has else 0)  # measured once per process, and only with the flags
    assert resolve("cpu", "bf16").bf16 and not resolve("cpu", "fp32").bf16  # asked: obeyed


def test_the_gain_is_a_real_timing_of_both_precisions():
    before = torch.get_num_threads()
    gain = conv_bf16_gain(reps=2)
    assert math.isfinite(gain) and gain > 0
    assert torch.get_num_threads() == before and not torch.is_inference_mode_enabled()
