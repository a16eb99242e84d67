"""A TCP proxy in front of a real redis-server that can lose the reply to a transaction."""

from __future__ import annotations

import contextlib
import socket
import threading


class ExecReplyDroppingProxy:
    """Forwards everything between clients and Redis, except that after `drop_next_exec()`
    the reply to the next EXEC never reaches its client: once Redis has answered (the
    transaction ran), the proxy closes that connection instead of forwarding the answer."""

    def __init__(self, redis_port: int) -> None:
        self.redis_port = redis_port
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dropped = 0  # EXEC replies lost so far
        self._armed = threading.Event()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def drop_next_exec(self) -> None:
        self._armed.set()

    def close(self) -> None:
        self._closed = True
        self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.redis_port))
            exec_sent = threading.Event()
            threading.Thread(target=self._to_redis, args=(client, upstream, exec_sent),
                             daemon=True).start()
            threading.Thread(target=self._to_client, args=(upstream, client, exec_sent),
                             daemon=True).start()

    def _to_redis(self, client: socket.socket, upstream: socket.socket,
                  exec_sent: threading.Event) -> None:
        try:
            while data := client.recv(65536):
                if self._armed.is_set() and b"\r\nEXEC\r\n" in data.upper():
                    self._armed.clear()
                    exec_sent.set()
                upstream.sendall(data)
        except OSError:
            pass
        _close(client, upstream)

    def _to_client(self, upstream: socket.socket, client: socket.socket,
                   exec_sent: threading.Event) -> None:
        try:
            while data := upstream.recv(65536):
                if exec_sent.is_set():
                    # Redis answered the batch that ends with EXEC: lose the answer.
                    self.dropped += 1
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(client, upstream)


def _close(*socks: socket.socket) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
