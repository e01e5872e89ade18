"""Channel implementations: in-process (debugging) and over a socket (worker processes)."""

from __future__ import annotations

import itertools
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
    """Frames over a connected socket; large values are spilled into ``outbox``."""

    def __init__(self, sock: socket.socket, outbox: Outbox | None) -> None:
        self._sock = sock
        self.outbox = outbox
        self._ids = itertools.count(1)
        # Messages that arrived while waiting for a reply (the driver sends work ahead).
        self._pending: deque[dict[str, Any]] = deque()

    def next_message(self) -> dict[str, Any]:
        """The next message that is not a reply (blocking)."""
        return self._pending.popleft() if self._pending else protocol.recv(self._sock)

    def request(self, op: str, args: dict[str, Any]) -> Any:
        """Send a request and wait for its reply."""
        rid = next(self._ids)
        protocol.send(self._sock, {"id": rid, "op": op, "args": args})
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
        """Send a one-way message."""
        protocol.send(self._sock, {"id": None, "op": op, "args": args})
