"""`python -m service [--host H] [--port P]`: the API under uvicorn."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from service.app import UnsafeSettings, create_app
from service.gc_pauses import freeze_startup_objects


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = create_app()
    except UnsafeSettings as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # What the process has imported and built by now lives as long as it: out of the cycle
    # collector's walks (service/gc_pauses.py).
    frozen = freeze_startup_objects()
    logging.getLogger(__name__).debug("%d objects exempt from garbage collection", frozen)
    # One process: the model, the batcher and the index live in it. Scale with replicas.
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level,
                proxy_headers=True, timeout_graceful_shutdown=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
