"""The plan: the serialisable intermediate form every dialect compiles to."""

from shoal._plan.schema import (
    IMAGE_PATTERN,
    NAME_PATTERN,
    PLAN_SCHEMA_VERSION,
    ConditionKind,
    Limits,
    LoopSpec,
    Method,
    ModuleRef,
    Order,
    Placement,
    Plan,
    TaskSpec,
    load_plan,
    module_key,
    name_problem,
)

__all__ = [
    "IMAGE_PATTERN",
    "NAME_PATTERN",
    "PLAN_SCHEMA_VERSION",
    "ConditionKind",
    "Limits",
    "LoopSpec",
    "Method",
    "ModuleRef",
    "Order",
    "Placement",
    "Plan",
    "TaskSpec",
    "load_plan",
    "module_key",
    "name_problem",
]
