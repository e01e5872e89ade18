"""Compile a Swarm into a Plan plus its module bundles, reporting every problem at once."""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import JsonValue, ValidationError

from shoal._bundle import Bundle
from shoal._codec import encode_b64
from shoal._define.graph import find_cycle
from shoal._define.module import Module
from shoal._define.swarm import Swarm
from shoal._define.task import _BUILDER, Condition, NetworkDriver, Task, _GraphBuilder
from shoal._errors import CodecError, Problem, ShoalError, ShoalWarning, SwarmValidationError
from shoal._plan import (
    CODEC_TAG,
    ConditionKind,
    Limits,
    LoopSpec,
    LoopUntil,
    Method,
    ModuleRef,
    Order,
    Placement,
    Plan,
    TaskSpec,
    module_key,
    name_problem,
    plain_global,
)
from shoal._plan.resources import resource_problem
from shoal._plan.schema import loop_outsider

_DRIVER_NAMES = frozenset(d.value for d in NetworkDriver)


@dataclass(frozen=True)
class Compiled:
    """A plan and the bundles its modules refer to (by bundle digest).

    ``sources`` maps a bundle digest to the folder on this machine that holds the
    bundle's files as the user wrote them (a ``.py`` file's or a package's parent
    folder), for modules declared by path: the simulator shows tracebacks there.
    """

    plan: Plan
    bundles: dict[str, Bundle]
    sources: dict[str, Path] = dataclasses.field(default_factory=dict)


def _declared(swarm: Swarm) -> Iterator[tuple[str, Task | Module]]:
    """Tasks and modules stored on the swarm, with their attribute names."""
    for name, value in vars(swarm).items():
        if name.startswith("_"):
            continue
        items = (
            value
            if isinstance(value, (list, tuple))
            else (value.values() if isinstance(value, dict) else [value])
        )
        for item in items:
            if isinstance(item, (Task, Module)):
                yield name, item


def _run_execute(swarm: Swarm, swarm_name: str) -> tuple[_GraphBuilder, list[Task], list[Problem]]:
    builder = _GraphBuilder()
    token = _BUILDER.set(builder)
    try:
        returned = swarm.execute()
    except NotImplementedError:
        return (
            builder,
            [],
            [
                Problem(
                    "swarm.execute",
                    f"swarm {swarm_name!r}",
                    "does not define execute()",
                    "define execute() that calls tasks and returns the sink task(s)",
                )
            ],
        )
    except ShoalError:
        raise
    except Exception as e:
        raise ShoalError(
            f"swarm {swarm_name!r}: execute() raised {type(e).__name__}: {e}",
            code="swarm.execute",
            hint="fix execute(); it should only connect tasks and return the sinks",
        ) from e
    finally:
        _BUILDER.reset(token)
    raw = returned if isinstance(returned, (list, tuple)) else [returned]
    sinks: list[Task] = []
    problems: list[Problem] = []
    for item in raw:
        if isinstance(item, Module):
            item = item.implicit_task()
        if isinstance(item, Task):
            builder.add(item)
            sinks.append(item)
        else:
            problems.append(
                Problem(
                    "swarm.execute",
                    f"swarm {swarm_name!r}",
                    f"execute() returned {type(item).__name__} {item!r}, not a task",
                    "return the sink task, or a list of sink tasks",
                )
            )
    return builder, sinks, problems


def _aliases(swarm: Swarm, tasks: list[Task]) -> tuple[dict[int, str], list[Problem]]:
    attr: dict[int, str] = {}
    for name, item in _declared(swarm):
        task = item if isinstance(item, Task) else item._implicit
        if task is not None:
            attr.setdefault(id(task), name)
    explicit: dict[str, int] = {}
    problems: list[Problem] = []
    for t in tasks:
        if t.alias:
            if t.alias in explicit:
                problems.append(
                    Problem(
                        "task.alias",
                        f"task {t.alias!r}",
                        "the alias is used by two different tasks",
                        "give each task its own alias=",
                    )
                )
            explicit.setdefault(t.alias, id(t))
    out: dict[int, str] = {}
    used = set(explicit)
    for t in tasks:
        if t.alias:
            out[id(t)] = t.alias
            continue
        base = attr.get(id(t)) or t.module.name
        alias, n = base, 1
        while alias in used:
            n += 1
            alias = f"{base}_{n}"
        used.add(alias)
        out[id(t)] = alias
    return out, problems


