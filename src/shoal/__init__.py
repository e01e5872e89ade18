"""shoal: define a distributed algorithm once, as a swarm; run it anywhere.

The public API of the definition side. Task code imports :mod:`shoal.runtime`.
"""

from shoal._define.module import Module
from shoal._define.swarm import Swarm
from shoal._define.task import Condition, Driver, Task
from shoal._errors import (
    CodecError,
    PlanError,
    Problem,
    ShoalError,
    ShoalWarning,
    SwarmValidationError,
)
from shoal._plan import Plan, load_plan
from shoal._sim.api import simulate
from shoal._sim.run import SimulationRun
from shoal._version import __version__

__all__ = [
    "CodecError",
    "Condition",
    "Driver",
    "Module",
    "Plan",
    "PlanError",
    "Problem",
    "ShoalError",
    "ShoalWarning",
    "SimulationRun",
    "Swarm",
    "SwarmValidationError",
    "Task",
    "__version__",
    "load_plan",
    "simulate",
]
