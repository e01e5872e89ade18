"""A SQLite store keeps large result values in files beside the database
(``shoal._store.spill``): written before the row, read back the same, deleted when
their result is replaced or dropped, and a missing one is named, not misread."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from shoal._codec import decode, encode
from shoal._errors import ShoalError
from shoal._store.base import ResultRow
from shoal._store.spill import SPILL_MIN
from shoal._store.sql import SQLStore

pytestmark = pytest.mark.timeout(60)

BIG = np.arange(SPILL_MIN // 4 * 3, dtype=np.float32)  # 192 KiB


def _row(instance: str, value: object, iteration: int = 0, tag: str = "w") -> ResultRow:
    return ResultRow("sw", iteration, "worker", "n1", instance, tag, {"inline": encode(value)})


def _value(row: ResultRow) -> object:
    assert isinstance(row.value, dict)
    return decode(row.value["inline"])


def _files(db: Path) -> list[Path]:
    folder = db.with_name(f"{db.name}-values")
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def _stored_lengths(db: Path) -> list[int]:
    with sqlite3.connect(db) as conn:
        return [n for (n,) in conn.execute("SELECT length(value) FROM shoal_results")]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "shoal.db"


def test_a_large_value_is_a_file_and_reads_back_the_same(db: Path) -> None:
    store = SQLStore(f"sqlite:///{db}")
    store.result_add(_row("sw/0/worker/0/0", BIG))
    store.result_add(_row("sw/0/worker/1/0", [1, 2, 3]))  # small: in its row
    assert len(_files(db)) == 1
    assert _files(db)[0].stat().st_size > BIG.nbytes
    assert sorted(_stored_lengths(db)) != [] and max(_stored_lengths(db)) < 256
    by_instance = store.results_of_instances(["sw/0/worker/0/0", "sw/0/worker/1/0"], "w")
    by_task = store.results_of_task("sw", 0, "worker", "w")
    for rows in (by_instance, by_task):
        values = {r.instance_id: _value(r) for r in rows}
        np.testing.assert_array_equal(values["sw/0/worker/0/0"], BIG)
        assert values["sw/0/worker/1/0"] == [1, 2, 3]
    store.close()
    reopened = SQLStore(f"sqlite:///{db}")  # the reference outlives the process's state
    [row] = reopened.results_of_instances(["sw/0/worker/0/0"], "w")
    np.testing.assert_array_equal(_value(row), BIG)
    reopened.close()


def test_a_replaced_value_leaves_no_file_behind(db: Path) -> None:
    store = SQLStore(f"sqlite:///{db}")
    store.result_add(_row("sw/0/worker/0/0", BIG))
    first = _files(db)
    store.result_add(_row("sw/0/worker/0/0", BIG + 1))  # the same (instance, tag)
    second = _files(db)
    assert len(second) == 1 and second != first
    [row] = store.results_of_instances(["sw/0/worker/0/0"], "w")
    np.testing.assert_array_equal(_value(row), BIG + 1)
    store.result_add(_row("sw/0/worker/0/0", "small now"))
    assert _files(db) == []
    [row] = store.results_of_instances(["sw/0/worker/0/0"], "w")
    assert _value(row) == "small now"
    store.close()


def test_dropped_results_take_their_files_and_a_late_one_writes_none(db: Path) -> None:
    store = SQLStore(f"sqlite:///{db}")
    store.result_add(_row("sw/0/worker/0/0", BIG, iteration=0))
    store.result_add(_row("sw/1/worker/0/0", BIG, iteration=1))
    assert len(_files(db)) == 2
    store.drop_results("sw", 0)
    assert len(_files(db)) == 1
    store.result_add(_row("sw/0/worker/1/0", BIG, iteration=0))  # after the drop: ignored
    assert len(_files(db)) == 1
    assert store.results_of_task("sw", 0, "worker", "w") == []
    assert len(store.results_of_task("sw", 1, "worker", "w")) == 1
    store.close()


def test_a_failed_write_removes_the_file_it_wrote(db: Path) -> None:
    store = SQLStore(f"sqlite:///{db}")
    bad = ResultRow("sw", 0, "worker", None, "sw/0/worker/0/0", "w", {"inline": encode(BIG)})  # type: ignore[arg-type]
    with pytest.raises(Exception, match="NOT NULL"):
        store.result_add(bad)
    assert _files(db) == []
    store.close()


def test_a_missing_value_file_is_named_with_the_fix(db: Path) -> None:
    store = SQLStore(f"sqlite:///{db}")
    store.result_add(_row("sw/0/worker/0/0", BIG))
    _files(db)[0].unlink()
    with pytest.raises(ShoalError, match=r"shoal\.db-values") as info:
        store.results_of_task("sw", 0, "worker", "w")
    assert info.value.code == "store.value_missing"
    assert "together with the database" in (info.value.hint or "")
    store.close()


def test_an_in_memory_store_keeps_large_values_in_its_rows() -> None:
    store = SQLStore("sqlite://")
    store.result_add(_row("sw/0/worker/0/0", BIG))
    [row] = store.results_of_instances(["sw/0/worker/0/0"], "w")
    np.testing.assert_array_equal(_value(row), BIG)
    store.close()
