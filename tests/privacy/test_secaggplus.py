"""SecAgg+: the sparse graph, sums over it, dropouts among neighbours, clear failures."""

from __future__ import annotations

import math
import secrets

import numpy as np
import pytest
from scipy import stats

from shoal.privacy import _secagg as sa

LABEL = "swarm-plus/0"


def _setup(n: int, degree: int) -> tuple[dict[int, sa.ClientKeys], dict, sa.Graph]:
    keys = {u: sa.ClientKeys.derive(secrets.token_bytes(32), LABEL) for u in range(1, n + 1)}
    publics = {u: k.public() for u, k in keys.items()}
    graph = sa.Graph.build(publics, degree, sa.graph_seed(LABEL, publics))
    return keys, publics, graph


def _round(
    inputs: dict[int, np.ndarray],
    degree: int,
    threshold: int,
    *,
    drop_before_mask: frozenset[int] = frozenset(),
    drop_before_reveal: frozenset[int] = frozenset(),
    setup: tuple[dict[int, sa.ClientKeys], dict, sa.Graph] | None = None,
) -> np.ndarray:
    keys, publics, graph = setup or _setup(len(inputs), degree)
    sent = {u: sa.share(u, keys[u], publics, threshold, LABEL, graph.neighbours(u)) for u in inputs}
    masked = {
        u: sa.mask(u, keys[u], x, publics, LABEL, neighbours=graph.neighbours(u))
        for u, x in inputs.items()
        if u not in drop_before_mask
    }
    survivors = set(masked)
    reveals = {
        w: sa.reveal(
            w,
            keys[w],
            publics,
            {u: sent[u][w] for u in sent if w in sent[u]},
            survivors,
            LABEL,
            graph,
        )
        for w in survivors - drop_before_reveal
    }
    masked_sum = np.sum(list(masked.values()), axis=0, dtype=np.uint64)  # wraps mod 2**64
    return sa.unmask(masked_sum, survivors, publics, reveals, threshold, LABEL, graph=graph)


def _search(graph: sa.Graph, nodes: set[int]) -> list[set[int]]:
    left, parts = set(nodes), []
    while left:
        todo = [left.pop()]
        part = set(todo)
        while todo:
            for v in graph.neighbours(todo.pop()) & left:
                left.discard(v)
                part.add(v)
                todo.append(v)
        parts.append(part)
    return parts


def test_the_graph_is_k_regular_symmetric_connected_and_the_same_for_everyone() -> None:
    _, publics, graph = _setup(50, 8)
    assert graph.degree == 8 and graph.group_size == 9 and not graph.complete
    for u in graph.ids:
        near = graph.neighbours(u)
        assert len(near) == 8 and u not in near
        assert all(u in graph.neighbours(v) for v in near)  # undirected
    assert len(graph.components(graph.ids)) == 1
    again = sa.Graph.build(sorted(publics, reverse=True), 8, sa.graph_seed(LABEL, publics))
    assert all(again.neighbours(u) == graph.neighbours(u) for u in graph.ids)
    # Another round's keys give another graph; an odd degree is rounded up to even.
    _, _, other = _setup(50, 7)
    assert other.degree == 8
    assert any(other.neighbours(u) != graph.neighbours(u) for u in graph.ids)
    # The O(n) components on the ring agree with a search over the neighbours.
    rng = np.random.default_rng(5)
    for keep in (0.2, 0.4, 0.6, 0.9):
        nodes = {u for u in graph.ids if rng.random() < keep}
        parts = graph.components(nodes)
        assert sorted(map(sorted, parts)) == sorted(map(sorted, _search(graph, nodes)))
    # k >= n - 1 is plain SecAgg's complete graph.
    _, _, full = _setup(7, 100)
    assert full.complete and full.neighbours(3) == {1, 2, 4, 5, 6, 7}


def test_the_sparse_sum_is_exact_and_shares_go_only_to_neighbours() -> None:
    rng = np.random.default_rng(0)
    n, degree, t = 60, 8, 6  # t = ceil(2/3 * 9)
    inputs = {u: rng.normal(0, 100, size=50) for u in range(1, n + 1)}
    setup = _setup(n, degree)
    keys, publics, graph = setup
    sent = sa.share(1, keys[1], publics, t, LABEL, graph.neighbours(1))
    assert set(sent) == graph.neighbours(1) | {1}
    total = _round(inputs, degree, t, setup=setup)
    exact = np.sum(list(inputs.values()), axis=0)
    assert np.max(np.abs(total - exact)) <= n * 2.0**-25
    assert np.max(np.abs(total - exact)) > 0  # fixed point, not the float sum


def test_dropouts_among_a_clients_neighbours_are_recovered() -> None:
    rng = np.random.default_rng(1)
    n, degree, t = 40, 8, 6  # each share group of 9 tolerates 3 missing holders
    inputs = {u: rng.uniform(-1, 1, size=20) for u in range(1, n + 1)}
    setup = _setup(n, degree)
    near = sorted(setup[2].neighbours(1))
    # k + 1 - t = 3 of client 1's neighbours drop: two after sharing (their mask keys
    # are rebuilt from their own groups), one after masking (its self-mask seed is
    # rebuilt without it); b_1 is rebuilt from the 6 left of its group.
    before_mask, before_reveal = frozenset(near[:2]), frozenset(near[2:3])
    total = _round(
        inputs,
        degree,
        t,
        drop_before_mask=before_mask,
        drop_before_reveal=before_reveal,
        setup=setup,
    )
    exact = np.sum([x for u, x in inputs.items() if u not in before_mask], axis=0)
    np.testing.assert_allclose(total, exact, atol=n * 2.0**-25)


