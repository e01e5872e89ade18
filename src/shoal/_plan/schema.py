"""Versioned JSON schema of a plan (pydantic).

A plan is everything a driver needs to run a swarm: tasks with module references,
placement, conditions, edges, sinks, globals and limits. Nothing downstream of
``prepare_graph`` reads the user's Python objects.

Globals (version 3) are plain JSON where the value is plain JSON (``"lr": 0.5``), so a
plan can be read and diffed; any other value (a numpy array, a tuple, bytes) is the
object ``{"$codec": "<base64 of the codec encoding>"}`` (:data:`CODEC_TAG`). A plain
value of that very shape is itself stored encoded, so the tag is never ambiguous.
Versions 1 and 2 stored every global as a bare base64 string; they still load, and
:meth:`Plan.global_parts` reads both forms.

``Plan.modules`` maps a *module key* to a :class:`ModuleRef`: the module's whole
declaration (name, version, image, datasets, requirements, resources) plus the digest of
its code bundle. Two modules with the same code but different declarations are two
entries that share one bundle. Plans written before module keys existed used the bundle
digest as the key; they are still read the same way.

Names that end up in URLs, paths and node configs (task aliases, dataset names, node
ids; image names also allow ``:``) have one character set, :data:`NAME_PATTERN`: 1 to 128
letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit. So a name is
never empty, never contains ``/`` and is never ``.`` or ``..``: it is always one safe
path or URL segment.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    SerializerFunctionWrapHandler,
    StringConstraints,
    ValidationError,
    model_serializer,
    model_validator,
)

from shoal._errors import PlanError

# 2: modules are keyed by their whole declaration (`<name>-<hash>`), no longer by their
# bundle's digest; names have a character set; globals are checked base64. Version 1
# plans (keys were digests) still load.
# 3: globals are plain JSON where they can be, else tagged {"$codec": base64}; versions
# 1 and 2 (every global a bare base64 string) still load.
PLAN_SCHEMA_VERSION = 3
READABLE_PLAN_VERSIONS = (1, 2, 3)
#: The one key of a version-3 global that holds a codec encoding (base64) instead of JSON.
CODEC_TAG = "$codec"
# Integers JSON stores but the codec (msgpack) does not: such a global goes encoded, so
# the codec's refusal names it at declaration time, as before.
_INT_RANGE = (-(2**63), 2**64 - 1)

#: Task aliases, dataset names and node ids.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
#: Image names: a name as above that may also hold ``:`` (``"manta:pytorch"``).
IMAGE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
#: Keys of ``Plan.modules`` (``name-<hash>`` from :func:`module_key`, or a bundle digest
#: in plans written before module keys existed).
MODULE_KEY_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,199}$"
DIGEST_PATTERN = r"^sha256:[0-9a-f]{64}$"
NAME_RULE = "1 to 128 letters, digits, '.', '_' or '-', starting with a letter or digit"
IMAGE_RULE = "1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"

Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
ImageName = Annotated[str, StringConstraints(pattern=IMAGE_PATTERN)]
ModuleKey = Annotated[str, StringConstraints(pattern=MODULE_KEY_PATTERN)]


def name_problem(value: object, *, image: bool = False) -> str | None:
    """Why ``value`` is not a valid name (an image name with ``image``), or None.

    Parameters
    ----------
    value
        The name to check.
    image
        Check against :data:`IMAGE_PATTERN` instead of :data:`NAME_PATTERN`.
    """
    pattern, rule = (IMAGE_PATTERN, IMAGE_RULE) if image else (NAME_PATTERN, NAME_RULE)
    if isinstance(value, str) and re.fullmatch(pattern, value):
        return None
    return f"{value!r} is not a valid name: use {rule} (no '/', no spaces)"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Method(str, Enum):
    """How a task picks its nodes (``fixed`` and ``maximum`` are normalised away)."""

    ALL = "all"
    ANY = "any"
    RANDOM = "random"


class ConditionKind(str, Enum):
    """When a task starts relative to its upstream tasks."""

    FINISHED = "finished"
    RESULT = "result"


class ModuleRef(_Strict):
    """A module's declaration; its code is the bundle with this ``digest``.

    Several refs may share one bundle (the same code declared with different
    datasets, image, resources, ...).
    """

    digest: str = Field(pattern=DIGEST_PATTERN)
    name: str
    version: str | None = None
    kind: Literal["file", "package", "source"]
    image: ImageName = "python"
    datasets: tuple[Name, ...] = ()
    requirements: tuple[str, ...] = ()
    resources: dict[str, str | int | float | bool] = Field(default_factory=dict)
    # Run every instance in a fresh task process, never in a warm one that ran an earlier
    # instance (docs/guarantees.md). Optional: a plan without it loads, and it is left
    # out of the JSON (and of the module key) while False, so older plans and their
    # keys are unchanged.
    fresh_process: bool = False

    @model_serializer(mode="wrap")
    def _drop_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if not self.fresh_process:
            out.pop("fresh_process", None)
        return out

    @property
    def label(self) -> str:
        """``name version`` (``"fl_worker 1.1.0"``), or the name of an unversioned module."""
        return self.name if self.version is None else f"{self.name} {self.version}"


class Placement(_Strict):
    """Which nodes a task runs on.

    ``count`` and ``fraction`` are mutually exclusive. With both ``None``, ``all``
    takes every eligible node and ``any`` / ``random`` take one; ``maximum=-1`` on
    ``any`` / ``random`` compiles to ``fraction=1.0``.
    """

    method: Method = Method.ALL
    count: int | None = Field(default=None, ge=1)
    fraction: float | None = Field(default=None, gt=0.0, le=1.0)
    fixed: bool = False
    specified_ids: tuple[Name, ...] | None = None
    excepted_ids: tuple[Name, ...] = ()
    gpu: bool = False

    @model_validator(mode="after")
    def _one_maximum(self) -> Placement:
        if self.count is not None and self.fraction is not None:
            raise ValueError("placement has both count and fraction; keep one")
        return self


class Order(str, Enum):
    """How the instances of one task run relative to each other (docs/engine.md)."""

    PARALLEL = "parallel"
    CHAIN = "chain"
    RING = "ring"


# TaskSpec fields added after version 2 that are optional: left out of the JSON while
# they hold their default, so older plans, their JSON and their keys are unchanged.
_TASK_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "order": Order.PARALLEL,
    "rounds": None,
    "on_demand": False,
    "loop": None,
}


class TaskSpec(_Strict):
    """One task of the graph; ``module`` is a key of ``Plan.modules``.

    ``order``, ``rounds``, ``on_demand`` and ``loop`` are optional (docs/engine.md,
    "Chains, rings, inner loops and on-demand tasks").
    """

    alias: Name
    module: ModuleKey
    placement: Placement = Placement()
    network: str | None = None
    condition: ConditionKind = ConditionKind.FINISHED
    min_results: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int = Field(default=0, ge=0)
    order: Order = Order.PARALLEL
    rounds: int | None = Field(default=None, ge=1)
    on_demand: bool = False
    loop: Name | None = None

    @model_serializer(mode="wrap")
    def _drop_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for key, default in _TASK_OPTIONAL_DEFAULTS.items():
            if getattr(self, key) == default:
                out.pop(key, None)
        return out

    @model_validator(mode="after")
    def _order_rules(self) -> TaskSpec:
        if self.rounds is not None and self.order is not Order.RING:
            raise ValueError(f"task {self.alias!r} has rounds without order='ring'")
        if self.on_demand and (self.order is not Order.PARALLEL or self.loop is not None):
            raise ValueError(f"on-demand task {self.alias!r} can have neither order nor loop")
        if self.order is not Order.PARALLEL and self.condition is ConditionKind.RESULT:
            raise ValueError(
                f"task {self.alias!r} with order={self.order.value!r} cannot use "
                "condition='result' (its result is its last instance or round)"
            )
        return self


#: Comparisons a loop's ``until`` condition may use.
UNTIL_OPS: tuple[str, ...] = (">=", ">", "<=", "<", "==", "!=")


class LoopUntil(_Strict):
    """When an inner loop stops early: a condition on a number its exit tasks report.

    After each pass, every instance of the loop's exit tasks that downstream tasks see
    (docs/engine.md, "Inner loops") is read: the result it stored under ``tag`` (with
    ``key``: that entry of the mapping it stored). The loop stops when **each** of them
    is a number and ``number <op> value`` holds. A missing or non-numeric value does not
    hold, so the loop goes on to its ``times`` passes.
    """

    tag: str = Field(min_length=1)
    key: str | None = None
    op: Literal[">=", ">", "<=", "<", "==", "!="]
    value: float

    @model_serializer(mode="wrap")
    def _drop_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if self.key is None:
            out.pop("key", None)
        return out

    def holds(self, number: float) -> bool:
        """Whether ``number <op> value``."""
        v = self.value
        return {
            ">=": number >= v,
            ">": number > v,
            "<=": number <= v,
            "<": number < v,
            "==": number == v,
            "!=": number != v,
        }[self.op]

    def describe(self) -> str:
        """``"accuracy >= 0.9"`` (``"products[accuracy] >= 0.9"`` with a key)."""
        what = self.tag if self.key is None else f"{self.tag}[{self.key}]"
        return f"{what} {self.op} {self.value:g}"


class LoopSpec(_Strict):
    """An inner loop: its tasks run up to ``times`` passes inside one outer iteration,
    fewer if ``until`` holds after a pass."""

    times: int = Field(ge=1)
    until: LoopUntil | None = None

    @model_serializer(mode="wrap")
    def _drop_defaults(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if self.until is None:
            out.pop("until", None)
        return out


class Limits(_Strict):
    """Bounds on waiting; every wait in shoal has one."""

    placement_timeout_s: float = Field(default=60.0, ge=0)
    max_iterations: int | None = Field(default=None, ge=1)


class Plan(_Strict):
    """A compiled swarm. Round-trips exactly through :meth:`to_json` / :func:`load_plan`."""

    schema_version: Literal[1, 2, 3] = 3  # PLAN_SCHEMA_VERSION; 1 and 2 are still read
    name: str
    source: str | None = None
    modules: dict[ModuleKey, ModuleRef]
    tasks: tuple[TaskSpec, ...]
    edges: tuple[tuple[str, str], ...]
    sinks: tuple[str, ...]
    globals: dict[str, JsonValue] = Field(
        default_factory=dict,
        description='key -> plain JSON, or {"$codec": base64 of the codec encoding} '
        "(version 3); key -> base64 of the codec encoding (versions 1 and 2)",
    )
    networks: dict[str, str] = Field(default_factory=dict)
    limits: Limits = Limits()
    # Optional (left out of the JSON while empty): inner loops by name.
    loops: dict[Name, LoopSpec] = Field(default_factory=dict)

    @model_serializer(mode="wrap")
    def _drop_empty_loops(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        if not self.loops:
            out.pop("loops", None)
        return out

    @model_validator(mode="after")
    def _decodable_globals(self) -> Plan:
        # Checked here so that a submission is refused whole, before anything is stored.
        bad = {
            k: why
            for k, v in self.globals.items()
            if (why := _global_problem(v, self.schema_version)) is not None
        }
        if bad:
            raise ValueError(
                "; ".join(f"global {k!r} is not {why}" for k, why in sorted(bad.items()))
                + " (write globals with Swarm.set_global, which encodes them)"
            )
        return self

    def global_parts(self, key: str) -> tuple[bytes | None, JsonValue]:
        """Global ``key`` as stored: ``(codec bytes, None)`` for an encoded value, or
        ``(None, value)`` for a plain JSON one (which the caller encodes to store it).

        Parameters
        ----------
        key
            A key of :attr:`globals`.
        """
        stored = self.globals[key]
        if self.schema_version < 3:
            assert isinstance(stored, str)  # checked by the validator
            return base64.b64decode(stored), None
        if _is_tagged(stored):
            assert isinstance(stored, dict)
            text = stored[CODEC_TAG]
            assert isinstance(text, str)  # checked by the validator
            return base64.b64decode(text), None
        return None, stored

    @model_validator(mode="after")
    def _consistent(self) -> Plan:
        aliases = [t.alias for t in self.tasks]
        problems: list[str] = []
        if len(set(aliases)) != len(aliases):
            problems.append(f"duplicate task aliases {sorted(_dups(aliases))}")
        known = set(aliases)
        for up, down in self.edges:
            for a in (up, down):
                if a not in known:
                    problems.append(f"edge ({up!r}, {down!r}) names unknown task {a!r}")
        for s in self.sinks:
            if s not in known:
                problems.append(f"sink {s!r} is not a task")
        for t in self.tasks:
            if t.module not in self.modules:
                problems.append(f"task {t.alias!r} references unknown module {t.module}")
            if t.network is not None and t.network not in self.networks:
                problems.append(f"task {t.alias!r} uses unknown network {t.network!r}")
        if not self.sinks:
            problems.append("plan has no sinks")
        problems.extend(self._new_task_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _new_task_problems(self) -> list[str]:
        problems: list[str] = []
        on_demand = {t.alias for t in self.tasks if t.on_demand}
        for up, down in self.edges:
            for a in (up, down):
                if a in on_demand:
                    problems.append(f"on-demand task {a!r} has an edge ({up!r}, {down!r})")
        for s in self.sinks:
            if s in on_demand:
                problems.append(f"on-demand task {s!r} cannot be a sink")
        for t in self.tasks:
            if t.loop is not None and t.loop not in self.loops:
                problems.append(f"task {t.alias!r} names unknown loop {t.loop!r}")
        for name in self.loops:
            if not any(t.loop == name for t in self.tasks):
                problems.append(f"loop {name!r} has no task")
            else:
                problems.extend(self._loop_problems(name))
        return problems

    def _loop_problems(self, name: str) -> list[str]:
        """A loop must be contiguous: no path leaves it and comes back into it."""
        between = loop_outsider(set(self.loop_tasks(name)), self.edges)
        if between is None:
            return []
        return [
            f"loop {name!r} is not contiguous: task {between!r} is outside it but on a "
            f"path between its tasks; put {between!r} in the loop or take it off that path"
        ]

    def loop_tasks(self, name: str) -> tuple[str, ...]:
        """Aliases of the tasks of loop ``name``, in plan order."""
        return tuple(t.alias for t in self.tasks if t.loop == name)

    def loop_exits(self, name: str) -> tuple[str, ...]:
        """The loop's exit tasks: its tasks with no downstream task inside it."""
        inside = set(self.loop_tasks(name))
        return tuple(
            a for a in self.loop_tasks(name) if not any(d in inside for d in self.downstream(a))
        )

    def loop_entries(self, name: str) -> tuple[str, ...]:
        """The loop's entry tasks: its tasks with no upstream task inside it."""
        inside = set(self.loop_tasks(name))
        return tuple(
            a for a in self.loop_tasks(name) if not any(u in inside for u in self.upstream(a))
        )

    def task(self, alias: str) -> TaskSpec:
        """Return the task with this alias."""
        for t in self.tasks:
            if t.alias == alias:
                return t
        raise KeyError(alias)

    def module_of(self, alias: str) -> ModuleRef:
        """The module declaration task ``alias`` runs."""
        return self.modules[self.task(alias).module]

    def upstream(self, alias: str) -> tuple[str, ...]:
        """Aliases of the direct upstream tasks of ``alias``, in edge order."""
        return tuple(u for u, d in self.edges if d == alias)

    def downstream(self, alias: str) -> tuple[str, ...]:
        """Aliases of the direct downstream tasks of ``alias``, in edge order."""
        return tuple(d for u, d in self.edges if u == alias)

    def to_json(self) -> str:
        """Serialise to a stable JSON document (sorted keys, two-space indent)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


def loop_outsider(
    inside: set[str], edges: tuple[tuple[str, str], ...] | list[tuple[str, str]]
) -> str | None:
    """A task outside a loop (the tasks ``inside``) on a path that leaves the loop and
    comes back into it, or None when the loop is contiguous."""
    down: dict[str, list[str]] = {}
    for u, d in edges:
        down.setdefault(u, []).append(d)
    todo = [d for u, d in edges if u in inside and d not in inside]
    seen: set[str] = set()
    while todo:
        a = todo.pop()
        if a in seen:
            continue
        seen.add(a)
        for d in down.get(a, ()):
            if d in inside:
                return a
            todo.append(d)
    return None


def module_key(ref: ModuleRef) -> str:
    """The key of ``ref`` in ``Plan.modules``: ``<name>-<16 hex>``.

    The hex digits are a digest of the whole declaration (bundle digest, name, version,
    kind, image, datasets, requirements, resources): two declarations get one key only
    if they are identical, and the key is the same on every machine.
    """
    canonical = json.dumps(ref.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    stem = re.sub(r"[^A-Za-z0-9._-]", "_", ref.name)[:64].lstrip("._-") or "module"
    return f"{stem}-{hashlib.sha256(canonical.encode()).hexdigest()[:16]}"


def plain_global(value: object) -> bool:
    """Whether a plan stores ``value`` as plain JSON (version 3), not codec-encoded.

    True for ``None``, ``bool``, ``str``, 64-bit ``int``, finite ``float`` and lists and
    ``str``-keyed dicts of those, of exactly these types (a tuple, a numpy scalar or an
    ``IntEnum`` keeps its type only through the codec), except a dict shaped like an
    encoded global (its one key :data:`CODEC_TAG`).

    Parameters
    ----------
    value
        The global's value, as given to ``Swarm.set_global``.
    """
    if _is_tagged(value):
        return False
    return _plain(value)


def _plain(value: object) -> bool:
    kind = type(value)
    if value is None or kind is bool or kind is str:
        return True
    if kind is int:
        return _INT_RANGE[0] <= value <= _INT_RANGE[1]  # type: ignore[operator]
    if kind is float:
        return math.isfinite(value)  # type: ignore[arg-type]
    if kind is list:
        return all(_plain(v) for v in value)  # type: ignore[attr-defined]
    if kind is dict:
        return all(type(k) is str and _plain(v) for k, v in value.items())  # type: ignore[attr-defined]
    return False


def _is_tagged(value: object) -> bool:
    return isinstance(value, dict) and len(value) == 1 and CODEC_TAG in value


def _global_problem(stored: JsonValue, version: int) -> str | None:
    """Why a stored plan global is malformed for plan ``version``, or None.

    An encoded value is decoded by the codec when a task reads it, not here: a global
    may hold a tensor or a table whose library the coordinator does not have.
    """
    if version >= 3:
        if not _is_tagged(stored):
            return None  # plain JSON: any JSON value is a valid global
        assert isinstance(stored, dict)
        text = stored[CODEC_TAG]
        if not isinstance(text, str):
            return f"an encoded value ({CODEC_TAG!r} holds {type(text).__name__}, not base64)"
    elif not isinstance(stored, str):
        return f"base64 text (plan version {version} stores every global encoded)"
    else:
        text = stored
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        return f"valid base64 ({e})"
    if not data:
        return "an encoded value (it is empty)"
    return None


def _dups(items: list[str]) -> set[str]:
    seen: set[str] = set()
    return {x for x in items if x in seen or seen.add(x)}  # type: ignore[func-returns-value]


def load_plan(text: str | bytes) -> Plan:
    """Parse a plan document.

    Raises
    ------
    PlanError
        If the document is not JSON, has an unknown ``schema_version`` or does not match
        the schema; the message names each offending field.
    """
    try:
        doc = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PlanError(
            f"plan document is not valid JSON: {e}",
            code="plan.json",
            hint="write plans with `shoal export`",
        ) from None
    if not isinstance(doc, dict):
        raise PlanError("plan document must be a JSON object", code="plan.json")
    version = doc.get("schema_version")
    if version not in READABLE_PLAN_VERSIONS:
        raise PlanError(
            f"plan schema_version {version!r} is not supported; this shoal reads versions "
            f"{', '.join(map(str, READABLE_PLAN_VERSIONS))}",
            code="plan.version",
            hint="export the plan again with this version of shoal",
        )
    try:
        return Plan.model_validate(doc)
    except ValidationError as e:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<plan>'}: {err['msg']}"
            for err in e.errors()
        )
        raise PlanError(
            f"plan document does not match schema version {version}: {fields}",
            code="plan.schema",
            hint="export the plan again with `shoal export`",
        ) from None
