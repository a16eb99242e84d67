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
from pydantic_settings import BaseSettings

from service.settings import ServiceSettings
from state.settings import Settings
from tests.processes import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
# Every way to run the stack: the base file alone, and with each override in deploy/ (a test
# below fails on an override missing here).
STACKS = {"gpu": ("docker-compose.yml",),
          "cpu": ("docker-compose.yml", "deploy/compose.cpu.yml"),
          "multigpu": ("docker-compose.yml", "deploy/compose.multigpu.yml")}
# The containers that read each settings class, per stack.
WORKERS = {"gpu": {"worker", "flower"}, "cpu": {"worker", "flower", "worker-cpu"},
           "multigpu": {"worker", "flower", "worker-8gpu"}}
# Settings a service sets itself, whatever .env says: the 8-GPU worker owns 8 GPUs.
OWN = {"worker-8gpu": {"WORKER_GPUS": "8"}}
# What a container is given beyond the settings its code reads: Flower's own login.
EXTRA = {"flower": {"FLOWER_BASIC_AUTH"}}
ADMIN_KEY = "a-real-key-0123456789abcdef"
# Set by the deployment itself, not from .env: the redis service and the shared volume.
FIXED = {"BROKER_URL": "redis://redis:6379/0", "DATA_ROOT": "/srv/and/data",
         "MODELS_ROOT": "/srv/and/models", "STATE_ROOT": "/srv/and/state"}
# Where a deployment deliberately differs from the code's default (the code's is for a
# developer's machine): a deployment is production unless .env says otherwise.
DEPLOYMENT_DEFAULTS = {"ENVIRONMENT": "production"}
REQUIRED = {"ADMIN_API_KEY"}


def _setting_names(model: type[BaseSettings]) -> set[str]:
    # The variables a settings class reads: its fields, upper-cased, with no prefix or alias.
    assert not model.model_config.get("env_prefix")
    assert all(f.alias is None and f.validation_alias is None
               for f in model.model_fields.values())
    return {name.upper() for name in model.model_fields}


def _config(*files: str, env: dict[str, str] | None = None, tmp: Path | None = None) -> dict:
    """`docker-compose config`, with an empty .env (a developer's own must not leak in) and
    no setting in the environment but those given (default: only the admin key)."""
    compose = shutil.which("docker-compose")
    assert compose, "docker-compose is not installed (bash deploy/local.sh test installs it)"
    settings = _setting_names(ServiceSettings) | {"FLOWER_BASIC_AUTH", "FLOWER_BIND"}
    clean = {k: v for k, v in os.environ.items() if k not in settings}
    env = {**clean, **(env if env is not None else {"ADMIN_API_KEY": ADMIN_KEY})}
    empty = (tmp or Path(os.environ.get("TMPDIR", "/tmp"))) / "and-compose-empty.env"
    empty.write_text("")
    args = [compose, "--env-file", str(empty), *(a for f in files for a in ("-f", f)), "config"]
    r = subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def _reader(service: dict) -> type[BaseSettings] | None:
    """Which settings class a service's process reads: the API's or the worker's (Celery and
    Flower load the worker's app)."""
    cmd = service.get("command") or []
    if cmd[:3] == ["python", "-m", "service"]:
        return ServiceSettings
    if cmd[:3] == ["python", "-m", "worker"] or cmd[:3] == ["celery", "-A", "worker.app"]:
        return Settings
    return None


def _code_default(model: type[BaseSettings], name: str, text: str | None) -> tuple:
    """The value `text` gives setting `name` once the code has read it, and the code's own
    default: two values to compare."""
    field = name.lower()
    given = getattr(model(**{field: text}), field)
    default = model.model_fields[field].default
    return _plain(given), _plain(default)


def _plain(value: object) -> object:
    return value.get_secret_value() if hasattr(value, "get_secret_value") else value


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
    assert worker["environment"]["GPU_QUEUE"] == "gpu"


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


