"""Virtual nodes: ids and the datasets each one maps."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from shoal._data.partition import partition as split
from shoal._errors import ShoalError
from shoal._world.service import NodeInfo


def node_id(i: int) -> str:
    """The id of virtual node ``i``."""
    return f"node-{i:05d}"


def build_nodes(
    n: int | None,
    datasets: Mapping[str, str | os.PathLike[str]] | None,
    partition_scheme: str | None,
    seed: int,
    data_dir: Path,
    nodes_dir: Path | None = None,
) -> list[NodeInfo]:
    """Create the simulator's nodes.

    With ``nodes_dir`` every subfolder is a node named after it, and each file or folder
    in it is a dataset named after its stem. Otherwise ``n`` nodes, each mapping every
    dataset of ``datasets``: split with ``partition_scheme`` if given, else shared whole.
    """
    if nodes_dir is not None:
        return _from_dir(Path(nodes_dir), datasets or {})
    if n is None or n < 1:
        raise ShoalError(
            f"nodes={n!r}: a simulation needs at least one node",
            code="sim.nodes",
            hint="pass nodes=N (--nodes N) or a nodes_dir",
        )
    maps: list[dict[str, Path]] = [{} for _ in range(n)]
    for name, raw in (datasets or {}).items():
        path = Path(raw).resolve()
        if not path.exists():
            raise ShoalError(
                f"dataset {name!r}: {raw} does not exist",
                code="sim.dataset",
                hint="give --dataset NAME=PATH with an existing file or folder",
            )
        if partition_scheme is None:
            for m in maps:
                m[name] = path
        else:
            for m, p in zip(
                maps, split(path, n, partition_scheme, seed, data_dir / name, name), strict=True
            ):
                m[name] = p
    return [NodeInfo(node_id(i), maps[i]) for i in range(n)]


def _from_dir(root: Path, shared: Mapping[str, str | os.PathLike[str]]) -> list[NodeInfo]:
    if not root.is_dir():
        raise ShoalError(
            f"nodes dir {root} is not a folder",
            code="sim.nodes_dir",
            hint="give a folder with one subfolder per node",
        )
    nodes = []
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        mapping = {
            p.stem if p.is_file() else p.name: p.resolve()
            for p in sorted(sub.iterdir())
            if not p.name.startswith(".")
        }
        mapping.update({k: Path(v).resolve() for k, v in shared.items()})
        nodes.append(NodeInfo(sub.name, mapping))
    if not nodes:
        raise ShoalError(
            f"nodes dir {root} has no subfolders",
            code="sim.nodes_dir",
            hint="create one subfolder per node holding that node's files",
        )
    return nodes
