"""A simulator worker process: runs instances of any virtual node, one at a time.

Started by the process pool as ``python -m shoal._sim.worker FD BLOB_DIR``; talks to the
driver over the inherited socket ``FD`` with msgpack frames (never pickle). Each module
is imported once per worker.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from shoal._runtime import protocol
from shoal._runtime.channels import SocketChannel
from shoal._runtime.context import InstanceContext
from shoal._runtime.loader import ModuleCache, run_instance
from shoal._runtime.wire import Outbox


def serve(sock: socket.socket, blobs: Path) -> None:
    """Run instances until the driver says ``exit`` or goes away."""
    cache = ModuleCache()
    outbox = Outbox(blobs, f"w{os.getpid()}")
    channel = SocketChannel(sock, outbox, defer=frozenset({"results.add"}))
    protocol.send(sock, {"op": "ready"})  # imports done: instance timings start from here
    while True:
        try:
            msg: dict[str, Any] = channel.next_message()
        except protocol.ChannelClosed:
            return
        if msg.get("op") == "exit":
            return
        ctx = InstanceContext.from_message(msg["ctx"], channel, msg.get("globals"))
        outcome = run_instance(cache, msg["module"], Path(msg["folder"]), ctx, capture=True)
        channel.send(
            {
                "op": "done",
                "instance_id": ctx.instance_id,
                "ok": outcome.ok,
                "error": outcome.error,
                "traceback": outcome.traceback,
            },
        )


def main() -> None:
    """Entry point: ``python -m shoal._sim.worker FD BLOB_DIR``."""
    fd, blobs = int(sys.argv[1]), Path(sys.argv[2])
    sock = socket.socket(fileno=fd)
    try:
        serve(sock, blobs)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
