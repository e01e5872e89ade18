"""``Swarm``: a distributed algorithm as a graph of tasks, repeated in iterations."""

from __future__ import annotations

from collections.abc import Mapping
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
            state = {"globals": {}, "networks": {}, "loops": {}}
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

    def add_loop(self, name: str, times: int, until: Mapping[str, Any] | None = None) -> None:
        """Declare an inner loop: the tasks declared with ``Task(loop=name)`` run ``times``
        passes inside each iteration (docs/engine.md, "Inner loops").

        In pass p > 0 the loop's first tasks (no upstream task inside the loop) see the
        results of its last tasks (no downstream task inside it) of pass p-1, besides
        their upstream tasks; the tasks after the loop see its last pass only.

        Parameters
        ----------
        name
            The loop's name, as tasks give it in ``loop=``.
        times
            The number of passes (an int >= 1): the most, when ``until`` is given.
        until
            Stop after the first pass whose last tasks' instances each stored a number
            for which the condition holds: ``{"tag": "accuracy", "op": ">=", "value":
            0.9}`` reads ``world.results.add("accuracy", x)``; with ``"key": k`` the
            result is a mapping and its entry ``k`` is read. ``op`` is one of ``>=``,
            ``>``, ``<=``, ``<``, ``==``, ``!=``. Data, not code: the engine evaluates it.

        Examples
        --------
        >>> class Fit(Swarm):
        ...     def __init__(self, train, agg):
        ...         self.train = Task(train, loop="fit")
        ...         self.agg = Task(agg, method="any", loop="fit")
        ...         self.add_loop("fit", times=10, until={"tag": "loss", "op": "<", "value": 0.1})
        ...
        ...     def execute(self):
        ...         return self.agg(self.train())
        """
        self._shoal_state().setdefault("loops", {})[name] = (times, until)

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
