"""The plan round-trips exactly and rejects malformed documents with clear messages."""

from __future__ import annotations

import json
from enum import IntEnum
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shoal import Module, PlanError, Task, load_plan
from shoal._codec import decode, encode_b64
from shoal._define.compile import compile_swarm
from shoal._plan import (
    CODEC_TAG,
    PLAN_SCHEMA_VERSION,
    ModuleRef,
    Placement,
    Plan,
    TaskSpec,
    module_key,
    plain_global,
)

D = "sha256:" + "a" * 64


def _plan() -> Plan:
    return Plan(
        name="p",
        modules={D: ModuleRef(digest=D, name="w", kind="file", datasets=("x",))},
        tasks=(
            TaskSpec(alias="w", module=D, placement=Placement(fraction=0.25, gpu=True)),
            TaskSpec(alias="a", module=D, placement=Placement(method="any", count=1)),
        ),
        edges=(("w", "a"),),
        sinks=("a",),
    )


def test_round_trip_is_exact_and_stable() -> None:
    plan = _plan()
    text = plan.to_json()
    again = load_plan(text)
    assert again == plan and again.to_json() == text
    assert again.task("w").placement.fraction == 0.25
    assert again.upstream("a") == ("w",) and again.downstream("w") == ("a",)


def test_unknown_version_is_rejected() -> None:
    doc = json.loads(_plan().to_json())
    doc["schema_version"] = 99
    with pytest.raises(PlanError, match="schema_version 99 is not supported") as e:
        load_plan(json.dumps(doc))
    assert e.value.code == "plan.version"


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.update(tasks="nope"), "tasks"),
        (lambda d: d["tasks"][0].update(alias=""), "tasks.0.alias"),
        (lambda d: d.update(edges=[["w", "ghost"]]), "ghost"),
        (lambda d: d.update(sinks=[]), "no sinks"),
        (lambda d: d.update(surprise=1), "surprise"),
        (lambda d: d["tasks"][0]["placement"].update(count=0), "count"),
    ],
)
def test_malformed_documents(mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(_plan().to_json())
    mutate(doc)
    with pytest.raises(PlanError, match=needle):
        load_plan(json.dumps(doc))


def test_not_json() -> None:
    with pytest.raises(PlanError, match="not valid JSON"):
        load_plan("{oops")
    with pytest.raises(PlanError, match="JSON object"):
        load_plan("[1, 2]")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d["tasks"][0].update(alias="../evil"), "tasks.0.alias"),
        (lambda d: next(iter(d["modules"].values())).update(datasets=["a/b"]), "datasets.0"),
        (lambda d: next(iter(d["modules"].values())).update(image="x/y"), "image"),
        (lambda d: d["tasks"][0]["placement"].update(excepted_ids=[".."]), "excepted_ids.0"),
        (lambda d: d["tasks"][0]["placement"].update(specified_ids=["a b"]), "specified_ids.0"),
    ],
    ids=["alias", "dataset", "image", "excepted", "specified"],
)
def test_names_outside_their_character_set_are_refused(mutate, needle: str) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(_plan().to_json())
    mutate(doc)
    with pytest.raises(PlanError, match=needle) as e:
        load_plan(json.dumps(doc))
    assert e.value.code == "plan.schema"


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("not base64!", "global 'g' is not valid base64"),
        ("AAA", "global 'g' is not valid base64"),
        ("", "global 'g' is not an encoded value"),
    ],
    ids=["alphabet", "padding", "empty"],
)
def test_globals_must_be_base64_of_a_value(value: str, needle: str) -> None:
    """Version 3: an encoded global is checked inside its tag; version 2: every global."""
    doc = json.loads(_plan().to_json())
    doc["globals"] = {"ok": {CODEC_TAG: encode_b64({"w": np.zeros(3)})}, "g": {CODEC_TAG: value}}
    with pytest.raises(PlanError, match=needle) as e:
        load_plan(json.dumps(doc))
    assert e.value.code == "plan.schema"
    doc["schema_version"] = 2
    doc["globals"] = {"ok": encode_b64({"w": np.zeros(3)}), "g": value}
    with pytest.raises(PlanError, match=needle):
        load_plan(json.dumps(doc))
    doc["globals"] = {"ok": encode_b64({"w": np.zeros(3)}), "n": encode_b64(None)}
    assert set(load_plan(json.dumps(doc)).globals) == {"ok", "n"}


@pytest.mark.timeout(30)
def test_version_2_globals_must_be_base64_text() -> None:
    doc = json.loads(_plan().to_json())
    doc["schema_version"] = 2
    doc["globals"] = {"lr": 0.5}
    with pytest.raises(PlanError, match="global 'lr' is not base64 text"):
        load_plan(json.dumps(doc))


