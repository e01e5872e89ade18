"""The plan: the serialisable intermediate form every dialect compiles to."""

from shoal._plan.schema import (
    PLAN_SCHEMA_VERSION,
    ConditionKind,
    Limits,
    Method,
    ModuleRef,
    Placement,
    Plan,
    TaskSpec,
    load_plan,
)

__all__ = [
    "PLAN_SCHEMA_VERSION",
    "ConditionKind",
    "Limits",
    "Method",
    "ModuleRef",
    "Placement",
    "Plan",
    "TaskSpec",
    "load_plan",
]
