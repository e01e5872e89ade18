"""A module's ``resources`` (seed 002: ``{"cpu": 2, "memory": "4Gi"}``) as numbers.

The plan keeps ``resources`` as the user wrote them; the compiler checks them with
:func:`resource_problem` (so a typo fails at declaration time), and the engine and
node agent read them through :func:`parse_resources`. Quantities follow the Kubernetes
forms a Manta user knows: memory ``"16Gi"``, ``"512Mi"``, ``"4G"`` or a number of
bytes; cpu a number of cores or millicores (``"500m"``); gpu a count.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

# Binary (Ki, Mi, ...) and decimal (k, M, ...) suffixes, as Kubernetes reads them.
_UNITS = {
    "": 1,
    "k": 10**3,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([kKMGT]i?|)(?:B)?\s*$")
_CPU = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(m?)\s*$")

#: The keys ``resources`` may have, and what each means.
KEYS: Mapping[str, str] = {
    "cpu": 'cores, e.g. 2 or "500m"',
    "memory": 'bytes, e.g. "16Gi", "512Mi" or 4000000000',
    "gpu": "a count of GPUs, e.g. 1",
    "gpu_memory": 'memory of one GPU, e.g. "24Gi"',
}


@dataclass(frozen=True)
class ResourceNeed:
    """What one instance of a module needs of a node (0: nothing asked)."""

    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0
    gpu_memory: int = 0

    def with_gpu(self, gpu: bool) -> ResourceNeed:
        """This need, with at least one GPU when the task says ``gpu=True``."""
        if gpu and self.gpu < 1:
            return ResourceNeed(self.cpu, self.memory, 1, self.gpu_memory)
        return self

    def __bool__(self) -> bool:
        return bool(self.cpu or self.memory or self.gpu or self.gpu_memory)


#: A module that states no resources.
NO_NEED = ResourceNeed()


def parse_bytes(value: object) -> int:
    """``"16Gi"`` -> 17179869184; a plain number is bytes. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a quantity of bytes")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a quantity of bytes >= 0")
        return int(value)
    m = _QUANTITY.match(str(value))
    if m is None:
        raise ValueError(f"{value!r} is not a quantity of bytes (e.g. '16Gi', '512Mi')")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def parse_cpu(value: object) -> float:
    """``2`` -> 2.0, ``"500m"`` -> 0.5. Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number of cores")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{value!r} is not a number of cores >= 0")
        return float(value)
    m = _CPU.match(str(value))
    if m is None:
        raise ValueError(f"{value!r} is not a number of cores (e.g. 2 or '500m')")
    return float(m.group(1)) / (1000 if m.group(2) else 1)


def _parse_count(value: object) -> int:
    if isinstance(value, bool):
        return int(value)  # gpu=True in resources means one GPU
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer()):
        if value < 0:
            raise ValueError(f"{value!r} is not a count >= 0")
        return int(value)
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    raise ValueError(f"{value!r} is not a whole number of GPUs")


def parse_resources(resources: Mapping[str, object]) -> ResourceNeed:
    """The need ``resources`` states. Raises ValueError naming the first bad key."""
    unknown = sorted(set(resources) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown key {unknown[0]!r} (known: {', '.join(KEYS)})")
    try:
        cpu = parse_cpu(resources.get("cpu", 0))
    except ValueError as e:
        raise ValueError(f"cpu: {e}") from None
    try:
        memory = parse_bytes(resources.get("memory", 0))
    except ValueError as e:
        raise ValueError(f"memory: {e}") from None
    try:
        gpu = _parse_count(resources.get("gpu", 0))
    except ValueError as e:
        raise ValueError(f"gpu: {e}") from None
    try:
        gpu_memory = parse_bytes(resources.get("gpu_memory", 0))
    except ValueError as e:
        raise ValueError(f"gpu_memory: {e}") from None
    return ResourceNeed(cpu, memory, gpu, gpu_memory)


def resource_problem(resources: Mapping[str, object]) -> str | None:
    """What is wrong with ``resources``, or None."""
    try:
        parse_resources(resources)
    except ValueError as e:
        return str(e)
    return None


def format_bytes(n: int) -> str:
    """``17179869184`` -> ``"16Gi"``: the largest binary unit that divides ``n``
    (``"9000Gi"`` stays so), else the largest below ``n`` with one decimal."""
    units = ("Ti", "Gi", "Mi", "Ki")
    for unit in units:
        if n >= _UNITS[unit] and n % _UNITS[unit] == 0:
            return f"{n // _UNITS[unit]}{unit}"
    for unit in units:
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.1f}{unit}"
    return f"{n}B"
