"""Channel implementations: in-process (debugging) and over a socket (worker processes)."""

from __future__ import annotations

import itertools
import select
import socket
from collections import deque
from typing import Any

from shoal._runtime import protocol
from shoal._runtime.service import InstanceInfo, WorldService
from shoal._runtime.wire import Outbox


class DirectChannel:
    """Calls the service in this process. Values still go through the codec, so task
    code sees exactly what it would see across a process boundary."""

    outbox: Outbox | None = None

    def __init__(self, service: WorldService, info: InstanceInfo) -> None:
        self._service = service
        self._info = info

    def request(self, op: str, args: dict[str, Any]) -> Any:
        """Call the service directly."""
        return self._service.handle(self._info, op, args)

    def notify(self, op: str, args: dict[str, Any]) -> None:
        """Call the service directly, ignoring the result."""
        self._service.handle(self._info, op, args)


class SocketChannel:
    """Frames over a connected socket; large values are spilled into ``outbox``.

    One-way notes whose op is in ``defer`` wait and go out with the next frame sent
    (a request, another note, or :meth:`send`): the simulator defers ``results.add``
    so an instance costs its worker one send and its driver one wake-up. A note is
    deferred only where losing it with a crashed process loses nothing: a crashed
    instance's results do not count. Logs and metrics are never deferred.
    """

    def __init__(
        self, sock: socket.socket, outbox: Outbox | None, defer: frozenset[str] = frozenset()
    ) -> None:
        self._sock = sock
        self.outbox = outbox
        self._ids = itertools.count(1)
        self._defer = defer
        self._deferred: list[bytes] = []
        # Messages that arrived while waiting for a reply (the driver sends work ahead).
        self._pending: deque[dict[str, Any]] = deque()

    def next_message(self) -> dict[str, Any]:
        """The next message that is not a reply (blocking)."""
        return self._pending.popleft() if self._pending else protocol.recv(self._sock)

    def take_arrived(self, op: str) -> list[dict[str, Any]]:
        """Read what was already sent to us, without waiting for more, and return the
        messages whose op is ``op`` in order; the others stay queued."""
        while select.select([self._sock], [], [], 0)[0]:
            try:
                self._pending.append(protocol.recv(self._sock))
            except protocol.ChannelClosed:
                break  # the next next_message() says so
        taken = [m for m in self._pending if m.get("op") == op]
        if taken:
            self._pending = deque(m for m in self._pending if m.get("op") != op)
        return taken

    def send(self, msg: dict[str, Any]) -> None:
        """Send ``msg`` after every deferred note."""
        self._deferred.append(protocol.frame(msg))
        protocol.send_frames(self._sock, self._deferred)
        self._deferred.clear()

    def request(self, op: str, args: dict[str, Any]) -> Any:
        """Send a request and wait for its reply."""
        rid = next(self._ids)
        self.send({"id": rid, "op": op, "args": args})
        while True:
            reply = protocol.recv(self._sock)
            if "op" not in reply:
                break
            self._pending.append(reply)
        if reply.get("id") != rid:
            raise protocol.ChannelClosed(f"channel out of step: expected reply {rid}")
        if "error" in reply:
            protocol.raise_payload(reply["error"])
        return reply.get("ok")

    def notify(self, op: str, args: dict[str, Any]) -> None:
        """Send a one-way message (or defer it, see the class)."""
        msg = {"id": None, "op": op, "args": args}
        if op in self._defer:
            self._deferred.append(protocol.frame(msg))
        else:
            self.send(msg)
