"""The task side's channel over a socket (worker processes, node tasks).

The in-process channel, which calls the driver-side world service directly, is
:class:`shoal._world.direct.DirectChannel`: task-side code never imports the driver
side.
"""

from __future__ import annotations

import itertools
import socket
from collections import deque
from collections.abc import Mapping
from typing import Any

from shoal._runtime import protocol
from shoal._wire import Outbox


class SocketChannel:
    """Frames over a connected socket; large values are spilled into ``outbox``.

    One-way notes whose op is in ``defer`` wait and go out with the next frame sent
    (a request, another note, or :meth:`send`): the simulator defers ``results.add``
    so an instance costs its worker one send and its driver one wake-up. A note is
    deferred only where losing it with a crashed process loses nothing: a crashed
    instance's results do not count. Logs and metrics are never deferred.
    """

    def __init__(
        self,
        sock: socket.socket,
        outbox: Outbox | None,
        defer: frozenset[str] = frozenset(),
        read_size: int = 256 * 1024,
    ) -> None:
        self._sock = sock
        self.outbox = outbox
        self._ids = itertools.count(1)
        self._defer = defer
        self._deferred: list[bytes] = []
        # Frames received and not yet taken, in order: one read takes every frame that
        # has arrived (the driver sends jobs ahead), not one system call per frame.
        self._pending: deque[dict[str, Any]] = deque()
        self._reader = protocol.FrameReader()
        self._buf = bytearray(read_size)
        self._view = memoryview(self._buf)
        self._closed = False

    def _fill(self, wait: bool) -> int:
        """Read what has arrived into the pending frames (waiting for some if ``wait``);
        return how many bytes were read."""
        if self._closed:
            raise protocol.ChannelClosed("channel closed by the other end")
        try:
            n = self._sock.recv_into(self._buf, 0, 0 if wait else socket.MSG_DONTWAIT)
        except BlockingIOError:
            return 0
        except ConnectionError:
            n = 0
        if n == 0:
            self._closed = True
            if wait:
                raise protocol.ChannelClosed("channel closed by the other end")
            return 0  # the next wait says so, after the frames already here are taken
        self._pending.extend(self._reader.feed(self._view[:n]))
        if self._reader.broken is not None:
            raise self._reader.broken
        return n

    def next_message(self) -> dict[str, Any]:
        """The next message that is not a reply (blocking)."""
        while not self._pending:
            self._fill(wait=True)
        return self._pending.popleft()

    def take_arrived(self, op: str) -> list[dict[str, Any]]:
        """Read what was already sent to us, without waiting for more, and return the
        messages whose op is ``op`` in order; the others stay queued."""
        while self._fill(wait=False) == len(self._buf):
            pass  # the buffer was filled: more may be waiting
        taken = [m for m in self._pending if m.get("op") == op]
        if taken:
            self._pending = deque(m for m in self._pending if m.get("op") != op)
        return taken

    def send(self, msg: dict[str, Any]) -> None:
        """Send ``msg`` after every deferred note."""
        self._deferred.append(protocol.frame(msg))
        protocol.send_frames(self._sock, self._deferred)
        self._deferred.clear()

    def request(self, op: str, args: Mapping[str, Any]) -> Any:
        """Send a request and wait for its reply."""
        rid = next(self._ids)
        self.send({"id": rid, "op": op, "args": args})
        reply = self._reply()
        if reply.get("id") != rid:
            raise protocol.ChannelClosed(f"channel out of step: expected reply {rid}")
        if "error" in reply:
            protocol.raise_payload(reply["error"])
        return reply.get("ok")

    def _reply(self) -> dict[str, Any]:
        """Take the first reply (a frame without an op), waiting for it."""
        seen = 0  # frames already searched: each is looked at once
        while True:
            for i in range(seen, len(self._pending)):
                if "op" not in self._pending[i]:
                    reply = self._pending[i]
                    del self._pending[i]
                    return reply
            seen = len(self._pending)
            self._fill(wait=True)

    def notify(self, op: str, args: Mapping[str, Any]) -> None:
        """Send a one-way message (or defer it, see the class)."""
        msg = {"id": None, "op": op, "args": args}
        if op in self._defer:
            self._deferred.append(protocol.frame(msg))
        else:
            self.send(msg)
