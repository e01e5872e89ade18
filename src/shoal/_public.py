"""Make exported objects show the public module they are exported from.

Public classes and functions are defined in private modules (``shoal._define.task``)
and exported from a public one (``shoal``). :func:`publish` sets the ``__module__`` of
each exported class or function to the public module, so reprs, tracebacks,
``help()`` and pickles name ``shoal.Task`` rather than ``shoal._define.task.Task``.

A leaf: it imports nothing from shoal.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping


def is_private(module: str) -> bool:
    """Whether ``module`` is a private module of shoal (a part starts with ``_``)."""
    parts = module.split(".")
    return parts[0] == "shoal" and any(p.startswith("_") for p in parts[1:])


def publish(public: str, namespace: Mapping[str, object], names: Iterable[str]) -> None:
    """Set ``__module__`` to ``public`` on the exported objects defined privately.

    Parameters
    ----------
    public
        The public module's name (``"shoal"``, ``"shoal.runtime"``).
    namespace
        The public module's globals.
    names
        Its exported names (``__all__``). Names not in ``namespace`` yet (lazy exports
        not imported so far) are skipped: call again once they are.

    Notes
    -----
    Only classes and functions whose ``__qualname__`` is itself exported are changed, so
    ``public.<qualname>`` always finds the object again (pickle relies on it); an object
    already shown under a public module keeps it.
    """
    exported = set(names)
    for name in exported:
        obj = namespace.get(name)
        if not (inspect.isclass(obj) or inspect.isfunction(obj)):
            continue
        module = getattr(obj, "__module__", None)
        if isinstance(module, str) and is_private(module) and obj.__qualname__ in exported:
            obj.__module__ = public
