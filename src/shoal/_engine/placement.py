"""Which nodes a task may run on, which it gets, and why the others were excluded.

Pure functions over :class:`~shoal._engine.state.Node` records. Finding the eligible
nodes is one pass over the candidates; choosing among them is at most one more pass
(``heapq.nsmallest`` for ``any``) or a seeded sample (``random``).
"""

from __future__ import annotations

import hashlib
import heapq
import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shoal._engine.capacity import fits, shortfall
from shoal._engine.state import Node
from shoal._plan import Method, Placement, Plan
from shoal._plan.resources import NO_NEED, ResourceNeed

# Ids listed per exclusion reason before "and N more": keeps the message of a failed
# placement readable with 10,000 nodes.
MAX_IDS_PER_REASON = 5


@dataclass(frozen=True)
class Requirements:
    """Every constraint a node must meet to run one task in one iteration."""

    datasets: tuple[str, ...]
    gpu: bool
    image: str
    specified: frozenset[str] | None
    excepted: frozenset[str]
    narrowed: frozenset[str] | None  # schedule_next_iter, this iteration only
    pinned: frozenset[str] | None  # fixed=True, nodes of the first placement
    need: ResourceNeed = NO_NEED  # the module's resources (capacity.py checks)

    def admits(self, node: Node) -> bool:
        """Whether ``node`` is eligible (the fast path of :meth:`reasons`)."""
        return (
            node.connected
            and (self.specified is None or node.node_id in self.specified)
            and node.node_id not in self.excepted
            and all(d in node.datasets for d in self.datasets)
            and (node.gpu or not self.gpu)
            and (node.images is None or self.image in node.images)
            and (self.narrowed is None or node.node_id in self.narrowed)
            and (self.pinned is None or node.node_id in self.pinned)
            and fits(self.need, node.gpu, node.capacity)
        )

    def reasons(self, node: Node) -> list[str]:
        """Every constraint that excludes ``node``; empty when it is eligible."""
        out: list[str] = []
        if not node.connected:
            out.append("disconnected")
        if self.specified is not None and node.node_id not in self.specified:
            out.append("not in specified_ids")
        if node.node_id in self.excepted:
            out.append("excluded by excepted_ids")
        missing = [d for d in self.datasets if d not in node.datasets]
        if missing:
            out.append(", ".join(f"lacks dataset {d!r}" for d in missing))
        if self.gpu and not node.gpu:
            out.append("no GPU")
        out.extend(r for r in shortfall(self.need, node.gpu, node.capacity) if r not in out)
        if node.images is not None and self.image not in node.images:
            out.append(f"lacks image {self.image!r}")
        if self.narrowed is not None and node.node_id not in self.narrowed:
            out.append("not chosen by schedule_next_iter")
        if self.pinned is not None and node.node_id not in self.pinned:
            out.append("not pinned by fixed placement")
        return out

    def eligible(self, nodes: Mapping[str, Node]) -> list[Node]:
        """The eligible nodes, sorted by node id.

        Only the smallest id restriction (specified, narrowed, pinned) is walked when
        there is one, so a task pinned to 3 nodes does not scan 10,000.
        """
        restrictions = [r for r in (self.specified, self.narrowed, self.pinned) if r is not None]
        candidates: Iterable[Node]
        if restrictions:
            smallest = min(restrictions, key=len)
            candidates = (nodes[i] for i in sorted(smallest) if i in nodes)
            return [n for n in candidates if self.admits(n)]
        out = [n for n in nodes.values() if self.admits(n)]
        out.sort(key=_node_id)
        return out


def _node_id(node: Node) -> str:
    return node.node_id


def _load_key(node: Node) -> tuple[int, str]:
    return (len(node.active), node.node_id)


def wanted(placement: Placement, n_eligible: int) -> int:
    """How many instances to place given ``n_eligible`` eligible nodes (at least 1)."""
    if placement.count is not None:
        want = placement.count
    elif placement.fraction is not None:
        # The epsilon keeps 0.3 * 10 == 3.0000000000000004 from rounding up to 4.
        want = math.ceil(placement.fraction * n_eligible - 1e-9)
    elif placement.method is Method.ALL:
        want = n_eligible
    else:
        want = 1
    return max(1, min(want, n_eligible))


def seeded_rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded by a stable hash of ``parts`` (never ``hash()``)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def choose(placement: Placement, eligible: list[Node], rng: random.Random) -> list[Node]:
    """Pick the nodes of a first placement from ``eligible`` (sorted by node id).

    Returns
    -------
    list[Node]
        Distinct nodes sorted by node id, so slot numbers are stable.
    """
    k = wanted(placement, len(eligible))
    if placement.method is Method.ALL:
        return eligible[:k]
    if placement.method is Method.ANY:
        chosen = heapq.nsmallest(k, eligible, key=_load_key)
    else:
        chosen = rng.sample(eligible, k)
    chosen.sort(key=_node_id)
    return chosen


