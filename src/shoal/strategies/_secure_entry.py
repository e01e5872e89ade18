"""Task-side code of secure FedAvg: the client steps and the aggregator.

The round label is ``swarm_id/iteration``: keys are fresh every round, so a client
whose mask key is reconstructed after it dropped loses nothing in other rounds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from shoal.privacy import _secagg as sa
from shoal.runtime import Task, World
from shoal.strategies._keys import config_key
from shoal.strategies._params import flatten

KEYS_TAG = "secagg.keys"
SHARED_TAG = "secagg.shared"
MASKED_TAG = "secagg.masked"
SENT_TAG = "secagg.sent"
REVEAL_TAG = "secagg.reveal"
_SHARE_B = 66  # bytes of a share (an element of GF(2**521 - 1))


def share_tag(node_id: str) -> str:
    """The result tag of the shares addressed to ``node_id``."""
    return f"secagg.share.{node_id}"


def _settings(world: World, key: str) -> dict[str, Any]:
    settings: dict[str, Any] = world.globals[config_key(key)]["secagg"]
    return settings


def _label(world: World) -> str:
    return f"{world.swarm_id}/{world.iteration}"


def _keys(task: Task) -> sa.ClientKeys:
    return sa.ClientKeys.derive(task.local.secret("secagg"), _label(task.world))


def threshold(setting: float, n: int) -> int:
    """Shares needed to recover a secret among ``n`` holders: ``setting`` itself when
    it is an int >= 1, else ``ceil(setting * n)``."""
    return sa.group_threshold(setting, n)


def _graph(
    world: World, settings: Mapping[str, Any], publics: Mapping[int, Mapping[str, bytes]]
) -> tuple[sa.Graph, int]:
    """The round's graph over the advertised clients and the threshold of a share group.

    Every client and the aggregator build the same one: the degree from the settings
    (``None``: :func:`shoal.privacy._secagg.default_degree`), the order from the round
    label and the advertised keys."""
    n = len(publics)
    degree = settings.get("neighbours")
    if degree is None:
        degree = sa.default_degree(n, float(settings["threshold"]))
    label = _label(world)
    graph = sa.Graph.build(publics, int(degree), sa.graph_seed(label, publics))
    return graph, threshold(settings["threshold"], graph.group_size)


def _publics(world: World, settings: Mapping[str, Any]) -> dict[str, dict[str, bytes]]:
    found: dict[str, dict[str, bytes]] = world.results.select(KEYS_TAG, alias=settings["advertise"])
    return found


def _ids(nodes: Any) -> dict[str, int]:
    # Everyone numbers the advertised clients the same way: by sorted node id, from 1.
    return {node: i + 1 for i, node in enumerate(sorted(nodes))}


def run_advertise(config: Mapping[str, Any]) -> None:
    """Step 1 on a client: publish the round's public keys."""
    task = Task()
    task.world.results.add(KEYS_TAG, _keys(task).public())


def run_share(config: Mapping[str, Any]) -> None:
    """Step 2 on a client: encrypted Shamir shares of its secrets, one tag per recipient."""
    task = Task()
    world = task.world
    settings = _settings(world, str(config["key"]))
    publics = _publics(world, settings)
    ids = _ids(publics)
    by_number = {ids[n]: p for n, p in publics.items()}
    graph, t = _graph(world, settings, by_number)
    me = ids[world.node_id]
    shares = sa.share(me, _keys(task), by_number, t, _label(world), graph.neighbours(me))
    by_id = {i: n for n, i in ids.items()}
    for v, blob in shares.items():
        world.results.add(share_tag(by_id[v]), blob)
    world.results.add(SHARED_TAG, True)


def mask_update(task: Task, vector: np.ndarray, key: str) -> None:
    """Step 3 on a client (inside :func:`train_round`): publish the masked input."""
    world = task.world
    settings = _settings(world, key)
    publics = _publics(world, settings)
    ids = _ids(publics)
    shared = world.results.select(SHARED_TAG, alias=settings["share"])
    graph, _ = _graph(world, settings, {ids[n]: p for n, p in publics.items()})
    me = ids[world.node_id]
    masked = sa.mask(
        me,
        _keys(task),
        vector,
        {ids[n]: publics[n] for n in shared},
        _label(world),
        int(settings["frac_bits"]),
        graph.neighbours(me),
    )
    world.results.add(MASKED_TAG, masked)
    world.results.add(SENT_TAG, True)


def run_reveal(config: Mapping[str, Any]) -> None:
    """Step 4 on a client: reveal the shares that let the server unmask the sum."""
    task = Task()
    world = task.world
    settings = _settings(world, str(config["key"]))
    publics = _publics(world, settings)
    ids = _ids(publics)
    me = ids[world.node_id]
    received = world.results.select(share_tag(world.node_id), alias=settings["share"])
    survivors = {ids[n] for n in world.results.select(SENT_TAG, alias=settings["worker"])}
    by_number = {ids[n]: p for n, p in publics.items()}
    graph, _ = _graph(world, settings, by_number)
    answer = sa.reveal(
        me,
        _keys(task),
        by_number,
        {ids[n]: blob for n, blob in received.items()},
        survivors,
        _label(world),
        graph,
    )
    world.results.add(
        REVEAL_TAG,
        {
            kind: {str(v): s.to_bytes(_SHARE_B, "big") for v, s in d.items()}
            for kind, d in answer.items()
        },
    )


def run_secure_aggregator(config: Mapping[str, Any]) -> None:
    """Step 5: the sum of the survivors' weighted updates, then the FedAvg step."""
    task = Task()
    world = task.world
    key = str(config["key"])
    settings = _settings(world, key)
    publics = _publics(world, settings)
    ids = _ids(publics)
    shared = world.results.select(SHARED_TAG, alias=settings["share"])
    total: np.ndarray | None = None
    survivors: set[int] = set()
    for node_id, masked in world.results.stream(MASKED_TAG, alias=settings["worker"]):
        m = np.asarray(masked, dtype=np.uint64)
        total = m.copy() if total is None else total + m  # mod 2**64
        survivors.add(ids[node_id])
    if total is None:
        raise RuntimeError("no masked updates to aggregate")
    reveals = {
        ids[n]: {
            kind: {int(v): int.from_bytes(s, "big") for v, s in d.items()} for kind, d in r.items()
        }
        for n, r in world.results.select(REVEAL_TAG, alias=settings["reveal"]).items()
    }
    graph, t = _graph(world, settings, {ids[n]: p for n, p in publics.items()})
    summed = sa.unmask(
        total,
        survivors,
        {ids[n]: publics[n] for n in shared},
        reveals,
        t,
        _label(world),
        int(settings["frac_bits"]),
        graph,
    )
    x, layout = flatten(world.globals[key])
    weighted, examples = summed[:-1], summed[-1]
    if examples <= 0:
        raise RuntimeError("the securely summed sample count is not positive")
    world.globals[key] = layout.unflatten(x + float(config["lr"]) * weighted / examples)
    task.logger.info(
        f"round {world.iteration}: secure sum of {len(survivors)} updates "
        f"({examples:.0f} examples; {len(shared) - len(survivors)} dropped after sharing; "
        f"{graph.degree} neighbours each, threshold {t})"
    )
