"""The public API is small and pinned: a change here is a deliberate decision."""

from __future__ import annotations

from types import ModuleType

import pytest

import shoal
import shoal.runtime
import shoal.testing

PINNED = {
    shoal: {
        "Client",
        "CodecError",
        "Condition",
        "Driver",
        "FailureRecord",
        "LogRecord",
        "MetricRecord",
        "Module",
        "NodeRecord",
        "Plan",
        "PlanError",
        "Problem",
        "ShoalError",
        "ShoalWarning",
        "SimulationRun",
        "Swarm",
        "SwarmStatus",
        "SwarmSummary",
        "SwarmValidationError",
        "Task",
        "TaskCounts",
        "__version__",
        "load_plan",
        "simulate",
    },
    shoal.runtime: {
        "Globals",
        "Local",
        "Logger",
        "Resources",
        "ResultRecord",
        "Results",
        "Task",
        "World",
    },
    shoal.testing: {"Fault", "Federation", "VirtualClock"},
}


@pytest.mark.parametrize("module", list(PINNED), ids=lambda m: m.__name__)
def test_exports_exactly_the_pinned_names(module: ModuleType) -> None:
    assert set(module.__all__) == PINNED[module]
    for name in module.__all__:
        assert hasattr(module, name), name


def test_nothing_else_public_leaks_from_shoal() -> None:
    public = {
        n
        for n, v in vars(shoal).items()
        if not n.startswith("_") and not isinstance(v, ModuleType) and n != "annotations"
    }
    assert public <= PINNED[shoal]
