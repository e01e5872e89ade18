"""The plan round-trips exactly and rejects malformed documents with clear messages."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shoal import PlanError, load_plan
from shoal._codec import encode_b64
from shoal._plan import ModuleRef, Placement, Plan, TaskSpec, module_key

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
    doc = json.loads(_plan().to_json())
    doc["globals"] = {"ok": encode_b64({"w": np.zeros(3)}), "g": value}
    with pytest.raises(PlanError, match=needle) as e:
        load_plan(json.dumps(doc))
    assert e.value.code == "plan.schema"
    doc["globals"] = {"ok": encode_b64({"w": np.zeros(3)}), "n": encode_b64(None)}
    assert set(load_plan(json.dumps(doc)).globals) == {"ok", "n"}


def test_modules_are_keyed_by_declaration_and_old_digest_keys_still_load() -> None:
    ref = ModuleRef(digest=D, name="my worker", kind="file", datasets=("x",))
    key = module_key(ref)
    assert key.startswith("my_worker-") and len(key) == len("my_worker-") + 16
    assert module_key(ref) == key != module_key(ref.model_copy(update={"datasets": ("y",)}))
    assert load_plan(_plan().to_json()).modules[D].digest == D  # a digest-keyed plan
