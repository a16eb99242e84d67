"""`python -m worker`: a Celery worker for training jobs, one process per GPU.

Extra arguments go to `celery worker`, e.g. `python -m worker --hostname gpu0@%h`.
The same worker starts with `celery -A worker.app worker -Q gpu -c 1` (a worker owning k GPUs
also consumes gpu.2gpus .. gpu.<k>gpus, see worker.capacity).
"""

from __future__ import annotations

import logging
import sys

from state.settings import get_settings
from worker.app import app
from worker.capacity import queues


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = get_settings()
    settings.ensure_dirs()
    # GPU_QUEUE, and the queues of jobs asking for 2..WORKER_GPUS GPUs.
    args = ["worker", "--loglevel=INFO", f"--queues={','.join(queues(settings))}",
            "--concurrency=1", "--pool=prefork", *(argv if argv is not None else sys.argv[1:])]
    app.worker_main(args)


if __name__ == "__main__":
    main()
