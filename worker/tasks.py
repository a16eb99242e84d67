"""Celery tasks (thin wrappers around worker.runner) and the worker-side lost-job sweeper."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

from celery import signals

from worker.app import TRAIN_TASK, app
from worker.jobs import open_store
from worker.runner import record_crash
from worker.settings import get_settings
from worker.sweeper import Sweeper

log = logging.getLogger(__name__)


@app.task(name=TRAIN_TASK, acks_late=True)
def train(job_id: str) -> int:
    """Run the job in a child process (worker.job_process) and wait for it."""
    proc = subprocess.Popen([sys.executable, "-m", "worker.job_process", job_id])
    try:
        code = proc.wait()
    except BaseException:  # soft time limit, shutdown: do not leave the trainer behind
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if code != 0:
        settings = get_settings()
        record_crash(open_store(settings), job_id, code)
    return code


def enqueue(job_id: str) -> None:
    app.send_task(TRAIN_TASK, args=[job_id], queue=get_settings().gpu_queue)


_sweeper: Sweeper | None = None


@signals.worker_ready.connect
def _start_sweeper(**_: object) -> None:
    # In the worker's parent process, which never runs training itself.
    global _sweeper
    settings = get_settings()
    _sweeper = Sweeper(lambda: open_store(settings), enqueue, settings.sweep_interval_s)
    _sweeper.start()


@signals.worker_shutdown.connect
def _stop_sweeper(**_: object) -> None:
    if _sweeper is not None:
        _sweeper.stop()


@signals.worker_shutting_down.connect
def _stop_running_jobs(**_: object) -> None:
    """Warm shutdown (SIGTERM, docker stop): ask running jobs to checkpoint and go back on the
    queue, instead of waiting hours for them or losing their progress since the last
    checkpoint to a SIGKILL."""
    for pid in job_processes(os.getpid()):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
            log.info("asked job process %d to checkpoint and re-queue", pid)


def job_processes(ancestor: int) -> list[int]:
    """Descendants of `ancestor` running worker.job_process (read from /proc)."""
    parents: dict[int, int] = {}
    commands: dict[int, bytes] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
            commands[int(entry)] = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        # The field after the parenthesised command name: state, then the parent's pid.
        parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
    found = []
    for pid, cmd in commands.items():
        if b"worker.job_process" not in cmd:
            continue
        p = parents.get(pid, 0)
        while p > 1 and p != ancestor:
            p = parents.get(p, 0)
        if p == ancestor:
            found.append(pid)
    return found
