"""Does bubblewrap work on this machine? Asked once per agent process."""

from __future__ import annotations

import functools
import subprocess
import sys
import tempfile
from pathlib import Path

from shoal._exec.bwrap import bwrap_argv, bwrap_binary, interpreter_binds
from shoal._exec.restrictions import Restrictions

PROBE_TIMEOUT_S = 30.0


@functools.lru_cache(maxsize=1)
def probe_bwrap() -> str | None:
    """None if bubblewrap can run this agent's Python in the sandbox used for tasks
    (the same namespaces and binds); otherwise why not, in words."""
    binary = bwrap_binary()
    if binary is None:
        return "bubblewrap is not installed: apt-get install bubblewrap"
    interpreter = Path(sys.executable)
    try:
        binds = interpreter_binds(interpreter, None)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        return f"cannot ask {interpreter} what it needs: {e}"
    with tempfile.TemporaryDirectory(prefix="shoal-bwrap-probe-") as tmp:
        argv = bwrap_argv(
            [str(interpreter), "-c", "import sys; sys.exit(0)"],
            Restrictions.SANDBOX.with_binds(ro=binds),
            workdir=Path(tmp),
        )
        argv[0] = binary
        try:
            proc = subprocess.run(
                argv, capture_output=True, timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"bubblewrap ({binary}) could not be run: {e}"
    if proc.returncode != 0:
        said = proc.stderr.decode(errors="replace").strip().splitlines()
        detail = said[-1] if said else f"exit code {proc.returncode}"
        return f"bubblewrap ({binary}) does not work here: {detail}"
    return None
