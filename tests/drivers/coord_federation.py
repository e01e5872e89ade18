"""A coordinator driver in this process, on a virtual clock, with in-process nodes.

The mirror of ``shoal.testing.Federation`` (the simulator driver with an inline
executor) for the coordinator driver: real ``Coordinator``, real store, real engine;
only HTTP and the node agents are replaced by direct calls. What a node agent does is
done here in the same order: take instructions, report ``started``, run the task with
its world calls parsed by the node routes' own schemas, report ``done``; heartbeat while
time passes. The test can then move the virtual clock past timeouts and heartbeat
deadlines without sleeping.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal import Swarm
from shoal._api.records import FailureRecord, failure_record
from shoal._api.schemas import CancelInstruction, RunInstruction
from shoal._coord.driver import Coordinator
from shoal._coord.http import validate
from shoal._coord.schemas import WORLD_ARGS
from shoal._coord.state import Offer
from shoal._data.nodes import node_id
from shoal._define.compile import compile_swarm
from shoal._runtime.context import InstanceContext
from shoal._runtime.loader import ModuleCache, extract_bundle, run_instance
from shoal._runtime.protocol import error_payload, raise_payload
from shoal._store.base import Store
from shoal._store.memory import MemoryStore
from shoal._wire import from_wire
from shoal._world.service import InstanceInfo, NodeInfo, WorldService
from shoal.testing import Fault, VirtualClock

HEARTBEAT_S = 15.0


class _NodeChannel:
    """What a node agent's socket proxy does for one instance, minus the socket."""

    outbox = None

    def __init__(self, fed: CoordFederation, info: InstanceInfo) -> None:
        self._fed = fed
        self._info = info

    def request(self, op: str, args: dict[str, Any]) -> Any:
        if op.startswith("local."):  # the agent answers these itself
            return self._fed.local.handle(self._info, op, args)
        try:
            parsed = validate(WORLD_ARGS[op], args).model_dump()
            calls = [(op, parsed)]
            return self._fed.coord.world_calls(self._info.node_id, self._info.instance_id, calls)
        except Exception as e:  # the node route turns errors into data; the proxy raises
            raise_payload(error_payload(e))

    def notify(self, op: str, args: dict[str, Any]) -> None:
        self.request(op, args)


@dataclass
class CoordRun:
    """What a finished swarm looks like through the coordinator driver."""

    swarm_id: str
    status: str
    reason: str
    iterations: int
    failures: tuple[FailureRecord, ...]
    coord: Coordinator = field(repr=False)

    def global_(self, key: str) -> Any:
        found = self.coord.store.global_get(self.swarm_id, key)
        return None if found is None else from_wire(found[1])

    def story(self, instance_id: str) -> list[str]:
        return self.coord.story(instance_id)


