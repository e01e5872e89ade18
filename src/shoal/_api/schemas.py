"""The HTTP bodies the coordinator, the node agent and the client share (docs/api.md).

Requests are validated by the coordinator before its driver sees them (a mismatch is a
422 naming the fields); instructions are produced by the coordinator from these models
and decoded by the node agent with the same models; user records
(:mod:`shoal._api.records`) are validated by the client with :func:`decode`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictBytes,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from shoal._api.records import (
    LogRecord,
    MetricRecord,
    NodeRecord,
    SwarmStatus,
    SwarmSummary,
)
from shoal._errors import ShoalError

NODE_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_DONE_CALLS = 64  # the held-back world calls a ``done`` report may carry
DIGEST = r"^sha256:[0-9a-f]{64}$"


class Body(BaseModel):
    """A request body: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------- nodes


class GpuFacts(Body):
    """One GPU a node detected (``nvidia-smi``): its name and memory in bytes."""

    name: Annotated[StrictStr, Field(max_length=200)] = ""
    memory: Annotated[StrictInt, Field(ge=0)] | None = None


class NodeFacts(Body):
    """What a node has for one instance: ``cpu`` cores and ``memory`` bytes (the
    machine's, or its per-instance limits when lower) and the GPUs it detected. The
    engine admits a node for a module only if these cover the module's ``resources``;
    a fact left None is not checked."""

    cpu: Annotated[float, Field(ge=0)] | None = None
    memory: Annotated[StrictInt, Field(ge=0)] | None = None
    gpus: Annotated[list[GpuFacts], Field(max_length=64)] = []


class EnrolBody(Body):
    """``POST /v1/nodes/enrol``. ``join_token`` may be empty when the request carries
    the node's current credential (re-enrolment of a known node). ``credential``: the
    credential the node chose (``<node_id>:<32 to 128 URL-safe characters>``; None: the
    coordinator makes one); a repeat of an enrolment whose answer was lost is then
    recognised and answered the same."""

    join_token: StrictStr = ""
    credential: Annotated[StrictStr, Field(max_length=300)] | None = None
    node_id: Annotated[str, Field(pattern=NODE_ID)]
    datasets: list[StrictStr] = []
    gpu: StrictBool = False
    images: list[StrictStr] | None = None
    facts: NodeFacts | None = None


class EnrolAnswer(BaseModel):
    """The node's id and its credential (shown once)."""

    node_id: str
    credential: str


class HeartbeatBody(Body):
    """``POST /v1/nodes/heartbeat``: what the node offers now.

    ``session`` (random per agent process) tells the coordinator that the agent
    restarted and lost its instances; ``running`` lists the instances it runs, so the
    coordinator can cancel the ones that ended while it could not say so.
    """

    datasets: list[StrictStr] = []
    gpu: StrictBool = False
    images: list[StrictStr] | None = None
    facts: NodeFacts | None = None
    session: StrictStr | None = None
    running: list[StrictStr] = []


class HeartbeatAnswer(BaseModel):
    """Acknowledgement and the timeout after which the node counts as lost."""

    ok: bool = True
    heartbeat_timeout_s: float


class DoneBody(Body):
    """``POST /v1/instances/{id}/done``."""

    ok: StrictBool
    error: StrictStr = ""
    traceback: StrictStr = ""
    kind: Literal["error", "crash", "timeout"] = "error"
    # The instance started and no ``started`` report was sent for it: an instance that
    # ends within moments reports both in this one request.
    started: StrictBool = False
    # One-way world calls the task made last (``results.add``: the operations marked
    # deferrable), which the agent held back to send with its end: the coordinator runs
    # them in order before it records the end, and a failing one fails the instance.
    # A worker's result and its end cost one request, not two. With values, the body
    # is msgpack (values are bytes); the coordinator checks each call as a world call.
    calls: list[dict[str, Any]] = Field(default_factory=list, max_length=MAX_DONE_CALLS)


class Ok(BaseModel):
    """``{ok: true}``."""

    ok: bool = True


class BlobAnswer(BaseModel):
    """A stored blob."""

    digest: str
    length: int


