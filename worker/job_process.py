"""`python -m worker.job_process JOB_ID [OWNER]`: one training job in a process of its own.

The Celery task only supervises this process. Training gets an ordinary process (free to start
DataLoader workers, unlike a daemonic pool child), CUDA lives and dies with it, and a native
crash or an out-of-memory kill ends the job as failed with a reason instead of taking the
worker down. OWNER is the name this run takes the job's lease under, chosen by the task so that
it can tell, after a crash, whether the job is still this process's.
"""

from __future__ import annotations

import logging
import signal
import sys

from state.settings import get_settings
from state.stores import open_store
from trainer.process_end import skip_final_collection
from worker.heartbeat import shutdown_requested
from worker.runner import run_job


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if len(argv) not in (1, 2):
        print("usage: python -m worker.job_process JOB_ID [OWNER]", file=sys.stderr)
        return 2
    settings = get_settings()
    # The worker forwards its shutdown as SIGTERM: stop after this batch, checkpoint, re-queue.
    signal.signal(signal.SIGTERM, lambda signum, frame: shutdown_requested.set())
    from worker.tasks import enqueue

    run_job(argv[0], open_store(settings), settings, requeue=enqueue,
            owner=argv[1] if len(argv) == 2 else None)
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    skip_final_collection()
    raise SystemExit(code)
