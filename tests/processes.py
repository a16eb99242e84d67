"""Real processes for integration tests: a redis-server of our own, Celery workers and API
servers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], timeout: float, what: str,
             interval: float = 0.1) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


class RedisServer:
    """redis-server on a free loopback port, nothing kept on disk; or, `persistent`, with an
    append-only file fsynced on every write, so that it can be stopped and started again
    (`start()`, on the same port) with every key and its expiry, as production's AOF does."""

    def __init__(self, workdir: Path, persistent: bool = False) -> None:
        self.binary = shutil.which("redis-server")
        if self.binary is None:
            raise RuntimeError("redis-server is not installed (bash deploy/local.sh test "
                               "installs it)")
        self.workdir, self.persistent = workdir, persistent
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.start()

    def start(self) -> None:
        durability = (["--appendonly", "yes", "--appendfsync", "always"] if self.persistent
                      else ["--appendonly", "no"])
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             *durability, "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        wait_for(lambda: _pings(client), 10, "redis-server to answer")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


class Process:
    """A child in its own process group, so kill -9 takes its children (the pool) with it."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._log = open(log, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(args, env=env, cwd=REPO, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self._terminated = False

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        self.kill_group()
        self.reap()

    def kill_group(self) -> None:
        """SIGKILL to the whole group (a paused one dies as it is), without waiting."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)

    def reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()

    def pause(self) -> None:
        """SIGSTOP to the whole group (parent, pool, job process): a stalled machine."""
        os.killpg(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.killpg(self.proc.pid, signal.SIGCONT)

    def terminate(self) -> None:
        """The SIGTERM of `stop`, once, without waiting."""
        if not self._terminated and self.alive():
            self._terminated = True
            os.killpg(self.proc.pid, signal.SIGCONT)  # a paused one cannot stop
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM to the process itself, as `docker stop` sends it: its own shutdown stops
        its children (a SIGTERM to a Celery pool child as well makes the worker wait
        `worker_lost_wait`, 10 s, for a task that died under it); then SIGKILL to whatever of
        its group is left."""
        if self.alive():
            try:
                self.terminate()
                self.proc.wait(timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        self._log.close()

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def stop_all(processes: Iterable[Process], timeout: float = 20) -> None:
    """Stop several processes at once: each has its SIGTERM before any is waited for."""
    procs = list(processes)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.terminate()
    for proc in procs:
        proc.stop(timeout)


def discard_all(processes: Iterable[Process]) -> None:
    """SIGKILL to each process's whole group at once: a fixture's teardown, after its test
    has checked what it checks. A graceful stop is what some tests check (the Ctrl-C and
    shutdown tests call `stop`); as a teardown it only waits: an idle worker takes about 3 s
    to stop (Celery's pool, its threads and its timer)."""
    procs = list(processes)
    for proc in procs:
        proc.kill_group()
    for proc in procs:
        proc.reap()


def start_worker(env: dict[str, str], log: Path) -> Process:
    return Process([sys.executable, "-m", "worker", "--without-mingle", "--without-gossip"],
                   env, log)


def start_api(env: dict[str, str], log: Path) -> tuple[Process, str]:
    """An API process on a free port, answering /healthz; (the process, its base URL)."""
    port = free_port()
    api = Process([sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
                  env, log)
    base = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(healthy, 120, "the API to answer")
    except BaseException:
        api.stop()
        raise
    return api, base
