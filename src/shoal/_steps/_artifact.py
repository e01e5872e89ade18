"""Artifacts, steps and distributions (seed 003), as entities.

An :class:`Artifact` is a sequence of steps. ``Initialize`` and ``Finalize`` run on the
initiator (a node the artifact names, else one chosen like ``method="any"``);
``Parallel`` runs on every node holding the dataset. A step's distribution says where
its products go: :class:`Distribute` (one node to many), :class:`Collect` (many to one),
:class:`Arrange` (many to many, the general case and the default).

``Sequential`` compiles to a chain and ``RoundRobin`` to a ring of the engine;
``Iterate`` to an inner loop (its steps repeated in passes, then the steps after it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import model_validator

from shoal._steps._entity import DUMP, LOAD, Entity, StepsError
from shoal._steps._operation import Operation


class Distribution(Entity):
    """How a step's products reach the next step's nodes."""

    fan: Literal["one_to_many", "many_to_one", "many_to_many"] = "many_to_many"


class Arrange(Distribution):
    """Products of every sender reach every receiver (the general case)."""


class Distribute(Distribution):
    """The products of one node (the initiator) reach every node of the next step."""

    fan: Literal["one_to_many", "many_to_one", "many_to_many"] = "one_to_many"


class Collect(Distribution):
    """The products of every node reach one node (the initiator) of the next step."""

    fan: Literal["one_to_many", "many_to_one", "many_to_many"] = "many_to_one"


_Op = Annotated[Operation, LOAD, DUMP]
_Dist = Annotated[Distribution, LOAD, DUMP]


class Step(Entity):
    """One step: an operation and the distribution of its products.

    ``retries`` and ``timeout`` are the engine task's (docs/engine.md): a failed or lost
    node's instance is run again up to ``retries`` times (in a chain or ring, in its
    slot, with its slot's inputs); an instance running past ``timeout`` seconds fails
    (None: the run's default task timeout).
    """

    operation: _Op
    distribution: _Dist | None = None
    retries: int = 0
    timeout: float | None = None

    def __init__(
        self,
        operation: Operation | None = None,
        distribution: Distribution | None = None,
        /,
        **data: Any,
    ) -> None:
        # Positional as in the seed: Parallel(TrainTest(...), Collect()).
        if operation is not None:
            data["operation"] = operation
        if distribution is not None:
            data["distribution"] = distribution
        super().__init__(**data)

    def on_one_node(self) -> bool:
        """Whether the step runs on the initiator only."""
        return False


class Initialize(Step):
    """A setup operation on the initiator."""

    def on_one_node(self) -> bool:
        """Runs on the initiator."""
        return True


class Finalize(Step):
    """A teardown operation on the initiator; its products become the run's globals."""

    def on_one_node(self) -> bool:
        """Runs on the initiator."""
        return True


class Parallel(Step):
    """The operation on every node holding the dataset, in parallel."""


class Sequential(Step):
    """The operation on each node in turn (a chain; the engine's ``order="chain"``).

    The first node sees the previous step's products; every later node sees only the
    products of the node before it (pass on what the next needs). The next step sees the
    last node's products.
    """


class RoundRobin(Step):
    """Resources passed round a ring (the engine's ``order="ring"``).

    In round 0 every node sees the previous step's products; in each later round a node
    sees only its predecessor's products of the round before. After ``rounds`` rounds
    (None: as many as nodes) every node's value has passed every node; the next step
    sees the last round's products of every node.
    """

    rounds: int | None = None


_UNTIL_OPS = (">=", ">", "<=", "<", "==", "!=")
_UNTIL_HINT = 'give until={"metric": "<product name>", "op": ">=", "value": 0.9}, or None'


class Iterate(Entity):
    """Repeat inner ``steps`` ``iterations`` times, or until a metric condition holds
    (the engine's inner loop, docs/engine.md "Inner loops").

    In pass p > 0 the first inner step sees the products of the last inner step of pass
    p-1 (instead of the step before the ``Iterate``); the step after the ``Iterate``
    sees the last pass's products.

    Parameters
    ----------
    iterations
        The number of passes (>= 1); the most, with ``until``.
    steps
        The inner steps (at least one; an ``Iterate`` does not nest).
    until
        ``{"metric": name, "op": ">=", "value": 0.9}``: stop after the first pass whose
        last inner step's products hold a number ``name`` with ``number op value`` on
        every node it ran on. ``op`` is one of ``>=``, ``>``, ``<=``, ``<``, ``==``, ``!=``.
    """

    iterations: int
    steps: list[Annotated[Step, LOAD, DUMP]]
    until: dict[str, Any] | None = None

    def __init__(
        self,
        iterations: int,
        steps: list[Any],
        until: dict[str, Any] | None = None,
        **extra: Any,
    ) -> None:
        fields: dict[str, Any] = {"iterations": iterations, "steps": steps, "until": until}
        super().__init__(**fields, **extra)

    @model_validator(mode="after")
    def _check(self) -> Iterate:
        if isinstance(self.iterations, bool) or self.iterations < 1:
            raise StepsError(
                f"Iterate(iterations={self.iterations!r}) runs no pass",
                hint="give iterations=1 or more",
            )
        if not self.steps:
            raise StepsError("Iterate(steps=[]) has no step", hint="give at least one step")
        u = self.until
        if u is not None:
            ok = (
                set(u) == {"metric", "op", "value"}
                and isinstance(u["metric"], str)
                and u["metric"]
                and u["op"] in _UNTIL_OPS
                and isinstance(u["value"], int | float)
                and not isinstance(u["value"], bool)
            )
            if not ok:
                raise StepsError(f"Iterate(until={u!r}) is not a condition", hint=_UNTIL_HINT)
        return self


COMPILER: list[Callable[[Artifact], Any]] = []
"""Set by :mod:`shoal.steps`: the pure dialect cannot import the Swarm front end."""


class Artifact(Entity):
    """A sequence of steps over one dataset: what the steps dialect submits.

    Parameters
    ----------
    steps
        The steps, in order (at least one).
    dataset
        The dataset name every data-reading step loads (a ``.csv`` or ``.parquet``).
    initiator
        The node ``Initialize`` / ``Finalize`` run on; None: any node.
    name
        The swarm name the artifact compiles to.
    """

    steps: list[Annotated[Step | Iterate, LOAD, DUMP]]
    dataset: str | None = None
    initiator: str | None = None
    name: str = "artifact"

    @model_validator(mode="after")
    def _check(self) -> Artifact:
        if not self.steps:
            raise StepsError("Artifact(steps=[]) has no step", hint="give at least one step")
        flat = self.flat_steps()
        for i, (step, _) in enumerate(flat):
            dist = step.distribution
            where = f"step {i} ({type(step).__name__})"
            if dist is None:
                continue
            if dist.fan == "one_to_many" and not step.on_one_node():
                raise StepsError(
                    f"{where} runs on many nodes but distributes with Distribute (one to many)",
                    hint="use Collect or Arrange, or Distribute from an Initialize step",
                )
            nxt = flat[i + 1][0] if i + 1 < len(flat) else None
            if dist.fan == "many_to_one" and (nxt is None or not nxt.on_one_node()):
                raise StepsError(
                    f"{where} collects (Collect) but the next step does not run on one node",
                    hint="follow a Collect with Finalize (or Initialize), or use Arrange",
                )
        if self.dataset is None and any(s.operation.reads_data for s, _ in flat):
            raise StepsError(
                "an operation of the artifact reads data but Artifact(dataset=None)",
                hint='name the dataset: Artifact(steps=..., dataset="t")',
            )
        return self

    def to_swarm(self) -> Any:
        """The Swarm this artifact compiles to (``shoal.steps`` provides the compiler)."""
        if not COMPILER:
            raise StepsError(
                "no compiler for artifacts is loaded",
                hint="import shoal.steps (it registers the compiler)",
            )
        return COMPILER[0](self)

    def flat_steps(self) -> list[tuple[Step, int | None]]:
        """Every step in order, the steps of each ``Iterate`` in place, each with the
        position in :attr:`steps` of the ``Iterate`` it is in (None: none)."""
        out: list[tuple[Step, int | None]] = []
        for i, step in enumerate(self.steps):
            if isinstance(step, Iterate):
                out.extend((inner, i) for inner in step.steps)
            else:
                out.append((step, None))
        return out

    def step_spec(self, index: int) -> dict[str, Any]:
        """What the task of step ``index`` (of :meth:`flat_steps`) needs: its step and
        the dataset name."""
        step = self.flat_steps()[index][0]
        return {"step": step.spec(), "dataset": self.dataset, "index": index}
