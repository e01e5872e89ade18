"""Load a Swarm class from ``path/to/swarm.py[:ClassName]`` with one-paragraph errors."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from shoal._define.swarm import Swarm
from shoal._errors import ShoalError


def load_swarm(target: str) -> tuple[Swarm, str]:
    """Import the file, pick the Swarm subclass and instantiate it.

    Returns the swarm and a ``source`` string (``path:Class``) for the plan.
    """
    path_text, _, class_name = target.partition(":")
    if ":" in target and len(path_text) == 1 and path_text.isalpha():
        # A Windows drive letter, not a class separator.
        path_text, _, class_name = target[2:].partition(":")
        path_text = target[:2] + path_text
    path = Path(path_text).resolve()
    if not path.is_file():
        raise ShoalError(
            f"swarm file {path_text} does not exist",
            code="load.missing",
            hint="give the path of a .py file that defines a Swarm subclass",
        )
    mod_name = "shoal_swarm_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise ShoalError(
            f"cannot import {path_text}", code="load.import", hint="give the path of a .py file"
        )
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    sys.path.insert(0, str(path.parent))  # so the swarm file can import its neighbours
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ShoalError(
            f"cannot load swarm file {path_text}: syntax error at line {e.lineno}"
            f"{f', column {e.offset}' if e.offset else ''}: {e.msg}"
            + (f" — {e.text.strip()!r}" if e.text else ""),
            code="load.syntax",
            hint="fix the syntax error and run the command again",
        ) from None
    except Exception as e:
        raise ShoalError(
            f"cannot load swarm file {path_text}: importing it raised {type(e).__name__}: {e}",
            code="load.import",
            hint="run `python FILE` to see the full traceback",
        ) from None
    finally:
        sys.path.remove(str(path.parent))
    artifact = _artifact(module, class_name)  # a steps Artifact compiles to a Swarm
    if artifact is not None:
        return artifact[1].to_swarm(), f"{path_text}:{artifact[0]}"
    if class_name:
        obj = getattr(module, class_name, None)
        if obj is None:
            raise ShoalError(
                f"{path_text} defines no {class_name!r}; swarms defined there: "
                f"{_swarm_names(module) or 'none'}",
                code="load.class",
                hint="name one of the Swarm subclasses after the colon",
            )
        if not (inspect.isclass(obj) and issubclass(obj, Swarm)):
            raise ShoalError(
                f"{path_text}:{class_name} is a {type(obj).__name__}, not a shoal.Swarm subclass",
                code="load.class",
                hint="name a class that subclasses shoal.Swarm"
                + (f" ({', '.join(_swarm_names(module))})" if _swarm_names(module) else ""),
            )
        cls: type[Swarm] = obj
    else:
        names = _swarm_names(module)
        if len(names) != 1:
            raise ShoalError(
                f"{path_text} defines {len(names)} Swarm subclasses"
                + (f" ({', '.join(names)})" if names else ""),
                code="load.class",
                hint="add :ClassName after the path to choose one"
                if names
                else "define a class that subclasses shoal.Swarm",
            )
        cls = getattr(module, names[0])
    try:
        swarm = cls()
    except Exception as e:
        raise ShoalError(
            f"creating {cls.__name__}() from {path_text} raised {type(e).__name__}: {e}",
            code="load.init",
            hint="make the swarm's __init__ work with no arguments",
        ) from None
    return swarm, f"{path_text}:{cls.__name__}"


def _swarm_names(module: object) -> list[str]:
    return [
        n
        for n, v in vars(module).items()
        if inspect.isclass(v)
        and issubclass(v, Swarm)
        and v is not Swarm
        and v.__module__ == getattr(module, "__name__", None)
    ]


def _artifact(module: object, name: str) -> tuple[str, Any] | None:
    """The steps artifact the file defines at top level (named, or the only one)."""
    found = {
        n: v
        for n, v in vars(module).items()
        if not inspect.isclass(v) and callable(getattr(v, "to_swarm", None))
    }
    if name:
        return (name, found[name]) if name in found else None
    if len(found) == 1 and not _swarm_names(module):
        return next(iter(found.items()))
    return None