def test_env_example_lists_every_setting_with_the_codes_default():
    text = (REPO / "deploy" / "env.example").read_text()
    listed = dict(re.findall(r"^([A-Z_]+)=(.*)$", text, re.M))
    fields = _setting_names(ServiceSettings)
    assert fields <= set(listed), fields - set(listed)
    wrong = {}
    for name in fields - set(FIXED) - set(DEPLOYMENT_DEFAULTS):
        given, default = _code_default(ServiceSettings, name, listed[name])
        if given != default:
            wrong[name] = (listed[name], default)
    assert not wrong, f"env.example differs from the code (value, code default): {wrong}"


def test_readme_settings_table_lists_every_setting_with_the_codes_default():
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Settings"):]
    table = table[:table.index("\n## ", 1)]
    documented: dict[str, str | None] = {}
    for row in re.findall(r"^\| (`[A-Z_].*?) \| (.*?) \|", table, re.M):
        names = re.findall(r"`([A-Z_]+)`", row[0])
        values = [v.strip().strip("`").replace(",", "") for v in row[1].split(" / ")]
        assert len(names) == len(values), row
        for name, value in zip(names, values, strict=True):
            documented[name] = None if value == "unset" else value
    fields = _setting_names(ServiceSettings)
    assert fields <= set(documented), fields - set(documented)
    wrong = {}
    for name in fields:
        given, default = _code_default(ServiceSettings, name, documented[name])
        if given != default:
            wrong[name] = (documented[name], default)
    assert not wrong, f"the README's defaults differ from the code's: {wrong}"


def test_every_compose_file_is_checked():
    overrides = {str(p.relative_to(REPO)) for p in (REPO / "deploy").glob("compose*.yml")}
    checked = {f for files in STACKS.values() for f in files}
    assert overrides | {"docker-compose.yml"} == checked, overrides - checked


@pytest.mark.parametrize("stack", STACKS)
def test_every_setting_reaches_every_container_that_reads_it(stack, tmp_path):
    """A value put in .env (here: the environment) reaches every process that reads that
    setting, under the same name: the list comes from the settings classes, not from the
    compose file, so a new setting that compose does not pass fails here. A container gets
    nothing else: no worker holds an API key."""
    names = _setting_names(ServiceSettings)
    sentinel = {name: f"from-env-{name.lower()}" for name in names}
    services = _config(*STACKS[stack], env=sentinel, tmp=tmp_path)["services"]
    readers = {name: _reader(s) for name, s in services.items()}
    assert {n for n, r in readers.items() if r is ServiceSettings} == {"api"}
    assert {n for n, r in readers.items() if r is Settings} == WORKERS[stack]
    missing, extra = {}, {}
    for service, model in readers.items():
        if model is None:
            continue
        env = services[service]["environment"]
        for name in _setting_names(model):
            want = OWN.get(service, {}).get(name, FIXED.get(name, sentinel[name]))
            if env.get(name) != want:
                missing[f"{service}.{name}"] = env.get(name)
        unread = set(env) - _setting_names(model) - EXTRA.get(service, set())
        if unread:
            extra[service] = sorted(unread)
    assert not missing, f"settings compose does not pass through from .env: {missing}"
    assert not extra, f"settings given to containers whose code does not read them: {extra}"


@pytest.mark.parametrize("stack", STACKS)
def test_compose_defaults_are_the_codes(stack, tmp_path):
    """With nothing in .env, every container gets the code's default: one source of truth
    (compose once said EMBED_MAX_WAIT_MS=2 where the code says 10)."""
    services = _config(*STACKS[stack], tmp=tmp_path)["services"]
    wrong = {}
    for service, body in services.items():
        model = _reader(body)
        if model is None:
            continue
        env = body["environment"]
        own = OWN.get(service, {})
        for name in _setting_names(model) - set(FIXED) - REQUIRED:
            if name in own:
                assert env[name] == own[name], (service, name)
                continue
            if name in DEPLOYMENT_DEFAULTS:
                assert env[name] == DEPLOYMENT_DEFAULTS[name], (service, name)
                continue
            if name not in env:
                wrong[f"{service}.{name}"] = ("missing", model.model_fields[name.lower()].default)
                continue
            given, default = _code_default(model, name, env[name])
            if given != default:
                wrong[f"{service}.{name}"] = (env[name], default)
    assert not wrong, f"compose defaults that differ from the code's: {wrong}"


