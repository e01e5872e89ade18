"""Cycles in a task graph: ``has_cycles`` (seed 002's validation snippet) and the search
that validation uses."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

N = TypeVar("N", bound=Hashable)


def find_cycle(edges: Iterable[tuple[N, N]]) -> list[N] | None:
    """A cycle of the directed graph given by ``edges``, as ``[a, b, ..., a]``, or None.

    Iterative depth-first search, so a long chain does not hit the recursion limit.
    """
    graph: dict[N, list[N]] = {}
    for u, d in edges:
        graph.setdefault(u, []).append(d)
        graph.setdefault(d, [])
    color: dict[N, int] = {}  # 1: on the current path, 2: done
    for root in graph:
        if root in color:
            continue
        path: list[N] = [root]
        todo: list[Iterator[N]] = [iter(graph[root])]
        color[root] = 1
        while todo:
            step = _next(todo[-1])
            if step is _END:
                color[path.pop()] = 2
                todo.pop()
                continue
            node: N = step
            if color.get(node) == 1:
                return [*path[path.index(node) :], node]
            if node not in color:
                color[node] = 1
                path.append(node)
                todo.append(iter(graph[node]))
    return None


_END = object()


def _next(it: Any) -> Any:
    return next(it, _END)


def has_cycles(graph: Any) -> bool:
    """Whether a task graph has a cycle.

    Parameters
    ----------
    graph
        What ``Swarm.prepare_graph()`` returns (a :class:`shoal.Plan`), any object with
        an ``edges`` attribute of ``(upstream, downstream)`` pairs, an iterable of such
        pairs, or a mapping of each node to its downstream nodes.

    Returns
    -------
    bool
        True if some task is (transitively) its own upstream. A plan made by
        ``prepare_graph()`` never has one: ``prepare_graph()`` refuses a cyclic swarm
        with an error that names the cycle, so seed 002's check
        ``if has_cycles(swarm.prepare_graph())`` never sees a cycle itself.
    """
    edges: Iterable[tuple[Any, Any]]
    if hasattr(graph, "edges") and not isinstance(graph, Mapping):
        edges = graph.edges
    elif isinstance(graph, Mapping):
        edges = [(u, d) for u, downs in graph.items() for d in downs]
    else:
        edges = graph
    return find_cycle(edges) is not None
