"""A simulator pool worker process: runs instances of any virtual node, one at a time.

Started by the process pool as ``python -m shoal._exec.pool_worker FD BLOB_DIR``; talks to the
driver over the inherited socket ``FD`` with msgpack frames (never pickle). Each module
is imported once per worker.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from typing import Any

from shoal._runtime import ops, protocol
from shoal._runtime.channels import SocketChannel
from shoal._runtime.context import InstanceContext
from shoal._runtime.loader import ModuleCache, run_instance
from shoal._wire import Outbox


class _Versions:
    """The newest versions of the swarm's globals this worker has heard of.

    Each job carries the versions of when the driver sent it, and the driver sends a
    ``versions`` update after every write; ``epoch`` (the driver's count of writes)
    says which is newer.
    """

    def __init__(self) -> None:
        self.epoch = -1
        self.versions: dict[str, str] = {}

    def see(self, update: dict[str, Any]) -> None:
        if update["epoch"] > self.epoch:
            self.epoch, self.versions = update["epoch"], update["globals"]

    def of(self, job: dict[str, Any]) -> dict[str, str]:
        """The versions ``job`` must see (a copy: the instance may change its own)."""
        self.see(job)
        return dict(self.versions)


def serve(sock: socket.socket, blobs: Path) -> None:
    """Run instances until the driver says ``exit`` or goes away."""
    cache = ModuleCache()
    outbox = Outbox(blobs, f"w{os.getpid()}")
    channel = SocketChannel(sock, outbox, defer=ops.names(deferrable=True))
    versions = _Versions()
    folders: dict[str, Path] = {}  # a few modules, thousands of instances: parse once
    # Jobs the driver took back (sent ahead while an instance here waited on a call).
    skipped: set[str] = set()
    protocol.send(sock, {"op": "ready"})  # imports done: instance timings start from here
    while True:
        try:
            msg: dict[str, Any] = channel.next_message()
        except protocol.ChannelClosed:
            return
        if msg.get("op") == "exit":
            return
        if msg.get("op") == "versions":
            versions.see(msg)
            continue
        if msg.get("op") == "skip":
            skipped.update(msg["ids"])
            continue
        for note in channel.take_arrived("skip"):
            skipped.update(note["ids"])
        if msg["ctx"]["instance_id"] in skipped:
            skipped.discard(msg["ctx"]["instance_id"])
            continue
        # Jobs are sent ahead, so a global may have been written since this one was:
        # an update already here means the write came first, and this job must see it.
        for update in channel.take_arrived("versions"):
            versions.see(update)
        ctx = InstanceContext.from_message(msg["ctx"], channel, versions.of(msg))
        folder = folders.get(msg["folder"])
        if folder is None:
            folder = folders[msg["folder"]] = Path(msg["folder"])
        outcome = run_instance(cache, msg["module"], folder, ctx, capture=True)
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
    """Entry point: ``python -m shoal._exec.pool_worker FD BLOB_DIR``."""
    fd, blobs = int(sys.argv[1]), Path(sys.argv[2])
    sock = socket.socket(fileno=fd)
    try:
        serve(sock, blobs)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