def test_too_many_dropped_holders_fail_clearly_instead_of_a_wrong_sum() -> None:
    rng = np.random.default_rng(2)
    n, degree, t = 40, 8, 6
    inputs = {u: rng.uniform(-1, 1, size=20) for u in range(1, n + 1)}
    setup = _setup(n, degree)
    near = sorted(setup[2].neighbours(1))
    # Four of client 1's neighbours send their masked input, then vanish: only client 1
    # and 4 neighbours can reveal b_1's shares, one fewer than t.
    with pytest.raises(ValueError, match=r"client 1's self-mask seed \(5 shares\).* at least 6"):
        _round(inputs, degree, t, drop_before_reveal=frozenset(near[:4]), setup=setup)
    # A client dropped after sharing, with 3 of its neighbours gone too: 5 of its 8
    # holders reveal its mask key.
    v = near[0]
    gone = frozenset(sorted(setup[2].neighbours(v) - {1})[:3])
    with pytest.raises(ValueError, match=f"dropped client {v}'s mask key \\(5 shares\\)"):
        _round(
            inputs,
            degree,
            t,
            drop_before_mask=frozenset({v}),
            drop_before_reveal=gone,
            setup=setup,
        )


def test_survivors_that_fall_apart_on_the_graph_reveal_nothing() -> None:
    # Two runs of k/2 = 2 consecutive clients (in the graph's ring order) send nothing:
    # the others split into two parts whose sums the server could otherwise unmask.
    rng = np.random.default_rng(3)
    n, degree, t = 20, 4, 4
    inputs = {u: rng.uniform(-1, 1, size=5) for u in range(1, n + 1)}
    keys, publics, graph = setup = _setup(n, degree)
    ring = graph.order
    cut = frozenset({ring[0], ring[1], ring[10], ring[11]})
    survivors = set(inputs) - cut
    assert len(graph.components(survivors)) == 2
    with pytest.raises(ValueError, match="not connected on the round's graph"):
        _round(inputs, degree, t, drop_before_mask=cut, setup=setup)
    # The server refuses too, even given every share.
    sent = {u: sa.share(u, keys[u], publics, t, LABEL, graph.neighbours(u)) for u in inputs}
    reveals = {
        w: sa.reveal(
            w, keys[w], publics, {u: s[w] for u, s in sent.items() if w in s}, survivors, LABEL
        )
        for w in survivors
    }
    masked = [
        sa.mask(u, keys[u], inputs[u], publics, LABEL, neighbours=graph.neighbours(u))
        for u in survivors
    ]
    total = np.sum(masked, axis=0, dtype=np.uint64)
    with pytest.raises(ValueError, match="parts of \\[8, 8\\] clients"):
        sa.unmask(total, survivors, publics, reveals, t, LABEL, graph=graph)


def test_a_sparse_masked_input_is_statistically_independent_of_the_clients_value() -> None:
    # With 4 neighbours out of 30, the server's view of client 1's masked input for zeros
    # and for large values: both uniform on Z_2**64, indistinguishable from each other.
    def view(x: np.ndarray) -> np.ndarray:
        keys, publics, graph = _setup(30, 4)
        assert len(graph.neighbours(1)) == 4
        return sa.mask(1, keys[1], x, publics, LABEL, neighbours=graph.neighbours(1))

    zeros = np.concatenate([view(np.zeros(500)) for _ in range(20)])
    large = np.concatenate([view(np.full(500, 1e6)) for _ in range(20)])
    for sample in (zeros, large):
        assert stats.kstest(sample / 2.0**64, "uniform").pvalue > 0.001
    assert stats.ks_2samp(zeros / 2.0**64, large / 2.0**64).pvalue > 0.001


@pytest.mark.parametrize(("n", "expected"), [(10, 9), (30, 29), (40, 38), (100, 42), (1000, 48)])
def test_the_default_degree_meets_its_stated_bounds_and_no_smaller_one_does(
    n: int, expected: int
) -> None:
    # Recomputed with scipy's binomial survival function, independently of sa._tail.
    def meets(k: int) -> bool:
        t = math.ceil(2 / 3 * (k + 1))
        colluders = n * stats.binom.sf(t - 1, k, sa.CORRUPT)
        split = (n * (sa.CORRUPT + sa.DROPOUT) ** (k // 2)) ** 2
        unrecoverable = n * stats.binom.sf(k - t, k, sa.DROPOUT)
        return bool(colluders <= 2.0**-40 and split <= 2.0**-40 and unrecoverable <= 2.0**-20)

    k = sa.default_degree(n)
    assert k == expected
    if k < n - 1:
        assert meets(k)
    assert not any(meets(smaller) for smaller in range(2, min(k, n - 1), 2))
    assert sa.default_degree(n, threshold=5) == n - 1  # an absolute t: the complete graph
