"""The engine's mutable records and the instance transition table.

Everything here is plain bookkeeping; decisions live in :mod:`shoal._engine.engine`.
Collections that the engine iterates are dicts (insertion-ordered), never sets: the
iteration order of a set of strings depends on ``PYTHONHASHSEED`` and would make two
replays of one event log disagree.
"""

from __future__ import annotations

from enum import Enum
from typing import Final

from shoal._engine.capacity import Capacity
from shoal._engine.messages import FailureKind
from shoal._plan import ConditionKind, LoopSpec, Plan, TaskSpec
from shoal._plan.resources import ResourceNeed, parse_resources


class InstanceState(str, Enum):
    """Life cycle of one instance (one attempt of one slot of a task in an iteration)."""

    SCHEDULED = "scheduled"  # RunInstance emitted
    RUNNING = "running"  # InstanceStarted received
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL: Final = frozenset(
    {InstanceState.SUCCEEDED, InstanceState.FAILED, InstanceState.CANCELLED}
)


class Move(str, Enum):
    """What can happen to an instance: reports from its node, or engine decisions."""

    STARTED = "started"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOP_SWARM = "stop_swarm"
    NEXT_ITER = "next_iter"
    TIMEOUT = "timeout"  # engine: its deadline passed
    LOST = "lost"  # engine: its node was lost
    CANCEL = "cancel"  # engine: its swarm ended around it


REPORTS: Final = frozenset(
    {Move.STARTED, Move.SUCCEEDED, Move.FAILED, Move.STOP_SWARM, Move.NEXT_ITER}
)

_S = InstanceState
_ALIVE = (_S.SCHEDULED, _S.RUNNING)

# The whole life cycle. A (state, move) pair that is not a key is an impossible move.
TRANSITIONS: Final[dict[tuple[InstanceState, Move], InstanceState]] = {
    (_S.SCHEDULED, Move.STARTED): _S.RUNNING,
    **{(s, Move.SUCCEEDED): _S.SUCCEEDED for s in _ALIVE},
    **{(s, Move.FAILED): _S.FAILED for s in _ALIVE},
    # Task code may call world.* before the driver has forwarded InstanceStarted.
    **{(s, Move.STOP_SWARM): s for s in _ALIVE},
    **{(s, Move.NEXT_ITER): s for s in _ALIVE},
    **{(s, Move.TIMEOUT): _S.FAILED for s in _ALIVE},
    **{(s, Move.LOST): _S.FAILED for s in _ALIVE},
    **{(s, Move.CANCEL): _S.CANCELLED for s in _ALIVE},
}

# (time, cause id, event type, detail); formatted only when someone asks for a story.
StoryEntry = tuple[float, int, str, str]


class SwarmStatus(str, Enum):
    """Status of a swarm as shown by :meth:`Engine.swarm`."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"


class RunPhase(str, Enum):
    """Where a task stands in one iteration."""

    PENDING = "pending"  # waiting for its upstream tasks
    WAITING = "waiting"  # ready, but no node is eligible yet
    PLACED = "placed"  # its slots exist


class SlotOutcome(str, Enum):
    """How a slot ended; a slot without an outcome still has a live instance."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Node:
    """A node as the engine knows it."""

    __slots__ = ("active", "capacity", "connected", "datasets", "gpu", "images", "node_id")

    def __init__(
        self,
        node_id: str,
        datasets: frozenset[str],
        gpu: bool,
        images: frozenset[str] | None,
        capacity: Capacity | None = None,
    ) -> None:
        self.node_id = node_id
        self.connected = True
        self.datasets = datasets
        self.gpu = gpu
        self.images = images
        self.capacity = capacity  # None: not advertised (resources are not checked)
        # Non-terminal instances on this node, across swarms; len() is the node's load.
        self.active: dict[str, Instance] = {}


class Instance:
    """One attempt of one slot."""

    __slots__ = (
        "attempt",
        "calls",
        "calls_made",
        "deadline",
        "ended_by_engine",
        "error",
        "inputs",
        "instance_id",
        "kind",
        "node_id",
        "run",
        "slot",
        "state",
        "story",
        "traceback",
    )

    def __init__(
        self,
        instance_id: str,
        run: TaskRun,
        slot: Slot,
        attempt: int,
        node_id: str,
        inputs: dict[str, tuple[str, ...]],
        deadline: float | None,
    ) -> None:
        self.instance_id = instance_id
        self.run = run
        self.slot = slot
        self.attempt = attempt
        self.node_id = node_id
        self.inputs = inputs
        self.deadline = deadline
        self.state = InstanceState.SCHEDULED
        self.kind: FailureKind | None = None
        self.error = ""
        self.traceback = ""
        # Late reports on an instance the engine ended itself are a benign race.
        self.ended_by_engine = False
        self.story: list[StoryEntry] = []
        # Its open world.invoke calls (call id -> the call's TaskRun).
        self.calls: dict[str, TaskRun] = {}
        self.calls_made = 0  # numbers its calls' instance ids (c0, c1, ...)


