"""Structured errors: every error carries a stable code and says what to do next."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


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


class InvokeError(ShoalError):
    """A ``world.invoke`` call failed: too few of its instances succeeded in time.

    Attributes
    ----------
    alias
        The on-demand task that was invoked.
    failures
        Every failed instance of the call, as dicts with ``node_id``, ``instance_id``,
        ``attempt``, ``kind`` (``error``, ``crash``, ``timeout``, ``lost``, ...) and
        ``error``.
    """

    code = "invoke.failed"

    def __init__(
        self,
        message: str,
        *,
        alias: str = "",
        failures: Sequence[dict[str, Any]] = (),
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.alias = alias
        self.failures = list(failures)


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


class _Failure(Protocol):
    """What :class:`SwarmFailedError` shows of a failed instance (a ``FailureRecord``)."""

    @property
    def alias(self) -> str: ...
    @property
    def node_id(self) -> str: ...
    @property
    def iteration(self) -> int: ...
    @property
    def attempt(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def error(self) -> str: ...
    @property
    def traceback(self) -> str: ...


class SwarmFailedError(ShoalError):
    """A swarm failed: raised by :func:`shoal.simulate` and :meth:`shoal.Client.wait`
    unless they are given ``raise_on_failure=False``.

    Attributes
    ----------
    swarm
        The swarm's name (or id).
    reason
        Why it failed, as the engine said.
    failures
        Every failed instance (:class:`~shoal.FailureRecord`): task, node id, kind,
        error and traceback. The message shows them too (the first tracebacks whole).
    result
        The failed run (:class:`~shoal.SimulationRun`) or final status
        (:class:`~shoal.SwarmStatus`), with its logs and metrics; None after unpickling.
    """

    code = "swarm.failed"
    #: How many failures the message shows with their whole traceback; the rest get a line.
    SHOWN_TRACEBACKS = 3
    SHOWN_LINES = 20

    def __init__(
        self,
        swarm: str,
        reason: str,
        failures: Sequence[_Failure],
        result: Any = None,
        *,
        hint: str | None = None,
    ) -> None:
        self.swarm = swarm
        self.reason = reason
        self.failures = tuple(failures)
        self.result = result
        super().__init__(
            _failed_message(swarm, reason, self.failures, self.SHOWN_TRACEBACKS, self.SHOWN_LINES),
            hint=hint
            or "fix the task at the first traceback; pass raise_on_failure=False to get the "
            "failed run back instead of this error",
        )

    def __str__(self) -> str:
        # The hint on a line of its own, not glued to the last traceback line.
        return f"{self.message}\n{self.hint}" if self.hint else self.message

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_failed, (self.swarm, self.reason, self.failures, self.hint))


def _rebuild_failed(
    swarm: str, reason: str, failures: tuple[_Failure, ...], hint: str | None
) -> SwarmFailedError:
    return SwarmFailedError(swarm, reason, failures, hint=hint)


def _failed_message(
    swarm: str, reason: str, failures: tuple[_Failure, ...], tracebacks: int, lines: int
) -> str:
    out = [f"swarm {swarm!r} failed: {reason}"]
    if failures:
        out.append(f"{len(failures)} failed instance(s):")
    for i, f in enumerate(failures[:lines]):
        out.append(
            f"- task '{f.alias}' on node {f.node_id} (iteration {f.iteration}, attempt "
            f"{f.attempt}, {f.kind}): {f.error}"
        )
        if i < tracebacks and f.traceback.strip():
            out.extend("    " + line for line in f.traceback.rstrip().splitlines())
    if len(failures) > lines:
        out.append(f"... and {len(failures) - lines} more (every one is in .failures)")
    return "\n".join(out)


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
