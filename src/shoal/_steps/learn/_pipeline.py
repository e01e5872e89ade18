"""A chain of federated transformers fitted stage by stage, and the per-node splitter."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from pydantic import Field, field_serializer, field_validator

from shoal._steps.learn._base import FederatedTransformer, LearnEntity, State
from shoal._steps.learn._deps import LearnError, require_columns


class FederatedPipeline(FederatedTransformer):
    """Transformers applied in order; each is fitted on the output of those before it.

    Like scikit-learn's ``Pipeline``, stage ``k`` is fitted on data that stages
    ``0..k-1`` (already fitted) transformed, so fitting takes one round per round of
    each stage; stateless stages take none. The state is ``{"stages": [...]}``, one state
    per fitted stage. In JSON each stage is its ``spec()``.
    """

    stages: list[FederatedTransformer] = Field(default_factory=list)

    @field_validator("stages", mode="before")
    @classmethod
    def _from_specs(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [LearnEntity.from_spec(v) if isinstance(v, dict) else v for v in value]
        return value

    @field_serializer("stages")
    def _to_specs(self, stages: list[FederatedTransformer]) -> list[dict[str, Any]]:
        return [s.spec() for s in stages]

    def rounds(self) -> int:
        """The sum of the stages' rounds."""
        return sum(s.rounds() for s in self.stages)

    def _advance(self, states: list[State]) -> list[State]:
        # Stateless stages (and constant imputers) are fitted as soon as they are reached.
        states = list(states)
        while len(states) < len(self.stages) and self.stages[len(states)].done(None):
            states.append({})
        return states

    def _current(self, state: State | None) -> tuple[list[State], State | None]:
        states = list((state or {}).get("stages", []))
        partial = (state or {}).get("_partial")
        return self._advance(states), partial

    def done(self, state: State | None) -> bool:
        """Whether every stage is fitted."""
        states, partial = self._current(state)
        return partial is None and len(states) == len(self.stages)

    def local(self, df: Any, state: State | None = None) -> dict[str, Any]:
        """The next unfitted stage's statistics, on ``df`` through the fitted stages."""
        states, partial = self._current(state)
        for stage, fitted in zip(self.stages, states, strict=False):
            df = stage.transform(df, fitted)
        i = len(states)
        return {"stage": i, "stats": self.stages[i].local(df, partial)}

    def merge(self, stats: Sequence[dict[str, Any]], state: State | None = None) -> State:
        """The next unfitted stage's merge; its partial state is kept until it is done."""
        stats = self._stats(stats)
        states, partial = self._current(state)
        i = len(states)
        if any(s.get("stage") != i for s in stats):
            raise LearnError(
                f"FederatedPipeline.merge expected statistics of stage {i}, got stages "
                f"{sorted({s.get('stage') for s in stats}, key=str)}",
                code="learn.stats",
                hint="give every node the same pipeline state before its local() call",
            )
        new = self.stages[i].merge([s["stats"] for s in stats], partial)
        if self.stages[i].done(new):
            return {"stages": self._advance([*states, new])}
        return {"stages": states, "_partial": new}

    def transform(self, df: Any, fitted: State | None = None) -> Any:
        """``df`` through every stage in order."""
        f = self._fitted(fitted)
        states, _ = self._current(f)
        for stage, state in zip(self.stages, states, strict=True):
            df = stage.transform(df, state)
        return df


class FederatedSplitter(LearnEntity):
    """A node's rows split into train and test, reproducibly from a seed.

    Each node shuffles its own rows with a generator seeded by ``random_state`` and the
    node's ``salt`` (e.g. its node id, so nodes do not share one permutation), and keeps
    ``test_percentage`` of them (rounded down) for test. With ``stratify`` (a label
    column) each class is split in that proportion.
    """

    test_percentage: float = 0.2
    random_state: int = 0
    stratify: str | None = None

    @field_validator("test_percentage")
    @classmethod
    def _fraction(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise LearnError(
                f"FederatedSplitter: test_percentage={value}",
                code="learn.params",
                hint="give a fraction in [0, 1)",
            )
        return value

    def _rng(self, salt: str) -> np.random.Generator:
        mix = hashlib.sha256(f"{self.random_state}:{salt}".encode()).digest()
        return np.random.default_rng(int.from_bytes(mix[:8], "little"))

    def test_mask(self, df: Any, salt: str = "") -> np.ndarray[Any, Any]:
        """True for the rows of ``df`` that go to the test set."""
        rng = self._rng(salt)
        n = len(df)
        mask = np.zeros(n, dtype=bool)
        if self.stratify is None:
            groups = [np.arange(n)]
        else:
            require_columns(df, [self.stratify], "FederatedSplitter")
            labels = df[self.stratify].to_numpy()
            groups = [np.flatnonzero(labels == v) for v in _unique(labels)]
        for rows in groups:
            take = int(len(rows) * self.test_percentage)
            mask[rng.permutation(rows)[:take]] = True
        return mask

    def split(self, df: Any, salt: str = "") -> tuple[Any, Any]:
        """``(train, test)``: the node's rows, split."""
        mask = self.test_mask(df, salt)
        return df[~mask], df[mask]


def _unique(values: np.ndarray[Any, Any]) -> list[Any]:
    seen: dict[Any, None] = {}
    for v in values.tolist():
        seen.setdefault(v, None)
    return sorted(seen, key=repr)
