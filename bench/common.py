"""What every benchmark prints with its figures: the machine and the commit."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
# The shared data sets live beside the checkout (../shared/data).
CIFAR_ZIP = REPO.parent / "shared" / "data" / "cifar10-jpeg.zip"


# The instruction sets that decide the encoder's speed and precision here (trainer/device.py).
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile")


def machine() -> dict[str, Any]:
    """The CPU (its name, and its family, model and instruction sets: two machines that
    report the same name can differ by half in speed), cores, torch, threads and commit."""
    cpu, family, model, flags = platform.processor() or "", "", "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = (part.strip() for part in line.partition(":"))
            if key == "processor" and value != "0":
                break  # the first CPU's fields describe them all
            if key == "model name":
                cpu = value
            elif key == "cpu family":
                family = value
            elif key == "model":
                model = value
            elif key == "flags":
                flags = set(value.split())
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu, "cpu_family": family, "cpu_model": model,
        "cpu_flags": [f for f in SPEED_FLAGS if f in flags],
        "cores": len(os.sched_getaffinity(0)), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "commit": commit(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, text=True,
                             capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!bench/results"],
                               cwd=REPO, text=True, capture_output=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def report(name: str, results: Any, out: str | None = None) -> None:
    payload = {"benchmark": name, "machine": machine(), "results": results}
    text = json.dumps(payload, indent=2)
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text + "\n")
