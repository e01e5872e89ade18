"""Objects as plain data: the seed's rule that constructor arguments are attributes.

FLARE writes every object of a job as ``{"path": class, "args": {...}}`` read back from
the object's attributes, so an argument the object did not keep cannot be exported. We
apply the same rule and refuse such an object with the fix, rather than dropping the
argument silently (the exported job would then differ from the one that was built).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import numpy as np

from shoal._errors import ShoalError

_MISSING = object()


def class_path(obj: object) -> str:
    """``module.QualName`` of the object's class."""
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def init_args(obj: object) -> dict[str, Any]:
    """The object's constructor arguments, read from same-named or ``_``-prefixed attributes.

    Raises
    ------
    ShoalError
        ``job.config`` when an argument is kept under neither name.
    """
    try:
        sig = inspect.signature(type(obj).__init__)
    except (TypeError, ValueError):  # builtins: nothing to read
        return {}
    args: dict[str, Any] = {}
    for name, p in sig.parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        value = getattr(obj, name, _MISSING)
        if value is _MISSING:
            value = getattr(obj, f"_{name}", _MISSING)
        if value is _MISSING:
            raise ShoalError(
                f"{type(obj).__name__}: constructor argument {name!r} is not kept as "
                f"attribute self.{name} or self._{name}, so the job cannot export it",
                code="job.config",
                hint=f"in {type(obj).__name__}.__init__, add 'self.{name} = {name}'",
            )
        args[name] = value
    return args


def to_data(value: Any, refs: Mapping[int, str]) -> Any:
    """A JSON-able form of an argument; objects become nested ``{"path", "args"}``.

    ``refs`` maps ``id(obj)`` to a component id: such objects are written by reference.
    Arrays and tensors are summarised (shape, dtype): their values travel in bundles.
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): to_data(v, refs) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_data(v, refs) for v in value]
    if isinstance(value, np.ndarray):
        return {"array": list(value.shape), "dtype": value.dtype.str}
    if id(value) in refs:
        return {"ref": refs[id(value)]}
    if hasattr(value, "state_dict") and hasattr(value, "parameters"):  # torch module
        return {"path": class_path(value), "args": {}}
    if inspect.isclass(value) or (callable(value) and not hasattr(value, "__dict__")):
        return {"callable": getattr(value, "__qualname__", repr(value))}
    if hasattr(value, "__dict__"):
        return {"path": class_path(value), "args": to_data(init_args(value), refs)}
    return repr(value)


def strings_in(value: Any) -> list[str]:
    """Every string inside an argument (where ``as_id`` references hide)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [s for k, v in value.items() for s in strings_in(k) + strings_in(v)]
    if isinstance(value, (list, tuple, set, frozenset)):
        return [s for v in value for s in strings_in(v)]
    return []