def _name_problems(
    tasks: list[Task], aliases: dict[int, str], modules: list[Module]
) -> list[Problem]:
    """Aliases, dataset names, image names and node ids outside their character set."""
    out: list[Problem] = []
    for t in tasks:
        alias = aliases[id(t)]
        if (why := name_problem(alias)) is not None:
            fix = "pass alias= a valid name" if t.alias else "give the task alias= a valid name"
            out.append(Problem("name.alias", f"task {alias!r}", f"the alias {why}", fix))
        for field in ("specified_ids", "excepted_ids"):
            for node in getattr(t, field) or ():
                if (why := name_problem(node)) is not None:
                    out.append(
                        Problem(
                            "name.node_id",
                            f"task {alias!r}",
                            f"{field} holds an invalid node id: {why}",
                            f"list node ids as the nodes' configs spell them in {field}=",
                        )
                    )
    for m in modules:
        for ds in m.datasets:
            if (why := name_problem(ds)) is not None:
                out.append(
                    Problem(
                        "name.dataset",
                        f"module {m.name!r}",
                        f"the dataset name {why}",
                        "name the dataset as the nodes' [datasets] tables do",
                    )
                )
        if (why := name_problem(m.image, image=True)) is not None:
            out.append(
                Problem(
                    "name.image",
                    f"module {m.name!r}",
                    f"the image name {why}",
                    'use a short image name such as image="torch" and map it to an '
                    "interpreter or OCI reference in the nodes' [images] tables",
                )
            )
    return out


def _where(m: Module) -> str:
    return "source text" if m._path is None else str(m._path)


def _version_problems(modules: list[Module]) -> list[Problem]:
    """(name, version) names one code: two different codes under one is refused.

    Two versions of one code are two modules (blue-green runs them side by side); an
    unversioned module may share its name with others (a name defaults to a file name).
    """
    seen: dict[tuple[str, str], Module] = {}
    out: list[Problem] = []
    for m in modules:
        if m.version is None:
            continue
        first = seen.setdefault((m.name, m.version), m)
        if first is not m and first.bundle().digest != m.bundle().digest:
            out.append(
                Problem(
                    "module.version",
                    f"module {m.name!r} version {m.version!r}",
                    f"names two different codes: {_where(first)} and {_where(m)}",
                    "give the new code its own version= (or its own name=)",
                )
            )
    return out


def _placement(t: Task) -> Placement:
    method = {"fixed": "all", "maximum": "all"}.get(t.method, t.method)
    m = t.maximum
    count: int | None = None
    fraction: float | None = None
    if isinstance(m, float):
        fraction = m
    elif isinstance(m, int) and m != -1:
        count = m
    elif m == -1 and method in ("any", "random"):
        fraction = 1.0  # every eligible node, said explicitly: the engine's default is one
    elif m is None and method in ("any", "random"):
        count = 1
    return Placement(
        method=Method(method),
        count=count,
        fraction=fraction,
        fixed=t.fixed,
        specified_ids=t.specified_ids,
        excepted_ids=t.excepted_ids,
        gpu=t.gpu,
    )


