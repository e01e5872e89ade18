"""``Swarm``: a distributed algorithm as a graph of tasks, repeated in iterations."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shoal._define.task import NetworkDriver, Task

if TYPE_CHECKING:
    from shoal._plan import Plan


class Swarm:
    """Base class of a user's distributed algorithm.

    Subclass it, declare tasks (usually in ``__init__``), set globals with
    :meth:`set_global`, and build the graph in :meth:`execute` by calling tasks.
    Calling ``super().__init__()`` is optional, as in Manta.

    Attributes
    ----------
    name
        The swarm's name (default: the class name).
    max_iterations
        Stop after this many iterations; ``None`` runs until a task calls
        ``world.stop_swarm()``.
    placement_timeout
        Seconds a ready task waits for an eligible node before the swarm fails.
    """

    name: str | None = None
    max_iterations: int | None = None
    placement_timeout: float = 60.0

    def __init__(self) -> None:
        self._shoal_state()

    def _shoal_state(self) -> dict[str, Any]:
        # Created lazily: Manta swarms often skip super().__init__().
        state: dict[str, Any] | None = self.__dict__.get("_shoal")
        if state is None:
            state = {"globals": {}, "networks": {}}
            self.__dict__["_shoal"] = state
        return state

    def set_global(self, key: str, value: Any) -> None:
        """Set the initial value of a global visible to every task as ``world.globals[key]``."""
        self._shoal_state()["globals"][key] = value

    def get_global(self, key: str, default: Any = None) -> Any:
        """Return the initial value of a global, or ``default``."""
        return self._shoal_state()["globals"].get(key, default)

    def add_network(self, name: str, driver: NetworkDriver | str = NetworkDriver.BRIDGE) -> None:
        """Declare a network tasks may name with ``Task(network=name)``."""
        self._shoal_state()["networks"][name] = NetworkDriver(driver).value

    def execute(self) -> Task | list[Task]:
        """Build the graph by calling tasks and return the sink task or a list of sinks."""
        raise NotImplementedError

    def prepare_graph(self) -> Plan:
        """Validate the swarm and compile it to a :class:`Plan`.

        Raises
        ------
        SwarmValidationError
            Listing every problem found, each naming the object and the fix.
        """
        from shoal._define.compile import compile_swarm

        return compile_swarm(self).plan
