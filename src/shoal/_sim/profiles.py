"""Node profiles: heterogeneous virtual fleets (GPUs, CPUs, memory, datasets, images).

``shoal.simulate(nodes=[NodeProfile(count=90, memory="16Gi"), NodeProfile(count=10,
gpus=1, memory="64Gi")])``, a dict with the same keys, or a TOML nodes file::

    [[nodes]]
    count = 90
    cpu = 8
    memory = "16Gi"

    [[nodes]]
    count = 10
    gpus = 1
    gpu_memory = "24Gi"
    memory = "64Gi"
    datasets = { mnist = "data/mnist.npz" }   # relative to the file

A profiled node advertises its facts, so placement checks every module's
``resources`` and ``gpu=True`` against them, exactly as on a real deployment.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from shoal._data.nodes import build_nodes
from shoal._errors import ShoalError
from shoal._plan.resources import parse_bytes, parse_cpu
from shoal._world.service import NodeInfo

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 needs the tomli backport
    import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]

_HINT = (
    "give count, name, cpu, memory, gpus, gpu_memory, datasets, images, cpu_usage, "
    'memory_usage, rtt_ms, loss, e.g. NodeProfile(count=10, gpus=1, memory="64Gi")'
)


@dataclass(frozen=True)
class NodeProfile:
    """One kind of virtual node in a simulated fleet.

    Parameters
    ----------
    count
        How many nodes of this kind.
    name
        Their ids: ``name`` for one node, ``name-00000``, ``name-00001``, ... for more.
        None: numbered with the rest of the fleet (``node-00000``, ...).
    cpu
        Cores one instance may use (None: this machine's count).
    memory
        Memory one instance may use: ``"16Gi"``, ``"512Mi"`` or bytes (None: this
        machine's).
    gpus
        GPUs (``gpu=True`` tasks and ``resources={"gpu": n}`` need them).
    gpu_memory
        Memory of each GPU (``"24Gi"``).
    datasets
        ``{name: path}`` these nodes map (besides ``simulate(datasets=...)``).
    images
        The images these nodes offer (None: every image).
    cpu_usage, memory_usage
        What ``local.get_performance_metrics()`` reports (0 to 1).
    rtt_ms, loss
        The link to the coordinator ``local.get_network_quality()`` reports.
    """

    count: int = 1
    name: str | None = None
    cpu: float | str | None = None
    memory: int | str | None = None
    gpus: int = 0
    gpu_memory: int | str | None = None
    datasets: Mapping[str, str | os.PathLike[str]] = field(default_factory=dict)
    images: Sequence[str] | None = None
    cpu_usage: float = 0.0
    memory_usage: float = 0.0
    rtt_ms: float = 0.0
    loss: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1:
            problems.append(f"count={self.count!r} is not an int >= 1")
        if not isinstance(self.gpus, int) or isinstance(self.gpus, bool) or self.gpus < 0:
            problems.append(f"gpus={self.gpus!r} is not an int >= 0")
        for key, parse in (
            ("cpu", parse_cpu),
            ("memory", parse_bytes),
            ("gpu_memory", parse_bytes),
        ):
            value = getattr(self, key)
            if value is not None:
                try:
                    parse(value)
                except ValueError as e:
                    problems.append(f"{key}: {e}")
        for key in ("cpu_usage", "memory_usage", "loss"):
            value = getattr(self, key)
            if not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
                problems.append(f"{key}={value!r} is not a number from 0 to 1")
        if not isinstance(self.rtt_ms, int | float) or self.rtt_ms < 0:
            problems.append(f"rtt_ms={self.rtt_ms!r} is not a number of milliseconds >= 0")
        if problems:
            raise ShoalError(
                f"node profile {self.name or ''}: " + "; ".join(problems),
                code="sim.node_profile",
                hint=_HINT,
            )

    @classmethod
    def of(cls, spec: NodeProfile | Mapping[str, Any]) -> NodeProfile:
        """A profile from itself or from a dict with the same keys."""
        if isinstance(spec, NodeProfile):
            return spec
        if not isinstance(spec, Mapping):
            raise ShoalError(
                f"node profile {spec!r} is neither a NodeProfile nor a dict",
                code="sim.node_profile",
                hint=_HINT,
            )
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(spec) - known)
        if unknown:
            raise ShoalError(
                f"node profile has unknown key(s) {', '.join(map(repr, unknown))}",
                code="sim.node_profile",
                hint=_HINT,
            )
        return cls(**dict(spec))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> list[NodeProfile]:
        """The ``[[nodes]]`` tables of a TOML nodes file (dataset paths relative to it)."""
        p = Path(path)
        try:
            doc = tomllib.loads(p.read_text())
        except OSError as e:
            raise ShoalError(
                f"cannot read nodes file {p}: {e.strerror}",
                code="sim.node_profile",
                hint="give the path of a TOML file with [[nodes]] tables",
            ) from None
        except tomllib.TOMLDecodeError as e:
            raise ShoalError(
                f"nodes file {p} is not valid TOML: {e}",
                code="sim.node_profile",
                hint="fix the syntax at the position shown",
            ) from None
        tables = doc.get("nodes")
        if not isinstance(tables, list) or not tables or set(doc) - {"nodes"}:
            raise ShoalError(
                f"nodes file {p} has no [[nodes]] tables (or other top-level keys)",
                code="sim.node_profile",
                hint="write one [[nodes]] table per kind of node, e.g. count = 10, gpus = 1",
            )
        base = p.resolve().parent
        out = []
        for table in tables:
            sets = dict(table)
            if isinstance(sets.get("datasets"), dict):
                sets["datasets"] = {
                    k: str(v if Path(v).is_absolute() else base / v)
                    for k, v in sets["datasets"].items()
                }
            out.append(cls.of(sets))
        return out

    @classmethod
    def parse(cls, spec: str) -> NodeProfile:
        """``"count=10,gpus=1,memory=64Gi"`` (the CLI's ``--node-profile``)."""
        sets: dict[str, Any] = {}
        for part in filter(None, (x.strip() for x in spec.split(","))):
            key, eq, value = part.partition("=")
            if not eq:
                raise ShoalError(
                    f"node profile {spec!r}: {part!r} is not KEY=VALUE",
                    code="sim.node_profile",
                    hint='e.g. --node-profile "count=10,gpus=1,memory=64Gi"',
                )
            key = key.strip()
            if key in ("count", "gpus"):
                sets[key] = _number(spec, key, value, int)
            elif key in ("cpu_usage", "memory_usage", "rtt_ms", "loss"):
                sets[key] = _number(spec, key, value, float)
            elif key == "images":
                sets[key] = [x for x in value.split("+") if x]
            else:
                sets[key] = value.strip()
        return cls.of(sets)

    def facts(self) -> dict[str, int]:
        """What ``local.get_resources()`` answers on these nodes (host values for the
        facts the profile leaves out)."""
        host = NodeInfo("", {}).resources
        return {
            "cpu": max(1, round(parse_cpu(self.cpu))) if self.cpu is not None else host["cpu"],
            "memory": parse_bytes(self.memory) if self.memory is not None else host["memory"],
            "gpu": self.gpus,
            "gpu_memory": parse_bytes(self.gpu_memory) if self.gpu_memory is not None else 0,
        }


def _number(spec: str, key: str, value: str, kind: type[int] | type[float]) -> int | float:
    try:
        return kind(value)
    except ValueError:
        raise ShoalError(
            f"node profile {spec!r}: {key}={value!r} is not a number",
            code="sim.node_profile",
            hint=_HINT,
        ) from None


def profiled_nodes(
    profiles: Iterable[NodeProfile | Mapping[str, Any]],
    datasets: Mapping[str, str | os.PathLike[str]] | None,
    partition: str | None,
    seed: int,
    data_dir: Path,
) -> list[NodeInfo]:
    """The virtual nodes of ``profiles``: the fleet's shared (or partitioned) datasets,
    each profile's own datasets, and its facts advertised to placement."""
    kinds = [NodeProfile.of(p) for p in profiles]
    if not kinds:
        raise ShoalError(
            "nodes=[]: a simulation needs at least one node",
            code="sim.nodes",
            hint="pass nodes=N or a list of NodeProfile",
        )
    total = sum(k.count for k in kinds)
    shared = build_nodes(total, datasets, partition, seed, data_dir)
    out: list[NodeInfo] = []
    i = 0
    seen: set[str] = set()
    for kind in kinds:
        facts = kind.facts()
        own = {name: _existing(name, raw) for name, raw in kind.datasets.items()}
        for j in range(kind.count):
            base = shared[i]
            i += 1
            if kind.name is None:
                node_id = base.node_id
            else:
                node_id = kind.name if kind.count == 1 else f"{kind.name}-{j:05d}"
            if node_id in seen:
                raise ShoalError(
                    f"node profiles give two nodes the id {node_id!r}",
                    code="sim.node_profile",
                    hint="give each named profile its own name",
                )
            seen.add(node_id)
            out.append(
                NodeInfo(
                    node_id,
                    {**base.datasets, **own},
                    dict(facts),
                    advertised=True,
                    images=None if kind.images is None else frozenset(kind.images),
                    load={
                        "cpu_usage": float(kind.cpu_usage),
                        "memory_usage": float(kind.memory_usage),
                        "rtt_s": float(kind.rtt_ms) / 1000.0,
                        "loss": float(kind.loss),
                    },
                )
            )
    return out


def _existing(name: str, raw: str | os.PathLike[str]) -> Path:
    path = Path(raw).resolve()
    if not path.exists():
        raise ShoalError(
            f"node profile dataset {name!r}: {raw} does not exist",
            code="sim.dataset",
            hint="give datasets = { NAME = PATH } with an existing file or folder",
        )
    return path
