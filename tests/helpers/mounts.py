"""A small tmpfs mounted for one test: a disk that fills up (the tests run as root)."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@contextlib.contextmanager
def tiny_tmpfs(folder: Path, size: str = "1m") -> Iterator[Path]:
    """Mount a tmpfs of ``size`` (mode 0700) on ``folder`` (created if missing) for the
    block; skip the test, saying why, where mounting is impossible (not root, no
    CAP_SYS_ADMIN). Unmounted lazily afterwards: a process may still hold it."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        done = _run("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(folder))
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"cannot mount a {size} tmpfs here: {e}")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a {size} tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        _run("umount", "--lazy", str(folder))
