"""The process supervision under ``shoal up``: nothing it starts outlives it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from helpers import poll_for

from shoal._cli.procs import Children

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

# A child that ignores SIGTERM and starts a grandchild that ignores it too.
STUBBORN = textwrap.dedent(
    """
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    g = subprocess.Popen([sys.executable, "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
    print(g.pid, flush=True)
    time.sleep(600)
    """
)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def wait_for_line(path: Path, timeout: float = 30.0) -> str:
    def line() -> str | None:
        text = path.read_text() if path.exists() else ""
        return text.strip() if text.endswith("\n") else None

    return poll_for(line, timeout, f"a line in {path}", interval=0.05)


def test_stop_kills_children_and_their_groups_within_the_bound(tmp_path: Path) -> None:
    children = Children()
    quick = children.start("quick", [sys.executable, "-c", "import time; time.sleep(600)"],
                           tmp_path / "quick.log")  # fmt: skip
    stubborn = children.start(
        "stubborn", [sys.executable, "-c", STUBBORN], tmp_path / "stubborn.log"
    )
    grandchild = int(wait_for_line(tmp_path / "stubborn.log"))
    assert os.getpgid(stubborn.proc.pid) == stubborn.proc.pid != os.getpgid(0)
    t0 = time.monotonic()
    children.stop(timeout=1.0, order=[[quick]])
    assert time.monotonic() - t0 < 10
    assert quick.proc.returncode == -signal.SIGTERM
    assert stubborn.proc.returncode == -signal.SIGKILL
    poll_for(lambda: not alive(grandchild), 5, "the grandchild to die", interval=0.05)
    assert oct(os.stat(tmp_path / "quick.log").st_mode & 0o777) == "0o600"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG")
def test_children_get_sigterm_when_their_parent_dies_hard(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from shoal._cli.procs import Children
        c = Children().start("sleeper", [sys.executable, "-c", "import time; time.sleep(600)"],
                             Path({str(tmp_path / "child.log")!r}))
        print(c.proc.pid, flush=True)
        time.sleep(600)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True
    ) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert alive(child)
        finally:
            parent.kill()
            parent.wait(10)
    poll_for(lambda: not alive(child), 10, "the orphaned child to die", interval=0.05)


# A child that starts a grandchild in a session of its own (as a node agent starts a
# task), prints the grandchild's pid, then sleeps.
SPAWNER = textwrap.dedent(
    """
    import subprocess, sys, time
    g = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         start_new_session=True)
    print(g.pid, flush=True)
    time.sleep(600)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER")
def test_a_dead_child_is_restarted_and_no_orphan_outlives_stop(tmp_path: Path) -> None:
    # In a process of its own: a subreaper adopts orphans, which pytest must not do.
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        from helpers import poll_for
        from shoal._cli.procs import Children
        log = Path({str(tmp_path / "spawner.log")!r})
        def pids(n):
            return poll_for(lambda: (log.read_text().split() + [None] * n)[n - 1] and
                            log.read_text().split(), 30, f"{{n}} pid(s) in the log")
        children = Children(subreaper=True)
        assert children.subreaper
        c = children.start("spawner", [sys.executable, "-c", {SPAWNER!r}], log)
        first = c.proc.pid
        [orphan] = pids(1)
        os.kill(first, signal.SIGKILL)  # its grandchild, in its own session, lives on
        c.proc.wait(10)
        assert children.orphans() == [int(orphan)], children.orphans()
        assert children.kill_orphans() == [int(orphan)] and not children.orphans()
        assert children.restart(c) and c.proc.pid != first and c.restarts == 1
        second = pids(2)[1]
        children.stop(timeout=5)  # SIGTERM orphans the new grandchild: stop kills it
        assert not children.restart(c)  # never after stop
        print(orphan, second, c.proc.returncode, flush=True)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
    orphan, second, code = done.stdout.split()
    assert not alive(int(orphan)) and not alive(int(second))
    assert code == str(-signal.SIGTERM)