class Slot:
    """One placement slot of a task in an iteration; retries reuse the slot."""

    __slots__ = ("current", "index", "outcome", "planned", "tried")

    def __init__(self, index: int, planned: str | None = None) -> None:
        self.index = index
        # Chain and ring slots: the node chosen for the slot before it is scheduled.
        self.planned = planned
        self.current: Instance | None = None
        self.outcome: SlotOutcome | None = None
        self.tried: dict[str, None] = {}


class TaskRun:
    """A task in one iteration, with O(1) counters so no event scans its instances."""

    __slots__ = (
        "_inputs_cache",
        "call",
        "cancelled",
        "deadline",
        "ended",
        "failed",
        "iteration",
        "loop_pass",
        "min_results",
        "open",
        "phase",
        "ready_ups",
        "released",
        "ring_size",
        "slots",
        "spec",
        "succeeded_ids",
        "swarm",
    )

    def __init__(self, swarm: SwarmState, iteration: int, spec: TaskSpec) -> None:
        self.swarm = swarm
        self.iteration = iteration
        self.spec = spec
        self.phase = RunPhase.PENDING
        self.slots: list[Slot] = []
        self.min_results = 0
        self.open = 0  # slots whose current instance is not terminal
        self.failed = 0  # slots that failed for good
        self.cancelled = 0
        self.succeeded_ids: list[str] = []
        self.released = False  # its downstream tasks were told it is done enough
        self.ended = False  # every instance terminal
        self.ready_ups = 0  # released upstream tasks
        self.deadline: float | None = None  # placement deadline while WAITING
        self._inputs_cache: tuple[str, ...] = ()
        self.ring_size = 0  # chains and rings: how many nodes take part
        self.call: Call | None = None  # set for the instances of one world.invoke call
        self.loop_pass: int | None = None  # its inner loop's pass (None: not in a loop)

    @property
    def label(self) -> str:
        """Its iteration as instance ids write it: ``"3"``, or ``"3.1"`` in pass 1 of
        an inner loop."""
        if self.loop_pass is None:
            return str(self.iteration)
        return f"{self.iteration}.{self.loop_pass}"

    @property
    def alias(self) -> str:
        """The task's alias."""
        return self.spec.alias

    @property
    def successes(self) -> int:
        """Slots that succeeded."""
        return len(self.succeeded_ids)

    @property
    def result_condition(self) -> bool:
        """Whether downstream tasks may start at ``min_results`` successes."""
        return self.spec.condition is ConditionKind.RESULT

    def succeeded_tuple(self) -> tuple[str, ...]:
        """Succeeded instance ids, as one shared tuple until the next success."""
        if len(self._inputs_cache) != len(self.succeeded_ids):
            self._inputs_cache = tuple(self.succeeded_ids)
        return self._inputs_cache


class Call:
    """One ``world.invoke`` call: its caller, deadline and when it began."""

    __slots__ = ("call_id", "caller", "deadline", "done", "number", "since")

    def __init__(
        self, call_id: str, caller: Instance, number: int, since: float, deadline: float
    ) -> None:
        self.call_id = call_id
        self.caller = caller
        self.number = number
        self.since = since
        self.deadline = deadline
        self.done = False


class LoopRun:
    """One inner loop in one outer iteration: which pass runs, and what ended."""

    __slots__ = ("ended", "iteration", "name", "pass_", "prev", "spec", "values")

    def __init__(self, name: str, spec: LoopSpec, iteration: int) -> None:
        self.name = name
        self.spec = spec
        self.iteration = iteration
        self.pass_ = 0
        self.ended = 0  # tasks of this pass whose every instance ended
        # The previous pass's runs of the loop's tasks (their exits are the carry).
        self.prev: dict[str, TaskRun] = {}
        # instance id -> the number it reported for ``until`` (this pass only).
        self.values: dict[str, float | None] = {}