def choose_retry(method: Method, candidates: list[Node], rng: random.Random) -> Node:
    """Pick the node of a retry among ``candidates`` (non-empty, sorted by node id)."""
    if method is Method.RANDOM:
        return rng.choice(candidates)
    return min(candidates, key=_load_key)


def explain(requirements: Requirements, nodes: Mapping[str, Node]) -> str:
    """Why no node is eligible: nodes grouped by the constraints that exclude them."""
    if not nodes:
        return "no node has joined"
    groups: dict[str, list[str]] = {}
    for node_id in sorted(nodes):
        why = ", ".join(requirements.reasons(nodes[node_id])) or "eligible"
        groups.setdefault(why, []).append(node_id)
    parts = []
    for why, ids in sorted(groups.items(), key=lambda g: (-len(g[1]), g[0])):
        shown = ", ".join(ids[:MAX_IDS_PER_REASON])
        more = f" and {len(ids) - MAX_IDS_PER_REASON} more" if len(ids) > MAX_IDS_PER_REASON else ""
        noun = "node" if len(ids) == 1 else "nodes"
        parts.append(f"{noun} {shown}{more}: {why}")
    return "; ".join(parts)


# ------------------------------------------------------------------ blue-green shares
# Sibling `random` tasks of one module name (seed 001's blue-green: versions 1.0.0 and
# 1.1.0 of "worker" at maximum=0.8 and 0.2) split the eligible nodes between them instead
# of drawing independent samples (which put some nodes in both and some in neither).


def share_group(plan: Plan, alias: str) -> tuple[str, ...] | None:
    """The sibling ``random`` tasks that split their nodes with task ``alias``.

    Returns
    -------
    tuple[str, ...] or None
        The aliases, in plan order, of every ``random`` task whose module has the same
        name as ``alias``'s (whatever its version), when there are two or more and
        ``alias`` is one of them; None otherwise (a lone ``random`` task samples).
    """
    task = plan.task(alias)
    if task.placement.method is not Method.RANDOM:
        return None
    name = plan.modules[task.module].name
    group = tuple(
        t.alias
        for t in plan.tasks
        if t.placement.method is Method.RANDOM and plan.modules[t.module].name == name
    )
    return group if len(group) > 1 else None


def _share(placement: Placement, n: int) -> float:
    if placement.count is not None:
        return float(placement.count)
    if placement.fraction is not None:
        return placement.fraction * n
    return 1.0


def choose_share(
    plan: Plan, group: tuple[str, ...], alias: str, eligible: list[Node], *seed: object
) -> list[Node]:
    """The nodes of task ``alias``: its share of one seeded permutation of ``eligible``.

    The permutation orders nodes by a hash of ``seed`` (the swarm's seed and id), the
    module name and the node id, so every sibling sees the same order of the nodes it
    can use, and the order does not change between iterations. The siblings' shares
    are consecutive: with ``n`` eligible nodes, task ``i`` of the group takes positions
    ``ceil(S(i-1)) .. ceil(S(i)) - 1``, where ``S(i)`` sums the shares of tasks ``0..i``
    (``fraction * n``, a ``count``, or 1), so 0.8 and 0.2 of 7 nodes are 6 and 1, and
    every eligible node runs exactly one sibling. A task whose share falls past the
    end wraps around (siblings whose shares sum over ``n`` overlap) and always gets at
    least one node.

    Returns
    -------
    list[Node]
        Distinct nodes sorted by node id, so slot numbers are stable.
    """
    n = len(eligible)
    name = plan.modules[plan.task(alias).module].name
    order = sorted(eligible, key=lambda node: _share_key(*seed, name, node.node_id))
    index = group.index(alias)
    before = sum(_share(plan.task(a).placement, n) for a in group[:index])
    mine = _share(plan.task(alias).placement, n)
    start = math.ceil(before - 1e-9)
    want = max(1, min(n, math.ceil(before + mine - 1e-9) - start))
    chosen = [order[(start + k) % n] for k in range(want)]
    chosen.sort(key=_node_id)
    return chosen


def _share_key(*parts: object) -> bytes:
    return hashlib.sha256("\x1f".join(map(str, ("share", *parts))).encode()).digest()


def sequence_order(nodes: Iterable[Node], *parts: object) -> list[Node]:
    """``nodes`` in the seeded order of a chain or ring: by ``sha256("chain", *parts,
    node_id)``, so the order depends on the seed and the task, never on ``hash()``."""

    def key(node: Node) -> bytes:
        text = "\x1f".join(map(str, ("chain", *parts, node.node_id)))
        return hashlib.sha256(text.encode()).digest()

    return sorted(nodes, key=key)
