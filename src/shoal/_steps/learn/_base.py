"""Code as data: the base of every transformer and model, and the transformer protocol.

A transformer is fitted federatedly in rounds. In each round every node calls
``local(df, state)`` and sends the statistics it returns (numbers, lists, numpy arrays:
never rows); the aggregator calls ``merge(all_stats, state)`` and sends the new state
back. When ``done(state)`` holds, the state is the fitted transform that every node
applies with ``transform(df, state)``, identically. ``rounds()`` says how many rounds a
transformer needs, so a dialect can lay them out ahead of time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from shoal._steps.learn._deps import LearnError, require_columns

State = dict[str, Any]
"""What ``merge`` returns: a partial state between rounds, the fitted transform after."""

_REGISTRY: dict[str, type[LearnEntity]] = {}
# The name each class registered under: a public module (``shoal.steps``) re-publishes
# classes (changing their ``__module__``); their JSON name must not change with it.
_KIND_OF: dict[type, str] = {}


class LearnEntity(BaseModel):
    """A transformer or model whose fields are its JSON parameters (no pickle anywhere).

    Every subclass is registered under its qualified name (``module.Class``); two
    classes of one name are an error. :meth:`spec` and :meth:`from_spec` turn an object
    into JSON-ready data and back.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        name = cls.kind()
        other = _REGISTRY.get(name)
        if other is not None and other is not cls:
            raise LearnError(
                f"two classes are named {name}",
                code="learn.params",
                hint="rename one of them: entities are registered by qualified name",
            )
        _REGISTRY[name] = cls
        _KIND_OF[cls] = name

    @classmethod
    def kind(cls) -> str:
        """The qualified name the class is registered under."""
        return _KIND_OF.get(cls) or f"{cls.__module__}.{cls.__qualname__}"

    def spec(self) -> dict[str, Any]:
        """``{"kind": qualified name, "params": JSON fields}``."""
        return {"kind": self.kind(), "params": self.model_dump(mode="json")}

    @staticmethod
    def from_spec(spec: dict[str, Any]) -> LearnEntity:
        """The object :meth:`spec` described (its class must be imported)."""
        if not isinstance(spec, dict) or "kind" not in spec:
            raise LearnError(
                f"not an entity spec: {spec!r}",
                code="learn.params",
                hint='give {"kind": ..., "params": {...}} as spec() writes it',
            )
        cls = _REGISTRY.get(spec["kind"])
        if cls is None:
            raise LearnError(
                f"no transformer or model class is named {spec['kind']!r}",
                code="learn.params",
                hint="import the module that defines it before loading",
            )
        return cls.model_validate(spec.get("params", {}))


def _names(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class FederatedTransformer(LearnEntity):
    """Base of the federated transformers.

    Parameters
    ----------
    features_in
        The columns it reads.
    features_out
        The columns it writes; ``None`` writes over ``features_in``.
    """

    features_in: list[str] = []
    features_out: list[str] | None = None

    stateless: ClassVar[bool] = False
    """True for transformers fitted from their parameters alone (no round)."""

    @field_validator("features_in", "features_out", mode="before")
    @classmethod
    def _one_name_is_a_list(cls, value: Any) -> Any:
        return _names(value)

    def model_post_init(self, context: Any) -> None:
        out = self.features_out
        if out is not None and len(out) != len(self.features_in):
            raise LearnError(
                f"{type(self).__name__}: {len(self.features_in)} features_in but "
                f"{len(out)} features_out",
                code="learn.params",
                hint="give one output column per input column, or none",
            )

    @property
    def columns_out(self) -> list[str]:
        """The columns written: ``features_out``, else ``features_in``."""
        return self.features_out if self.features_out is not None else self.features_in

    def rounds(self) -> int:
        """How many rounds of ``local``/``merge`` fitting takes (0 when stateless)."""
        return 0 if self.stateless else 1

    def done(self, state: State | None) -> bool:
        """Whether ``state`` is the fitted transform (no round left)."""
        if self.stateless:
            return True
        return state is not None and "_partial" not in state

    def local(self, df: Any, state: State | None = None) -> dict[str, Any]:
        """A node's statistics for the next round (never rows)."""
        return {}

    def merge(self, stats: Sequence[dict[str, Any]], state: State | None = None) -> State:
        """The aggregator's step: every node's statistics to the next state."""
        return {}

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``df`` transformed with the fitted state (the same on every node)."""
        raise NotImplementedError

    def _check(self, df: Any) -> None:
        require_columns(df, self.features_in, type(self).__name__)

    def _fitted(self, state: State | None) -> State:
        if not self.done(state):
            raise LearnError(
                f"{type(self).__name__} is not fitted yet",
                code="learn.unfitted",
                hint="run its local/merge rounds (fit_federated) before transform",
            )
        return state or {}

    def _stats(self, stats: Sequence[dict[str, Any]]) -> Sequence[dict[str, Any]]:
        if not stats:
            raise LearnError(
                f"{type(self).__name__}.merge was given no node statistics",
                code="learn.stats",
                hint="merge the local() results of at least one node",
            )
        return stats


def fit_federated(transformer: FederatedTransformer, frames: Sequence[Any]) -> State:
    """Run every round in-process over ``frames`` (one per node): the protocol simulated.

    Each node's frame stays with that node's ``local`` call; ``merge`` sees only the
    statistics. Returns the fitted state.
    """
    state: State | None = None
    for _ in range(transformer.rounds() + 1):
        if transformer.done(state):
            return state or {}
        state = transformer.merge([transformer.local(df, state) for df in frames], state)
    raise LearnError(
        f"{type(transformer).__name__} did not finish in {transformer.rounds()} rounds",
        code="learn.stats",
        hint="a bug in the transformer: rounds() must bound its fitting",
    )
