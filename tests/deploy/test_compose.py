"""The compose files, validated offline by docker-compose, and checked for what a deployment
relies on: healthchecks, start order, the GPU reservation, the shared volume, real commands."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from service.settings import ServiceSettings

REPO = Path(__file__).resolve().parents[2]


def _config(*files: str) -> dict:
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is not installed (bash deploy/local.sh test installs it)"
    env = {**os.environ, "ADMIN_API_KEY": "a-real-key-0123456789abcdef"}
    args = [compose, *(a for f in files for a in ("-f", f)), "config"]
    r = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


@pytest.fixture(scope="module")
def base() -> dict:
    return _config("docker-compose.yml")


def test_services_healthchecks_and_start_order(base):
    services = base["services"]
    assert {"redis", "api", "worker", "flower"} <= set(services)
    for name in ("redis", "api"):
        assert services[name]["healthcheck"]["test"], name
    assert "/healthz" in " ".join(services["api"]["healthcheck"]["test"])
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
        assert services[name]["environment"]["BROKER_URL"] == "redis://redis:6379/0"
    assert services["flower"]["profiles"] == ["monitoring"]
    assert "--appendonly" in services["redis"]["command"]  # job records survive restarts


def test_worker_reserves_one_gpu_and_consumes_the_gpu_queue(base):
    worker = base["services"]["worker"]
    devices = worker["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert worker["command"][:3] == ["python", "-m", "worker"]
    assert worker["build"]["target"] == "gpu"
    assert worker["environment"].get("GPU_QUEUE", "gpu") == "gpu"


def test_datasets_and_models_are_on_one_shared_volume(base):
    mounts = {name: [v for v in base["services"][name]["volumes"]] for name in ("api", "worker")}
    for name, volumes in mounts.items():
        assert any(str(v).startswith("and-data:/srv/and") for v in volumes), name
    assert "and-data" in base["volumes"]
    for name in ("api", "worker"):
        env = base["services"][name]["environment"]
        assert env["DATA_ROOT"].startswith("/srv/and") and env["MODELS_ROOT"].startswith(
            "/srv/and")


def test_cpu_override_runs_without_a_gpu():
    cpu = _config("docker-compose.yml", "deploy/compose.cpu.yml")["services"]
    assert cpu["worker"]["profiles"] == ["gpu"]  # off unless asked for
    assert "deploy" not in cpu["worker-cpu"] and cpu["worker-cpu"]["build"]["target"] == "cpu"
    assert cpu["worker-cpu"]["command"][:3] == ["python", "-m", "worker"]


def test_missing_admin_key_is_refused_by_compose():
    env = {k: v for k, v in os.environ.items() if k != "ADMIN_API_KEY"}
    r = subprocess.run(["docker-compose", "config", "-q"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ADMIN_API_KEY" in r.stderr


def _commands(base: dict) -> list[list[str]]:
    cmds = [s["command"] for s in base["services"].values() if "command" in s]
    dockerfile = (REPO / "deploy" / "Dockerfile").read_text()
    for match in re.finditer(r'^CMD (\[.*\])$', dockerfile, re.M):
        cmds.append(yaml.safe_load(match.group(1)))
    return cmds


def test_every_command_is_a_real_entry_point(base):
    checked = 0
    for cmd in _commands(base):
        if cmd[0] == "redis-server":
            continue
        if cmd[:2] == ["python", "-m"]:
            args = [sys.executable, "-m", cmd[2], "--help"]
        elif cmd[0] == "celery":
            args = [sys.executable, "-m", "celery", *cmd[1:4], "--help"]
        else:
            raise AssertionError(f"unexpected command {shlex.join(cmd)}")
        r = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "STATE_ROOT": "/tmp/and-compose-check"})
        assert r.returncode == 0, f"{shlex.join(cmd)}: {r.stderr[-2000:]}"
        checked += 1
    assert checked >= 4


def test_env_example_lists_every_setting():
    text = (REPO / "deploy" / "env.example").read_text()
    listed = set(re.findall(r"^([A-Z_]+)=", text, re.M))
    fields = {name.upper() for name in ServiceSettings.model_fields}
    assert fields <= listed, fields - listed


def test_dockerfile_runs_as_non_root_with_pinned_versions():
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert text.count("USER and") == 2
    assert "torch==2.14.1" in text and "constraints.txt" in text
    assert (REPO / ".dockerignore").read_text().count(".venv") == 1


def test_multi_gpu_override_runs_one_worker_owning_eight_gpus(base):
    services = _config("docker-compose.yml", "deploy/compose.multigpu.yml")["services"]
    assert services["worker"]["profiles"] == ["single-gpu"]  # off unless asked for
    big = services["worker-8gpu"]
    devices = big["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 8, "capabilities": ["gpu"]}]
    assert big["environment"]["WORKER_GPUS"] == "8" and big["build"]["target"] == "gpu"
    assert big["command"][:3] == ["python", "-m", "worker"]
    # The shared settings carry the capacity settings with the code's defaults.
    shared = base["services"]["worker"]["environment"]
    assert shared["CAPACITY_TTL_S"] == "60" and shared["WORKER_GPUS"] == ""
    assert ServiceSettings.model_fields["capacity_ttl_s"].default == 60.0
    assert ServiceSettings.model_fields["worker_gpus"].default is None
