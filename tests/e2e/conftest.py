"""``shoal up`` as a user runs it, for end-to-end tests: a real subprocess, its children
found by a marker, and every process it started checked to be gone afterwards."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import free_port, poll_for

from shoal._client.config import _read_config

MARKER = "SHOAL_E2E_MARKER"


def _read(path: Path) -> str:
    try:
        return path.read_bytes().decode(errors="replace")
    except OSError:
        return ""


class Up:
    """One ``shoal up`` process and the commands a user runs next to it."""

    def __init__(self, tmp: Path, args: list[str]) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        self.tmp = tmp
        self.state = tmp / ".shoal" / "up"  # the default --state's layout, under tmp
        self.config_home = tmp / "config"  # XDG_CONFIG_HOME: profiles stay in tmp
        self.marker = uuid.uuid4().hex
        self.url = ""
        self.token = ""
        self.lines: list[str] = []
        self._ready = threading.Event()
        env = self.plain_env()
        env.update({MARKER: self.marker, "PYTHONUNBUFFERED": "1"})
        self.stderr_path = tmp / "up.stderr"
        argv = [sys.executable, "-m", "shoal", "up", "--state", str(self.state)]
        argv += ["--port", str(free_port()), *args]
        with open(self.stderr_path, "wb") as err:
            # Its own process group, like a command started from a shell: a terminal's
            # Ctrl-C reaches the whole group (see signal()).
            self.proc = subprocess.Popen(
                argv,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env=env,
                cwd=tmp,
                start_new_session=True,
            )
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            if line.startswith("logs: ") and "Ctrl-C stops everything" in line:  # the last
                # The token is never printed: read it from the profile shoal up wrote.
                profile = _read_config(self.state / "profile.toml")
                self.url, self.token = profile["coordinator"], profile["token"]
                self._ready.set()
        self._ready.set()

    def stdout(self) -> str:
        return "\n".join(self.lines)

    def diagnostics(self) -> str:
        """Everything that helps to see why a test failed."""
        parts = [f"--- shoal up stdout\n{self.stdout()}", f"--- stderr\n{_read(self.stderr_path)}"]
        for log in [self.state / "coordinator.log", *sorted(self.state.glob("nodes/*/agent.log"))]:
            parts.append(f"--- {log}\n{_read(log)[-4000:]}")
        return "\n".join(parts)

    def wait_ready(self, timeout: float = 90) -> None:
        self._ready.wait(timeout)
        assert self.url and self.token, f"shoal up did not get ready\n{self.diagnostics()}"

    def plain_env(self) -> dict[str, str]:
        """The environment without SHOAL_* variables, profiles kept under tmp."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
        env["XDG_CONFIG_HOME"] = str(self.config_home)
        return env

    def env(self) -> dict[str, str]:
        env = self.plain_env()
        env.update(SHOAL_COORDINATOR=self.url, SHOAL_TOKEN=self.token)
        return env

    def shoal(
        self,
        *args: str,
        timeout: float = 120,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a CLI command against this federation (by default with SHOAL_COORDINATOR
        and SHOAL_TOKEN set, in the folder ``shoal up`` runs in)."""
        return subprocess.run(
            [sys.executable, "-m", "shoal", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env() if env is None else env,
            cwd=self.tmp if cwd is None else cwd,
        )

    def signal(self, sig: int = signal.SIGINT, timeout: float = 45) -> int:
        """Send ``sig`` to ``shoal up``'s process group (as a terminal's Ctrl-C does) and
        return its exit code (bounded)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"shoal up did not exit within {timeout}s\n{self.diagnostics()}"
            ) from None

    def processes(self) -> list[tuple[int, str]]:
        """Live processes this ``shoal up`` started (by marker, state path or cwd)."""
        found = []
        me = os.getpid()
        state = str(self.state)
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in (me, self.proc.pid):
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                status = (entry / "stat").read_text().split(")")[-1].split()[0]
                environ = (entry / "environ").read_bytes()
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if status == "Z":
                continue
            if self.marker.encode() in environ or state in cmdline or cwd.startswith(state):
                found.append((int(entry.name), cmdline))
        return found

    def assert_nothing_left(self, timeout: float = 10) -> None:
        poll_for(
            lambda: not self.processes(),
            timeout,
            "every process to end",
            interval=0.2,
            explain=lambda: f"processes left behind: {self.processes()}\n{self.diagnostics()}",
        )

    def close(self) -> None:
        """Stop ``shoal up`` if it still runs, then kill anything it left (ours only)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(45)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        for pid, _ in self.processes():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def start_up(tmp_path: Path) -> Iterator[Callable[..., Up]]:
    """``start_up(*args)`` runs ``shoal up ARGS`` in a fresh folder; all of it is
    stopped after the test."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the process checks read /proc")
    pytest.importorskip("shoal._coord.app")
    pytest.importorskip("shoal._node.agent")
    started: list[Up] = []

    def start(*args: str) -> Up:
        up = Up(tmp_path / f"up{len(started)}", list(args))
        started.append(up)
        return up

    try:
        yield start
    finally:
        for up in started:
            up.close()
