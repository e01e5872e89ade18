"""What a node has (CPUs, memory, GPUs), how loaded it is, and how good its link is.

The agent advertises :func:`node_facts` at enrolment and in every heartbeat, so the
coordinator's engine admits the node only for modules whose ``resources`` it covers.
GPUs are detected, not only declared: ``nvidia-smi`` on the agent's PATH is asked for
each GPU's name and memory (:func:`detect_gpus`; tests put a fake one on PATH).
:func:`performance` and :class:`LinkStats` answer the task's
``local.get_performance_metrics()`` and ``local.get_network_quality()``.
"""

from __future__ import annotations

import logging
import os
import shutil
import statistics
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("shoal.node")

_MIB = 2**20
# Heartbeats the link quality is computed from: a few minutes at the default interval.
LINK_WINDOW = 32


@dataclass(frozen=True)
class Gpu:
    """One GPU: its name and memory in bytes (None: unknown)."""

    name: str
    memory: int | None


def detect_gpus(path: str | None = None, timeout_s: float = 10.0) -> list[Gpu]:
    """The GPUs ``nvidia-smi`` reports (none when it is absent or fails).

    Parameters
    ----------
    path
        The PATH to look for ``nvidia-smi`` in (default: the agent's).
    timeout_s
        How long ``nvidia-smi`` may take (a hung driver must not hang the agent).
    """
    exe = shutil.which("nvidia-smi", path=path)
    if exe is None:
        return []
    try:
        proc = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        log.warning("nvidia-smi failed (%s): no GPU is offered", e)
        return []
    if proc.returncode != 0:
        log.warning("nvidia-smi exited with %d: no GPU is offered", proc.returncode)
        return []
    gpus = []
    for line in proc.stdout.splitlines():
        name, _, memory = line.rpartition(",")
        if not name.strip():
            continue
        try:
            mib: int | None = int(float(memory.strip())) * _MIB
        except ValueError:
            mib = None  # "[N/A]" on some boards
        gpus.append(Gpu(name.strip(), mib))
    return gpus


def gpu_devices(dev: Path = Path("/dev")) -> list[Path]:
    """The NVIDIA device files a GPU task needs (``/dev/nvidia0``, ``nvidiactl``,
    ``nvidia-uvm``, ...), the ones that exist."""
    try:
        return sorted(p for p in dev.iterdir() if p.name.startswith("nvidia"))
    except OSError:
        return []


def cpu_count() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def memory_total() -> int:
    """Physical memory in bytes (0 if unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def performance() -> dict[str, float]:
    """The node's load now: ``cpu_usage`` (the 1-minute load average per CPU, capped
    at 1), ``memory_usage`` (share in use), ``cpu_count``, ``memory_total`` and
    ``memory_available`` (bytes)."""
    cpus = cpu_count()
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    info = _meminfo()
    total = info.get("MemTotal") or memory_total()
    available = info.get("MemAvailable", total)
    return {
        "cpu_usage": min(1.0, load / cpus),
        "memory_usage": 0.0 if not total else max(0.0, 1.0 - available / total),
        "cpu_count": float(cpus),
        "memory_total": float(total),
        "memory_available": float(available),
    }


class LinkStats:
    """Round-trip times and losses of the node's last :data:`LINK_WINDOW` heartbeats."""

    def __init__(self, window: int = LINK_WINDOW) -> None:
        self._beats: deque[float | None] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, rtt_s: float | None) -> None:
        """One heartbeat: its round-trip time, or None when it got no answer."""
        with self._lock:
            self._beats.append(rtt_s)

    def quality(self) -> dict[str, float]:
        """``rtt_s`` (median of the answered beats), ``loss`` and ``samples``."""
        with self._lock:
            beats = list(self._beats)
        answered = [b for b in beats if b is not None]
        return {
            "rtt_s": statistics.median(answered) if answered else 0.0,
            "loss": (len(beats) - len(answered)) / len(beats) if beats else 0.0,
            "samples": float(len(beats)),
        }
