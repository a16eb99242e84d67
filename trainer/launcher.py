"""Run a training job on one process or on several, with PyTorch's distributed machinery.

- gpus = nodes = 1: the plain single-process Trainer.
- gpus = k > 1 on one machine: this process becomes rank 0 (it keeps the callbacks: progress,
  cancel, lease) and torch.distributed.elastic starts ranks 1..k-1 (`python -m trainer.rank`);
  they meet at a c10d TCPStore this process hosts on a free port of the loopback interface,
  and Gloo's and NCCL's own sockets use the loopback interface too: nothing of a one-machine run
  is reachable from another machine. Gloo on CPU, NCCL on CUDA.
- Started by torchrun (WORLD_SIZE in the environment, any number of machines): this process
  joins the run torchrun describes, as the rank it was given.

The death of any process stops the whole run: elastic tears the others down and rank 0 raises
RankFailed. The run's checkpoint (written by rank 0 after every epoch and every
checkpoint_interval_s) is kept; running again resumes from it.
"""

from __future__ import annotations

import datetime
import logging
import os
import pickle
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from trainer.collection import Collection
from trainer.config import TrainConfig
from trainer.device import cpu_count
from trainer.distributed import Distributed
from trainer.engine import Trainer
from trainer.errors import ConfigError, RankFailed, TrainerError, TrainingStopped
from trainer.outputs import RunResult

log = logging.getLogger(__name__)

SPEC_FILE = "distributed_spec.pkl"
# Processes wait for each other at every step; rank 0 alone measures the pixel baseline and
# evaluates, and every process decodes the collection once, so waits can be long. A process
# that dies is noticed at once (its connections close), not after this.
GROUP_TIMEOUT = datetime.timedelta(hours=6)


def run_training(config: TrainConfig, collection: Collection, out_dir: str | Path, *,
                 on_epoch: Callable[[dict[str, Any]], None] | None = None,
                 on_status: Callable[[str, dict[str, Any]], None] | None = None,
                 should_stop: Callable[[], str | None] | None = None,
                 init_weights: str | Path | None = None, max_steps: int | None = None,
                 check_replicas: bool = False) -> RunResult:
    """Train `config` on `collection` into `out_dir` with config.gpus x config.nodes
    processes; returns rank 0's result (other ranks, under torchrun, get empty metrics)."""
    kwargs: dict[str, Any] = {"on_epoch": on_epoch, "on_status": on_status,
                              "should_stop": should_stop, "init_weights": init_weights,
                              "max_steps": max_steps}
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return _join_torchrun(config, collection, out_dir, kwargs)
    if config.nodes > 1:
        raise ConfigError("nodes", "a run on several machines is started by torchrun on every "
                          "machine (see docs/distributed.md)")
    if config.gpus == 1:
        return Trainer(config, collection, out_dir, **kwargs).run()
    return _launch_local(config, collection, Path(out_dir), kwargs, check_replicas)


def backend_for(config: TrainConfig) -> str:
    cuda = config.device.startswith("cuda") or (config.device == "auto"
                                                and torch.cuda.is_available())
    return "nccl" if cuda else "gloo"


