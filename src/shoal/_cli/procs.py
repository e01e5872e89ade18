"""Child processes of ``shoal up``: each in its own process group, all stopped together.

Stopping is bounded: SIGTERM to every group, a bounded wait, then SIGKILL to what is
left, so no process (nor any of its own children in its group) outlives ``shoal up``.
On Linux each child also gets SIGTERM if ``shoal up`` itself dies without cleaning up.

A child may die on its own and be started again (:meth:`Children.restart`). What it had
started in other sessions (a node agent's task processes) would then be orphaned and
outlive everything: on Linux, ``shoal up`` is a child subreaper, so such orphans become
its own children, and :meth:`Children.kill_orphans` ends them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def become_subreaper() -> bool:
    """Make this process adopt its orphaned descendants (Linux); False where it cannot."""
    libc = _libc()
    return libc is not None and libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


def _death_signal() -> Callable[[], None] | None:
    libc = _libc()
    if libc is None:
        return None
    prctl = libc.prctl

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


@dataclass
class Child:
    """A started child process, how it was started and where its output goes."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    argv: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    restarts: int = 0

    def tail(self, lines: int = 15) -> str:
        """The last lines of its log."""
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


class Children:
    """Start and stop a set of child processes.

    Parameters
    ----------
    subreaper
        Adopt orphaned descendants (Linux), so that :meth:`kill_orphans` and
        :meth:`stop` can end them.
    """

    def __init__(self, subreaper: bool = False) -> None:
        self.children: list[Child] = []
        self._preexec = _death_signal()
        self._lock = threading.Lock()  # start/restart vs stop, from different threads
        self._closed = False
        self.subreaper = become_subreaper() if subreaper else False

    def _spawn(
        self, argv: Sequence[str], log: Path, env: dict[str, str] | None
    ) -> subprocess.Popen[bytes]:
        log.parent.mkdir(parents=True, exist_ok=True)
        # 0600: a coordinator's log holds the token line it prints.
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            return subprocess.Popen(
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

    def start(
        self, name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> Child:
        """Start ``argv`` in a new session (its own process group), output to ``log``."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"cannot start {name}: the children are being stopped")
            child = Child(name, self._spawn(argv, log, env), log, list(argv), env)
            self.children.append(child)
            return child

    def restart(self, child: Child) -> bool:
        """Start a dead child again with the same command, appending to its log.

        Returns False (and starts nothing) once :meth:`stop` has begun.
        """
        with self._lock:
            if self._closed:
                return False
            child.proc = self._spawn(child.argv, child.log, child.env)
            child.restarts += 1
            return True

    def dead(self) -> list[Child]:
        """Children that have exited."""
        return [c for c in self.children if c.proc.poll() is not None]

    def orphans(self) -> list[int]:
        """Processes this one adopted as a subreaper: descendants whose parent died."""
        if not self.subreaper:
            return []
        me, known = os.getpid(), {c.proc.pid for c in self.children}
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in known:
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if len(fields) > 1 and fields[1] == str(me):
                found.append(int(entry.name))
        return found

    def kill_orphans(self, rounds: int = 10) -> list[int]:
        """SIGKILL every adopted orphan with its process group, and reap it.

        Killing one may orphan its own children in other groups, so this repeats (at
        most ``rounds`` times) until none is left. Returns the pids killed.
        """
        killed: list[int] = []
        for _ in range(rounds):
            found = self.orphans()
            if not found:
                break
            for pid in found:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)  # a task runner leads its own session
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 5.0  # SIGKILLed: bounded, normally at once
            waiting = set(found)
            while waiting and time.monotonic() < deadline:
                for pid in list(waiting):
                    try:
                        if os.waitpid(pid, os.WNOHANG)[0] == pid:
                            waiting.discard(pid)
                    except ChildProcessError:
                        waiting.discard(pid)
                if waiting:
                    time.sleep(0.02)
            killed += found
        return killed

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
        with self._lock:
            self._closed = True  # no restart from another thread from now on
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
        self.kill_orphans()  # what a child left in other sessions when it died


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
