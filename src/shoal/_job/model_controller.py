"""A user's ``ModelController.run()`` loop, as shoal runs it (DESIGN 3, on-demand tasks).

``run()`` runs as a controller task on the ``server`` node; each
``send_model_and_wait`` is one ``world.invoke`` of the sites' on-demand task. This
module holds what does not touch the runtime: the backend a running controller is
bound to (:class:`Backend`; the task side, ``shoal.job._controller``, implements it),
how a controller is rebuilt from its class's file and constructor arguments, how an
:class:`FLModel` crosses the codec, and FLARE's ``update_model``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from shoal._errors import ShoalError
from shoal._job.client import FLModel, ParamsType


class Backend(Protocol):
    """What a running ``ModelController`` talks to (the controller task)."""

    def sample(self, num_clients: int | None) -> list[str]:
        """Sites for the next round."""
        ...

    def send(self, targets: Sequence[str] | None, data: FLModel, task_name: str) -> list[FLModel]:
        """Run ``task_name`` on ``targets`` with ``data``; their results."""
        ...

    def load(self) -> FLModel:
        """The global model."""
        ...

    def save(self, model: FLModel) -> None:
        """Persist the global model."""
        ...

    def log(self, level: str, message: str) -> None:
        """Log for the controller."""
        ...


def unbound(name: str, what: str) -> ShoalError:
    """The error of a ``ModelController`` method called outside a job run."""
    return ShoalError(
        f"{name}.{what} was called outside a job run",
        code="job.outside",
        hint="send the controller to the server (job.to_server(...)) and run the job: "
        "job.simulator_run(...) runs run() as a controller task",
    )


def model_to_wire(model: FLModel) -> dict[str, Any]:
    """An :class:`FLModel` as plain codec values (no pickle)."""
    params = None
    if model.params is not None:
        params = {}
        for k, v in model.params.items():
            if hasattr(v, "detach"):
                v = v.detach().cpu().numpy()
            params[str(k)] = v
    kind = model.params_type
    return {
        "params": params,
        "params_type": None if kind is None else str(getattr(kind, "value", kind)),
        "metrics": None if model.metrics is None else dict(model.metrics),
        "meta": dict(model.meta or {}),
        "current_round": model.current_round,
        "total_rounds": model.total_rounds,
    }


def model_from_wire(d: dict[str, Any]) -> FLModel:
    """The :class:`FLModel` of :func:`model_to_wire`."""
    kind = d.get("params_type")
    return FLModel(
        params=d.get("params"),
        params_type=ParamsType(kind) if kind in ("FULL", "DIFF") else kind,
        metrics=d.get("metrics"),
        meta=dict(d.get("meta") or {}),
        current_round=d.get("current_round"),
        total_rounds=d.get("total_rounds"),
    )


def update_model(model: FLModel, aggr_result: FLModel) -> FLModel:
    """FLARE's ``update_model``: the global model after an aggregated result (its
    params replace the model's, or are added for ``params_type=DIFF``; metrics and
    meta are merged)."""
    params = dict(model.params or {})
    new = aggr_result.params or {}
    if aggr_result.params_type in (ParamsType.DIFF, "DIFF"):
        for k, v in new.items():
            params[k] = params[k] + v if k in params else v
    else:
        params.update(new)
    return FLModel(
        params=params,
        params_type=ParamsType.FULL,
        metrics={**(model.metrics or {}), **(aggr_result.metrics or {})} or None,
        meta={**(model.meta or {}), **(aggr_result.meta or {})},
        current_round=aggr_result.current_round
        if aggr_result.current_round is not None
        else model.current_round,
        total_rounds=model.total_rounds,
    )


def controller_spec(ctl: object) -> tuple[Path, dict[str, Any]]:
    """Where a controller's class is defined and how to rebuild it: its file, and
    ``{"module", "class", "args"}`` with its constructor arguments read back from the
    attributes of the same name (or ``_name``), as FLARE's job API does.

    Raises
    ------
    ShoalError
        ``job.config`` for a class without a source file (defined in a notebook cell
        or a console) or an argument it does not keep as an attribute.
    """
    cls = type(ctl)
    try:
        path = Path(inspect.getfile(cls)).resolve()
    except (TypeError, OSError) as e:
        raise ShoalError(
            f"controller {cls.__name__} has no source file ({e})",
            code="job.config",
            hint="define the ModelController subclass in a .py file",
        ) from e
    if not path.is_file() or path.suffix != ".py":
        raise ShoalError(
            f"controller {cls.__name__} is defined in {path}, not a .py file",
            code="job.config",
            hint="define the ModelController subclass in a .py file",
        )
    args: dict[str, Any] = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        for attr in (name, f"_{name}"):
            if hasattr(ctl, attr):
                args[name] = getattr(ctl, attr)
                break
        else:
            if p.default is p.empty:
                raise ShoalError(
                    f"controller {cls.__name__}: argument {name!r} is not kept as "
                    f"self.{name} (or self._{name})",
                    code="job.config",
                    hint="set every constructor argument as an attribute of the same name",
                )
    return path, {"module": path.stem, "class": cls.__qualname__, "args": args}
