"""The precision rule: one answer per CPU, whichever process asks."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from trainer.device import bf16_is_faster_on_cpu, cpu_vendor, resolve


@pytest.mark.parametrize(("has_bf16", "has_amx", "vendor", "expected"), [
    (True, True, "GenuineIntel", True),     # AMX: bf16 tiles
    (True, False, "AuthenticAMD", True),    # AVX512-BF16 on AMD: 2.4x fp32 measured
    (True, False, "GenuineIntel", False),   # AVX512-BF16 on Intel without AMX: slower measured
    (True, False, "", True),                # an unknown vendor with the instructions
    (False, False, "AuthenticAMD", False),  # AVX2 only
    (False, False, "GenuineIntel", False),
])
def test_bf16_where_it_was_measured_faster(has_bf16: bool, has_amx: bool, vendor: str,
                                           expected: bool) -> None:
    assert bf16_is_faster_on_cpu(has_bf16, has_amx, vendor) is expected


def test_explicit_precision_wins_over_the_rule() -> None:
    assert resolve("cpu", "fp32").bf16 is False
    assert resolve("cpu", "bf16").bf16 is True


def test_every_process_on_the_machine_chooses_the_same() -> None:
    here = resolve("cpu", "auto").bf16
    code = "from trainer.device import resolve; print(resolve('cpu', 'auto').bf16)"
    answers = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True).stdout.strip() for _ in range(2)}
    assert answers == {str(here)}


def test_the_vendor_is_read_on_linux() -> None:
    if not sys.platform.startswith("linux") or platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("the vendor_id line is x86 Linux's")
    assert cpu_vendor()
