"""The Client API's state: one round's session, bound by whatever runs the script.

A round runs the script anew (seed 004 on shoal: one task instance per round), so a
session holds one received model and takes one sent model: ``is_running()`` is true
until the round's ``send()``. The runner (:mod:`.script`) binds a session around the
script; outside one, every call names the fix.
"""

from __future__ import annotations

import enum
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from shoal._errors import ShoalError


class ParamsType(str, enum.Enum):
    """Whether ``FLModel.params`` is the whole model or a difference to the global one."""

    FULL = "FULL"
    DIFF = "DIFF"


class AnalyticsDataType(str, enum.Enum):
    """The kind of a value given to :func:`log`."""

    SCALAR = "SCALAR"
    SCALARS = "SCALARS"
    TEXT = "TEXT"


@dataclass
class FLModel:
    """A model exchanged between the server and a site.

    Attributes
    ----------
    params
        ``{name: numpy array or torch tensor}``.
    params_type
        FULL or DIFF.
    metrics
        ``{name: float}`` (e.g. the global model's accuracy on the site's data).
    meta
        Anything else; ``NUM_STEPS_CURRENT_ROUND`` weights FedAvg.
    current_round, total_rounds
        The round (from 0) and the number of rounds.
    """

    params: dict[str, Any] | None = None
    params_type: ParamsType | str | None = ParamsType.FULL
    metrics: dict[str, float] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    current_round: int | None = None
    total_rounds: int | None = None
    start_round: int | None = 0


@dataclass
class Session:
    """One round of one site: what the script receives, what it sent, what it logged."""

    site: str
    job_id: str
    task_name: str
    model: FLModel
    sent: FLModel | None = None
    received: bool = False
    logs: list[tuple[str, Any, int | None]] = field(default_factory=list)
    channel: Any = None


_session: Session | None = None


@contextmanager
def bound(session: Session) -> Iterator[Session]:
    """Make ``session`` the one the Client API answers from, for the block."""
    global _session
    previous, _session = _session, session
    try:
        yield session
    finally:
        _session = previous


#: In an external-process script: the fd of its socket to the task that launched it.
CHANNEL_ENV = "SHOAL_JOB_CHANNEL"


def _from_channel() -> Session | None:
    """The round's session read from the launching task (external-process mode)."""
    import os

    fd = os.environ.get(CHANNEL_ENV)
    if fd is None:
        return None
    from shoal._job.channel import Channel

    channel = Channel(int(fd))
    return channel.receive_session()


def _current(what: str) -> Session:
    global _session
    if _session is None:
        _session = _from_channel()
    if _session is None:
        raise ShoalError(
            f"shoal.job.client.{what}: no job round is running in this process",
            code="job.outside",
            hint="run the script through a FedJob's ScriptRunner (job.simulator_run, shoal deploy)",
        )
    return _session


def init(rank: str | None = None) -> None:
    """Start the Client API (checks that a round is bound)."""
    _current("init()")


def is_running() -> bool:
    """True until this round's :func:`send`."""
    return _current("is_running()").sent is None


def receive(timeout: float | None = None) -> FLModel:
    """The model the server sent this round."""
    s = _current("receive()")
    s.received = True
    return s.model


def send(model: FLModel, clear_cache: bool = True) -> None:
    """Send this round's result to the server (once per round)."""
    s = _current("send()")
    if not isinstance(model, FLModel):
        raise ShoalError(
            f"send({type(model).__name__}): not an FLModel",
            code="job.config",
            hint="send(flare.FLModel(params=..., metrics=...))",
        )
    if s.sent is not None:
        raise ShoalError(
            "send() called twice in one round",
            code="job.config",
            hint="each round runs the script anew: send once, then let the script end",
        )
    s.sent = model
    if s.channel is not None:  # external process: the result goes back now
        s.channel.send_result(s)


def system_info() -> dict[str, str]:
    """``{"site_name": ..., "job_id": ...}``."""
    s = _current("system_info()")
    return {"site_name": s.site, "job_id": s.job_id}


def get_site_name() -> str:
    """This site's name (its node id)."""
    return _current("get_site_name()").site


def get_job_id() -> str:
    """The job's id."""
    return _current("get_job_id()").job_id


def get_task_name() -> str:
    """This round's task name."""
    return _current("get_task_name()").task_name


def is_train() -> bool:
    """Whether this round's task is training."""
    return get_task_name() == "train"


def is_evaluate() -> bool:
    """Whether this round's task is evaluation."""
    return get_task_name() == "validate"


def is_submit_model() -> bool:
    """Whether the server asks for the site's best local model."""
    return get_task_name() == "submit_model"


def log(
    key: str,
    value: Any,
    data_type: AnalyticsDataType | str = AnalyticsDataType.SCALAR,
    global_step: int | None = None,
    **kwargs: Any,
) -> None:
    """Record a metric of this round (into shoal's metrics)."""
    _current("log()").logs.append((key, value, global_step))