def compile_swarm(swarm: Swarm, source: str | None = None) -> Compiled:
    """Validate ``swarm`` and compile it; raise one error listing every problem."""
    state = swarm._shoal_state()
    name = swarm.name or type(swarm).__name__
    builder, sinks, problems = _run_execute(swarm, name)
    tasks = builder.order
    problems += _on_demand_problems(builder, sinks)
    # On-demand tasks are not called in execute(): they are the swarm's attributes.
    called = {id(t) for t in tasks}
    tasks = tasks + [
        t
        for t in vars(swarm).values()
        if isinstance(t, Task) and t.on_demand is True and id(t) not in called
    ]
    aliases, alias_problems = _aliases(swarm, tasks)
    problems += alias_problems
    edges = list(dict.fromkeys((aliases[id(u)], aliases[id(d)]) for u, d in builder.edges))
    # Searched over the task objects, not their aliases: two tasks that share an alias
    # (a problem reported above) are not one task, so their edge is no "x -> x" cycle.
    if (cycle := find_cycle((id(u), id(d)) for u, d in builder.edges)) is not None:
        by_id = {id(t): t for t in tasks}
        problems.append(
            Problem(
                "graph.cycle",
                f"swarm {name!r}",
                "the graph has a cycle " + " -> ".join(repr(aliases[id(by_id[i])]) for i in cycle),
                "remove one of these edges; iterations repeat the graph, no cycle is needed",
            )
        )
    sink_aliases = [aliases[id(s)] for s in sinks]
    for s in sink_aliases:
        downstream = [d for u, d in edges if u == s]
        if downstream:
            problems.append(
                Problem(
                    "graph.sink",
                    f"task {s!r}",
                    f"is returned by execute() but feeds {downstream}",
                    "return only the last tasks of the graph",
                )
            )
    # A driver's name used as a network ("overlay", seed 002) is a declared network of
    # that driver, as if add_network(name, name) had been called.
    networks: dict[str, str] = dict(state["networks"])
    for t in tasks:
        if t.network not in networks and t.network in _DRIVER_NAMES:
            networks[t.network] = t.network
    modules: dict[int, Module] = {}
    for t in tasks:
        problems += t.problems(f"task {aliases[id(t)]!r}", networks)
        modules.setdefault(id(t.module), t.module)
    for m in modules.values():
        problems += m.problems(f"module {m.name!r}")
        if (bad := resource_problem(m.resources)) is not None:
            problems.append(
                Problem(
                    "module.resources",
                    f"module {m.name!r}",
                    f"resources={m.resources!r}: {bad}",
                    'use cpu (cores, e.g. 2 or "500m"), memory (e.g. "16Gi"), gpu (a count) '
                    'and gpu_memory (e.g. "24Gi")',
                )
            )
    problems += _name_problems(tasks, aliases, list(modules.values()))
    if not any(p.code.startswith("module.") for p in problems):
        problems += _version_problems(list(modules.values()))
    mi = swarm.max_iterations
    if mi is not None and (not isinstance(mi, int) or isinstance(mi, bool) or mi < 1):
        problems.append(
            Problem(
                "swarm.max_iterations",
                f"swarm {name!r}",
                f"max_iterations={mi!r} is not an int >= 1",
                "set max_iterations to a positive int, or None to run until stopped",
            )
        )
    pt = swarm.placement_timeout
    if not isinstance(pt, (int, float)) or isinstance(pt, bool) or math.isnan(pt) or pt < 0:
        problems.append(
            Problem(
                "swarm.placement_timeout",
                f"swarm {name!r}",
                f"placement_timeout={pt!r} is not a number of seconds >= 0",
                "set placement_timeout to seconds, e.g. 60",
            )
        )
    encoded: dict[str, JsonValue] = {}
    for key, value in state["globals"].items():
        if plain_global(value):  # readable and diffable in the plan (schema version 3)
            encoded[str(key)] = value
            continue
        try:
            encoded[str(key)] = {CODEC_TAG: encode_b64(value)}
        except CodecError as e:
            problems.append(
                Problem(
                    "swarm.global",
                    f"global {key!r}",
                    str(e),
                    "store plain data: numbers, strings, lists, dicts, arrays",
                )
            )
    loops, loop_problems = _loops(state.get("loops", {}), tasks, aliases, edges)
    problems += loop_problems
    if problems:
        raise SwarmValidationError(name, problems)

    declared = {id(i if isinstance(i, Task) else i._implicit or i) for _, i in _declared(swarm)}
    in_graph = {id(t) for t in tasks}
    for attr_name, item in _declared(swarm):
        obj = item if isinstance(item, Task) else (item._implicit or item)
        if id(obj) in declared and id(obj) not in in_graph:
            warnings.warn(
                ShoalWarning(
                    f"swarm {name!r}: {attr_name} ({obj!r}) is declared but not reachable from "
                    "execute(); it will not run. Call it in execute() or remove it."
                ),
                stacklevel=3,
            )

    # One plan entry per module declaration, keyed by all of it; modules whose code is
    # the same share one bundle (never one entry: that would lose datasets, image, ...).
    bundles: dict[str, Bundle] = {}
    refs: dict[str, ModuleRef] = {}
    keys: dict[int, str] = {}
    sources: dict[str, Path] = {}
    for mid, m in modules.items():
        b = m.bundle()
        bundles[b.digest] = b
        if m._path is not None:  # a file or a package: the bundle holds it by its name
            sources.setdefault(b.digest, m._path.resolve().parent)
        ref = ModuleRef(
            digest=b.digest,
            name=m.name,
            version=m.version,
            kind=b.kind,
            image=m.image,
            datasets=m.datasets,
            requirements=m.all_requirements(),
            resources=_plain(m.resources),
            fresh_process=m.fresh_process,
        )
        keys[mid] = module_key(ref)
        refs[keys[mid]] = ref
    specs = tuple(
        TaskSpec(
            alias=aliases[id(t)],
            module=keys[id(t.module)],
            placement=_placement(t),
            network=t.network,
            condition=ConditionKind(Condition(t.condition).value),
            min_results=t.min_results,
            timeout_s=t.timeout,
            retries=t.retries,
            order=Order(t.order),
            rounds=t.rounds,
            on_demand=t.on_demand,
            loop=t.loop,
        )
        for t in tasks
    )
    plan = Plan(
        name=name,
        source=source or f"{type(swarm).__module__}:{type(swarm).__qualname__}",
        modules=refs,
        tasks=specs,
        edges=tuple(edges),
        sinks=tuple(dict.fromkeys(sink_aliases)),
        globals=encoded,
        networks=dict(networks),
        limits=Limits(placement_timeout_s=float(pt), max_iterations=mi),
        loops=loops,
    )
    return Compiled(plan, bundles, sources)


