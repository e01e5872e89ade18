"""The task-side API: subclass :class:`Task` and implement ``run()``.

A module's entry point is ``main()``, as in Manta::

    from shoal.runtime import Task

    class Worker(Task):
        def run(self):
            data = self.local.get_dataset("digits")
            model = self.world.globals["model"]
            self.world.results.add("model", train(model, data))

    def main():
        Worker().run()
"""

from __future__ import annotations

from shoal._public import publish as _publish
from shoal._runtime.api import (
    Globals,
    Local,
    Logger,
    NetworkQuality,
    Resources,
    ResultRecord,
    Results,
    World,
)
from shoal._runtime.context import current as _current

__all__ = [
    "Globals",
    "Local",
    "Logger",
    "NetworkQuality",
    "Resources",
    "ResultRecord",
    "Results",
    "Task",
    "World",
]


class Task:
    """Base class of task code.

    ``self.world``, ``self.local`` and ``self.logger`` are bound to the instance shoal
    is running when they are first used, so subclasses need not call
    ``super().__init__()``.
    """

    @property
    def world(self) -> World:
        """Swarm-wide globals and results, iteration and identity."""
        return World(_current())

    @property
    def local(self) -> Local:
        """The node's datasets, state and resources."""
        return Local(_current())

    @property
    def logger(self) -> Logger:
        """Logs and metrics, collected by the driver."""
        return Logger(_current())

    def run(self) -> None:
        """The task's work; override it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement run()")


_publish(__name__, globals(), __all__)
