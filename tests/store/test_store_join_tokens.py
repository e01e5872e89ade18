"""The store contract for identities: join tokens and node revocation, run against every
backend (memory, SQLite, PostgreSQL) like tests/store/test_store_contract.py."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

import pytest

from shoal._errors import ShoalError
from shoal._store.base import JoinTokenRecord, NodeRecord, Store

if TYPE_CHECKING:
    from conftest import Backend

pytestmark = pytest.mark.timeout(120)


def token(token_id: str, **kw: object) -> JoinTokenRecord:
    fields: dict[str, object] = {"created": 10.0, **kw}
    return JoinTokenRecord(token_id, f"sha256:{token_id}", **fields)  # type: ignore[arg-type]


def test_join_token_round_trip_find_and_list(store: Store) -> None:
    full = JoinTokenRecord("t1", "sha256:aa", 5.5, 99.25, 3, 1, "site-a", None)
    store.join_token_put(full)
    store.join_token_put(token("t0", created=1.0))
    store.join_token_put(token("t2", created=5.5))
    assert store.join_token_get("t1") == full
    assert store.join_token_get("nope") is None
    assert store.join_token_find("sha256:aa") == full
    assert store.join_token_find("sha256:zz") is None
    assert [t.token_id for t in store.join_tokens()] == ["t0", "t1", "t2"]


def test_join_token_put_replaces_and_refuses_a_shared_secret(store: Store) -> None:
    store.join_token_put(token("a"))
    new = dataclasses.replace(token("a"), token_hash="sha256:new", max_uses=2)
    store.join_token_put(new)
    assert store.join_token_get("a") == new
    assert store.join_token_find("sha256:a") is None
    with pytest.raises(ShoalError) as err:
        store.join_token_put(dataclasses.replace(token("b"), token_hash="sha256:new"))
    assert err.value.code == "store.exists"
    assert store.join_token_get("b") is None


def test_join_token_use_counts_until_the_limit(store: Store) -> None:
    store.join_token_put(token("two", max_uses=2))
    assert store.join_token_use("two", 11.0) is True
    assert store.join_token_use("two", 12.0) is True
    assert store.join_token_use("two", 13.0) is False
    got = store.join_token_get("two")
    assert got is not None and got.uses == 2 and got.state(13.0) == "used up"
    store.join_token_put(token("any"))
    assert all(store.join_token_use("any", 11.0) for _ in range(5))
    assert store.join_token_use("unknown", 11.0) is False


def test_join_token_use_refuses_expired_and_revoked(store: Store) -> None:
    store.join_token_put(token("exp", expires=20.0))
    assert store.join_token_use("exp", 19.5) is True
    assert store.join_token_use("exp", 20.0) is False
    store.join_token_put(token("rev"))
    assert store.join_token_revoke("rev", 30.0) is True
    assert store.join_token_revoke("rev", 40.0) is True  # keeps the first time
    got = store.join_token_get("rev")
    assert got is not None and got.revoked == 30.0 and got.state(31.0) == "revoked"
    assert store.join_token_use("rev", 31.0) is False
    assert store.join_token_revoke("unknown", 31.0) is False
    assert store.join_token_get("exp") == token("exp", expires=20.0, uses=1)


def test_concurrent_uses_never_exceed_the_limit(backend: Backend) -> None:
    store = backend.open()
    store.join_token_put(token("few", max_uses=3))
    wins: list[bool] = []
    lock = threading.Lock()

    def use() -> None:
        ok = store.join_token_use("few", 11.0)
        with lock:
            wins.append(ok)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(wins) == [False] * 5 + [True] * 3
    got = store.join_token_get("few")
    assert got is not None and got.uses == 3


def test_join_tokens_survive_a_reopen(sql_backend: Backend) -> None:
    url = sql_backend.new_url()
    first = sql_backend.open(url)
    first.join_token_put(token("kept", max_uses=1, node_id="n1"))
    assert first.join_token_use("kept", 11.0)
    again = sql_backend.open(url)
    assert again.join_token_get("kept") == token("kept", max_uses=1, node_id="n1", uses=1)


def test_node_revocation_round_trips(store: Store) -> None:
    revoked = NodeRecord("n1", "", ("d",), False, None, 3.0, False, {}, revoked=42.5)
    store.node_upsert(revoked)
    assert store.node_get("n1") == revoked
    store.node_upsert(dataclasses.replace(revoked, credential_hash="sha256:x", revoked=None))
    got = store.node_get("n1")
    assert got is not None and got.revoked is None and got.credential_hash == "sha256:x"
