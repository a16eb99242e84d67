"""`python -m trainer.rank SPEC`: one of ranks 1..k-1 of a run that trainer.launcher started.

The environment names the rank and rank 0's store (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT); SPEC is the pickled run (config, collection, output folder, initial weights)
rank 0 wrote. This process reports nothing and writes nothing: rank 0 does.
"""

from __future__ import annotations

import logging
import pickle
import signal
import sys

import torch
import torch.distributed as dist

from trainer.config import TrainConfig
from trainer.distributed import Distributed
from trainer.engine import Trainer
from trainer.errors import TrainingStopped
from trainer.launcher import GROUP_TIMEOUT, backend_for, threads_per_process
from trainer.process_end import skip_final_collection


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.WARNING,
                        format="%(asctime)s %(levelname)s rank %(name)s: %(message)s")
    # Ctrl-C reaches the whole process group; rank 0 decides when to stop and tells us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with open(argv[0], "rb") as f:
        spec = pickle.load(f)
    config = TrainConfig.from_dict(spec["config"])
    ctx = Distributed.from_env()
    torch.set_num_threads(threads_per_process(ctx.local_world))
    dist.init_process_group(backend_for(config), init_method="env://", rank=ctx.rank,
                            world_size=ctx.world, timeout=GROUP_TIMEOUT)
    try:
        Trainer(config, spec["collection"], spec["out"], distributed=ctx,
                init_weights=spec["init_weights"], max_steps=spec["max_steps"]).run()
    except TrainingStopped:
        pass  # rank 0 stopped the run and wrote its checkpoint
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    skip_final_collection()
    raise SystemExit(code)
