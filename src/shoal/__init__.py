"""shoal: define a distributed algorithm once, as a swarm; run it anywhere.

The public API of the definition side. Task code imports :mod:`shoal.runtime`.
"""

from __future__ import annotations

import sys as _sys
import typing as _typing

from shoal._define.graph import has_cycles
from shoal._define.module import Module
from shoal._define.swarm import Swarm
from shoal._define.task import Condition, NetworkDriver, Task
from shoal._errors import (
    CodecError,
    InvokeError,
    PlanError,
    Problem,
    ShoalError,
    ShoalWarning,
    SwarmFailedError,
    SwarmValidationError,
)
from shoal._public import publish as _publish
from shoal._version import __version__

#: Seed 002's name of :class:`NetworkDriver` (``self.add_network("b", Driver.BRIDGE)``).
#: In shoal, "driver" means the simulator or the coordinator.
Driver = NetworkDriver

if _typing.TYPE_CHECKING:
    from shoal._api.records import (
        FailureRecord,
        LogRecord,
        MetricRecord,
        NodeRecord,
        SwarmStatus,
        SwarmSummary,
        TaskCounts,
    )
    from shoal._client import Client
    from shoal._plan import Plan, load_plan
    from shoal._sim.api import simulate
    from shoal._sim.profiles import NodeProfile
    from shoal._sim.run import SimulationRun

# Imported on first use: every simulator worker process imports this package, and needs
# neither pydantic (the plan) nor the simulator itself.
_LAZY = {
    "Client": "shoal._client",
    "FailureRecord": "shoal._api.records",
    "LogRecord": "shoal._api.records",
    "MetricRecord": "shoal._api.records",
    "NodeRecord": "shoal._api.records",
    "SwarmStatus": "shoal._api.records",
    "SwarmSummary": "shoal._api.records",
    "TaskCounts": "shoal._api.records",
    "Plan": "shoal._plan",
    "load_plan": "shoal._plan",
    "simulate": "shoal._sim.api",
    "NodeProfile": "shoal._sim.profiles",
    "SimulationRun": "shoal._sim.run",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        _publish_loaded()
        return value
    raise AttributeError(f"module 'shoal' has no attribute {name!r}")


def _publish_loaded() -> None:
    # Lazy exports whose modules some import has loaded meanwhile (``simulate`` loads
    # ``SimulationRun``'s) are bound and published too, without importing anything.
    for name, module_name in _LAZY.items():
        module = _sys.modules.get(module_name)
        if name not in globals() and module is not None and hasattr(module, name):
            globals()[name] = getattr(module, name)
    _publish(__name__, globals(), __all__)


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "Client",
    "CodecError",
    "Condition",
    "Driver",
    "FailureRecord",
    "InvokeError",
    "LogRecord",
    "MetricRecord",
    "Module",
    "NetworkDriver",
    "NodeProfile",
    "NodeRecord",
    "Plan",
    "PlanError",
    "Problem",
    "ShoalError",
    "ShoalWarning",
    "SimulationRun",
    "Swarm",
    "SwarmFailedError",
    "SwarmStatus",
    "SwarmSummary",
    "SwarmValidationError",
    "Task",
    "TaskCounts",
    "__version__",
    "has_cycles",
    "load_plan",
    "simulate",
]

_publish(__name__, globals(), __all__)
