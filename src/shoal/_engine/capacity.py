"""A node's capacity and whether a module's resource need fits it.

Kept apart from :mod:`shoal._engine.placement` (which owns the choice among eligible
nodes): this module only answers "does this node have enough", and says what is short.
A fact a node did not advertise (None) is not checked: the simulator's virtual nodes
without a profile offer whatever is asked, as they offer every image.
"""

from __future__ import annotations

from dataclasses import dataclass

from shoal._plan.resources import ResourceNeed, format_bytes


@dataclass(frozen=True)
class Capacity:
    """What one instance may use on a node (None: not advertised, not checked).

    Attributes
    ----------
    cpu
        Cores (the node's CPUs, or its per-instance CPU limit when lower).
    memory
        Bytes (the node's memory, or its per-instance memory limit when lower).
    gpu
        GPUs.
    gpu_memory
        Bytes of memory of its largest GPU.
    """

    cpu: float | None = None
    memory: int | None = None
    gpu: int | None = None
    gpu_memory: int | None = None


def _cores(n: float) -> str:
    return f"{n:g} CPU" + ("" if n == 1 else "s")


def shortfall(need: ResourceNeed, has_gpu: bool, cap: Capacity | None) -> list[str]:
    """What ``cap`` lacks for ``need``, one phrase per resource (empty: it fits).

    ``has_gpu`` is the node's GPU flag, checked when the need asks for any GPU and the
    node advertised no GPU count.
    """
    out: list[str] = []
    c = cap or Capacity()
    if need.cpu and c.cpu is not None and c.cpu < need.cpu:
        out.append(f"has {_cores(c.cpu)}, needs {need.cpu:g}")
    if need.memory and c.memory is not None and c.memory < need.memory:
        out.append(f"has {format_bytes(c.memory)} memory, needs {format_bytes(need.memory)}")
    if need.gpu:
        gpus = c.gpu if c.gpu is not None else (1 if has_gpu else 0)
        if gpus == 0:
            out.append("no GPU")  # the phrase of a gpu=True task on a node without one
        elif gpus < need.gpu:
            out.append(f"has {gpus} GPU{'' if gpus == 1 else 's'}, needs {need.gpu}")
    if need.gpu_memory and c.gpu_memory is not None and c.gpu_memory < need.gpu_memory:
        out.append(
            f"has {format_bytes(c.gpu_memory)} GPU memory, needs {format_bytes(need.gpu_memory)}"
        )
    return out


def fits(need: ResourceNeed, has_gpu: bool, cap: Capacity | None) -> bool:
    """Whether ``cap`` satisfies ``need`` (the fast path of :func:`shortfall`)."""
    if not need:
        return True
    return not shortfall(need, has_gpu, cap)
