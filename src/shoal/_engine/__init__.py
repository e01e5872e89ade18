"""The scheduling engine: a pure state machine from events to instructions.

Drivers (the simulator, the coordinator) feed it :mod:`~shoal._engine.messages` events
and carry out the instructions it returns. See docs/engine.md for the rules.
"""

from shoal._engine.engine import Engine
from shoal._engine.errors import EngineError
from shoal._engine.state import InstanceState
from shoal._engine.views import InstanceView, NodeView, SwarmView, TaskCounts

__all__ = [
    "Engine",
    "EngineError",
    "InstanceState",
    "InstanceView",
    "NodeView",
    "SwarmView",
    "TaskCounts",
]
