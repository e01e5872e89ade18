"""The plan: the serialisable intermediate form every dialect compiles to."""

from shoal._plan.schema import (
    CODEC_TAG,
    IMAGE_PATTERN,
    NAME_PATTERN,
    PLAN_SCHEMA_VERSION,
    ConditionKind,
    Limits,
    Method,
    ModuleRef,
    Placement,
    Plan,
    TaskSpec,
    load_plan,
    module_key,
    name_problem,
    plain_global,
)

__all__ = [
    "CODEC_TAG",
    "IMAGE_PATTERN",
    "NAME_PATTERN",
    "PLAN_SCHEMA_VERSION",
    "ConditionKind",
    "Limits",
    "Method",
    "ModuleRef",
    "Placement",
    "Plan",
    "TaskSpec",
    "load_plan",
    "module_key",
    "name_problem",
    "plain_global",
]