@pytest.mark.parametrize("stack", STACKS)
def test_containers_share_no_host_namespace_and_workers_have_sized_shm(stack, tmp_path):
    services = _config(*STACKS[stack], tmp=tmp_path)["services"]
    for name, body in services.items():
        shared = {k: body[k] for k in ("ipc", "pid", "network_mode") if k in body}
        assert not shared, f"{name} shares the host's namespaces: {shared}"
        if name.startswith("worker"):
            assert body.get("shm_size"), f"{name}: DataLoader workers need a sized /dev/shm"


def _flower_command(base: dict) -> tuple[list[str], list[str], dict]:
    flower = base["services"]["flower"]
    # `config` keeps compose's $$ escape; the container's shell sees a single $.
    entrypoint = [part.replace("$$", "$") for part in flower["entrypoint"]]
    return entrypoint, flower["command"], flower


def test_flower_listens_on_localhost_by_default(base):
    _, _, flower = _flower_command(base)
    (port,) = flower["ports"]
    host = port["host_ip"] if isinstance(port, dict) else port.split(":")[0]
    assert host == "127.0.0.1", port


def test_flower_refuses_to_start_without_a_login(base, tmp_path):
    entrypoint, _, _ = _flower_command(base)
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    started = tmp_path / "started"
    for value in (None, ""):
        if value is not None:
            env["FLOWER_BASIC_AUTH"] = value
        r = subprocess.run([*entrypoint, "touch", str(started)], env=env, capture_output=True,
                           text=True, timeout=30)
        assert r.returncode != 0 and "FLOWER_BASIC_AUTH" in r.stderr, r
        assert not started.exists()


def test_flower_started_by_compose_asks_for_the_login(redis_server, tmp_path):
    """The real Flower, started the way the container starts it, with the login .env gives
    compose: a request without the login is refused, one with it is served."""
    import httpx

    login = "ops:s3cret-pass"
    config = _config("docker-compose.yml",
                     env={"ADMIN_API_KEY": ADMIN_KEY, "FLOWER_BASIC_AUTH": login}, tmp=tmp_path)
    entrypoint, command, flower = _flower_command(config)
    assert command[:4] == ["celery", "-A", "worker.app", "flower"]
    port = free_port()
    env = {**os.environ, "BROKER_URL": redis_server.url, "STATE_ROOT": str(tmp_path / "state"),
           "PYTHONPATH": str(REPO)}
    env.pop("FLOWER_BASIC_AUTH", None)
    if "FLOWER_BASIC_AUTH" in flower["environment"]:
        env["FLOWER_BASIC_AUTH"] = flower["environment"]["FLOWER_BASIC_AUTH"]
    args = [*entrypoint, sys.executable, "-m", *command, f"--port={port}", "--address=127.0.0.1"]
    with open(tmp_path / "flower.log", "wb") as log:
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"

        def answers() -> httpx.Response | None:
            assert proc.poll() is None, (tmp_path / "flower.log").read_text()[-3000:]
            try:
                return httpx.get(url, timeout=5)
            except httpx.TransportError:
                return None

        anonymous = wait_for(answers, 60, "flower to answer")
        assert anonymous.status_code == 401
        assert httpx.get(url, auth=("ops", "wrong"), timeout=5).status_code == 401
        assert httpx.get(url, auth=("ops", "s3cret-pass"), timeout=10).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)


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
