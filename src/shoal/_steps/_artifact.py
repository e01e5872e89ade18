"""Artifacts, steps and distributions (seed 003), as entities.

An :class:`Artifact` is a sequence of steps. ``Initialize`` and ``Finalize`` run on the
initiator (a node the artifact names, else one chosen like ``method="any"``);
``Parallel`` runs on every node holding the dataset. A step's distribution says where
its products go: :class:`Distribute` (one node to many), :class:`Collect` (many to one),
:class:`Arrange` (many to many, the general case and the default).

``Sequential`` compiles to a chain and ``RoundRobin`` to a ring of the engine;
``Iterate`` (an inner loop) needs an engine feature not built yet: declaring one raises
``steps.unsupported``.
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
    """One step: an operation and the distribution of its products."""

    operation: _Op
    distribution: _Dist | None = None

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


def _unsupported(name: str, feature: str) -> StepsError:
    return StepsError(
        f"{name} needs the engine's {feature}, which this build of shoal does not have yet",
        code="steps.unsupported",
        hint="unroll the loop: repeat its steps in the artifact meanwhile",
    )


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


class Iterate(Entity):
    """Repeat inner steps up to ``iterations`` times. Not available yet."""

    iterations: int
    steps: list[Annotated[Step, LOAD, DUMP]]

    @model_validator(mode="after")
    def _refuse(self) -> Iterate:
        raise _unsupported("Iterate", "inner loops (steps repeated, then more steps)")


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

    steps: list[Annotated[Step, LOAD, DUMP]]
    dataset: str | None = None
    initiator: str | None = None
    name: str = "artifact"

    @model_validator(mode="after")
    def _check(self) -> Artifact:
        if not self.steps:
            raise StepsError("Artifact(steps=[]) has no step", hint="give at least one step")
        for i, step in enumerate(self.steps):
            dist = step.distribution
            where = f"step {i} ({type(step).__name__})"
            if dist is None:
                continue
            if dist.fan == "one_to_many" and not step.on_one_node():
                raise StepsError(
                    f"{where} runs on many nodes but distributes with Distribute (one to many)",
                    hint="use Collect or Arrange, or Distribute from an Initialize step",
                )
            nxt = self.steps[i + 1] if i + 1 < len(self.steps) else None
            if dist.fan == "many_to_one" and (nxt is None or not nxt.on_one_node()):
                raise StepsError(
                    f"{where} collects (Collect) but the next step does not run on one node",
                    hint="follow a Collect with Finalize (or Initialize), or use Arrange",
                )
        if self.dataset is None and any(s.operation.reads_data for s in self.steps):
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

    def step_spec(self, index: int) -> dict[str, Any]:
        """What the task of step ``index`` needs: its step and the dataset name."""
        return {"step": self.steps[index].spec(), "dataset": self.dataset, "index": index}
