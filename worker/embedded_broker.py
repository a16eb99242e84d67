"""The embedded default's broker: kombu's filesystem transport, whose wait for a message ends
as soon as the worker is asked to stop.

Celery runs a transport without an event loop of its own (this one) in its blocking loop,
which waits up to 2 s for a message per cycle and, once a stop is asked, runs one more cycle
before it stops: an idle worker took 6.3 s to stop after SIGTERM (Ctrl-C of `local.sh up`,
`docker stop`), against 2.8 s on Redis. Here each poll also checks the stop flags the
worker's signal handlers set, so a stop no longer waits for the rest of a cycle.
"""

from __future__ import annotations

from queue import Empty
from time import monotonic, sleep
from typing import Any, cast

from celery.worker import state
from kombu.transport import filesystem

# Celery's setting `broker_transport` takes this path.
TRANSPORT = f"{__name__}:Transport"


def stop_requested() -> bool:
    """Whether this process's worker was asked to stop, warm or cold (the flags that
    celery.worker.state.maybe_shutdown acts on)."""
    return any(flag is not None and flag is not False
               for flag in (state.should_stop, state.should_terminate))


class Transport(filesystem.Transport):
    def drain_events(self, connection: Any, timeout: float | None = None,
                     **kwargs: Any) -> None:
        """Deliver one message, polling every `polling_interval`. After `timeout` without
        one, or at once when the worker is stopping: TimeoutError (socket.timeout, which
        Celery's loop expects)."""
        cycle = cast(Any, self.cycle)  # made with the transport
        interval = self.polling_interval if self.polling_interval is not None else 0.1
        start = monotonic()
        while True:
            try:
                cycle.get(self._deliver, timeout=timeout)
                return
            except Empty:
                if stop_requested() or (timeout is not None
                                        and monotonic() - start >= timeout):
                    raise TimeoutError() from None
                sleep(min(interval, timeout) if timeout else interval)
