"""Entities: the JSON code-as-data every artifact is made of (seed 003).

An entity is a frozen pydantic model registered under its qualified name
(``module.Class``). :meth:`Entity.spec` writes ``{"kind": name, "params": fields}``
and :meth:`Entity.from_spec` reads it back, so an artifact travels as JSON (never
pickle) and a node rebuilds it from the classes its bundled modules define.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from shoal._errors import ShoalError


class StepsError(ShoalError):
    """Bad input to the steps dialect: names the object and the fix."""

    code = "steps"


_REGISTRY: dict[str, type[Entity]] = {}
# The name each class registered under: a public module may later re-publish a class
# (changing its ``__module__``); its JSON name must not change with it.
_KIND_OF: dict[type, str] = {}


class Entity(BaseModel):
    """Base of every artifact part: its fields are its JSON parameters.

    Subclasses register under their qualified name; a second class of the same name is
    a :class:`StepsError` (``steps.entity``).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    registered: ClassVar[bool] = True

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        name = f"{cls.__module__}.{cls.__qualname__}"
        other = _REGISTRY.get(name)
        if other is not None and other is not cls:
            raise StepsError(
                f"two entity classes are named {name}",
                code="steps.entity",
                hint="rename one of them: entities are registered by qualified name",
            )
        _REGISTRY[name] = cls
        _KIND_OF[cls] = name

    @classmethod
    def kind(cls) -> str:
        """The qualified name the class is registered under."""
        return _KIND_OF.get(cls) or f"{cls.__module__}.{cls.__qualname__}"

    def spec(self) -> dict[str, Any]:
        """``{"kind": qualified name, "params": JSON fields}``."""
        return {"kind": self.kind(), "params": self.model_dump(mode="json")}

    @staticmethod
    def from_spec(spec: Any) -> Entity:
        """The entity :meth:`spec` described (its class must be imported)."""
        if not isinstance(spec, dict) or "kind" not in spec:
            raise StepsError(
                f"not an entity spec: {spec!r}",
                code="steps.entity",
                hint='give {"kind": ..., "params": {...}} as Entity.spec() writes it',
            )
        cls = _REGISTRY.get(spec["kind"])
        if cls is None:
            raise StepsError(
                f"no entity class is named {spec['kind']!r}",
                code="steps.entity",
                hint="import (or bundle) the module that defines it before loading",
            )
        return cls.model_validate(spec.get("params", {}))


def _load(value: Any) -> Any:
    return Entity.from_spec(value) if isinstance(value, dict) else value


def _dump(value: Any) -> Any:
    return value.spec() if isinstance(value, Entity) else value


LOAD = BeforeValidator(_load)
"""Reads a nested entity from its ``spec()`` (fields are polymorphic in JSON)."""
DUMP = PlainSerializer(_dump)
"""Writes a nested entity as its ``spec()``."""
Nested = Annotated[Any, LOAD, DUMP]
"""A field holding any entity."""
