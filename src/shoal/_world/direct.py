"""The in-process channel: a task's requests call the world service directly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from shoal._wire import Outbox
from shoal._world.service import InstanceInfo, WorldService


class DirectChannel:
    """Calls the service in this process. Values still go through the codec, so task
    code sees exactly what it would see across a process boundary."""

    outbox: Outbox | None = None

    def __init__(self, service: WorldService, info: InstanceInfo) -> None:
        self._service = service
        self._info = info

    def request(self, op: str, args: Mapping[str, Any]) -> Any:
        """Call the service directly."""
        return self._service.handle(self._info, op, args)

    def notify(self, op: str, args: Mapping[str, Any]) -> None:
        """Call the service directly, ignoring the result."""
        self._service.handle(self._info, op, args)
