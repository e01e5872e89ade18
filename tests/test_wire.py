"""Wire values in segment files: appending, reading, and recycling dropped segments."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from shoal import _wire as wire
from shoal._store.memory import MemoryStore
from shoal._wire import Outbox, SegmentReader, from_wire, retire_bucket, to_wire

pytestmark = pytest.mark.timeout(60)


def vec(k: float, n: int = 50_000) -> np.ndarray:
    return np.full(n, k, dtype=np.float32)


def test_values_append_in_one_segment_per_bucket_and_read_back(tmp_path: Path) -> None:
    out = Outbox(tmp_path, "w1")
    small = to_wire({"a": 1}, out, "r0")
    wires = [to_wire(vec(k), out, "r0") for k in range(3)] + [to_wire(vec(9), out, "g")]
    out.close()
    assert "inline" in small  # small values never touch a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1-g.seg", "w1-r0.seg"]
    assert [w["offset"] for w in wires[:3]] == [0, wires[0]["length"], 2 * wires[0]["length"]]
    with SegmentReader() as reader:
        got = [float(reader.value(w)[0]) for w in wires]
    assert got == [0.0, 1.0, 2.0, 9.0]
    assert from_wire(small) == {"a": 1}


def test_a_retired_segment_is_reused_from_its_start_and_reads_the_new_values(
    tmp_path: Path,
) -> None:
    first = Outbox(tmp_path, "w1")
    old = [to_wire(vec(k), first, "r0") for k in range(4)]
    first.close()
    inode = os.stat(old[0]["file"]).st_ino
    assert retire_bucket(tmp_path, "r0") == []  # nothing to delete: kept for reuse
    assert [p.name for p in tmp_path.iterdir()] == ["free-w1-r0.seg"]

    second = Outbox(tmp_path, "w2")
    new = [to_wire(vec(10 + k), second, "r3") for k in range(2)]
    second.close()
    assert [p.name for p in tmp_path.iterdir()] == ["w2-r3.seg"]
    assert os.stat(new[0]["file"]).st_ino == inode  # the same file, not a new one
    assert new[0]["offset"] == 0
    assert [float(from_wire(w)[0]) for w in new] == [10.0, 11.0]


def test_huge_values_are_never_recycled_so_a_mapped_view_stays_intact(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "MMAP_MIN", 100_000)  # 200 KB counts as huge here
    out = Outbox(tmp_path, "w1")
    huge = to_wire(vec(7), out, "r0")
    small = to_wire(vec(1, n=20_000), out, "r0")  # 80 KB: large, not huge
    out.close()
    assert Path(huge["file"]).name == "w1-r0-big.seg"
    view = from_wire(huge)  # a view of a memory map, not a copy
    assert isinstance(wire.wire_buffer(huge), memoryview)
    doomed = retire_bucket(tmp_path, "r0")
    assert doomed == [Path(huge["file"])]
    for path in doomed:
        path.unlink()
    again = Outbox(tmp_path, "w2")
    for _ in range(3):  # overwrite whatever was recycled
        to_wire(vec(-1), again, "r1")
    again.close()
    assert float(view.min()) == float(view.max()) == 7.0
    assert Path(small["file"]).name == "w1-r0.seg"


def test_a_bucket_reopened_after_eviction_goes_on_after_its_last_value(tmp_path: Path) -> None:
    (tmp_path / "free-x-r9.seg").write_bytes(b"\0" * 10)  # a retired segment to claim
    out = Outbox(tmp_path, "w1", max_open=1)
    a = to_wire(vec(1), out, "r0")
    to_wire(vec(2), out, "r1")  # closes r0's file
    b = to_wire(vec(3), out, "r0")
    out.close()
    assert b["offset"] == a["length"]
    assert [float(from_wire(w)[0]) for w in (a, b)] == [1.0, 3.0]


def test_memory_store_recycles_dropped_segments_and_settle_deletes_the_unused(
    tmp_path: Path,
) -> None:
    for name in ["w1-r3.seg", "w2-r3.seg", "w1-r3-big.seg", "w1-r13.seg", "w1-r4.seg"]:
        (tmp_path / name).write_bytes(b"x")
    store = MemoryStore(tmp_path)
    store.drop_results("s", 3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[:2] == ["free-w1-r3.seg", "free-w2-r3.seg"]
    store.drop_results("s", 3)  # dropping twice renames nothing twice
    store.settle()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w1-r13.seg", "w1-r4.seg"]


def test_a_stream_reads_ahead_in_order_and_can_be_left_early(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "READ_AHEAD_BATCH", 400_000)  # two values a batch
    out = Outbox(tmp_path, "w1")
    wires = [to_wire(vec(k), out, "r0") for k in range(20)] + [to_wire({"k": 20}, out, "r0")]
    out.close()
    with SegmentReader() as reader:
        got = list(reader.values(wires))
    assert [float(v[0]) for v in got[:-1]] == [float(k) for k in range(20)]
    assert got[-1] == {"k": 20}
    with SegmentReader() as reader:
        values = reader.values(wires)
        assert float(next(values)[0]) == 0.0
        values.close()  # the helper thread is joined, not left running
    assert [t.name for t in threading.enumerate() if t.name.startswith("shoal-read")] == []
