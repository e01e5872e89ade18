"""The versioned formats do not change by accident: each golden file decodes to the value
it stands for, and encoding that value gives the golden bytes exactly (README.md here)."""

from __future__ import annotations

import json
import typing
from typing import Any

import msgpack
import pytest
from golden_cases import (
    ARROW_VALUES,
    CODEC_FILE,
    EVENTS_FILE,
    GOLDEN,
    PLAN_FILE,
    PLAN_TARGET,
    PLAN_V1_FILE,
    PLAN_V2_FILE,
    assert_same,
    codec_values,
    envelope,
    events,
    export_plan,
    render_codec,
    render_events,
    versions,
)

from shoal._codec import decode, encode
from shoal._coord.events import decode_event, encode_event
from shoal._define.compile import compile_swarm
from shoal._define.loader import load_swarm
from shoal._engine.messages import Event
from shoal._plan import PLAN_SCHEMA_VERSION, Plan, load_plan

HOW = "an accidental format change? If deliberate, see tests/golden/README.md"


def _golden_plan() -> Plan:
    """The plan the event-log golden embeds: the version-1 golden (still read)."""
    return load_plan(PLAN_V1_FILE.read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------- plan
def test_shoal_export_writes_the_golden_plan() -> None:
    assert export_plan() == PLAN_FILE.read_text(encoding="utf-8"), HOW


def test_the_golden_plan_reads_back_to_the_swarm_it_was_made_from() -> None:
    text = PLAN_FILE.read_text(encoding="utf-8")
    plan = load_plan(text)
    swarm, _ = load_swarm(str(GOLDEN / "golden_swarm.py") + ":GoldenSwarm")
    assert plan == compile_swarm(swarm, source=PLAN_TARGET).plan, HOW
    assert plan.to_json() == text, HOW
    assert {t.alias for t in plan.tasks} == {"train", "score", "aggregator"}
    assert plan.globals["lr"] == 0.5  # plain JSON since version 3, readable and diffable
    assert plan.globals["config"] == {"epochs": 2, "tags": ["a", "b"]}
    data, _ = plan.global_parts("weights")
    assert data is not None and decode(data).tolist() == [0.0, 1.0, 2.0, 3.0]


def test_a_version_1_plan_still_loads_and_reads_back_unchanged() -> None:
    """Version 1 keyed modules by their bundle digest; version 2 by their declaration.
    A stored version-1 plan (an old event log, an exported file) must still run."""
    text = PLAN_V1_FILE.read_text(encoding="utf-8")
    old = load_plan(text)
    assert old.schema_version == 1 and old.to_json() == text
    new = load_plan(PLAN_FILE.read_text(encoding="utf-8"))
    assert new.schema_version == PLAN_SCHEMA_VERSION
    assert all(key == ref.digest for key, ref in old.modules.items())
    assert {ref.digest for ref in old.modules.values()} == {
        ref.digest for ref in new.modules.values()
    }  # the same bundles, under new keys
    assert [t.alias for t in old.tasks] == [t.alias for t in new.tasks]


@pytest.mark.parametrize("old_file", [PLAN_V1_FILE, PLAN_V2_FILE], ids=["v1", "v2"])
def test_an_old_plans_base64_globals_read_as_the_same_values(old_file: Any) -> None:
    """Versions 1 and 2 stored every global as bare base64; they still load, unchanged,
    and each global reads back as the value version 3 stores (plain or tagged)."""
    text = old_file.read_text(encoding="utf-8")
    old = load_plan(text)
    assert old.schema_version in (1, 2) and old.to_json() == text
    assert all(isinstance(v, str) for v in old.globals.values())
    new = load_plan(PLAN_FILE.read_text(encoding="utf-8"))
    assert set(old.globals) == set(new.globals)
    for key in new.globals:
        data, plain = new.global_parts(key)
        old_data, old_plain = old.global_parts(key)
        assert old_plain is None and old_data is not None
        assert old_data == (data if data is not None else encode(plain)), key


# -------------------------------------------------------------------------- events
def _records() -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = json.loads(EVENTS_FILE.read_text(encoding="utf-8"))["records"]
    return records


def test_each_golden_event_record_decodes_to_its_event() -> None:
    want = events(_golden_plan())
    records = _records()
    assert len(records) == len(want)
    for record, event in zip(records, want, strict=True):
        data = bytes.fromhex(record["hex"])
        assert decode_event(data) == event, (record["event"], HOW)
        assert msgpack.unpackb(data) == record["doc"], record["event"]


def test_each_event_encodes_to_its_golden_record() -> None:
    for record, event in zip(_records(), events(_golden_plan()), strict=True):
        assert encode_event(event).hex() == record["hex"], (record["event"], HOW)
    assert render_events(_golden_plan()) == EVENTS_FILE.read_text(encoding="utf-8"), HOW


def test_the_event_golden_holds_every_event_type() -> None:
    kinds = {t.__name__ for t in typing.get_args(Event)}
    assert {r["event"] for r in _records()} == kinds, "add the new event type to golden_cases"


# --------------------------------------------------------------------------- codec
CODEC: dict[str, Any] = json.loads(CODEC_FILE.read_text(encoding="utf-8"))
VALUES = codec_values()


def _needs(name: str) -> None:
    if name in ARROW_VALUES:
        pytest.importorskip("pandas")
        pytest.importorskip("pyarrow")


def test_the_codec_golden_holds_every_value() -> None:
    assert set(CODEC["values"]) == set(VALUES)


@pytest.mark.parametrize("name", list(VALUES))
def test_each_codec_golden_decodes_to_its_value(name: str) -> None:
    _needs(name)
    golden = bytes.fromhex(CODEC["values"][name])
    assert_same(decode(golden), VALUES[name](), name)
    assert_same(decode(golden, writable=True), VALUES[name](), name)


@pytest.mark.parametrize("name", list(VALUES))
def test_each_codec_value_encodes_to_its_golden(name: str) -> None:
    _needs(name)
    golden = bytes.fromhex(CODEC["values"][name])
    got = encode(VALUES[name]())
    if name not in ARROW_VALUES or CODEC["arrow_written_by"] == versions():
        assert got == golden, (name, HOW)
        return
    # Other pandas / pyarrow versions write other Arrow bytes (their own metadata):
    # shoal's part of the frame must still be the same, and the tables equal.
    import pyarrow

    (version, body, buffers), (want_version, want_body, want_buffers) = (
        envelope(got),
        envelope(golden),
    )
    assert (version, body) == (want_version, want_body), (name, HOW)
    assert len(buffers) == len(want_buffers), name
    for mine, theirs in zip(buffers, want_buffers, strict=True):
        read = [pyarrow.ipc.open_stream(b).read_all() for b in (mine, theirs)]
        assert read[0].equals(read[1]), (name, HOW)


def test_the_codec_golden_file_is_what_this_shoal_writes() -> None:
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    if CODEC["arrow_written_by"] != versions():
        pytest.skip(f"Arrow values written by {CODEC['arrow_written_by']}, not {versions()}")
    assert render_codec() == CODEC_FILE.read_text(encoding="utf-8"), HOW