_UNTIL_FIX = (
    'give until={"tag": "accuracy", "op": ">=", "value": 0.9} (optionally "key": the '
    "entry of a mapping result), or None"
)


def _loops(
    declared: dict[str, tuple[Any, Any]],
    tasks: list[Task],
    aliases: dict[int, str],
    edges: list[tuple[str, str]],
) -> tuple[dict[str, LoopSpec], list[Problem]]:
    """The plan's loops from ``Swarm.add_loop`` and ``Task(loop=...)``, or the problems."""
    problems: list[Problem] = []
    loops: dict[str, LoopSpec] = {}
    for name, (times, until) in declared.items():
        obj = f"loop {name!r}"
        if (why := name_problem(name)) is not None:
            problems.append(Problem("task.loop", obj, why, "name the loop like a task alias"))
            continue
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            problems.append(
                Problem(
                    "task.loop", obj, f"times={times!r} is not an int >= 1", "give times=1 or more"
                )
            )
            continue
        try:
            cond = None if until is None else LoopUntil.model_validate(dict(until))
        except (ValidationError, TypeError, ValueError) as e:
            problems.append(
                Problem("task.loop", obj, f"until={until!r} is invalid: {e}", _UNTIL_FIX)
            )
            continue
        loops[name] = LoopSpec(times=times, until=cond)
    members: dict[str, list[str]] = {}
    for t in tasks:
        if isinstance(t.loop, str):
            members.setdefault(t.loop, []).append(aliases[id(t)])
            if t.loop not in declared:
                problems.append(
                    Problem(
                        "task.loop",
                        f"task {aliases[id(t)]!r}",
                        f"names loop {t.loop!r}, which the swarm does not declare",
                        f'declare it in the swarm: self.add_loop("{t.loop}", times=...)',
                    )
                )
    for name in loops:
        inside = set(members.get(name, ()))
        if not inside:
            problems.append(
                Problem(
                    "task.loop",
                    f"loop {name!r}",
                    "is declared but no task is in it",
                    f'give its tasks loop="{name}", or remove the add_loop call',
                )
            )
        elif (between := loop_outsider(inside, edges)) is not None:
            problems.append(
                Problem(
                    "task.loop",
                    f"loop {name!r}",
                    f"task {between!r} is outside the loop but on a path between its tasks",
                    f'give {between!r} loop="{name}" too, or connect it so that no path '
                    "leaves the loop and comes back",
                )
            )
    return loops, problems


def _on_demand_problems(builder: _GraphBuilder, sinks: list[Task]) -> list[Problem]:
    """On-demand tasks called in execute(): with upstream tasks, downstream or as sinks."""
    out: list[Problem] = []
    wired = {id(t) for edge in builder.edges for t in edge} | {id(t) for t in sinks}
    for t in builder.order:
        if t.on_demand is True and id(t) in wired:
            out.append(
                Problem(
                    "task.on_demand",
                    f"task {t.alias or t.module.name!r}",
                    "is on-demand but is wired into the graph (an edge or a sink)",
                    "declare it as an attribute of the swarm and run it with "
                    "world.invoke(alias) from a running task; do not call it in execute()",
                )
            )
    return out


def _plain(resources: dict[str, Any]) -> dict[str, str | int | float | bool]:
    return {
        str(k): v if isinstance(v, (str, int, float, bool)) else str(v)
        for k, v in resources.items()
    }
