"""A TCP proxy on loopback that a test can cut, restore, and make lose one answer.

It stands between one node agent and the coordinator, so a test can take that node
off the network without touching the coordinator or the other nodes:

- :meth:`Proxy.cut` closes every connection through the proxy and refuses new ones
  (they are accepted and closed at once, as a dead route would reset them);
- :meth:`Proxy.restore` lets connections through again;
- :meth:`Proxy.lose_answer` lets the next request whose bytes contain a pattern reach
  the coordinator, then throws away the coordinator's answer and closes both sides, so
  the request took effect but its sender never learns it and sends it again.

Every thread is a daemon and :meth:`Proxy.close` ends them all.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from dataclasses import dataclass, field

_CHUNK = 65536
_TICK_S = 0.05
_TAIL = 256  # patterns must be shorter than this


@dataclass
class _Trap:
    pattern: bytes
    fired: threading.Event = field(default_factory=threading.Event)


@dataclass
class _Pair:
    client: socket.socket
    server: socket.socket
    tail: bytes = b""  # the last bytes the client sent, to match a pattern split in two
    trap: _Trap | None = None  # set once this connection carried the trapped request
    closed: bool = False

    def close(self) -> None:
        self.closed = True
        for s in (self.client, self.server):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()


class Proxy:
    """Forward ``127.0.0.1:<port>`` to ``target`` until closed.

    Parameters
    ----------
    target
        ``(host, port)`` of the coordinator.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_TICK_S)
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[_Pair] = []
        self._open = True
        self._stopped = threading.Event()
        self._traps: list[_Trap] = []
        self.refused = 0  # connections refused while cut
        self._threads = [threading.Thread(target=self._accept, name="proxy-accept", daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        """The URL to give the node agent instead of the coordinator's."""
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ control
    def cut(self) -> None:
        """Take the node off the network: close every connection, refuse new ones."""
        with self._lock:
            self._open = False
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            pair.close()

    def restore(self) -> None:
        """Put the node back on the network."""
        with self._lock:
            self._open = True

    def lose_answer(self, pattern: bytes) -> threading.Event:
        """Lose the answer to the next request containing ``pattern`` (once).

        Returns an event set when the coordinator answered that request and the answer
        was thrown away.
        """
        assert len(pattern) < _TAIL
        trap = _Trap(pattern)
        with self._lock:
            self._traps.append(trap)
        return trap.fired

    def close(self) -> None:
        """Stop the proxy and close every connection."""
        self._stopped.set()
        self.cut()
        for t in self._threads:
            t.join(5)
        with contextlib.suppress(OSError):
            self._listener.close()

    # ------------------------------------------------------------------ threads
    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                is_open = self._open
            if not is_open:
                self.refused += 1
                with contextlib.suppress(OSError):
                    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                client.close()  # a reset, as from a route that is down
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            pair = _Pair(client, server)
            with self._lock:
                if not self._open:
                    pair.close()
                    continue
                self._pairs.append(pair)
            t = threading.Thread(target=self._pump, args=(pair,), name="proxy-pump", daemon=True)
            t.start()
            self._threads.append(t)

    def _pump(self, pair: _Pair) -> None:
        try:
            while not pair.closed and not self._stopped.is_set():
                try:
                    ready, _, _ = select.select([pair.client, pair.server], [], [], _TICK_S)
                except (OSError, ValueError):
                    return
                for sock in ready:
                    try:
                        data = sock.recv(_CHUNK)
                    except OSError:
                        return
                    if not data:
                        return
                    if sock is pair.client:
                        self._from_client(pair, data)
                        pair.server.sendall(data)
                    elif pair.trap is not None:  # the answer to the trapped request
                        pair.trap.fired.set()
                        return
                    else:
                        pair.client.sendall(data)
        except OSError:
            return
        finally:
            pair.close()
            with self._lock:
                if pair in self._pairs:
                    self._pairs.remove(pair)

    def _from_client(self, pair: _Pair, data: bytes) -> None:
        window = pair.tail + data
        pair.tail = window[-_TAIL:]
        if pair.trap is not None:  # one trap per request (its body may match another)
            return
        with self._lock:
            for trap in self._traps:
                if trap.pattern in window:
                    pair.trap = trap
                    self._traps.remove(trap)
                    return
