"""Engine events as msgpack bytes for the store's event log, and back.

Each event is a plain map ``{"type": <class name>, ...fields}``; the plan of a
``SwarmSubmitted`` travels as its JSON document, so the log stays readable by any
msgpack tool and never holds pickled objects. Decoding checks every field: a log written
by a different version fails loudly instead of replaying into a wrong engine state.
"""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any

import msgpack

from shoal._engine.capacity import Capacity
from shoal._engine.messages import (
    Event,
    FailureKind,
    InstanceFailed,
    InstanceStarted,
    InstanceSucceeded,
    InvokeCalled,
    NextIterScheduled,
    NodeJoined,
    NodeLost,
    NodeRestarted,
    StopRequested,
    StopSwarmCalled,
    SwarmSubmitted,
    TimerFired,
)
from shoal._errors import ShoalError
from shoal._plan import load_plan

LOG_VERSION = 1


def encode_event(event: Event) -> bytes:
    """The log record of one engine event."""
    doc: dict[str, Any] = {"v": LOG_VERSION, "type": type(event).__name__, "now": event.now}
    match event:
        case NodeJoined():
            doc.update(
                node_id=event.node_id,
                datasets=sorted(event.datasets),
                gpu=event.gpu,
                images=None if event.images is None else sorted(event.images),
            )
            if event.capacity is not None:  # absent in records of older versions
                doc["capacity"] = asdict(event.capacity)
        case NodeLost() | NodeRestarted():
            doc.update(node_id=event.node_id, reason=event.reason)
        case SwarmSubmitted():
            doc.update(swarm_id=event.swarm_id, plan=event.plan.to_json(), seed=event.seed)
            if event.task_timeout_s is not None:  # absent: the engine's default (older logs)
                doc["task_timeout_s"] = event.task_timeout_s
        case InstanceStarted() | StopSwarmCalled():
            doc.update(instance_id=event.instance_id)
        case InstanceSucceeded():
            doc.update(instance_id=event.instance_id)
            if event.loop_value is not None:  # inner loops' until; absent in older logs
                doc["loop_value"] = event.loop_value
        case InstanceFailed():
            doc.update(
                instance_id=event.instance_id,
                error=event.error,
                traceback=event.traceback,
                kind=event.kind.value,
            )
        case NextIterScheduled():
            doc.update(
                instance_id=event.instance_id, alias=event.alias, node_ids=list(event.node_ids)
            )
        case StopRequested():
            doc.update(swarm_id=event.swarm_id, reason=event.reason)
        case TimerFired():
            pass
        case InvokeCalled():
            # A record type added without a version bump: older logs never hold one.
            doc.update(
                instance_id=event.instance_id,
                call_id=event.call_id,
                alias=event.alias,
                node_ids=None if event.node_ids is None else list(event.node_ids),
                min_results=event.min_results,
                timeout_s=event.timeout_s,
            )
        case _:
            raise ShoalError(f"cannot encode event {event!r}", code="coord.event")
    data: bytes = msgpack.packb(doc, use_bin_type=True)
    return data


def _field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(name)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ShoalError(
            f"event log record {doc.get('type')!r} has a bad field {name!r}: {value!r}",
            code="coord.event_log",
            hint="the database was written by another version of shoal, or is damaged",
        )
    return value


def _strs(doc: dict[str, Any], name: str) -> list[str]:
    items = _field(doc, name, list)
    if not all(isinstance(x, str) for x in items):
        raise ShoalError(
            f"event log record {doc.get('type')!r}: {name!r} must be a list of strings",
            code="coord.event_log",
        )
    return list(items)


def _capacity(doc: dict[str, Any]) -> Capacity | None:
    raw = doc.get("capacity")
    if raw is None:
        return None
    ok = isinstance(raw, dict) and set(raw) <= {f.name for f in fields(Capacity)}
    if not ok or not all(
        v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in raw.values()
    ):
        raise ShoalError(
            f"event log record {doc.get('type')!r} has a bad field 'capacity': {raw!r}",
            code="coord.event_log",
            hint="the database was written by another version of shoal, or is damaged",
        )
    return Capacity(**raw)


def decode_event(data: bytes) -> Event:
    """Parse a record written by :func:`encode_event`.

    Raises
    ------
    ShoalError
        ``coord.event_log`` if the record is not one this version writes.
    """
    try:
        doc = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as e:
        raise ShoalError(f"event log record is not msgpack: {e}", code="coord.event_log") from e
    if not isinstance(doc, dict) or doc.get("v") != LOG_VERSION:
        raise ShoalError(
            "event log record has an unknown format",
            code="coord.event_log",
            hint="the database was written by another version of shoal",
        )
    kind = _field(doc, "type", str)
    now = float(_field(doc, "now", (int, float)))

    def iid() -> str:
        return str(_field(doc, "instance_id", str))

    match kind:
        case "NodeJoined":
            images = doc.get("images")
            return NodeJoined(
                _field(doc, "node_id", str),
                now,
                frozenset(_strs(doc, "datasets")),
                bool(_field(doc, "gpu", bool)),
                None if images is None else frozenset(_strs(doc, "images")),
                _capacity(doc),
            )
        case "NodeLost":
            return NodeLost(_field(doc, "node_id", str), now, _field(doc, "reason", str))
        case "NodeRestarted":
            return NodeRestarted(_field(doc, "node_id", str), now, _field(doc, "reason", str))
        case "SwarmSubmitted":
            plan = load_plan(_field(doc, "plan", str))
            timeout = doc.get("task_timeout_s")
            if timeout is not None:
                timeout = _field(doc, "task_timeout_s", (int, float))
            return SwarmSubmitted(
                _field(doc, "swarm_id", str), plan, now, _field(doc, "seed", int), timeout
            )
        case "InstanceStarted":
            return InstanceStarted(iid(), now)
        case "InstanceSucceeded":
            value = doc.get("loop_value")
            if value is not None:
                value = float(_field(doc, "loop_value", (int, float)))
            return InstanceSucceeded(iid(), now, value)
        case "StopSwarmCalled":
            return StopSwarmCalled(iid(), now)
        case "InstanceFailed":
            return InstanceFailed(
                iid(),
                now,
                _field(doc, "error", str),
                _field(doc, "traceback", str),
                FailureKind(_field(doc, "kind", str)),
            )
        case "NextIterScheduled":
            return NextIterScheduled(
                iid(), now, _field(doc, "alias", str), tuple(_strs(doc, "node_ids"))
            )
        case "StopRequested":
            return StopRequested(_field(doc, "swarm_id", str), now, _field(doc, "reason", str))
        case "TimerFired":
            return TimerFired(now)
        case "InvokeCalled":
            nodes = None if doc.get("node_ids") is None else tuple(_strs(doc, "node_ids"))
            least = doc.get("min_results")
            limit = doc.get("timeout_s")
            return InvokeCalled(
                iid(),
                now,
                _field(doc, "call_id", str),
                _field(doc, "alias", str),
                nodes,
                None if least is None else int(_field(doc, "min_results", int)),
                None if limit is None else float(_field(doc, "timeout_s", (int, float))),
            )
    raise ShoalError(f"event log record has unknown type {kind!r}", code="coord.event_log")