class _Shade(IntEnum):
    DARK = 1


# Values a plan stores as plain JSON (readable, diffable), and values it must encode.
PLAIN: dict[str, Any] = {
    "lr": 0.5,
    "epochs": 3,
    "name": "yz/wAAAAAAAA",  # a string that is valid base64 stays a string
    "flag": True,
    "none": None,
    "config": {"epochs": 2, "tags": ["a", "b"], "nested": {"$codec": 1, "x": [1.5]}},
}
ENCODED: dict[str, Any] = {
    "weights": np.arange(3, dtype=np.float32),
    "pair": (1, 2),
    "raw": b"\x00\x01",
    "np_float": np.float64(0.5),
    "shade": _Shade.DARK,
    "lookalike": {"$codec": encode_b64(7)},  # a plain dict shaped like the tag
    "int_keys": {1: "a"},
    "nan": float("nan"),
}


@pytest.mark.timeout(60)
def test_plan_globals_are_plain_json_where_they_can_be(tmp_path: Path) -> None:
    """Issue 16 point 10: ``"lr": 0.5`` in the plan, not ``"lr": "yz/gAAAAAAAA"``; only
    values JSON can't hold exactly go through the codec, under an unambiguous tag."""
    from shoal import Swarm

    class S(Swarm):
        def __init__(self) -> None:
            super().__init__()
            for key, value in {**PLAIN, **ENCODED}.items():
                self.set_global(key, value)
            (tmp_path / "w.py").write_text("def main(world):\n    pass\n")
            self.w = Task(Module(str(tmp_path / "w.py"), name="w"), alias="w")

        def execute(self) -> Any:
            return self.w()

    plan = compile_swarm(S()).plan
    doc = json.loads(plan.to_json())
    assert doc["schema_version"] == PLAN_SCHEMA_VERSION == 3
    for key, value in PLAIN.items():
        assert doc["globals"][key] == value, key
        assert plan.global_parts(key) == (None, value)
    for key, value in ENCODED.items():
        assert set(doc["globals"][key]) == {CODEC_TAG}, key
        data, plain = plan.global_parts(key)
        assert data is not None and plain is None
        got = decode(data)
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(got, value)
        elif key != "nan":
            assert got == value, key
    assert load_plan(plan.to_json()) == plan


@pytest.mark.timeout(30)
def test_plain_global_refuses_what_json_cannot_hold_exactly() -> None:
    assert all(plain_global(v) for v in PLAIN.values())
    assert not any(plain_global(v) for v in ENCODED.values())
    assert plain_global(2**64 - 1) and not plain_global(2**64)


def test_modules_are_keyed_by_declaration_and_old_digest_keys_still_load() -> None:
    ref = ModuleRef(digest=D, name="my worker", kind="file", datasets=("x",))
    key = module_key(ref)
    assert key.startswith("my_worker-") and len(key) == len("my_worker-") + 16
    assert module_key(ref) == key != module_key(ref.model_copy(update={"datasets": ("y",)}))
    assert load_plan(_plan().to_json()).modules[D].digest == D  # a digest-keyed plan


READER = """
from shoal.runtime import Task

class Read(Task):
    def run(self):
        g = self.world.globals
        self.world.globals["seen"] = {
            "name": g["name"], "lr": g["lr"], "config": g["config"],
            "weights": g["weights"].tolist(), "pair": list(g["pair"]),
            "lookalike": g["lookalike"],
        }

def main():
    Read().run()
"""


@pytest.mark.timeout(120)
def test_the_driver_seeds_plain_and_encoded_globals_as_the_values_given(tmp_path: Path) -> None:
    """A plain JSON string that looks like base64 reaches the task as that string; an
    encoded array as the array; a dict shaped like the tag as that dict."""
    import shoal

    (tmp_path / "read.py").write_text(READER)
    given = {key: PLAIN[key] for key in ("name", "lr", "config")}
    given |= {key: ENCODED[key] for key in ("weights", "pair", "lookalike")}

    class S(shoal.Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            super().__init__()
            for key, value in given.items():
                self.set_global(key, value)
            self.read = Task(Module(str(tmp_path / "read.py"), name="read"), alias="read")

        def execute(self) -> Any:
            return self.read()

    run = shoal.simulate(S(), nodes=1, seed=0)
    seen = run.globals["seen"]
    assert seen["name"] == "yz/wAAAAAAAA" and seen["lr"] == 0.5
    assert seen["config"] == PLAIN["config"] and seen["weights"] == [0.0, 1.0, 2.0]
    assert seen["pair"] == [1, 2] and seen["lookalike"] == ENCODED["lookalike"]