def threads_per_process(local_world: int) -> int:
    """CPU threads of each process: the machine's cores shared out."""
    return max(1, cpu_count() // local_world)


def _join_torchrun(config: TrainConfig, collection: Collection, out_dir: str | Path,
                   kwargs: dict[str, Any]) -> RunResult:
    ctx = Distributed.from_env()
    if ctx.world != config.world_size:
        raise ConfigError("gpus", f"gpus x nodes = {config.world_size} but torchrun started "
                          f"{ctx.world} processes")
    torch.set_num_threads(threads_per_process(ctx.local_world))
    dist.init_process_group(backend_for(config), init_method="env://", rank=ctx.rank,
                            world_size=ctx.world, timeout=GROUP_TIMEOUT)
    try:
        return Trainer(config, collection, out_dir, distributed=ctx, **kwargs).run()
    finally:
        dist.destroy_process_group()


def _launch_local(config: TrainConfig, collection: Collection, out: Path,
                  kwargs: dict[str, Any], check_replicas: bool) -> RunResult:
    from torch.distributed.elastic.multiprocessing import DefaultLogsSpecs, start_processes

    world = config.gpus
    if backend_for(config) == "nccl" and torch.cuda.device_count() < world:
        raise ConfigError("gpus", f"{world} processes need {world} GPUs; this machine has "
                          f"{torch.cuda.device_count()}")
    out.mkdir(parents=True, exist_ok=True)
    # What every other rank needs to build the same run: the collection as this process sees
    # it (a live collection's overlay of added and deleted items included) and the weights
    # a warm start begins from.
    spec = {"config": config.to_dict(), "collection": collection, "out": str(out),
            "init_weights": None if kwargs["init_weights"] is None else str(
                kwargs["init_weights"]), "max_steps": kwargs["max_steps"]}
    spec_path = out / SPEC_FILE
    with open(spec_path, "wb") as f:
        pickle.dump(spec, f)
    threads = threads_per_process(world)
    store = loopback_store(world)
    loopback = loopback_environment()
    common = {"WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
              "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(store.port),
              "OMP_NUM_THREADS": str(threads),
              "AND_CHECK_REPLICAS": "1" if check_replicas else "0", **loopback}
    others = range(1, world)
    procs = start_processes(
        name="and-rank", entrypoint=sys.executable,
        args={i: ("-m", "trainer.rank", str(spec_path)) for i in range(len(others))},
        envs={i: {**common, "RANK": str(r), "LOCAL_RANK": str(r)}
              for i, r in enumerate(others)},
        logs_specs=DefaultLogsSpecs(log_dir=str(out / "rank_logs")),
    )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    # Rank 0 is this process: Gloo reads its interface when the group is made, NCCL when its
    # first communicator is, so the setting holds for the whole run.
    previous_env = {k: os.environ.get(k) for k in loopback}
    os.environ.update(loopback)
    ctx = Distributed(rank=0, world=world, local_rank=0, local_world=world,
                      check_replicas=check_replicas)
    try:
        # The env:// rendezvous of the other ranks prefixes its keys so; a store passed in
        # is used as it is.
        dist.init_process_group(backend_for(config), store=dist.PrefixStore("default_pg", store),
                                rank=0, world_size=world, timeout=GROUP_TIMEOUT)
        try:
            result = Trainer(config, collection, out, distributed=ctx, **kwargs).run()
        except BaseException as exc:
            _raise_if_a_rank_failed(procs, exc)
            raise
        done = procs.wait(timeout=300)
        if done is not None and done.is_failed():
            log.warning("a training process failed after the run finished: %s",
                        _describe_failures(done.failures))
        return result
    finally:
        procs.close()  # a no-op for processes that ended; SIGTERM (then SIGKILL) otherwise
        if dist.is_initialized():
            dist.destroy_process_group()
        torch.set_num_threads(previous_threads)
        for key, value in previous_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def loopback_store(world: int) -> dist.TCPStore:
    """The rendezvous of a one-machine run: a c10d store listening on 127.0.0.1 only.

    TCPStore's own server binds every interface (and has no authentication), so it is given a
    socket already bound to the loopback address instead."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(max(128, world))
        port = sock.getsockname()[1]
    except OSError:
        sock.close()
        raise
    # The store owns the descriptor from here on (and closes it).
    return dist.TCPStore("127.0.0.1", port, world, is_master=True, timeout=GROUP_TIMEOUT,
                         wait_for_workers=False, master_listen_fd=sock.detach())


def loopback_environment() -> dict[str, str]:
    """Gloo's and NCCL's socket interface for a one-machine run: the loopback interface
    (by default they bind the address the host name resolves to)."""
    name = loopback_interface()
    return {"GLOO_SOCKET_IFNAME": name, "NCCL_SOCKET_IFNAME": name}


def loopback_interface() -> str:
    names = [name for _, name in socket.if_nameindex()]
    for name in ("lo", "lo0", *names):
        if name in names and name.startswith("lo"):
            return name
    return "lo"


def _raise_if_a_rank_failed(procs: Any, cause: BaseException) -> None:
    """Rank 0 stopped with `cause`: when another rank died (the usual reason its
    collectives fail), say which, as RankFailed."""
    if isinstance(cause, TrainerError):
        # Rank 0's own decision (a stop on request, a bad config, the same on every rank):
        # the others end with it or are closed.
        procs.wait(timeout=60 if isinstance(cause, TrainingStopped) else 5)
        return
    result = procs.wait(timeout=10)
    if result is not None and result.is_failed():
        raise RankFailed(f"{_describe_failures(result.failures)}; the run stopped and resumes "
                         "from its last checkpoint") from cause


def _describe_failures(failures: dict[int, Any]) -> str:
    parts = []
    for local, failure in sorted(failures.items()):
        how = (f"was killed by {failure.signal_name()}" if failure.exitcode < 0
               else f"exited with code {failure.exitcode}")
        parts.append(f"training process of rank {local + 1} {how}")
    return ", ".join(parts)