class WorldRequest(Body):
    """``POST /v1/world`` (msgpack); ``args`` are checked against the operation's
    schema in :mod:`shoal._runtime.ops`."""

    instance_id: StrictStr
    op: StrictStr
    args: dict[StrictStr, Any] = {}


# ---------------------------------------------------------------------- instructions


class RunInstruction(BaseModel):
    """Run an instance. ``global_versions`` (the swarm's globals' versions) is filled
    in when the instruction is delivered; ``seq`` when it is queued.

    ``requirements`` are the module's (the node refuses the instance when its image
    lacks one); ``cpu`` (cores), ``memory`` (bytes) and ``gpu`` (a count, at least 1 for
    a ``gpu=True`` task) are its module's resources as numbers, 0 where none is asked:
    the node applies cpu and memory as the instance's limits and shows a GPU task the
    GPU's device files."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["run"] = "run"
    swarm_id: str
    instance_id: str
    alias: str
    iteration: int
    attempt: int
    module: str
    datasets: list[str]
    image: str
    timeout_s: float | None
    requirements: list[str] = []
    cpu: float = 0.0
    memory: int = 0
    gpu: int = 0
    global_versions: dict[str, str] = {}
    seq: int = 0
    network: str | None = None  # the task's network (Task(network=...)), if any
    # The module asks for a fresh task process for every instance (no warm process).
    fresh_process: bool = False


class CancelInstruction(BaseModel):
    """Stop an instance; the coordinator already decided its outcome."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["cancel"] = "cancel"
    instance_id: str
    reason: str
    seq: int = 0


Instruction = RunInstruction | CancelInstruction
_TaggedInstruction = Annotated[Instruction, Field(discriminator="kind")]


class Instructions(RootModel[list[_TaggedInstruction]]):
    """``GET /v1/nodes/instructions``: a JSON list of instructions, in ``seq`` order."""


INSTRUCTION: TypeAdapter[Instruction] = TypeAdapter(_TaggedInstruction)


# ----------------------------------------------------------------------------- users


class SubmitBody(Body):
    """``POST /v1/swarms`` (msgpack)."""

    plan: StrictStr
    bundles: dict[StrictStr, StrictBytes] = {}
    seed: StrictInt = 0
    # The timeout of the swarm's tasks declared without one; None: the engine's default.
    task_timeout_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)


class SwarmAnswer(BaseModel):
    """The id of a submitted swarm."""

    swarm_id: str


class Story(BaseModel):
    """``GET /v1/instances/{id}/story``: one line per transition or engine decision,
    ``t=<time> #<event id> <event>: <detail>``."""

    instance_id: str
    story: list[str]


class Health(BaseModel):
    """``GET /v1/health``."""

    ok: bool = True
    version: str
    #: "active" drives the engine; "standby" serves reads only (several coordinators
    #: on one PostgreSQL database, docs/scale.md).
    role: str = "active"


SWARM_STATUS = TypeAdapter(SwarmStatus)
SWARM_LIST = TypeAdapter(list[SwarmSummary])
LOG_LIST = TypeAdapter(list[LogRecord])
METRIC_LIST = TypeAdapter(list[MetricRecord])
NODE_LIST = TypeAdapter(list[NodeRecord])

T = TypeVar("T")


def decode(adapter: TypeAdapter[T], doc: Any, what: str, code: str = "api.schema") -> T:
    """``doc`` (JSON data) as the record type of ``adapter``.

    Raises
    ------
    ShoalError
        ``code``, naming the fields that do not fit.
    """
    try:
        return adapter.validate_python(doc)
    except ValidationError as e:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in e.errors()[:5]
        )
        raise ShoalError(
            f"{what} does not have the expected shape ({fields})",
            code=code,
            hint="use a client of the coordinator's version",
        ) from None


# ---------------------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    """What went wrong: a stable code (docs/errors.md), a message naming the object,
    and what to do about it."""

    code: str
    message: str
    hint: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx and 5xx answer of the coordinator: ``{"error": {code, message, hint}}``."""

    error: ErrorDetail
