"""Structured errors: every error carries a stable code and says what to do next."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class ShoalError(Exception):
    """Base class of every error shoal raises on purpose.

    Parameters
    ----------
    message
        What went wrong, naming the user's object.
    code
        A stable, machine-readable identifier (``"plan.version"``, ...).
    hint
        What to do next.
    """

    code: str = "shoal"

    def __init__(self, message: str, *, code: str | None = None, hint: str | None = None) -> None:
        self.message = message
        if code is not None:
            self.code = code
        self.hint = hint
        super().__init__(message, self.code, hint)

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message} ({self.hint})"
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        # Keep errors picklable inside one process tree (tests, multiprocessing results
        # are never pickled by shoal itself, but user tooling may).
        return (_rebuild, (type(self), self.message, self.code, self.hint))


def _rebuild(cls: type[ShoalError], message: str, code: str, hint: str | None) -> ShoalError:
    err = cls.__new__(cls)
    ShoalError.__init__(err, message, code=code, hint=hint)
    return err


@dataclass(frozen=True)
class Problem:
    """One problem found while validating a swarm.

    Attributes
    ----------
    code
        Stable identifier of the kind of problem (``"graph.cycle"``, ...).
    obj
        The user's object the problem is about (``"task 'worker'"``).
    message
        What is wrong.
    fix
        What to change.
    """

    code: str
    obj: str
    message: str
    fix: str

    def __str__(self) -> str:
        return f"{self.obj}: {self.message}. Fix: {self.fix}"


class SwarmValidationError(ShoalError):
    """Every problem found while preparing a swarm, reported at once."""

    code = "swarm.invalid"

    def __init__(self, swarm: str, problems: Sequence[Problem]) -> None:
        self.swarm = swarm
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        n = len(self.problems)
        super().__init__(
            f"swarm {swarm!r} has {n} problem{'s' if n != 1 else ''}:\n{lines}",
            hint="fix each line above, then prepare the swarm again",
        )

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.swarm, self.problems))


class PlanError(ShoalError):
    """A plan document that cannot be read: malformed or of an unknown schema version."""

    code = "plan.invalid"


class BundleError(ShoalError):
    """A module's code that cannot be bundled."""

    code = "module.bundle"


class CodecError(ShoalError):
    """A value that cannot be encoded or decoded."""

    code = "codec"


class ShoalWarning(UserWarning):
    """Something that works but is probably not what the user meant."""
