"""The world operations: one table of every request task code can send to its node.

Each row (:class:`Op`) names an operation, declares the schema of its arguments (a
TypedDict) and its properties: whether it carries a wire value, is numbered, is sent
one-way, may be deferred, is sent to the coordinator in batches, is answered by the node
itself, and where its answer carries wire values. Everything else takes names and
properties from here:

- the task-side API (:mod:`shoal._runtime.api`) sends ``ops.RESULTS_ADD.send(...)``;
- the world service (:class:`shoal._world.service.WorldService`) registers one handler
  per row and refuses to start when its handlers and :data:`TABLE` differ;
- the node agent's proxy asks the table what is local, numbered, batched and carries a
  value; the coordinator validates each call's arguments with the row's schema;
- the simulator's workers defer the rows marked deferrable.

Adding an operation is one row here and one handler in the world service. This module is
task-side: it imports neither pydantic nor any driver-side package.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from shoal._errors import ShoalError
from shoal._wire import TypedDict, Wire

if TYPE_CHECKING:
    from shoal._runtime.context import Channel

# ------------------------------------------------------------------ argument schemas


class NoArgs(TypedDict):
    """No arguments."""


class KeyArgs(TypedDict):
    """``state.get``: the key."""

    key: str


class GlobalsGetArgs(KeyArgs, total=False):
    """``globals.get``: the key, and the version the task has cached (``have``)."""

    have: str | None


class GlobalsSetArgs(TypedDict):
    """``globals.set``: the key and the new value."""

    key: str
    value: Wire


class StateSetArgs(TypedDict):
    """``state.set``: the key and the value kept for later iterations."""

    key: str
    value: Wire


class ResultsAddArgs(TypedDict):
    """``results.add``: the tag and the value."""

    tag: str
    value: Wire


class _TagArgs(TypedDict):
    tag: str


class ResultsListArgs(_TagArgs, total=False):
    """``results.list``: the tag; optionally one task (``alias``) and ``iteration``."""

    alias: str | None
    iteration: int | None


class NextIterArgs(TypedDict):
    """``swarm.schedule_next_iter``: the task and the nodes it runs on next iteration."""

    node_ids: list[str]
    alias: str


class DatasetArgs(TypedDict):
    """``local.dataset``: the dataset's name."""

    name: str


class PrivacyArgs(TypedDict):
    """``local.privacy``: a dataset and the charge against its budget (``Charge.to_dict``)."""

    dataset: str
    charge: dict[str, Any]


class SecretArgs(TypedDict):
    """``local.secret``: what the secret is for (one secret per swarm and purpose)."""

    purpose: str


class _LogFields(TypedDict):
    level: str
    message: str


class LogArgs(_LogFields, total=False):
    """``log``: a record. ``n``: its number within the instance (see ``numbered``)."""

    n: int | None


class InvokeCallArgs(TypedDict):
    """``invoke.call``: the call's number within the instance (``n``: 0, 1, ...), the
    on-demand task, the nodes (None: its placement), ``min_results`` and ``timeout``
    (None: the engine's defaults) and the caller's ``inputs`` as ``value``."""

    n: int
    alias: str
    nodes: list[str] | None
    min_results: int | None
    timeout: float | None
    value: Wire


class CallArgs(TypedDict):
    """``invoke.wait`` / ``invoke.results``: the call's id."""

    call_id: str


class _MetricFields(TypedDict):
    name: str
    value: float
    step: int


class MetricArgs(_MetricFields, total=False):
    """``metric``: a value. ``n`` as for :class:`LogArgs`."""

    n: int | None


class BatchCall(TypedDict):
    """One call inside a :data:`BATCH`: a batched operation and its arguments."""

    op: str
    args: dict[str, Any]


class BatchArgs(TypedDict):
    """:data:`BATCH`: at most :data:`MAX_BATCH` calls, answered in order."""

    calls: list[BatchCall]


# -------------------------------------------------------------------------- the row


class Reply(Enum):
    """Where an operation's answer carries wire values (the node agent swaps each
    ``blob`` wire for a ``file`` wire of its cache before the task sees it)."""

    PLAIN = "plain"  # no wire values
    WIRE = "wire"  # the answer is a wire, or None
    VERSIONED = "versioned"  # {"version", "value": wire} or {"version", "same": True}, or None
    RECORDS = "records"  # [{"alias", "node_id", "iteration", "value": wire}]


A = TypeVar("A", bound=Mapping[str, object])


@dataclass(frozen=True)
class Op(Generic[A]):
    """One world operation.

    Attributes
    ----------
    name
        What goes in a request's ``op``.
    args
        The TypedDict of its arguments (the coordinator validates calls with it).
    value
        ``args["value"]`` is a wire value (a node uploads a ``file`` wire as a blob).
    numbered
        It carries ``n``, its number within the instance, so a record sent again after
        a lost answer is stored once.
    one_way
        Task code sends it without waiting for an answer; a failure fails the instance
        when it ends.
    deferrable
        A one-way note that may wait for the next frame the task sends: losing it with a
        crashed process loses nothing (a crashed instance's results do not count).
    batched
        A node agent sends the ones that arrive together in one :data:`BATCH`.
    local
        Answered by the node that runs the task, never by the coordinator.
    reply
        Where the answer carries wire values.
    """

    name: str
    args: type[A]
    value: bool = False
    numbered: bool = False
    one_way: bool = False
    deferrable: bool = False
    batched: bool = False
    local: bool = False
    reply: Reply = Reply.PLAIN

    def __post_init__(self) -> None:
        required: frozenset[str] = getattr(self.args, "__required_keys__", frozenset())
        keys = required | getattr(self.args, "__optional_keys__", frozenset())
        problems = [
            why
            for bad, why in (
                (self.value and "value" not in required, "a value needs args['value']"),
                (self.numbered and "n" not in keys, "numbered needs an 'n' argument"),
                (self.numbered and not self.one_way, "numbered records are one-way"),
                (self.deferrable and not self.one_way, "only one-way notes can be deferred"),
                (self.batched and not self.numbered, "a batch sent again must count once"),
                (self.local and self.one_way, "local operations answer"),
            )
            if bad
        ]
        if problems:
            raise ShoalError(
                f"world operation {self.name!r} is declared wrongly: {'; '.join(problems)}",
                code="runtime.ops",
            )

    def send(self, channel: Channel, args: A) -> Any:
        """Send this operation over ``channel``: a request whose answer is returned, or
        a one-way note (None)."""
        if self.one_way:
            channel.notify(self.name, args)
            return None
        return channel.request(self.name, args)

    def __str__(self) -> str:
        return self.name


