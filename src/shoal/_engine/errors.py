"""The engine's error type."""

from __future__ import annotations

from shoal._errors import ShoalError


class EngineError(ShoalError):
    """An event the engine cannot accept, or a broken engine invariant.

    Codes are ``engine.*``: ``engine.unknown_instance``, ``engine.impossible_move``,
    ``engine.unknown_swarm``, ``engine.duplicate_swarm``, ``engine.unknown_node``,
    ``engine.unknown_event`` and ``engine.invariant``. Messages about an instance carry
    its story so the driver's log explains how it got there.
    """

    code = "engine"
