"""The API as a real process (`python -m service` under uvicorn) on a free port, with its own
data, models and state folders, for tests that go through real HTTP."""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path

import httpx

from tests.conftest import CIFAR_SLICE
from tests.processes import Process, free_port, wait_for
from tests.service.conftest import ADMIN

READ = "read-key-for-tests-0123456789"
# Everything the API reads from the environment is set here, so the machine's own variables
# (a READ_API_KEY, a BROKER_URL) never leak into a test.
CLEARED = ("BROKER_URL", "ADMIN_API_KEY", "READ_API_KEY", "METRICS_API_KEY", "ENVIRONMENT",
           "API_DOCS", "ALLOW_OPEN_READS", "ALLOWED_HOSTS")


class ApiProcess:
    def __init__(self, root: Path, models_template: Path, *, dataset: bool = True,
                 dataset_name: str = "slice", **env: str) -> None:
        self.root = root
        self.data, self.models, self.state = root / "data", root / "models", root / "state"
        shutil.copytree(models_template, self.models)
        self.data.mkdir()
        if dataset:
            with zipfile.ZipFile(CIFAR_SLICE) as z:
                z.extractall(root / "unpacked")
            # "cifar-slice" is the bundles' own dataset: items can be added to it.
            (root / "unpacked" / "cifar10").rename(self.data / dataset_name)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        base = {k: v for k, v in os.environ.items() if k not in CLEARED}
        self.env = base | {
            "DATA_ROOT": str(self.data), "MODELS_ROOT": str(self.models),
            "STATE_ROOT": str(self.state), "ADMIN_API_KEY": ADMIN, "READ_API_KEY": READ,
            "DEVICE": "cpu", "EMBED_WORKERS": "1", "MODEL_POLL_S": "0.2",
        } | env
        self.process = Process([sys.executable, "-m", "service", "--port", str(self.port),
                                "--log-level", "warning"], self.env, root / "api.log")
        wait_for(self._up, 120, "the API to answer /healthz")

    def _up(self) -> bool:
        if not self.process.alive():
            raise AssertionError(f"the API exited:\n{self.process.tail()}")
        try:
            return httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client(self, key: str | None = ADMIN, timeout: float = 60) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def stop(self) -> None:
        self.process.stop()