# ------------------------------------------------------------------------ the table

GLOBALS_GET = Op("globals.get", GlobalsGetArgs, reply=Reply.VERSIONED)
GLOBALS_SET = Op("globals.set", GlobalsSetArgs, value=True)
GLOBALS_KEYS = Op("globals.keys", NoArgs)
RESULTS_ADD = Op("results.add", ResultsAddArgs, value=True, one_way=True, deferrable=True)
RESULTS_LIST = Op("results.list", ResultsListArgs, reply=Reply.RECORDS)
SWARM_STOP = Op("swarm.stop", NoArgs)
SWARM_SCHEDULE_NEXT_ITER = Op("swarm.schedule_next_iter", NextIterArgs)
STATE_GET = Op("state.get", KeyArgs, reply=Reply.WIRE)
STATE_SET = Op("state.set", StateSetArgs, value=True)
LOCAL_DATASET = Op("local.dataset", DatasetArgs, local=True)
LOCAL_RESOURCES = Op("local.resources", NoArgs, local=True)
# Seed 001's adaptive module: the node's load, and its link to the coordinator.
LOCAL_PERFORMANCE = Op("local.performance", NoArgs, local=True)
LOCAL_NETWORK = Op("local.network", NoArgs, local=True)
LOCAL_PRIVACY = Op("local.privacy", PrivacyArgs, local=True)
LOCAL_SECRET = Op("local.secret", SecretArgs, local=True)
# world.invoke (docs/engine.md, "On-demand tasks"): start a call, poll for its end, read
# its instances' replies; and, in an invoked instance, the caller's inputs.
INVOKE_CALL = Op("invoke.call", InvokeCallArgs, value=True)
INVOKE_WAIT = Op("invoke.wait", CallArgs)
INVOKE_RESULTS = Op("invoke.results", CallArgs, reply=Reply.RECORDS)
INVOKE_INPUTS = Op("invoke.inputs", NoArgs, reply=Reply.WIRE)
LOG = Op("log", LogArgs, numbered=True, one_way=True, batched=True)
METRIC = Op("metric", MetricArgs, numbered=True, one_way=True, batched=True)

#: Every world operation by name.
TABLE: Mapping[str, Op[Any]] = {
    op.name: op
    for op in (
        GLOBALS_GET,
        GLOBALS_SET,
        GLOBALS_KEYS,
        RESULTS_ADD,
        RESULTS_LIST,
        SWARM_STOP,
        SWARM_SCHEDULE_NEXT_ITER,
        STATE_GET,
        STATE_SET,
        LOCAL_DATASET,
        LOCAL_RESOURCES,
        LOCAL_PERFORMANCE,
        LOCAL_NETWORK,
        LOCAL_PRIVACY,
        LOCAL_SECRET,
        INVOKE_CALL,
        INVOKE_WAIT,
        INVOKE_RESULTS,
        INVOKE_INPUTS,
        LOG,
        METRIC,
    )
}

#: The envelope a node agent sends batched operations in (to the coordinator only).
BATCH = "batch"
#: The most calls one :data:`BATCH` may hold (the coordinator's bound).
MAX_BATCH = 1000


def find(name: str) -> Op[Any] | None:
    """The row of operation ``name``, or None."""
    return TABLE.get(name)


def names(**properties: bool) -> frozenset[str]:
    """The names of the rows whose properties have the given values, e.g.
    ``names(deferrable=True)``."""
    return frozenset(
        op.name for op in TABLE.values() if all(getattr(op, k) == v for k, v in properties.items())
    )


def unknown(name: str) -> ShoalError:
    """The error for a request whose ``op`` is not in the table."""
    return ShoalError(
        f"unknown runtime operation {name!r}",
        code="runtime.op",
        hint=f"one of {', '.join(sorted(TABLE))}",
    )


def check_handlers(
    handlers: Mapping[str, object], who: str, expected: frozenset[str] | None = None
) -> None:
    """Raise unless ``handlers`` has exactly one entry per row of :data:`TABLE` (or per
    name in ``expected``, e.g. ``names(local=True)``).

    Raises
    ------
    ShoalError
        ``runtime.ops``, naming every operation without a handler and every handler of
        an operation the table does not declare.
    """
    rows = set(TABLE) if expected is None else set(expected)
    missing = sorted(rows - set(handlers))
    extra = sorted(set(handlers) - rows)
    if not missing and not extra:
        return
    parts = []
    if missing:
        parts.append(f"no handler for {', '.join(map(repr, missing))}")
    if extra:
        parts.append(f"handlers for {', '.join(map(repr, extra))}, which the table lacks")
    raise ShoalError(
        f"{who} does not match the table of world operations: {'; '.join(parts)}",
        code="runtime.ops",
        hint="add one row to shoal._runtime.ops.TABLE and one handler per operation",
    )
