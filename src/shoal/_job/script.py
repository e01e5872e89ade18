"""Running a ScriptRunner's script in-process for one round.

The script's ``__main__`` runs with its argv, inside a bound Client API session; what
it ``send()``s is the round's result. Site-side filters run around it: TASK_DATA on
what it receives, TASK_RESULT on what it sends.
"""

from __future__ import annotations

import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from shoal._errors import ShoalError
from shoal._job.client import FLModel, Session, bound


def run_filters(filters: Sequence[tuple[list[str], Any]], task_name: str, data: Any) -> Any:
    """Apply the filters routed to ``task_name`` (``"*"`` matches every task), in order."""
    for tasks, flt in filters:
        if "*" in tasks or task_name in tasks:
            data = flt.process(data, task_name)
    return data


def run_in_process(
    script: str | Path,
    argv: Sequence[str],
    site: str,
    job_id: str,
    task_name: str,
    model: FLModel,
    data_filters: Sequence[tuple[list[str], Any]] = (),
    result_filters: Sequence[tuple[list[str], Any]] = (),
) -> Session:
    """One round: the script's ``__main__`` with ``argv``; returns the finished session."""
    model = run_filters(data_filters, task_name, model)
    session = Session(site=site, job_id=job_id, task_name=task_name, model=model)
    saved, saved_path = sys.argv, list(sys.path)
    sys.argv = [str(script), *argv]
    sys.path.insert(0, str(Path(script).parent))  # as `python script.py` would
    try:
        with bound(session):
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved, saved_path
    if session.sent is None:
        raise ShoalError(
            f"{Path(script).name} on {site!r} ended without flare.send() in round "
            f"{model.current_round}",
            code="job.config",
            hint="call flare.send(flare.FLModel(...)) once per round",
        )
    session.sent = run_filters(result_filters, task_name, session.sent)
    return session


def run_external(
    command: str,
    script: str | Path,
    argv: Sequence[str],
    site: str,
    job_id: str,
    task_name: str,
    model: FLModel,
    data_filters: Sequence[tuple[list[str], Any]] = (),
    result_filters: Sequence[tuple[list[str], Any]] = (),
    timeout: float = 3600.0,
) -> Session:
    """One round as ``command script argv`` in a child process, over a socket pair.

    The child inherits the task's sandbox (it is the task's own child process); its
    Client API reads the round from the socket and writes its result back.
    """
    import os
    import shlex
    import socket
    import subprocess

    from shoal._job.channel import Channel
    from shoal._job.client import CHANNEL_ENV

    model = run_filters(data_filters, task_name, model)
    session = Session(site=site, job_id=job_id, task_name=task_name, model=model)
    ours, theirs = socket.socketpair()
    env = {**os.environ, CHANNEL_ENV: str(theirs.fileno())}
    cmd = [*shlex.split(command), str(script), *argv]
    with ours:
        proc = subprocess.Popen(cmd, env=env, pass_fds=(theirs.fileno(),))
        theirs.close()
        channel = Channel(ours, timeout=timeout)
        try:
            channel.send_round(session)
            channel.receive_result(session)
        except ShoalError as e:
            code = proc.wait(timeout=timeout)
            raise ShoalError(
                f"{Path(script).name} on {site!r} (pid {proc.pid}) ended with exit code {code} "
                "before flare.send()",
                code="job.config",
                hint="call flare.send(flare.FLModel(...)) once per round; see its output",
            ) from e
        proc.wait(timeout=timeout)
    session.sent = run_filters(result_filters, task_name, session.sent)
    return session


class FLContext:
    """What a user :class:`~shoal.job.Executor` learns of where it runs (FLARE's names).

    Parameters
    ----------
    site
        This site's name (its node id).
    job_id
        The job's id.
    """

    def __init__(self, site: str, job_id: str) -> None:
        self.site = site
        self.job_id = job_id
        self._props: dict[str, Any] = {}

    def get_identity_name(self) -> str:
        """This site's name."""
        return self.site

    def get_job_id(self) -> str:
        """The job's id."""
        return self.job_id

    def get_prop(self, key: str, default: Any = None) -> Any:
        """A property set with :meth:`set_prop`."""
        return self._props.get(key, default)

    def set_prop(self, key: str, value: Any, private: bool = True, sticky: bool = True) -> None:
        """Keep a property for the rest of this task."""
        self._props[key] = value


class Signal:
    """FLARE's abort signal: shoal cancels a task by ending its process, so it never
    triggers while the executor runs."""

    triggered = False

    def trigger(self, value: Any = True) -> None:
        """Mark the signal (for an executor's own use)."""
        self.triggered = bool(value)


def run_executor(
    executor: Any,
    site: str,
    job_id: str,
    task_name: str,
    model: FLModel,
    data_filters: Sequence[tuple[list[str], Any]] = (),
    result_filters: Sequence[tuple[list[str], Any]] = (),
) -> Session:
    """One task on a user executor: ``execute(task_name, model, fl_ctx, abort_signal)``.

    The executor gets the (filtered) FLModel and returns an FLModel, which the result
    filters then see, as a ScriptRunner's script's ``send()`` would.
    """
    model = run_filters(data_filters, task_name, model)
    session = Session(site=site, job_id=job_id, task_name=task_name, model=model)
    out = executor.execute(task_name, model, FLContext(site, job_id), Signal())
    if not isinstance(out, FLModel):
        raise ShoalError(
            f"{type(executor).__name__}.execute({task_name!r}) on {site!r} returned "
            f"{type(out).__name__}, not an FLModel",
            code="job.config",
            hint="return flare.FLModel(params=..., metrics=...) from execute()",
        )
    session.sent = run_filters(result_filters, task_name, out)
    return session
