"""Inner loops: tasks repeated in passes inside one outer iteration (docs/engine.md,
"Inner loops").

A loop's tasks run in pass 0, 1, ... of the same outer iteration. Each pass of each task
is a fresh :class:`~shoal._engine.state.TaskRun` (so placement, retries, timeouts and
min_results apply per pass exactly as to any task); ``SwarmState.runs[(iteration,
alias)]`` holds the current pass's run and :class:`~shoal._engine.state.LoopRun` keeps
the previous pass's, whose exit instances are what the next pass's entry tasks see.
The tasks after the loop are released, and the loop's sinks counted, only when the loop
ends: after ``times`` passes, or earlier when its ``until`` condition holds on the
numbers the driver read from the exit instances' results (``InstanceSucceeded.
loop_value``). The condition is data; no user code runs here.
"""

from __future__ import annotations

from shoal._engine.core import EngineCore
from shoal._engine.state import Instance, LoopRun, SwarmState, SwarmStatus, TaskRun


class LoopsMixin(EngineCore):
    """Pass ends, the carry between passes, and the loop's end."""

    def _loop_of(self, run: TaskRun) -> LoopRun:
        swarm = run.swarm
        return swarm.loop_runs[(run.iteration, swarm.loop_of[run.alias])]

    def _released_to(self, run: TaskRun) -> tuple[str, ...]:
        swarm = run.swarm
        loop = swarm.loop_of.get(run.alias)
        downstream = swarm.downstream[run.alias]
        if loop is None or run.call is not None:
            return downstream
        return tuple(d for d in downstream if swarm.loop_of.get(d) == loop)

    def _carry(self, run: TaskRun) -> dict[str, tuple[str, ...]]:
        swarm = run.swarm
        name = swarm.loop_of.get(run.alias)
        if name is None or run.call is not None:
            return {}
        shape = swarm.loop_shapes[name]
        if run.alias not in shape.entries:
            return {}
        loop = self._loop_of(run)
        return {x: self._visible(loop.prev[x]) for x in shape.exits if x in loop.prev}

    def _loop_value(self, inst: Instance, value: float | None) -> None:
        """An instance of a loop task succeeded reporting ``value`` for ``until``."""
        run = inst.run
        if run.loop_pass is None or run.call is not None:
            return
        loop = self._loop_of(run)
        if loop.spec.until is not None:
            loop.values[inst.instance_id] = value

    def _loop_task_ended(self, run: TaskRun) -> None:
        swarm = run.swarm
        if run.call is not None or swarm.status is not SwarmStatus.RUNNING:
            return
        loop = self._loop_of(run)
        shape = swarm.loop_shapes[loop.name]
        loop.ended += 1
        if loop.ended < len(shape.tasks):
            return
        # Pass ended: every task of the loop ended this pass and none failed the swarm.
        stop, why = self._loop_stops(swarm, loop)
        last = self._last_exit_instance(swarm, loop)
        if last is not None:
            self._log(last, f"loop {loop.name!r} pass {loop.pass_} ended: {why}")
        if stop:
            self._end_loop(swarm, loop)
        else:
            self._next_pass(swarm, loop)

    def _loop_stops(self, swarm: SwarmState, loop: LoopRun) -> tuple[bool, str]:
        """Whether the loop ends after this pass, and why (for the story)."""
        until, times = loop.spec.until, loop.spec.times
        if until is not None:
            ids = self._exit_ids(swarm, loop)
            got = [loop.values.get(i) for i in ids]
            if ids and all(v is not None and until.holds(v) for v in got):
                shown = ", ".join(f"{v:g}" for v in got if v is not None)
                return True, f"until {until.describe()} holds ({shown}); the loop ends"
        if loop.pass_ + 1 >= times:
            return True, f"{times} pass(es) ran; the loop ends"
        if until is not None:
            return False, f"until {until.describe()} does not hold yet; next pass"
        return False, "next pass"

    def _exit_ids(self, swarm: SwarmState, loop: LoopRun) -> list[str]:
        """The instances of this pass's exit tasks that the tasks after the loop see."""
        shape = swarm.loop_shapes[loop.name]
        return [i for x in shape.exits for i in self._visible(swarm.runs[(loop.iteration, x)])]

    def _last_exit_instance(self, swarm: SwarmState, loop: LoopRun) -> Instance | None:
        ids = self._exit_ids(swarm, loop)
        return self._instances[ids[-1]] if ids else None

    def _next_pass(self, swarm: SwarmState, loop: LoopRun) -> None:
        """Start pass p+1: fresh runs of the loop's tasks; its entries are ready now."""
        shape = swarm.loop_shapes[loop.name]
        it = loop.iteration
        loop.prev = {a: swarm.runs.pop((it, a)) for a in shape.tasks}
        loop.pass_ += 1
        loop.ended = 0
        loop.values = {}
        inside = set(shape.tasks)
        fresh = [self._run(swarm, it, a) for a in shape.tasks]
        for run in fresh:
            # Upstream tasks outside the loop released it before pass 0 could end.
            run.ready_ups = sum(1 for u in swarm.upstream[run.alias] if u not in inside)
        for run in fresh:
            if run.alias in shape.entries:
                self._make_ready(run)
                if swarm.status is not SwarmStatus.RUNNING:
                    return

    def _end_loop(self, swarm: SwarmState, loop: LoopRun) -> None:
        """Release the tasks after the loop (they see the last pass), count its sinks."""
        shape = swarm.loop_shapes[loop.name]
        it = loop.iteration
        loop.prev = {}
        for a in shape.tasks:
            for d in swarm.downstream[a]:
                if swarm.loop_of.get(d) == loop.name:
                    continue
                down = self._run(swarm, it, d)
                down.ready_ups += 1
                if down.ready_ups == len(swarm.upstream[d]):
                    self._make_ready(down)
                if swarm.status is not SwarmStatus.RUNNING:
                    return
        for a in shape.tasks:
            if a in swarm.sinks:
                self._sink_ended(swarm, it)
                if swarm.status is not SwarmStatus.RUNNING or swarm.iteration != it:
                    return