class LoopShape:
    """A loop's tasks, entries (no upstream inside) and exits (no downstream inside)."""

    __slots__ = ("entries", "exits", "tasks")

    def __init__(self, plan: Plan, name: str) -> None:
        self.tasks = plan.loop_tasks(name)
        self.entries = plan.loop_entries(name)
        self.exits = plan.loop_exits(name)


class SwarmState:
    """A submitted plan and everything the engine tracks about it."""

    __slots__ = (
        "active",
        "downstream",
        "failed",
        "loop_of",
        "loop_runs",
        "loop_shapes",
        "narrow",
        "needs",
        "pins",
        "plan",
        "reason",
        "runs",
        "seed",
        "sinks",
        "sinks_ended",
        "skipped",
        "sources",
        "started_iterations",
        "status",
        "stop_by",
        "swarm_id",
        "task_timeout_s",
        "tasks",
        "upstream",
        "waiting",
    )

    def __init__(self, swarm_id: str, plan: Plan, seed: int, task_timeout_s: float) -> None:
        self.swarm_id = swarm_id
        self.plan = plan
        self.seed = seed
        # The timeout of its tasks declared with timeout=None: finite, never "forever".
        self.task_timeout_s = task_timeout_s
        self.status = SwarmStatus.RUNNING
        self.reason = ""
        self.started_iterations = 0
        self.tasks: dict[str, TaskSpec] = {t.alias: t for t in plan.tasks}
        # dict.fromkeys drops a repeated edge, so an upstream is counted once.
        self.upstream: dict[str, tuple[str, ...]] = {
            a: tuple(dict.fromkeys(plan.upstream(a))) for a in self.tasks
        }
        self.downstream: dict[str, tuple[str, ...]] = {
            a: tuple(dict.fromkeys(plan.downstream(a))) for a in self.tasks
        }
        # On-demand tasks are started by world.invoke, never by the graph.
        self.sources = tuple(
            a for a, t in self.tasks.items() if not self.upstream[a] and not t.on_demand
        )
        self.sinks: dict[str, None] = dict.fromkeys(plan.sinks)
        # Inner loops: each loop task's loop, each loop's shape, each (iteration, loop)'s run.
        self.loop_of: dict[str, str] = {t.alias: t.loop for t in plan.tasks if t.loop is not None}
        self.loop_shapes: dict[str, LoopShape] = {n: LoopShape(plan, n) for n in plan.loops}
        self.loop_runs: dict[tuple[int, str], LoopRun] = {}
        self.runs: dict[tuple[int, str], TaskRun] = {}
        self.active: dict[str, Instance] = {}
        self.failed: list[Instance] = []
        # Chain/ring slots that failed without an instance (their node was gone).
        self.skipped: list[str] = []
        self.stop_by: str | None = None  # reason, once a task called stop_swarm()
        self.pins: dict[str, frozenset[str]] = {}
        self.narrow: dict[tuple[int, str], frozenset[str]] = {}
        self.sinks_ended: dict[int, int] = {}
        self.waiting: dict[tuple[int, str], TaskRun] = {}
        # Each module's resources as numbers; a module whose resources do not parse is
        # named by resource_problem() and fails the swarm at submission.
        self.needs: dict[str, ResourceNeed | str] = {}
        for digest, module in plan.modules.items():
            try:
                self.needs[digest] = parse_resources(module.resources)
            except ValueError as e:
                self.needs[digest] = f"module {module.name!r} has bad resources: {e}"

    def need(self, module: str) -> ResourceNeed:
        """What one instance of ``module`` needs of a node."""
        need = self.needs.get(module)
        return need if isinstance(need, ResourceNeed) else ResourceNeed()

    def resource_problem(self) -> str | None:
        """The first module whose ``resources`` do not parse, or None."""
        return next((n for n in self.needs.values() if isinstance(n, str)), None)

    @property
    def iteration(self) -> int:
        """The current (latest started) iteration; -1 before the first."""
        return self.started_iterations - 1

    def cycle(self) -> list[str]:
        """Tasks on or behind a cycle (Kahn's algorithm); empty for a DAG."""
        indegree = {a: len(ups) for a, ups in self.upstream.items()}
        todo = [a for a, d in indegree.items() if d == 0]
        seen = 0
        while todo:
            a = todo.pop()
            seen += 1
            for d in self.downstream[a]:
                indegree[d] -= 1
                if indegree[d] == 0:
                    todo.append(d)
        if seen == len(indegree):
            return []
        return [a for a, d in indegree.items() if d > 0]
