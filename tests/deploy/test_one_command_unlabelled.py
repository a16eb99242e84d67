"""`bash deploy/local.sh up --data FOLDER` on a folder without class folders, with spaces,
brackets and accents in its name and spaces, a quote, a semicolon and non-ASCII letters in its
files' names: every request it prints works when pasted into a shell, and its last word is the
label-free score, since there is no label to measure with."""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.processes import REPO, free_port

AWKWARD = "0 it's; ü.png"  # sorts first, so it is the item the printed requests name


def _unlabelled_folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir()
    for i in range(80):
        # Four kinds of picture, so neighbours mean something; greyscale with alpha among them.
        pixels = np.full((24, 24, 3), 40 + 50 * (i % 4), np.uint8)
        pixels[4 * (i % 4):, :: 2 + i % 3] = 230
        pixels = (pixels + rng.integers(0, 20, pixels.shape)).clip(0, 255).astype(np.uint8)
        name = AWKWARD if i == 0 else f"img {i:03d}.png"
        image = Image.fromarray(pixels)
        if i % 5 == 0:
            image = image.convert("LA")
        image.save(root / name)
    return root


@contextmanager
def _up(tmp_path: Path, data: Path, *extra: str) -> Iterator[list[str]]:
    """`python -m deploy.local_stack --data DATA` in the home under `tmp_path`, until it says
    it is up; yields its output and stops it after."""
    env = {**os.environ, "AND_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}
    for k in ("BROKER_URL", "DATA_ROOT", "MODELS_ROOT", "STATE_ROOT", "ADMIN_API_KEY"):
        env.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "deploy.local_stack", "--port", str(free_port()),
                             "--data", str(data), "--set", "rounds=1", "epochs_per_round=1",
                             "image_size=16",
                             *extra],
                            cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    output: list[str] = []
    try:
        deadline = time.monotonic() + 420
        while not output or not output[-1].startswith("Press Ctrl-C"):
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            assert line is not None and time.monotonic() < deadline, "".join(output)
            output.append(line)
        yield output
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


@pytest.mark.skipif(shutil.which("curl") is None, reason="the printed requests are curl's")
def test_printed_requests_work_on_an_unlabelled_folder(tmp_path):
    """The second run in the same home, beside the first run's collection with its current
    model: the requests it prints name its own collection (at the root they would serve the
    other one, or answer 409 between two)."""
    first = tmp_path / "first"
    first.mkdir()
    for i in range(12):
        Image.new("RGB", (16, 16), (20 * i, 100, 200 - 10 * i)).save(first / f"{i}.png")
    with _up(tmp_path, first, "--promote", "always") as output:
        assert "is published and current" in "".join(output)
    data = _unlabelled_folder(tmp_path / "Mes photos (été)")
    with _up(tmp_path, data) as output:
        text = "".join(output)
        assert "as dataset 'Mes-photos-ete'" in text and "80 images, 0 classes" in text, text
        assert f"neighbours of {AWKWARD}:" in text, text
        gate = next(line for line in output if line.startswith("promotion gate (gate): "))
        # One epoch on 80 tiny pictures: raw pixels keep them apart better, and the run says
        # what to try next.
        assert "label_free" in gate and "for raw pixels" in gate, gate
        kept_out = "is published as a candidate, not current" in text
        assert kept_out == ("did not beat raw pixels by the gate's margin here" in text), text
        assert "/#/explore?collection=Mes-photos-ete " in text, text
        tried = next(i for i, line in enumerate(output) if line.startswith("Try it"))
        commands = [line.strip() for line in output[tried:] if line.startswith("  curl ")]
        # The model, its neighbours, embed, search and the job list; no /classify without labels.
        assert len(commands) == 5 and not any("/classify" in c for c in commands), text
        assert "/classify needs labelled items" in text
        for command in commands:
            done = subprocess.run(["bash", "-c", command], capture_output=True, text=True,
                                  timeout=60, cwd=tmp_path)
            assert done.returncode == 0, (command, done.stderr)
            answer = json.loads(done.stdout)
            assert not (isinstance(answer, dict) and answer.get("status", 200) >= 400), (
                command, answer)
            if "/neighbours/" in command:
                assert answer["id"] == AWKWARD and answer["neighbours"], answer
            if "/search" in command:  # the folder's own image, found among its own items
                assert answer["results"][0]["neighbours"][0]["id"] == AWKWARD, answer
        last = [line for line in output if line.strip()][-2]
        assert re.fullmatch(r"Label-free score \(no labels; .*\): model \d\.\d{3}, raw pixels "
                            r"\d\.\d{3}, the network untrained \d\.\d{3}\n", last), last
