"""Versioned JSON schema of a plan (pydantic).

A plan is everything a driver needs to run a swarm: tasks with module references by
content digest, placement, conditions, edges, sinks, globals (codec-encoded, base64) and
limits. Nothing downstream of ``prepare_graph`` reads the user's Python objects.
"""

from __future__ import annotations

import json
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shoal._errors import PlanError

PLAN_SCHEMA_VERSION = 1


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
    """A module's metadata; its code is the bundle with this ``digest``."""

    digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    name: str
    version: str | None = None
    kind: Literal["file", "package", "source"]
    image: str = "python"
    datasets: tuple[str, ...] = ()
    requirements: tuple[str, ...] = ()
    resources: dict[str, str | int | float | bool] = Field(default_factory=dict)


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
    specified_ids: tuple[str, ...] | None = None
    excepted_ids: tuple[str, ...] = ()
    gpu: bool = False

    @model_validator(mode="after")
    def _one_maximum(self) -> Placement:
        if self.count is not None and self.fraction is not None:
            raise ValueError("placement has both count and fraction; keep one")
        return self


class TaskSpec(_Strict):
    """One task of the graph."""

    alias: str = Field(min_length=1)
    module: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")
    placement: Placement = Placement()
    network: str | None = None
    condition: ConditionKind = ConditionKind.FINISHED
    min_results: int | None = Field(default=None, ge=1)
    timeout_s: float | None = Field(default=None, gt=0)
    retries: int = Field(default=0, ge=0)


class Limits(_Strict):
    """Bounds on waiting; every wait in shoal has one."""

    placement_timeout_s: float = Field(default=60.0, ge=0)
    max_iterations: int | None = Field(default=None, ge=1)


class Plan(_Strict):
    """A compiled swarm. Round-trips exactly through :meth:`to_json` / :func:`load_plan`."""

    schema_version: Literal[1] = 1  # PLAN_SCHEMA_VERSION
    name: str
    source: str | None = None
    modules: dict[str, ModuleRef]
    tasks: tuple[TaskSpec, ...]
    edges: tuple[tuple[str, str], ...]
    sinks: tuple[str, ...]
    globals: dict[str, str] = Field(
        default_factory=dict, description="key -> base64 of the codec (msgpack) encoding"
    )
    networks: dict[str, str] = Field(default_factory=dict)
    limits: Limits = Limits()

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
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def task(self, alias: str) -> TaskSpec:
        """Return the task with this alias."""
        for t in self.tasks:
            if t.alias == alias:
                return t
        raise KeyError(alias)

    def upstream(self, alias: str) -> tuple[str, ...]:
        """Aliases of the direct upstream tasks of ``alias``, in edge order."""
        return tuple(u for u, d in self.edges if d == alias)

    def downstream(self, alias: str) -> tuple[str, ...]:
        """Aliases of the direct downstream tasks of ``alias``, in edge order."""
        return tuple(d for u, d in self.edges if u == alias)

    def to_json(self) -> str:
        """Serialise to a stable JSON document (sorted keys, two-space indent)."""
        return json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n"


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
    if version != PLAN_SCHEMA_VERSION:
        raise PlanError(
            f"plan schema_version {version!r} is not supported; this shoal reads version "
            f"{PLAN_SCHEMA_VERSION}",
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
            f"plan document does not match schema version {PLAN_SCHEMA_VERSION}: {fields}",
            code="plan.schema",
            hint="export the plan again with `shoal export`",
        ) from None
