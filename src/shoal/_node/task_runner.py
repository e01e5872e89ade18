"""The task process: runs one instance's ``main()`` for the node agent.

Started as ``python -m shoal._node.task_runner SOCKET [--memory-mb N] [--cpu-seconds N]``
with its per-instance token on stdin. It limits itself first (before any task code),
connects to the agent's Unix socket, authenticates with the token (first frame), gets
its instance context in reply, and then runs ``main()`` exactly like a simulator worker:
the world API goes over the socket, printed lines become logs, and the outcome is the
last frame it sends.

A *warm* process (the agent's hello answer says ``warm``) stays after its ``done``
and waits for the agent's next ``run`` frame: the next instance of the same module of
the same swarm, run by the same imported module (:mod:`shoal._node.warm`). It exits when
the agent says ``exit`` or hangs up.
"""

from __future__ import annotations

import argparse
import itertools
import os
import select
import socket
import sys
import threading
from pathlib import Path
from typing import Any

from shoal._runtime import protocol
from shoal._runtime.channels import SocketChannel
from shoal._runtime.context import InstanceContext
from shoal._runtime.loader import ModuleCache, Outcome, run_instance
from shoal._wire import Outbox


def _limit(memory_mb: int | None, cpu_seconds: int | None) -> None:
    import resource

    # Hard limits too: task code cannot raise them again.
    if memory_mb is not None:
        n = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (n, n))
    if cpu_seconds is not None:
        # SIGXCPU at the limit (the agent names it), SIGKILL a second later if ignored.
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # SIGXCPU would dump core


def _watch_agent(sock: socket.socket, reported: threading.Event) -> None:
    """Exit when the agent goes away (its end of the socket hangs up), even while task
    code is busy and not talking to it: an orphaned task must not run on. Once the
    outcome is ``reported`` (a warm process between two instances: until the next one
    clears it), the agent may hang up first: that is the normal end."""
    if not hasattr(select, "POLLRDHUP"):  # not Linux: the next world call fails instead
        return
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLRDHUP | select.POLLHUP)

    def watch() -> None:
        while True:
            for _, mask in poller.poll():
                if mask & (select.POLLRDHUP | select.POLLHUP):
                    if reported.is_set():
                        return
                    os._exit(70)  # EX_SOFTWARE: nobody is left to report to
                if mask & (select.POLLNVAL | select.POLLERR):
                    return  # we closed the socket ourselves: the run is over

    threading.Thread(target=watch, name="agent-watch", daemon=True).start()


def _named(outcome: Outcome, memory_mb: int | None) -> Outcome:
    """Name the address-space limit when the task ran out of memory under it."""
    if memory_mb is None or not outcome.error.startswith("MemoryError"):
        return outcome
    why = f"memory limit of {memory_mb} MB exceeded (address-space rlimit)"
    return Outcome(False, f"{why}; {outcome.error}", outcome.traceback)


def _one(
    channel: SocketChannel,
    cache: ModuleCache,
    c: dict[str, Any],
    reported: threading.Event,
    memory_mb: int | None,
    n: int,
) -> None:
    """Run the instance of context ``c`` and send its ``done`` frame."""
    reported.clear()
    # Each instance writes its own segments (the agent empties the outbox between two).
    channel.outbox = Outbox(Path(c["outbox"]), f"t{os.getpid()}-{n}")
    ctx = InstanceContext.from_message(c, channel, dict(c.get("global_versions") or {}))
    try:
        outcome = run_instance(cache, c["module"], Path(c["folder"]), ctx, capture=True)
        outcome = _named(outcome, memory_mb)
    finally:
        channel.outbox.close()
    reported.set()  # set before sending: the agent may hang up as soon as it reads it
    channel.send(
        {"op": "done", "ok": outcome.ok, "error": outcome.error, "traceback": outcome.traceback},
    )


def run(sock: socket.socket, token: str, memory_mb: int | None = None) -> None:
    """Authenticate, run the instance and report its outcome over ``sock`` (a
    ``MemoryError`` under the ``memory_mb`` rlimit is reported naming the limit); a
    warm process then runs each instance the agent sends next, until it says ``exit``
    or hangs up."""
    channel = SocketChannel(sock, None)
    c = channel.request("hello", {"token": token})
    reported = threading.Event()
    _watch_agent(sock, reported)
    cache = ModuleCache()  # a warm process imports its module once
    _one(channel, cache, c, reported, memory_mb, 0)
    if not c.get("warm"):
        return
    for n in itertools.count(1):
        try:
            msg = channel.next_message()
        except protocol.ChannelClosed:
            return  # the agent retired this process
        if msg.get("op") != "run":
            return  # "exit", or anything this runner does not know: stop
        _one(channel, cache, msg["ctx"], reported, memory_mb, n)


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m shoal._node.task_runner SOCKET``; the token is on stdin."""
    p = argparse.ArgumentParser(prog="shoal._node.task_runner")
    p.add_argument("socket")
    p.add_argument("--memory-mb", type=int, default=None)
    p.add_argument("--cpu-seconds", type=int, default=None)
    a = p.parse_args(argv)
    _limit(a.memory_mb, a.cpu_seconds)
    token = sys.stdin.readline().strip()
    sys.stdin.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(a.socket)
        run(sock, token, a.memory_mb)
    finally:
        sock.close()


if __name__ == "__main__":
    main()
