"""One target's app in a job: its components, workflows, executors, filters, resources."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

ALL_TASKS = ["*"]


class FilterType(enum.Enum):
    """Where a filter sits: on what a site receives, or on what it sends back.

    ``TASK_DATA`` flows from the controller to the executor (applied on the site before
    the task runs); ``TASK_RESULT`` flows from the executor to the controller (applied
    on the site before the result leaves it).
    """

    TASK_DATA = "task_data"
    TASK_RESULT = "task_result"


@dataclass
class App:
    """What one target (``"server"``, a site name, or every client) runs."""

    target: str
    components: dict[str, Any] = field(default_factory=dict)
    workflows: list[str] = field(default_factory=list)
    executors: list[tuple[list[str], str]] = field(default_factory=list)
    filters: list[tuple[FilterType, list[str], str]] = field(default_factory=list)
    resources: list[str] = field(default_factory=list)

    def unique_id(self, comp_id: str) -> str:
        """``comp_id``, or ``comp_id1``, ``comp_id2``... when it is taken."""
        if comp_id not in self.components:
            return comp_id
        i = 1
        while f"{comp_id}{i}" in self.components:
            i += 1
        return f"{comp_id}{i}"
