"""A full database disk is a clear error too (issue #14, point 5): the write that finds
no space answers 507 ``storage.full``, which a node agent does not retry, and the
coordinator logs it. (A full blob folder, end to end with a real agent:
tests/faults/test_fault_disk_full.py.)"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import msgpack
import pytest
from deploy_harness import Coordinator, deployment, submit
from helpers import one_task, poll_for, tiny_tmpfs

from shoal._coord.storage import is_full, storage_full
from shoal._store.base import ResultRow
from shoal._store.sql import SQLStore

pytestmark = pytest.mark.timeout(120)

VALUE = b"\x01" * 60_000  # an inline value (under the 64 KiB blob threshold)


def test_full_disks_are_recognised_whatever_raised(tmp_path: Path) -> None:
    with tiny_tmpfs(tmp_path / "disk", "1m") as disk:
        store = SQLStore(f"sqlite:///{disk / 'shoal.db'}")
        try:
            with pytest.raises(Exception) as raised:  # whatever SQLAlchemy wraps
                for i in range(100):  # 6 MB: never fits
                    store.result_add(ResultRow("s", 0, "t", "n", f"i{i}", "v", {"inline": VALUE}))
        finally:
            store.close()
    assert is_full(raised.value), repr(raised.value)
    answer = storage_full(raised.value, "results.add")
    assert answer is not None and (answer.status, answer.code) == (507, "storage.full")
    assert answer.message == "the coordinator's storage is full: writing results.add failed"
    assert is_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_full(OSError(errno.EACCES, "Permission denied"))
    assert storage_full(ValueError("nothing to do with disks"), "x") is None


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    """A coordinator whose database is on a 1 MiB tmpfs."""
    with tiny_tmpfs(tmp_path / "disk", "1m") as disk, deployment(tmp_path) as d:
        yield d.coordinator(db=f"sqlite:///{disk / 'shoal.db'}", heartbeat_timeout=30)


def _world(node: httpx.Client, iid: str, op: str, args: dict[str, Any]) -> httpx.Response:
    body = msgpack.packb({"instance_id": iid, "op": op, "args": args}, use_bin_type=True)
    return node.post("/v1/world", content=body, headers={"Content-Type": "application/msgpack"})


def test_a_full_database_answers_507_and_the_operator_sees_it(coord: Coordinator) -> None:
    enrol = httpx.post(
        f"{coord.url}/v1/nodes/enrol", json={"join_token": coord.join_token, "node_id": "full"}
    )
    assert enrol.status_code == 200, enrol.text
    headers = {"Authorization": f"Bearer {enrol.json()['credential']}"}
    with coord.user() as user, httpx.Client(base_url=coord.url, headers=headers) as node:
        node.post("/v1/nodes/heartbeat", json={"datasets": []}).raise_for_status()
        submit(user, one_task("time.sleep(60)", "full"))

        def run_item() -> str | None:
            items = node.get("/v1/nodes/instructions", params={"wait": 1}).json()
            return next((i["instance_id"] for i in items if i["kind"] == "run"), None)

        iid = poll_for(run_item, 30, "the run instruction")
        answers = []
        for n in range(100):  # 6 MB of results: the database fills up long before
            resp = _world(node, iid, "results.add", {"tag": f"v{n}", "value": {"inline": VALUE}})
            answers.append(resp.status_code)
            if resp.status_code != 200:
                break
    assert answers[-1] == 507, answers
    assert set(answers[:-1]) == {200}, answers
    error = resp.json()["error"]
    assert error["code"] == "storage.full"
    assert error["message"].startswith("the coordinator's storage is full: writing results.add")
    assert "free disk space" in error["hint"]
    assert "storage full: writing results.add" in coord.output()
