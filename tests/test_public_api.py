"""The public API is small and pinned: a change here is a deliberate decision."""

from __future__ import annotations

import shoal

PINNED_SHOAL = {
    "CodecError",
    "Condition",
    "Driver",
    "Module",
    "Plan",
    "PlanError",
    "Problem",
    "ShoalError",
    "ShoalWarning",
    "Swarm",
    "SwarmValidationError",
    "Task",
    "__version__",
    "load_plan",
}


def test_shoal_exports_exactly_the_pinned_names() -> None:
    assert set(shoal.__all__) == PINNED_SHOAL
    for name in shoal.__all__:
        assert hasattr(shoal, name), name
    public = {n for n in vars(shoal) if not n.startswith("_") and n not in ("annotations",)}
    # Private submodules (_define, _plan, ...) are attributes too; nothing else leaks.
    assert public <= PINNED_SHOAL
