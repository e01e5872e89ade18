"""A simulator worker process: runs instances of any virtual node, one at a time.

Started by the process pool as ``python -m shoal._sim.worker FD BLOB_DIR``; talks to the
driver over the inherited socket ``FD`` with msgpack frames (never pickle). Each module
is imported once per worker.
"""

from __future__ import annotations

import io
import os
import socket
import sys
from pathlib import Path
from typing import Any

from shoal._runtime import protocol
from shoal._runtime.channels import SocketChannel
from shoal._runtime.context import InstanceContext
from shoal._runtime.loader import ModuleCache, Outcome, run_main
from shoal._runtime.wire import Outbox


class _LogStream(io.TextIOBase):
    """Sends what task code prints to the driver's logs, one line at a time."""

    def __init__(self, channel: SocketChannel, level: str) -> None:
        self._channel = channel
        self._level = level
        self._buf = ""

    def writable(self) -> bool:
        return True

    def write(self, s: str) -> int:
        self._buf += s
        *lines, self._buf = self._buf.split("\n")
        for line in lines:
            self._channel.notify("log", {"level": self._level, "message": line})
        return len(s)

    def flush(self) -> None:
        if self._buf:
            self._channel.notify("log", {"level": self._level, "message": self._buf})
            self._buf = ""


def serve(sock: socket.socket, blobs: Path) -> None:
    """Run instances until the driver says ``exit`` or goes away."""
    cache = ModuleCache()
    outbox = Outbox(blobs, f"w{os.getpid()}")
    channel = SocketChannel(sock, outbox)
    real_out, real_err = sys.stdout, sys.stderr
    protocol.send(sock, {"op": "ready"})  # imports done: instance timings start from here
    while True:
        try:
            msg: dict[str, Any] = channel.next_message()
        except protocol.ChannelClosed:
            return
        if msg.get("op") == "exit":
            return
        c = msg["ctx"]
        ctx = InstanceContext(
            c["swarm_id"],
            c["instance_id"],
            c["node_id"],
            c["alias"],
            c["iteration"],
            c["attempt"],
            channel,
        )
        out, err = _LogStream(channel, "info"), _LogStream(channel, "warning")
        sys.stdout, sys.stderr = out, err
        try:
            try:
                main = cache.main_of(msg["module"], Path(msg["folder"]))
            except BaseException as e:  # an import error is the task's failure
                import traceback

                outcome = Outcome(
                    False,
                    f"importing the module failed: {type(e).__name__}: {e}",
                    traceback.format_exc(),
                )
            else:
                outcome = run_main(main, ctx)
            out.flush()
            err.flush()
        finally:
            sys.stdout, sys.stderr = real_out, real_err
        protocol.send(
            sock,
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
