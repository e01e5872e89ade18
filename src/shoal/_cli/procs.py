"""Child processes of ``shoal up``: each in its own process group, all stopped together.

Stopping is bounded: SIGTERM to every group, a bounded wait, then SIGKILL to what is
left, so no process (nor any of its own children in its group) outlives ``shoal up``.
On Linux each child also gets SIGTERM if ``shoal up`` itself dies without cleaning up.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def _death_signal() -> Callable[[], None] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
    prctl = libc.prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


@dataclass
class Child:
    """A started child process and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        """The last lines of its log."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


class Children:
    """Start and stop a set of child processes."""

    def __init__(self) -> None:
        self.children: list[Child] = []
        self._preexec = _death_signal()

    def start(
        self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> Child:
        """Start ``argv`` in a new session (its own process group), output to ``log``."""
        log.parent.mkdir(parents=True, exist_ok=True)
        # 0600: a coordinator's log holds the token line it prints.
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=fd,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=self._preexec,  # only async-signal-safe work: one prctl call
                env=env,
            )
        finally:
            os.close(fd)
        child = Child(name, proc, log)
        self.children.append(child)
        return child

    def dead(self) -> list[Child]:
        """Children that have exited."""
        return [c for c in self.children if c.proc.poll() is not None]

    def stop(self, timeout: float = 10.0, order: Sequence[Sequence[Child]] | None = None) -> None:
        """Stop every child and its process group: SIGTERM, wait, then SIGKILL.

        Parameters
        ----------
        timeout
            Most seconds to wait for each stage of ``order`` to exit after SIGTERM.
        order
            Stages stopped one after the other (e.g. nodes before their coordinator);
            default: all at once. Children in no stage are stopped last.
        """
        stages = [list(s) for s in (order or [])]
        rest = [c for c in self.children if not any(c in s for s in stages)]
        for stage in [*stages, rest]:
            for c in stage:
                _signal_group(c.proc, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            for c in stage:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    c.proc.wait(max(0.0, deadline - time.monotonic()))
        for c in self.children:
            # The leader may be gone while members of its group live on: kill the group.
            _signal_group(c.proc, signal.SIGKILL)
            if c.proc.poll() is None:
                c.proc.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
