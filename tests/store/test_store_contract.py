"""The store contract (shoal._store.base.Store), run against every backend.

Each test takes ``store`` (a fresh store) or ``backend`` (to open several) and is run
for memory, SQLite and PostgreSQL; ``sql_backend`` tests (restarts) for the SQL ones.
"""

from __future__ import annotations

import dataclasses
import math
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal._errors import ShoalError
from shoal._store import schema, sql
from shoal._store.base import LogRow, MetricRow, NodeRecord, ResultRow, Store, SwarmRecord

if TYPE_CHECKING:
    from conftest import Backend

HYPO = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Text a database can hold: no NUL (PostgreSQL) and no lone surrogates (UTF-8).
texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=40)
ids = st.text(
    st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), min_size=1, max_size=20
)
int64 = st.integers(-(2**63), 2**63 - 1)
finite = st.floats(allow_nan=False, allow_infinity=False)
json_values = st.recursive(
    st.none() | st.booleans() | int64 | finite | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
wires = st.one_of(
    st.builds(lambda b: {"inline": b}, st.binary(max_size=300)),
    st.builds(
        lambda d, n: {"blob": f"sha256:{d}", "length": n},
        st.text("0123456789abcdef", min_size=64, max_size=64),
        st.integers(0, 2**62),
    ),
    st.builds(
        lambda p, o, n: {"file": p, "offset": o, "length": n},
        texts,
        st.integers(0, 2**40),
        st.integers(0, 2**40),
    ),
)


def inline(data: bytes | str) -> dict[str, Any]:
    return {"inline": data.encode() if isinstance(data, str) else data}


def node(node_id: str, **kw: Any) -> NodeRecord:
    return NodeRecord(node_id=node_id, credential_hash=f"hash-{node_id}", **kw)


def swarm(swarm_id: str, created: float = 1.0, **kw: Any) -> SwarmRecord:
    return SwarmRecord(swarm_id, f"name-{swarm_id}", '{"tasks": []}', "owner", created, **kw)


def result(
    instance: str, tag: str = "w", *, swarm_id: str = "s", iteration: int = 0,
    alias: str = "t", node_id: str = "n1", value: Any = None,
) -> ResultRow:  # fmt: skip
    wire = inline(f"{instance}/{tag}") if value is None else value
    return ResultRow(swarm_id, iteration, alias, node_id, instance, tag, wire)


def log(message: str, *, swarm_id: str = "s", node_id: str = "n1", alias: str = "t",
        iteration: int = 0, level: str = "info", seq: int = 0) -> LogRow:  # fmt: skip
    return LogRow(swarm_id, node_id, alias, iteration, f"i-{node_id}", level, message, 5.5, seq)


def metric(name: str, value: float, *, swarm_id: str = "s", node_id: str = "n1",
           alias: str = "t", step: int = 0) -> MetricRow:  # fmt: skip
    return MetricRow(swarm_id, node_id, alias, 0, f"i-{node_id}", name, value, step, 7.25)


# ---------------------------------------------------------------------------- nodes
def test_node_round_trip_and_missing(store: Store) -> None:
    rec = NodeRecord(
        node_id="site-a",
        credential_hash="sha256:abc",
        datasets=("mnist", "cifar"),
        gpu=True,
        images=("python", "torch"),
        last_seen=1234.5,
        connected=True,
        info={"cpu": 8, "labels": ["x", "y"], "nested": {"a": None, "b": 1.5}},
    )
    store.node_upsert(rec)
    assert store.node_get("site-a") == rec
    assert store.node_get("site-b") is None
    store.node_upsert(node("site-c", images=None))
    assert store.node_get("site-c") == node("site-c", images=None)
    store.node_upsert(node("site-d", images=()))
    assert store.node_get("site-d") == node("site-d", images=())


def test_node_upsert_overwrites_every_field(store: Store) -> None:
    store.node_upsert(node("n", datasets=("a",), gpu=True, images=("p",), info={"k": 1}))
    new = NodeRecord("n", "other-hash", (), False, None, 99.0, True, {})
    store.node_upsert(new)
    assert store.node_get("n") == new
    assert store.nodes() == [new]


def test_nodes_sorted_by_id(store: Store) -> None:
    for name in ["b", "a", "B", "c-10", "c-9", "é"]:
        store.node_upsert(node(name))
    assert [n.node_id for n in store.nodes()] == sorted(["b", "a", "B", "c-10", "c-9", "é"])


@HYPO
@given(
    node_id=ids, cred=texts, datasets=st.lists(texts, max_size=4), gpu=st.booleans(),
    images=st.none() | st.lists(texts, max_size=3), seen=finite, connected=st.booleans(),
    info=st.dictionaries(texts, json_values, max_size=4),
)  # fmt: skip
def test_node_round_trip_property(
    store: Store, node_id: str, cred: str, datasets: list[str], gpu: bool,
    images: list[str] | None, seen: float, connected: bool, info: dict[str, Any],
) -> None:  # fmt: skip
    rec = NodeRecord(
        node_id, cred, tuple(datasets), gpu, None if images is None else tuple(images),
        seen, connected, info,
    )  # fmt: skip
    store.node_upsert(rec)
    assert store.node_get(node_id) == rec


# --------------------------------------------------------------------------- swarms
def test_swarm_round_trip_and_missing(store: Store) -> None:
    rec = SwarmRecord("s1", "fedavg", '{"v": 1}', "alice", 17.25, "running", "", -1)
    store.swarm_create(rec)
    assert store.swarm_get("s1") == rec
    assert store.swarm_get("s2") is None


def test_swarm_create_duplicate_raises_store_exists(store: Store) -> None:
    first = swarm("s1")
    store.swarm_create(first)
    with pytest.raises(ShoalError) as err:
        store.swarm_create(dataclasses.replace(first, name="other", created=99.0))
    assert err.value.code == "store.exists"
    assert store.swarm_get("s1") == first
    assert store.swarms() == [first]


def test_swarm_update(store: Store) -> None:
    rec = swarm("s1")
    store.swarm_create(rec)
    store.swarm_create(swarm("s2"))
    store.swarm_update("s1", "failed", "task 'w' failed on node n3", 7)
    assert store.swarm_get("s1") == dataclasses.replace(
        rec, status="failed", reason="task 'w' failed on node n3", iteration=7
    )
    assert store.swarm_get("s2") == swarm("s2")
    store.swarm_update("s1", "succeeded", "", 8)
    got = store.swarm_get("s1")
    assert got is not None and (got.status, got.reason, got.iteration) == ("succeeded", "", 8)


def test_swarm_update_unknown_raises_store_missing(store: Store) -> None:
    with pytest.raises(ShoalError) as err:
        store.swarm_update("nope", "failed", "", 0)
    assert err.value.code == "store.missing"
    assert store.swarm_get("nope") is None


def test_swarms_newest_first(store: Store) -> None:
    for sid, created in [("a", 2.0), ("b", 3.5), ("c", 1.0), ("d", 3.5)]:
        store.swarm_create(swarm(sid, created))
    assert [s.swarm_id for s in store.swarms()] == ["d", "b", "a", "c"]


@HYPO
@given(sid=ids, name=texts, plan=texts, owner=texts, created=finite, status=texts,
       reason=texts, iteration=int64)  # fmt: skip
def test_swarm_round_trip_property(
    store: Store, sid: str, name: str, plan: str, owner: str, created: float, status: str,
    reason: str, iteration: int,
) -> None:  # fmt: skip
    if store.swarm_get(sid) is not None:
        return  # hypothesis drew an id an earlier example took
    rec = SwarmRecord(sid, name, plan, owner, created, status, reason, iteration)
    store.swarm_create(rec)
    assert store.swarm_get(sid) == rec
    store.swarm_update(sid, reason, status, -iteration - 1)
    assert store.swarm_get(sid) == dataclasses.replace(
        rec, status=reason, reason=status, iteration=-iteration - 1
    )


# ------------------------------------------------------------------------ event log
def test_events_sequence_and_after(store: Store) -> None:
    assert list(store.events()) == []
    payloads = [b"first", b"", bytes(range(256)), b"\x00" * 1000]
    seqs = [store.event_append(p) for p in payloads]
    assert seqs == [1, 2, 3, 4]
    assert list(store.events()) == list(zip(seqs, payloads, strict=True))
    assert list(store.events(after=2)) == [(3, payloads[2]), (4, payloads[3])]
    assert list(store.events(after=4)) == []
    assert list(store.events(after=99)) == []
    assert store.event_append(b"five") == 5


def test_events_appended_together_take_the_next_numbers_in_order(store: Store) -> None:
    assert store.event_append(b"one") == 1
    assert store.event_append(b"started", b"succeeded") == 3  # the last one's number
    assert store.event_append(b"four") == 4
    assert list(store.events(after=1)) == [(2, b"started"), (3, b"succeeded"), (4, b"four")]
    with pytest.raises(ValueError, match="no events"):
        store.event_append()
    assert store.event_append(b"five") == 5


def test_events_many_pages_in_order(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql, "_PAGE", 7)  # the SQL store reads events 7 at a time
    n = 40
    with_seq = [(store.event_append(i.to_bytes(4, "big")), i) for i in range(n)]
    assert [s for s, _ in with_seq] == list(range(1, n + 1))
    got = list(store.events(after=10))
    assert got == [(s, i.to_bytes(4, "big")) for s, i in with_seq[10:]]


def test_events_large_payload(store: Store) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB
    seq = store.event_append(big)
    assert list(store.events(after=seq - 1)) == [(seq, big)]


def test_events_are_numbered_without_gaps(store: Store) -> None:
    """The contract every backend keeps; a SQL log edited by hand breaks it (below)."""
    for i in range(5):
        store.event_append(bytes([i]))
    for after in range(6):
        assert [s for s, _ in store.events(after)] == list(range(after + 1, 6))


@pytest.mark.parametrize("deleted", [[3], [3, 4], [1], [1, 2, 3, 4]], ids=str)
def test_a_gap_in_the_event_log_is_refused(sql_backend: Backend, deleted: list[int]) -> None:
    """Issue #14, point 6: a log with events deleted replayed silently and rewrote
    history. (The memory store cannot lose an event: it applies to SQL stores.)"""
    url = sql_backend.new_url()
    first = sql_backend.open(url)
    for i in range(5):
        first.event_append(bytes([i]))
    first.check_events()  # type: ignore[attr-defined]  # whole: one query, no error
    engine = first._engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(sa.delete(schema.events).where(schema.events.c.seq.in_(deleted)))
    again = sql_backend.open(url)  # e.g. a coordinator starting on the damaged file
    missing = deleted[0]
    got: list[tuple[int, bytes]] = []
    with pytest.raises(ShoalError) as err:
        for item in again.events():
            got.append(item)
    assert got == [(s, bytes([s - 1])) for s in range(1, missing)]  # up to the gap only
    assert err.value.code == "store.event_gap"
    assert f"event {missing} is missing" in err.value.message
    assert f"next event kept is {deleted[-1] + 1}" in err.value.message
    assert err.value.hint is not None and "backup" in err.value.hint
    with pytest.raises(ShoalError, match=f"event {missing} is missing"):
        again.check_events()  # type: ignore[attr-defined]  # what the coordinator asks first
    if missing > 1:  # reading from after the gap is fine
        assert [s for s, _ in again.events(after=deleted[-1])] == list(range(deleted[-1] + 1, 6))


# -------------------------------------------------------------------------- globals
def test_global_round_trip(store: Store) -> None:
    assert store.global_get("s", "w") is None
    assert store.global_keys("s") == []
    assert store.global_versions("s") == {}
    v1 = store.global_set("s", "w", inline("one"), -1)
    assert store.global_get("s", "w") == (v1, inline("one"))
    v2 = store.global_set("s", "w", inline("two"), 0)
    assert v2 != v1
    assert store.global_get("s", "w") == (v2, inline("two"))
    assert store.global_get("other", "w") is None


def test_global_keys_and_versions_per_swarm(store: Store) -> None:
    versions = {k: store.global_set("s", k, inline(k), 0) for k in ["lr", "Model", "b", "a"]}
    store.global_set("t", "zzz", inline("x"), 0)
    assert store.global_keys("s") == ["Model", "a", "b", "lr"]
    assert store.global_keys("t") == ["zzz"]
    assert store.global_versions("s") == versions
    versions["a"] = store.global_set("s", "a", inline("again"), 1)
    assert store.global_versions("s") == versions


def test_global_history_keeps_last_write_of_each_iteration(store: Store) -> None:
    assert store.global_history("s", "w") == []
    store.global_set("s", "w", inline("init"), -1)
    store.global_set("s", "w", inline("0a"), 0)
    store.global_set("s", "w", inline("0b"), 0)
    store.global_set("s", "w", inline("2"), 2)
    store.global_set("s", "w", inline("1 late"), 1)  # a straggler of iteration 1
    store.global_set("s", "other", inline("o"), 0)
    store.global_set("t", "w", inline("t"), 0)
    assert store.global_history("s", "w") == [
        (-1, inline("init")),
        (0, inline("0b")),
        (1, inline("1 late")),
        (2, inline("2")),
    ]
    assert store.global_get("s", "w") is not None
    assert store.global_get("s", "w")[1] == inline("1 late")  # type: ignore[index]


def test_global_versions_unique(backend: Backend) -> None:
    a, b = backend.open(), backend.open()
    seen = [a.global_set("s", "k", inline(str(i)), i) for i in range(50)]
    seen += [b.global_set("s", "k", inline(str(i)), i) for i in range(50)]
    assert len(set(seen)) == len(seen)
    assert all(isinstance(v, str) and v for v in seen)


@HYPO
@given(key=ids, value=wires, iteration=int64)
def test_global_wire_round_trip_property(
    store: Store, key: str, value: dict[str, Any], iteration: int
) -> None:
    version = store.global_set("prop", key, value, iteration)
    assert store.global_get("prop", key) == (version, value)
    assert (iteration, value) in store.global_history("prop", key)


# -------------------------------------------------------------------------- results
def test_results_of_instances_in_given_order(store: Store) -> None:
    for i, n in [("i1", "n1"), ("i2", "n2"), ("i3", "n3")]:
        store.result_add(result(i, node_id=n))
        store.result_add(result(i, "loss", node_id=n))
    got = store.results_of_instances(["i3", "missing", "i1"], "w")
    assert got == [result("i3", node_id="n3"), result("i1", node_id="n1")]
    assert store.results_of_instances(["i2"], "loss") == [result("i2", "loss", node_id="n2")]
    assert store.results_of_instances(["i2"], "nope") == []
    assert store.results_of_instances([], "w") == []


def test_results_of_many_instances(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql, "_IN_CHUNK", 7)  # the SQL store asks for 7 ids per query
    ids_ = [f"i{k:05d}" for k in range(40)]
    for k, i in enumerate(ids_):
        store.result_add(result(i, node_id=f"n{k}"))
    wanted = list(reversed(ids_))
    assert [r.instance_id for r in store.results_of_instances(wanted, "w")] == wanted


def test_results_of_task_sorted_and_filtered(store: Store) -> None:
    rows = [
        result("i1", node_id="n2"),
        result("i2", node_id="n1"),
        result("i3", node_id="N3"),
        result("i0", node_id="n1"),  # two instances on one node: by instance id
        result("i4", "loss", node_id="n1"),
        result("i5", alias="other", node_id="n0"),
        result("i6", iteration=1, node_id="n0"),
        result("i7", swarm_id="s2", node_id="n0"),
    ]
    for r in rows:
        store.result_add(r)
    got = store.results_of_task("s", 0, "t", "w")
    assert [(r.node_id, r.instance_id) for r in got] == [
        ("N3", "i3"),
        ("n1", "i0"),
        ("n1", "i2"),
        ("n2", "i1"),
    ]
    assert got[0] == rows[2]
    assert store.results_of_task("s", 0, "t", "loss") == [rows[4]]
    assert store.results_of_task("s", 0, "other", "w") == [rows[5]]
    assert store.results_of_task("s", 1, "t", "w") == [rows[6]]
    assert store.results_of_task("s2", 0, "t", "w") == [rows[7]]
    assert store.results_of_task("s", 5, "t", "w") == []


def test_result_add_is_idempotent_per_instance_and_tag(store: Store) -> None:
    store.result_add(result("i1", "a"))
    store.result_add(result("i1", "b"))
    store.result_add(result("i2", "c", node_id="n2"))
    replaced = result("i1", "a", value=inline("second"))
    store.result_add(replaced)
    store.result_add(replaced)
    assert store.results_of_instances(["i1"], "a") == [replaced]
    assert store.results_of_task("s", 0, "t", "a") == [replaced]
    assert store.result_tags("s", 0, "t") == ["a", "b", "c"]  # replacing keeps the place


def test_result_tags_first_stored_order(store: Store) -> None:
    assert store.result_tags("s", 0, "t") == []
    for i, tag in [("i1", "weights"), ("i2", "loss"), ("i1", "count"), ("i2", "weights")]:
        store.result_add(result(i, tag))
    store.result_add(result("i9", "zz", alias="other"))
    store.result_add(result("i8", "yy", iteration=1))
    assert store.result_tags("s", 0, "t") == ["weights", "loss", "count"]
    assert store.result_tags("s", 0, "other") == ["zz"]
    assert store.result_tags("s", 1, "t") == ["yy"]


def test_drop_results(store: Store) -> None:
    keep = [
        result("a0", iteration=0),
        result("b0", iteration=2),
        result("c0", swarm_id="s2", iteration=1),
    ]
    gone = [result("a1", iteration=1), result("b1", "loss", iteration=1, alias="u")]
    for r in keep + gone:
        store.result_add(r)
    assert not store.dropped("s", 1)
    store.drop_results("s", 1)
    assert store.dropped("s", 1)
    assert not store.dropped("s", 0) and not store.dropped("s2", 1)
    assert store.results_of_task("s", 1, "t", "w") == []
    assert store.results_of_instances(["a1", "b1"], "w") == []
    assert store.results_of_instances(["b1"], "loss") == []
    assert store.result_tags("s", 1, "u") == []
    assert store.results_of_instances(["a0", "b0", "c0"], "w") == keep
    # a straggler's result for a dropped iteration is ignored
    store.result_add(result("late", iteration=1))
    store.result_add(result("a1", iteration=1))
    assert store.results_of_task("s", 1, "t", "w") == []
    assert store.results_of_instances(["late", "a1"], "w") == []
    store.drop_results("s", 1)  # dropping twice is harmless
    assert store.dropped("s", 1)


@HYPO
@given(value=wires, iteration=int64, alias=ids, node_id=ids, instance=ids, tag=ids)
def test_result_round_trip_property(
    store: Store, value: dict[str, Any], iteration: int, alias: str, node_id: str,
    instance: str, tag: str,
) -> None:  # fmt: skip
    row = ResultRow("prop", iteration, alias, node_id, instance, tag, value)
    store.result_add(row)
    assert store.results_of_instances([instance], tag) == [row]
    assert row in store.results_of_task("prop", iteration, alias, tag)
    assert tag in store.result_tags("prop", iteration, alias)


# ---------------------------------------------------------------------------- state
def test_state_round_trip_and_isolation(store: Store) -> None:
    assert store.state_get("s", "n1", "t", "k") is None
    store.state_set("s", "n1", "t", "k", inline("v1"))
    store.state_set("s", "n2", "t", "k", inline("n2"))
    store.state_set("s", "n1", "u", "k", inline("u"))
    store.state_set("s2", "n1", "t", "k", inline("s2"))
    store.state_set("s", "n1", "t", "k2", {"blob": "sha256:" + "0" * 64, "length": 3})
    assert store.state_get("s", "n1", "t", "k") == inline("v1")
    store.state_set("s", "n1", "t", "k", inline("v2"))
    assert store.state_get("s", "n1", "t", "k") == inline("v2")
    assert store.state_get("s", "n2", "t", "k") == inline("n2")
    assert store.state_get("s", "n1", "u", "k") == inline("u")
    assert store.state_get("s2", "n1", "t", "k") == inline("s2")
    assert store.state_get("s", "n1", "t", "k2") == {"blob": "sha256:" + "0" * 64, "length": 3}


# ----------------------------------------------------------------------------- logs
def test_log_seq_assigned_and_increasing(store: Store) -> None:
    assert store.logs("s") == []
    for k in range(5):
        store.log_add(log(f"m{k}", seq=1000))  # the caller's seq is ignored
    got = store.logs("s")
    assert [r.message for r in got] == [f"m{k}" for k in range(5)]
    seqs = [r.seq for r in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5 and seqs[0] >= 1
    assert got[0] == dataclasses.replace(log("m0"), seq=seqs[0])


def test_logs_filters_after_and_limit(store: Store) -> None:
    rows = [
        log("a", node_id="n1", alias="t", level="info", iteration=0),
        log("b", node_id="n2", alias="t", level="error", iteration=0),
        log("c", node_id="n1", alias="u", level="info", iteration=1),
        log("other swarm", swarm_id="s2"),
        log("d", node_id="n2", alias="u", level="warning", iteration=1),
        log("e", node_id="n1", alias="t", level="error", iteration=2),
    ]
    for r in rows:
        store.log_add(r)

    def msgs(**kw: Any) -> list[str]:
        return [r.message for r in store.logs("s", **kw)]

    assert msgs() == ["a", "b", "c", "d", "e"]
    assert [r.message for r in store.logs("s2")] == ["other swarm"]
    assert store.logs("none") == []
    assert msgs(node="n1") == ["a", "c", "e"]
    assert msgs(task="u") == ["c", "d"]
    assert msgs(level="error") == ["b", "e"]
    assert msgs(iteration=1) == ["c", "d"]
    assert msgs(node="n1", task="t", level="error") == ["e"]
    assert msgs(node="n1", iteration=5) == []
    seq = {r.message: r.seq for r in store.logs("s")}
    assert msgs(after=seq["b"]) == ["c", "d", "e"]
    assert msgs(after=seq["e"]) == []
    assert msgs(limit=2) == ["a", "b"]
    assert msgs(after=seq["a"], limit=2, node="n1") == ["c", "e"]
    assert msgs(limit=0) == []


def test_logs_follow_by_after(store: Store) -> None:
    seen: list[LogRow] = []
    after = 0
    for k in range(30):
        store.log_add(log(f"m{k}"))
        if k % 7 == 0:
            page = store.logs("s", after=after)
            seen += page
            after = page[-1].seq if page else after
    seen += store.logs("s", after=after)
    assert [r.message for r in seen] == [f"m{k}" for k in range(30)]


@HYPO
@given(message=texts, level=texts, iteration=int64, time=finite, node_id=ids, alias=ids)
def test_log_round_trip_property(
    store: Store, message: str, level: str, iteration: int, time: float, node_id: str,
    alias: str,
) -> None:  # fmt: skip
    row = LogRow("prop", node_id, alias, iteration, "inst", level, message, time)
    store.log_add(row)
    last = store.logs("prop")[-1]
    assert last == dataclasses.replace(row, seq=last.seq)


def test_numbered_logs_and_metrics_sent_twice_are_stored_once(store: Store) -> None:
    # A node agent numbers each instance's records; an upload sent again after its
    # answer was lost carries the same numbers.
    for _ in range(2):
        for k in range(3):
            store.log_add(dataclasses.replace(log(f"m{k}"), ordinal=2 * k))
            store.metric_add(dataclasses.replace(metric("m", float(k)), ordinal=2 * k + 1))
    store.log_add(dataclasses.replace(log("other instance", node_id="n2"), ordinal=0))
    store.log_add(log("unnumbered"))
    store.log_add(log("unnumbered"))
    got = store.logs("s")
    assert [(r.message, r.ordinal) for r in got] == [
        ("m0", 0),
        ("m1", 2),
        ("m2", 4),
        ("other instance", 0),
        ("unnumbered", None),
        ("unnumbered", None),
    ]
    assert [r.seq for r in got] == sorted({r.seq for r in got})
    assert [(m.value, m.ordinal) for m in store.metrics("s")] == [(0.0, 1), (1.0, 3), (2.0, 5)]


# -------------------------------------------------------------------------- metrics
def test_metrics_order_and_filters(store: Store) -> None:
    rows = [
        metric("loss", 0.5, node_id="n1", alias="train", step=0),
        metric("acc", 0.7, node_id="n2", alias="eval", step=0),
        metric("loss", 0.25, node_id="n2", alias="train", step=1),
        metric("loss", 9.0, swarm_id="s2"),
        metric("loss", 0.125, node_id="n1", alias="train", step=2),
    ]
    for r in rows:
        store.metric_add(r)
    assert store.metrics("s") == [rows[0], rows[1], rows[2], rows[4]]
    assert store.metrics("s2") == [rows[3]]
    assert store.metrics("s", name="loss") == [rows[0], rows[2], rows[4]]
    assert store.metrics("s", node="n2") == [rows[1], rows[2]]
    assert store.metrics("s", task="eval") == [rows[1]]
    assert store.metrics("s", name="loss", node="n1", task="train") == [rows[0], rows[4]]
    assert store.metrics("s", name="nope") == []


def test_metric_special_values(store: Store) -> None:
    for v in [math.nan, math.inf, -math.inf, -0.0, 1e308, 5e-324]:
        store.metric_add(metric("m", v))
    got = [r.value for r in store.metrics("s")]
    assert math.isnan(got[0])
    assert got[1:] == [math.inf, -math.inf, 0.0, 1e308, 5e-324]


@HYPO
@given(name=ids, value=st.floats(), step=int64, iteration=int64, time=finite)
def test_metric_round_trip_property(
    store: Store, name: str, value: float, step: int, iteration: int, time: float
) -> None:
    row = MetricRow("prop", "n", "t", iteration, "i", name, value, step, time)
    store.metric_add(row)
    last = store.metrics("prop")[-1]
    if math.isnan(value):
        assert math.isnan(last.value)
        last = dataclasses.replace(last, value=value)
    assert last == row


# ---------------------------------------------------------------------- concurrency
def _threads(n: int, work: Callable[[int], None]) -> None:
    errors: list[BaseException] = []

    def run(k: int) -> None:
        try:
            work(k)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a writer thread hung"
    assert errors == []


def test_concurrent_writers(backend: Backend) -> None:
    store = backend.open()
    n_threads, n_ops = 8, 15
    event_seqs: list[int] = []
    versions: list[str] = []
    store.swarm_create(swarm("s"))

    def work(k: int) -> None:
        for j in range(n_ops):
            event_seqs.append(store.event_append(f"{k}:{j}".encode()))
            store.log_add(log(f"{k}:{j}", node_id=f"n{k}"))
            store.metric_add(metric("m", float(j), node_id=f"n{k}", step=j))
            store.result_add(result(f"i{k}-{j}", node_id=f"n{k}", iteration=j % 3))
            store.result_add(result(f"i{k}-{j}", node_id=f"n{k}", iteration=j % 3))
            versions.append(store.global_set("s", f"g{j % 4}", inline(f"{k}"), j))
            store.state_set("s", f"n{k}", "t", "count", inline(str(j)))
            store.node_upsert(node(f"n{k}", last_seen=float(j)))
            store.swarm_update("s", "running", "", j)
            assert store.global_get("s", f"g{j % 4}") is not None

    _threads(n_threads, work)
    total = n_threads * n_ops
    assert sorted(event_seqs) == list(range(1, total + 1))
    assert sorted(p for _, p in store.events()) == sorted(
        f"{k}:{j}".encode() for k in range(n_threads) for j in range(n_ops)
    )
    logs = store.logs("s")
    assert len(logs) == total and [r.seq for r in logs] == sorted({r.seq for r in logs})
    for k in range(n_threads):  # each writer's records keep its own order
        assert [r.message for r in logs if r.node_id == f"n{k}"] == [
            f"{k}:{j}" for j in range(n_ops)
        ]
        assert [m.step for m in store.metrics("s", node=f"n{k}")] == list(range(n_ops))
        assert store.state_get("s", f"n{k}", "t", "count") == inline(str(n_ops - 1))
    assert len(set(versions)) == total
    assert sum(len(store.results_of_task("s", it, "t", "w")) for it in range(3)) == total
    assert [n.node_id for n in store.nodes()] == sorted(f"n{k}" for k in range(n_threads))


def test_concurrent_followers_never_skip_logs(backend: Backend) -> None:
    store = backend.open()
    writers, per_writer = 4, 25
    done = threading.Event()
    seen: list[int] = []

    def follow() -> None:
        after = 0
        while True:
            finished = done.is_set()
            for r in store.logs("s", after=after):
                seen.append(r.seq)
                after = r.seq
            if finished:
                return

    def write(k: int) -> None:
        for j in range(per_writer):
            store.log_add(log(f"{k}:{j}"))

    reader = threading.Thread(target=follow)
    reader.start()
    try:
        _threads(writers, write)
    finally:
        done.set()
        reader.join(timeout=60)
    assert not reader.is_alive()
    assert seen == [r.seq for r in store.logs("s")]
    assert len(seen) == writers * per_writer


def test_concurrent_result_add_and_drop(backend: Backend) -> None:
    store = backend.open()

    def work(k: int) -> None:
        if k == 0:
            for it in range(10):
                store.drop_results("s", it)
            return
        for it in range(10):
            for j in range(5):
                store.result_add(result(f"i{k}-{it}-{j}", iteration=it, node_id=f"n{k}"))

    _threads(4, work)
    for it in range(10):
        assert store.dropped("s", it)
        assert store.results_of_task("s", it, "t", "w") == []  # nothing landed after a drop


# ------------------------------------------------------------------------ durability
def _write_everything(store: Store) -> dict[str, Any]:
    rec_node = node("n1", datasets=("d",), images=None, info={"x": [1, 2]})
    store.node_upsert(rec_node)
    store.swarm_create(swarm("s", 3.0))
    store.swarm_update("s", "running", "iteration 2", 2)
    seqs = [store.event_append(b"e1"), store.event_append(b"e2")]
    v = store.global_set("s", "w", inline("w0"), -1)
    v = store.global_set("s", "w", inline("w1"), 0)
    store.result_add(result("i1", node_id="n1"))
    store.result_add(result("i2", node_id="n2", iteration=1))
    store.drop_results("s", 1)
    store.state_set("s", "n1", "t", "k", inline("st"))
    store.log_add(log("hello"))
    store.metric_add(metric("loss", 0.5))
    return {"node": rec_node, "seqs": seqs, "version": v}


def _check_everything(store: Store, wrote: dict[str, Any]) -> None:
    assert store.nodes() == [wrote["node"]]
    assert store.swarm_get("s") == swarm("s", 3.0, reason="iteration 2", iteration=2)
    assert list(store.events()) == list(zip(wrote["seqs"], [b"e1", b"e2"], strict=True))
    assert store.global_get("s", "w") == (wrote["version"], inline("w1"))
    assert store.global_versions("s") == {"w": wrote["version"]}
    assert store.global_history("s", "w") == [(-1, inline("w0")), (0, inline("w1"))]
    assert store.results_of_task("s", 0, "t", "w") == [result("i1", node_id="n1")]
    assert store.dropped("s", 1) and not store.dropped("s", 0)
    assert store.results_of_instances(["i2"], "w") == []
    assert store.state_get("s", "n1", "t", "k") == inline("st")
    assert [r.message for r in store.logs("s")] == ["hello"]
    assert store.metrics("s") == [metric("loss", 0.5)]


def test_restart_sees_everything(sql_backend: Backend) -> None:
    url = sql_backend.new_url()
    first = sql_backend.open(url)
    wrote = _write_everything(first)
    second = sql_backend.open(url)  # while the first is still open
    _check_everything(second, wrote)
    first.close()  # type: ignore[attr-defined]
    third = sql_backend.open(url)  # after a clean close
    _check_everything(third, wrote)
    # numbering continues, versions stay unique
    assert third.event_append(b"e3") == 3
    log_seq = third.logs("s")[-1].seq
    third.log_add(log("again"))
    assert third.logs("s", after=log_seq)[0].seq > log_seq
    assert third.global_set("s", "w", inline("w2"), 1) not in {wrote["version"]}
    third.result_add(result("i3", iteration=1))
    assert third.results_of_instances(["i3"], "w") == []  # still dropped


# ----------------------------------------------------------- blob claims, grants
D1, D2 = "sha256:" + "1" * 64, "sha256:" + "2" * 64


def test_blob_claims_and_grants(store: Store) -> None:
    assert store.blob_claims(D1) == [] and store.blob_granted(D1, "node:a") == []
    store.blob_claim(D1, "s2", "value")
    store.blob_claim(D1, "s1", "value")
    store.blob_claim(D1, "s1", "value")  # idempotent
    store.blob_claim(D1, "s1", "bundle")  # the same bytes may be both
    assert store.blob_claims(D1) == [("s1", "bundle"), ("s1", "value"), ("s2", "value")]
    assert store.blob_claims(D2) == []
    store.blob_grant(D1, "node:a", "s1")
    store.blob_grant(D1, "node:a", "s1")  # idempotent
    store.blob_grant(D1, "node:a")  # it uploaded the bytes too
    store.blob_grant(D2, "user")
    assert store.blob_granted(D1, "node:a") == ["", "s1"]
    assert store.blob_granted(D1, "node:b") == [] and store.blob_granted(D1, "user") == []
    assert store.blob_granted(D2, "user") == [""]
    with pytest.raises(ShoalError) as err:
        store.blob_claim(D2, "s1", "secret")
    assert err.value.code == "store.blob_kind" and "'bundle' or a 'value'" in str(err.value)
    assert store.blob_claims(D2) == []


def test_a_swarms_blob_bytes_count_each_value_blob_once(store: Store) -> None:
    """What a swarm's upload quota counts: its distinct value blobs, by the length the
    first claim gave; bundles and other swarms' values do not count."""
    assert store.swarm_blob_bytes("s1") == 0
    store.blob_claim(D1, "s1", "value", 100)
    store.blob_claim(D1, "s1", "value", 999)  # a repeat keeps the first length
    store.blob_claim(D2, "s1", "value", 50)
    store.blob_claim(D2, "s1", "bundle", 7)
    store.blob_claim(D1, "s2", "value", 100)
    assert store.swarm_blob_bytes("s1") == 150
    assert store.swarm_blob_bytes("s2") == 100
    assert store.swarm_blob_bytes("s3") == 0


def test_a_value_claim_stays_within_the_quota_in_one_step(store: Store) -> None:
    """``value_claim``: claimed when it fits (a held value costs nothing again), else
    the bytes it would bring the swarm to, and nothing claimed."""
    assert store.value_claim(D1, "s1", 100, 120) is None
    assert store.value_claim(D1, "s1", 100, 120) is None  # held already: free
    assert store.value_claim(D2, "s1", 50, 120) == 150
    assert store.blob_claims(D2) == [] and store.swarm_blob_bytes("s1") == 100
    assert store.value_claim(D2, "s2", 50, 120) is None  # another swarm's quota
    assert store.value_claim(D2, "s1", 50, None) is None  # no bound
    assert store.swarm_blob_bytes("s1") == 150
    assert store.blob_claims(D2) == [("s1", "value"), ("s2", "value")]


def test_blob_claims_and_grants_survive_a_restart(sql_backend: Backend) -> None:
    url = sql_backend.new_url()
    first = sql_backend.open(url)
    first.blob_claim(D1, "s1", "value")
    first.blob_grant(D1, "node:a", "s1")
    first.close()  # type: ignore[attr-defined]
    again = sql_backend.open(url)
    assert again.blob_claims(D1) == [("s1", "value")]
    assert again.blob_granted(D1, "node:a") == ["s1"]


# ---------------------------------------------------------------- model-based test
SWARMS = st.sampled_from(["s1", "s2"])
ITERS = st.integers(-1, 2)
ALIASES = st.sampled_from(["a", "B"])
NODES = st.sampled_from(["n1", "n2", "N3"])
TAGS = st.sampled_from(["w", "loss"])
KEYS = st.sampled_from(["k", "K", "k2"])
LEVELS = st.sampled_from(["info", "error"])
maybe = st.none().__or__


class _Model:
    """What the contract says a store holds after a sequence of writes."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeRecord] = {}
        self.swarms: dict[str, SwarmRecord] = {}
        self.events: list[bytes] = []
        self.globals: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        self.history: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        self.versions: set[str] = set()
        self.results: dict[tuple[str, str], ResultRow] = {}  # insertion-ordered
        self.dropped: set[tuple[str, int]] = set()
        self.state: dict[tuple[str, str, str, str], dict[str, Any]] = {}
        self.logs: list[LogRow] = []
        self.metrics: list[MetricRow] = []


def test_store_matches_model(backend: Backend) -> None:
    from hypothesis.stateful import (
        RuleBasedStateMachine,
        invariant,
        precondition,
        rule,
        run_state_machine_as_test,
    )

    class Machine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.store = backend.open()
            self.m = _Model()

        # ------------------------------------------------------------ writes
        @rule(nid=NODES, gpu=st.booleans(), seen=st.integers(0, 9))
        def node_upsert(self, nid: str, gpu: bool, seen: int) -> None:
            rec = node(nid, gpu=gpu, last_seen=float(seen), info={"seen": seen})
            self.store.node_upsert(rec)
            self.m.nodes[nid] = rec

        @rule(sid=SWARMS, created=st.integers(0, 3))
        def swarm_create(self, sid: str, created: int) -> None:
            rec = swarm(sid, float(created))
            if sid in self.m.swarms:
                with pytest.raises(ShoalError, match="already exists"):
                    self.store.swarm_create(rec)
            else:
                self.store.swarm_create(rec)
                self.m.swarms[sid] = rec

        @precondition(lambda self: bool(self.m.swarms))
        @rule(data=st.data(), status=LEVELS, it=ITERS)
        def swarm_update(self, data: st.DataObject, status: str, it: int) -> None:
            sid = data.draw(st.sampled_from(sorted(self.m.swarms)))
            self.store.swarm_update(sid, status, f"why {it}", it)
            self.m.swarms[sid] = dataclasses.replace(
                self.m.swarms[sid], status=status, reason=f"why {it}", iteration=it
            )

        @rule(payload=st.binary(max_size=20))
        def event_append(self, payload: bytes) -> None:
            self.m.events.append(payload)
            assert self.store.event_append(payload) == len(self.m.events)

        @rule(sid=SWARMS, key=KEYS, it=ITERS, value=st.binary(max_size=8))
        def global_set(self, sid: str, key: str, it: int, value: bytes) -> None:
            version = self.store.global_set(sid, key, inline(value), it)
            assert version not in self.m.versions
            self.m.versions.add(version)
            self.m.globals[(sid, key)] = (version, inline(value))
            self.m.history.setdefault((sid, key), {})[it] = inline(value)

        @rule(sid=SWARMS, it=ITERS, alias=ALIASES, k=st.integers(0, 2), nid=NODES,
              tag=TAGS, value=st.binary(max_size=8))  # fmt: skip
        def result_add(
            self, sid: str, it: int, alias: str, k: int, nid: str, tag: str, value: bytes
        ) -> None:
            row = ResultRow(sid, it, alias, nid, f"{sid}/{it}/{alias}/{k}", tag, inline(value))
            self.store.result_add(row)
            if (sid, it) not in self.m.dropped:
                self.m.results[(row.instance_id, tag)] = row

        @rule(sid=SWARMS, it=ITERS)
        def drop_results(self, sid: str, it: int) -> None:
            self.store.drop_results(sid, it)
            self.m.dropped.add((sid, it))
            self.m.results = {
                k: r for k, r in self.m.results.items() if (r.swarm_id, r.iteration) != (sid, it)
            }

        @rule(sid=SWARMS, nid=NODES, alias=ALIASES, key=KEYS, value=st.binary(max_size=8))
        def state_set(self, sid: str, nid: str, alias: str, key: str, value: bytes) -> None:
            self.store.state_set(sid, nid, alias, key, inline(value))
            self.m.state[(sid, nid, alias, key)] = inline(value)

        @rule(sid=SWARMS, nid=NODES, alias=ALIASES, it=ITERS, level=LEVELS, msg=texts)
        def log_add(self, sid: str, nid: str, alias: str, it: int, level: str, msg: str) -> None:
            row = log(msg, swarm_id=sid, node_id=nid, alias=alias, iteration=it, level=level)
            self.store.log_add(row)
            self.m.logs.append(row)

        @rule(sid=SWARMS, nid=NODES, alias=ALIASES, name=KEYS, value=finite)
        def metric_add(self, sid: str, nid: str, alias: str, name: str, value: float) -> None:
            row = metric(name, value, swarm_id=sid, node_id=nid, alias=alias)
            self.store.metric_add(row)
            self.m.metrics.append(row)

        # ------------------------------------------------------------- reads
        @rule(sid=SWARMS, key=KEYS)
        def check_global(self, sid: str, key: str) -> None:
            assert self.store.global_get(sid, key) == self.m.globals.get((sid, key))
            assert self.store.global_history(sid, key) == sorted(
                self.m.history.get((sid, key), {}).items(), key=lambda kv: kv[0]
            )
            mine = {k: v for (s, k), (v, _) in self.m.globals.items() if s == sid}
            assert self.store.global_versions(sid) == mine
            assert self.store.global_keys(sid) == sorted(mine)

        @rule(sid=SWARMS, it=ITERS, alias=ALIASES, tag=TAGS)
        def check_task(self, sid: str, it: int, alias: str, tag: str) -> None:
            rows = [
                r
                for r in self.m.results.values()
                if (r.swarm_id, r.iteration, r.alias) == (sid, it, alias)
            ]
            want = sorted(
                (r for r in rows if r.tag == tag), key=lambda r: (r.node_id, r.instance_id)
            )
            assert self.store.results_of_task(sid, it, alias, tag) == want
            assert self.store.result_tags(sid, it, alias) == list(
                dict.fromkeys(r.tag for r in rows)
            )
            assert self.store.dropped(sid, it) == ((sid, it) in self.m.dropped)

        @rule(keys=st.lists(st.tuples(SWARMS, ITERS, ALIASES, st.integers(0, 2)), max_size=5),
              tag=TAGS)  # fmt: skip
        def check_instances(self, keys: list[tuple[str, int, str, int]], tag: str) -> None:
            ids_ = [f"{s}/{i}/{a}/{k}" for s, i, a, k in keys]
            want = [self.m.results[(i, tag)] for i in ids_ if (i, tag) in self.m.results]
            assert self.store.results_of_instances(ids_, tag) == want

        @rule(sid=SWARMS, nid=NODES, alias=ALIASES, key=KEYS)
        def check_state(self, sid: str, nid: str, alias: str, key: str) -> None:
            assert self.store.state_get(sid, nid, alias, key) == self.m.state.get(
                (sid, nid, alias, key)
            )

        @rule(sid=SWARMS, nid=maybe(NODES), alias=maybe(ALIASES), it=maybe(ITERS),
              level=maybe(LEVELS), after=st.integers(0, 12),
              limit=maybe(st.integers(0, 4)))  # fmt: skip
        def check_logs(
            self, sid: str, nid: str | None, alias: str | None, it: int | None,
            level: str | None, after: int, limit: int | None,
        ) -> None:  # fmt: skip
            got = self.store.logs(
                sid, node=nid, task=alias, level=level, iteration=it, after=after, limit=limit
            )
            # a fresh store numbers its log records 1, 2, ...: the model's index + 1
            want = [
                dataclasses.replace(r, seq=n)
                for n, r in enumerate(self.m.logs, 1)
                if n > after and r.swarm_id == sid
                and nid in (None, r.node_id) and alias in (None, r.alias)
                and it in (None, r.iteration) and level in (None, r.level)
            ]  # fmt: skip
            assert got == (want if limit is None else want[:limit])

        @rule(sid=SWARMS, name=maybe(KEYS), nid=maybe(NODES), alias=maybe(ALIASES))
        def check_metrics(
            self, sid: str, name: str | None, nid: str | None, alias: str | None
        ) -> None:
            want = [
                r for r in self.m.metrics
                if r.swarm_id == sid and name in (None, r.name)
                and nid in (None, r.node_id) and alias in (None, r.alias)
            ]  # fmt: skip
            assert self.store.metrics(sid, name=name, node=nid, task=alias) == want

        @rule(after=st.integers(0, 10))
        def check_events(self, after: int) -> None:
            want = [(n, p) for n, p in enumerate(self.m.events, 1) if n > after]
            assert list(self.store.events(after)) == want

        @invariant()
        def nodes_and_swarms(self) -> None:
            assert self.store.nodes() == [self.m.nodes[k] for k in sorted(self.m.nodes)]
            want = sorted(
                self.m.swarms.values(), key=lambda s: (s.created, s.swarm_id), reverse=True
            )
            assert self.store.swarms() == want

    examples = 40 if backend.name == "memory" else 15
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=examples,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