class CoordFederation:
    """Nodes ``node-00000``... joined to an in-process coordinator on a virtual clock."""

    def __init__(
        self,
        nodes: int | Mapping[str, Mapping[str, str | Path]] = 3,
        datasets: Mapping[str, str | Path] | None = None,
        seed: int = 0,
        store: Store | None = None,
        root: Path | None = None,
    ) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="shoal-coordfed-"))
        self.clock = VirtualClock(1_000.0)
        self.seed = seed
        self.faults: list[Fault] = []
        shared = {k: Path(v) for k, v in (datasets or {}).items()}
        if isinstance(nodes, int):
            maps = {node_id(i): dict(shared) for i in range(nodes)}
        else:
            maps = {n: {**{k: Path(v) for k, v in d.items()}, **shared} for n, d in nodes.items()}
        self.infos = {n: NodeInfo(n, m) for n, m in maps.items()}
        self.store = store if store is not None else MemoryStore(self.root / "blobs")
        self.coord = Coordinator(
            self.store, heartbeat_timeout_s=HEARTBEAT_S, clock=self.clock.now, validate=True
        )
        self.local = WorldService(self.store, self.infos, lambda i: None, lambda i, a, n: None)
        self.down: set[str] = set()  # nodes that stopped answering (heartbeats, polls)
        self.hung: dict[str, str] = {}  # instance id -> node: started, never ends
        self._folders: dict[str, Path] = {}
        self._cache = ModuleCache()
        for n in self.infos:
            self.coord.enrol(n, self.offer(n))

    def restart(self, store: Store) -> int:
        """A new coordinator process on ``store`` (the old one is gone): replay the
        event log; return how many events were replayed."""
        self.store = store
        self.coord = Coordinator(
            store, heartbeat_timeout_s=HEARTBEAT_S, clock=self.clock.now, validate=True
        )
        self.local = WorldService(store, self.infos, lambda i: None, lambda i, a, n: None)
        return self.coord.recover()

    def offer(self, node: str) -> Offer:
        return Offer(frozenset(self.infos[node].datasets), False, None)

    def inject(
        self,
        kind: str,
        node: str | None = None,
        task: str | None = None,
        iteration: int | None = None,
        attempt: int | None = 0,
    ) -> None:
        self.faults.append(Fault(kind, node, task, iteration, attempt))  # type: ignore[arg-type]

    # ------------------------------------------------------------------ running
    def submit(self, swarm: Swarm, max_iterations: int | None = None) -> str:
        compiled = compile_swarm(swarm)
        plan = compiled.plan
        if max_iterations is not None:
            limits = plan.limits.model_copy(update={"max_iterations": max_iterations})
            plan = plan.model_copy(update={"limits": limits})
        for d, b in compiled.bundles.items():
            self._folders[d] = extract_bundle(b.data, d, self.root / "modules")
        return self.coord.submit(plan, self.seed)

    def run(self, swarm: Swarm, max_iterations: int | None = None) -> CoordRun:
        """Run ``swarm`` to its end, moving the virtual clock only when nothing runs."""
        sid = self.submit(swarm, max_iterations)
        self.run_until_done(sid)
        return self.result(sid)

    def result(self, sid: str) -> CoordRun:
        view = self.coord.engine.swarm(sid)
        failures = tuple(failure_record(f) for f in view.failures)
        return CoordRun(sid, view.status, view.reason, view.iteration + 1, failures, self.coord)

    def running(self, sid: str) -> bool:
        return self.coord.engine.swarm(sid).status == "running"

    def run_until_done(self, sid: str, max_steps: int = 100_000) -> None:
        for _ in range(max_steps):
            if not self.running(sid):
                return
            if not self.step():
                self.pass_time()
        raise AssertionError(f"swarm {sid} did not finish in {max_steps} steps")

    def step(self) -> bool:
        """Every up node takes and carries out its instructions; False if none had any."""
        progressed = False
        for n in self.infos:
            if n in self.down:
                continue
            for item in self.coord.queues.take_now(n):
                progressed = True
                if isinstance(item, CancelInstruction):
                    self.hung.pop(item.instance_id, None)
                else:
                    self._run(n, item)
        return progressed

    def pass_time(self, at_most: float = HEARTBEAT_S / 3) -> None:
        """Move the clock to the next engine timer (at most ``at_most`` s at a time);
        up nodes heartbeat, the coordinator ticks."""
        wake = self.coord.tick()
        now = self.clock.now()
        step = at_most if wake is None else min(at_most, max(wake - now, 0.0))
        if wake is None and not self.hung and not self.down:
            raise AssertionError("stalled: nothing runs and no engine timer is set")
        self.clock.advance(step + 1e-3)
        for n in self.infos:
            if n not in self.down:
                running = [i for i, node in self.hung.items() if node == n]
                self.coord.heartbeat(n, self.offer(n), "session-1", running)
        self.coord.tick()

    def _fault(self, info: InstanceInfo, attempt: int) -> str | None:
        return next((f.kind for f in self.faults if f.matches(info, attempt)), None)

    def _run(self, node: str, item: RunInstruction) -> None:
        iid = item.instance_id
        view = self.coord.engine.instance(iid)
        info = InstanceInfo(item.swarm_id, iid, node, item.alias, item.iteration, view.inputs)
        self.coord.started(node, iid)
        fault = self._fault(info, item.attempt)
        if fault == "hang":
            self.hung[iid] = node
            return
        if fault is not None:
            kind = "crash" if fault == "crash" else "error"
            self.coord.done(node, iid, False, f"injected fault: {fault}", "", kind)
            return
        ctx = InstanceContext(
            item.swarm_id,
            iid,
            node,
            item.alias,
            item.iteration,
            item.attempt,
            _NodeChannel(self, info),
        )
        module = item.module
        outcome = run_instance(self._cache, module, self._folders[module], ctx, capture=False)
        self.coord.done(node, iid, outcome.ok, outcome.error, outcome.traceback, "error")
