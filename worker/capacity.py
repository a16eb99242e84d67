"""How many GPUs a worker owns, which queue a job goes to, and what workers can run now.

A job asking for gpus=k > 1 goes to the queue `<GPU_QUEUE>.<k>gpus`; a worker owning g GPUs
consumes GPU_QUEUE and the queues for 2..g, so it only ever receives jobs it can run, and
starts the k processes of one itself (trainer.launcher). Every worker advertises g in the job
store (expiring after CAPACITY_TTL_S, renewed by its sweeper), so a submission asking for more
GPUs than any live worker owns is refused at once instead of waiting forever.

The worker's parent process never imports torch: GPUs are counted from the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from state.jobs import JobStore
from state.settings import Settings


def own_gpus(settings: Settings) -> int:
    """WORKER_GPUS, else the GPUs visible to this process, else 1 (CPU processes)."""
    if settings.worker_gpus:
        return settings.worker_gpus
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return max(1, len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]))
    nvidia = Path("/proc/driver/nvidia/gpus")
    try:
        return max(1, len(list(nvidia.iterdir())))
    except OSError:
        return 1


def queue_for(settings: Settings, gpus: int) -> str:
    return settings.gpu_queue if gpus <= 1 else f"{settings.gpu_queue}.{gpus}gpus"


def queues(settings: Settings) -> list[str]:
    """The queues a worker owning own_gpus() GPUs consumes."""
    return [queue_for(settings, k) for k in range(1, own_gpus(settings) + 1)]


def job_gpus(config: dict) -> int:
    gpus = config.get("gpus", 1)
    return gpus if isinstance(gpus, int) and not isinstance(gpus, bool) and gpus > 0 else 1


def queue_of_job(settings: Settings, store: JobStore, job_id: str) -> str:
    job = store.get(job_id)
    return queue_for(settings, job_gpus(job.config) if job is not None else 1)


def capacity_problem(store: JobStore, gpus: int, nodes: int) -> str | None:
    """Why no worker can run a job asking for gpus x nodes processes (None: one can)."""
    if nodes > 1:
        return ("jobs run on one machine: nodes must be 1 (a run over several machines is "
                "started with torchrun, see docs/distributed.md)")
    if gpus <= 1:
        return None  # every worker takes these; one may start later
    largest = store.largest_capacity()
    if gpus > largest:
        return (f"gpus={gpus} but the largest live worker owns {largest} GPU"
                f"{'' if largest == 1 else 's'}; ask for at most {max(largest, 1)} or start a "
                "worker with WORKER_GPUS set higher")
    return None
