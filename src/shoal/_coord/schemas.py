"""The coordinator's check of world calls (``POST /v1/world``): coordinator-private.

Each operation's arguments are validated against the schema its row declares in
:mod:`shoal._runtime.ops` (the TypedDict the task side sends), strictly and with no
unknown fields, under the coordinator's own rules: a value is inline or a stored blob
(:data:`shoal._wire.NetWire`: a file path means nothing here), a record's number is not
negative, and a batch holds at most :data:`~shoal._runtime.ops.MAX_BATCH` calls of
batched operations. Operations a node answers itself (``local``) are not accepted. The
HTTP bodies shared with nodes and users are in :mod:`shoal._api.schemas`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, get_type_hints

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model

from shoal._api.schemas import DIGEST
from shoal._runtime import ops
from shoal._wire import NetWire, Wire

_STRICT = ConfigDict(extra="forbid", strict=True)


def _net_wire(wire: NetWire) -> NetWire:
    if "blob" in wire:
        if not re.fullmatch(DIGEST, wire["blob"]):
            raise ValueError(f"blob {wire['blob']!r} is not a digest sha256:<64 hex>")
        if wire["length"] < 0:
            raise ValueError("a blob's length cannot be negative")
    return wire


NetValue = Annotated[NetWire, AfterValidator(_net_wire)]
Ordinal = Annotated[int, Field(ge=0, le=2**63 - 1)] | None  # the store keeps 64 bits


def args_model(op: ops.Op[Any]) -> type[BaseModel]:
    """The pydantic model of ``op``'s arguments, from its row's TypedDict."""
    required: frozenset[str] = op.args.__required_keys__
    fields: dict[str, Any] = {}
    for name, hint in get_type_hints(op.args).items():
        if hint == Wire:
            hint = NetValue
        elif op.numbered and name == "n":
            hint = Ordinal
        fields[name] = (hint, ... if name in required else None)
    model: type[BaseModel] = create_model(op.args.__name__, __config__=_STRICT, **fields)
    return model


def _batched(call: ops.BatchCall) -> ops.BatchCall:
    allowed = ops.names(batched=True)
    if call["op"] not in allowed:
        raise ValueError(f"{call['op']!r} cannot be batched (only {', '.join(sorted(allowed))})")
    return call


def _deferrable(call: ops.BatchCall) -> ops.BatchCall:
    allowed = ops.names(deferrable=True)
    if call["op"] not in allowed:
        raise ValueError(
            f"{call['op']!r} cannot be sent with a done report (only {', '.join(sorted(allowed))})"
        )
    return call


class Deferred(BaseModel):
    """The world calls a ``done`` report carries (``DoneBody.calls``): only deferrable
    one-way operations, each checked against its own operation's model."""

    model_config = _STRICT

    calls: list[Annotated[ops.BatchCall, AfterValidator(_deferrable)]]


class Batch(BaseModel):
    """:data:`~shoal._runtime.ops.BATCH`: several one-way records at once (an agent
    coalesces a chatty task's output); each call's ``args`` are checked against its
    own operation's model."""

    model_config = _STRICT

    calls: Annotated[
        list[Annotated[ops.BatchCall, AfterValidator(_batched)]],
        Field(max_length=ops.MAX_BATCH),
    ]


#: The model of the arguments of each operation the coordinator answers.
WORLD_ARGS: dict[str, type[BaseModel]] = {
    **{op.name: args_model(op) for op in ops.TABLE.values() if not op.local},
    ops.BATCH: Batch,
}
