"""The one driver base: the simulator and the coordinator execute the engine through it.

A driver translates between the engine and a world: it turns what happens (a node
reports, a task calls the world API, a timer is due) into engine events, and the
engine's instructions into actions (queue a run for a node or a worker, cancel one,
wake up later). :class:`DriverBase` holds everything both drivers do the same way;
subclasses only say how an instruction is carried out in their world.
"""

from shoal._driver.base import DriverBase

__all__ = ["DriverBase"]
