"""Schemas of every request body (JSON and msgpack) and of the world ops' arguments.

Everything a client sends is validated here before the driver sees it; a mismatch is a
422 with the offending fields named.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictBytes, StrictInt, StrictStr

NODE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
DIGEST = r"^sha256:[0-9a-f]{64}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- nodes


class EnrolBody(_Body):
    """``POST /v1/nodes/enrol``."""

    join_token: StrictStr
    node_id: Annotated[str, Field(pattern=NODE_ID)]
    datasets: list[StrictStr] = []
    gpu: StrictBool = False
    images: list[StrictStr] | None = None


class EnrolAnswer(BaseModel):
    """The node's id and its credential (shown once)."""

    node_id: str
    credential: str


class HeartbeatBody(_Body):
    """``POST /v1/nodes/heartbeat``: what the node offers now.

    ``session`` (random per agent process) tells the coordinator that the agent
    restarted and lost its instances; ``running`` lists the instances it runs, so the
    coordinator can cancel the ones that ended while it could not say so.
    """

    datasets: list[StrictStr] = []
    gpu: StrictBool = False
    images: list[StrictStr] | None = None
    session: StrictStr | None = None
    running: list[StrictStr] = []


class HeartbeatAnswer(BaseModel):
    """Acknowledgement and the timeout after which the node counts as lost."""

    ok: bool = True
    heartbeat_timeout_s: float


class DoneBody(_Body):
    """``POST /v1/instances/{id}/done``."""

    ok: StrictBool
    error: StrictStr = ""
    traceback: StrictStr = ""
    kind: Literal["error", "crash", "timeout"] = "error"


class Ok(BaseModel):
    """``{ok: true}``."""

    ok: bool = True


class BlobAnswer(BaseModel):
    """A stored blob."""

    digest: str
    length: int


class WorldRequest(_Body):
    """``POST /v1/world`` (msgpack)."""

    instance_id: StrictStr
    op: StrictStr
    args: dict[StrictStr, Any] = {}


# ------------------------------------------------------------------- world op args


class InlineWire(_Body):
    """A small value: its codec bytes."""

    inline: StrictBytes


class BlobWire(_Body):
    """A large value uploaded with ``PUT /v1/blobs/{digest}`` first."""

    blob: Annotated[str, Field(pattern=DIGEST)]
    length: Annotated[int, Field(ge=0, strict=True)]


Wire = InlineWire | BlobWire


class _KeyArgs(_Body):
    key: StrictStr


class GlobalsGet(_KeyArgs):
    have: StrictStr | None = None


class GlobalsSet(_KeyArgs):
    value: Wire


class NoArgs(_Body):
    pass


class ResultsAdd(_Body):
    tag: StrictStr
    value: Wire


class ResultsList(_Body):
    tag: StrictStr
    alias: StrictStr | None = None
    iteration: StrictInt | None = None


class NextIter(_Body):
    node_ids: list[StrictStr]
    alias: StrictStr


class StateSet(_KeyArgs):
    value: Wire


# ``n``: a number the node agent gives each log and metric record of an instance (unique
# per instance); a record sent again with the same number is stored once.
Ordinal = Annotated[int, Field(ge=0, strict=True)] | None


class Log(_Body):
    level: StrictStr
    message: StrictStr
    n: Ordinal = None


class Metric(_Body):
    name: StrictStr
    value: float
    step: StrictInt
    n: Ordinal = None


MAX_BATCH = 1000


class BatchCall(_Body):
    op: Literal["log", "metric"]
    args: dict[StrictStr, Any]


class Batch(_Body):
    """Several one-way records at once (an agent coalesces a chatty task's output)."""

    calls: Annotated[list[BatchCall], Field(max_length=MAX_BATCH)]


WORLD_ARGS: dict[str, type[_Body]] = {
    "globals.get": GlobalsGet,
    "globals.set": GlobalsSet,
    "globals.keys": NoArgs,
    "results.add": ResultsAdd,
    "results.list": ResultsList,
    "swarm.stop": NoArgs,
    "swarm.schedule_next_iter": NextIter,
    "state.get": _KeyArgs,
    "state.set": StateSet,
    "log": Log,
    "metric": Metric,
    "batch": Batch,
}


# ----------------------------------------------------------------------------- users


class SubmitBody(_Body):
    """``POST /v1/swarms`` (msgpack)."""

    plan: StrictStr
    bundles: dict[StrictStr, StrictBytes] = {}
    seed: StrictInt = 0


class SwarmAnswer(BaseModel):
    """The id of a submitted swarm."""

    swarm_id: str


class SwarmSummary(BaseModel):
    """One row of ``GET /v1/swarms``."""

    swarm_id: str
    name: str
    status: str
    iteration: int
    reason: str
    created: float


class Failure(BaseModel):
    """One failed instance."""

    instance_id: str
    alias: str
    node_id: str
    iteration: int
    attempt: int
    kind: str
    error: str
    traceback: str


class TaskCounts(BaseModel):
    """Instances of one task in the current iteration."""

    scheduled: int = 0
    running: int = 0
    succeeded: int = 0
    failed: int = 0


class SwarmStatus(SwarmSummary):
    """``GET /v1/swarms/{id}``."""

    failures: list[Failure] = []
    tasks: dict[str, TaskCounts] = {}


class Story(BaseModel):
    """``GET /v1/instances/{id}/story``: one line per transition or engine decision,
    ``t=<time> #<event id> <event>: <detail>``."""

    instance_id: str
    story: list[str]


class LogRecord(BaseModel):
    """One log record."""

    seq: int
    node_id: str
    alias: str
    iteration: int
    instance_id: str
    level: str
    message: str
    time: float


class MetricRecord(BaseModel):
    """One metric value."""

    name: str
    value: float
    step: int
    node_id: str
    alias: str
    iteration: int
    time: float


class NodeSummary(BaseModel):
    """One row of ``GET /v1/nodes``."""

    node_id: str
    connected: bool
    datasets: list[str]
    gpu: bool
    images: list[str] | None
    last_seen: float
    running: int


class Health(BaseModel):
    """``GET /v1/health``."""

    ok: bool = True
    version: str
