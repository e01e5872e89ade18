"""``FedJob``: assign objects to the server and the sites; export the job.

FLARE's job API (``nvflare.job_config.api.FedJob``) with the same names and rules:
objects go to a target with :meth:`FedJob.to`; an object with ``add_to_fed_job(job,
ctx, ...)`` adds itself through the object-developer API (``add_component``,
``add_controller``, ``add_executor``, ``add_filter``, ``add_resources``); anything else
becomes a component with an id. Targets are node ids (DESIGN 3c): ``"server"`` and the
site names; :meth:`to_clients` means every site.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from shoal._errors import ShoalError
from shoal._job.app import ALL_TASKS, App, FilterType
from shoal._job.describe import strings_in

#: Set by shoal.job: runs a job in the simulator (the dialect itself only builds).
RUNNER: Callable[..., Any] | None = None

SERVER = "server"
ALL_CLIENTS = "@ALL"
_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass
class JobCtx:
    """The context an object's ``add_to_fed_job`` passes back to the ``add_xxx`` calls."""

    target: str


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _err(message: str, hint: str) -> ShoalError:
    return ShoalError(message, code="job.config", hint=hint)


class FedJob:
    """A federated job: which object runs on the server and on which site.

    Parameters
    ----------
    name
        The job's name.
    min_clients
        Sites the job needs to start (and to go on after a site is lost).
    mandatory_clients
        Sites without which the job does not run.
    """

    def __init__(
        self,
        name: str = "fed_job",
        min_clients: int = 1,
        mandatory_clients: Sequence[str] | None = None,
    ) -> None:
        if not isinstance(min_clients, int) or min_clients < 1:
            raise _err(f"FedJob(min_clients={min_clients!r})", "min_clients is an int >= 1")
        self.name = name
        self.min_clients = min_clients
        self.mandatory_clients = list(mandatory_clients or [])
        self._apps: dict[str, App] = {}
        self._ids: dict[str, object] = {}  # as_id(): uuid -> object
        self._set_up: set[str] = set()

    # -- the user API ---------------------------------------------------------------

    def to(self, obj: Any, target: str, id: str | None = None, **kwargs: Any) -> Any:
        """Assign ``obj`` to ``target`` (``"server"`` or a site name).

        Returns what ``obj.add_to_fed_job`` returned, or the id of the added component.
        """
        if not isinstance(target, str) or not (
            target in (SERVER, ALL_CLIENTS) or _SITE.match(target)
        ):
            raise _err(
                f"FedJob.to(..., target={target!r}): not a node id",
                "use 'server' or a site name such as 'site-1'",
            )
        if target != SERVER and target not in self._set_up:
            self._set_up.add(target)
            self.set_up_client(target)
        ctx = JobCtx(target)
        add = getattr(obj, "add_to_fed_job", None)
        if callable(add):
            return add(self, ctx, **kwargs)
        if isinstance(obj, str):
            self.check_kwargs(kwargs, {})
            self.add_resources([obj], ctx)
            return None
        self.check_kwargs(kwargs, {})
        return self.add_component(id or _snake(type(obj).__name__), obj, ctx)

    def to_server(self, obj: Any, id: str | None = None, **kwargs: Any) -> Any:
        """Assign ``obj`` to the server."""
        return self.to(obj, SERVER, id=id, **kwargs)

    def to_clients(self, obj: Any, id: str | None = None, **kwargs: Any) -> Any:
        """Assign ``obj`` to every client (every site the job runs on)."""
        return self.to(obj, ALL_CLIENTS, id=id, **kwargs)

    def as_id(self, obj: Any) -> str:
        """An id standing for ``obj``; ``obj`` is added with any object that references it."""
        for key, known in self._ids.items():
            if known is obj:
                return key
        key = str(uuid.uuid4())
        self._ids[key] = obj
        return key

    def set_up_client(self, target: str) -> None:
        """Called the first time an object goes to a client target; subclasses override it."""

    # -- the object-developer API ---------------------------------------------------

    def add_component(self, comp_id: str, obj: Any, ctx: JobCtx) -> str:
        """Add ``obj`` as a component of ``ctx``'s target; returns its (unique) id."""
        app = self._app(ctx.target)
        comp_id = app.unique_id(comp_id)
        app.components[comp_id] = obj
        self._add_referents(obj, app)
        return comp_id

    def add_controller(self, obj: Any, ctx: JobCtx, id: str | None = None) -> str:
        """Add a controller as a workflow of the server."""
        if ctx.target != SERVER:
            raise _err(
                f"{type(obj).__name__} sent to {ctx.target!r}: controllers run on the server",
                "use job.to_server(controller)",
            )
        comp_id = self.add_component(id or _snake(type(obj).__name__), obj, ctx)
        self._app(ctx.target).workflows.append(comp_id)
        return comp_id

    def add_executor(
        self, obj: Any, tasks: Sequence[str] | None, ctx: JobCtx, id: str | None = None
    ) -> str:
        """Add an executor to a site, for the task names ``tasks`` (default all)."""
        if ctx.target == SERVER:
            raise _err(
                f"{type(obj).__name__} sent to the server: executors run on sites",
                "use job.to_clients(executor) or job.to(executor, 'site-1')",
            )
        names = self._tasks(tasks, obj)
        comp_id = self.add_component(id or _snake(type(obj).__name__), obj, ctx)
        self._app(ctx.target).executors.append((names, comp_id))
        return comp_id

    def add_filter(
        self,
        obj: Any,
        filter_type: FilterType,
        tasks: Sequence[str] | None,
        ctx: JobCtx,
        id: str | None = None,
    ) -> str:
        """Add a filter of ``filter_type`` for the task names ``tasks`` (default all)."""
        if not isinstance(filter_type, FilterType):
            raise _err(
                f"{type(obj).__name__}: filter_type={filter_type!r}",
                "pass filter_type=FilterType.TASK_DATA or FilterType.TASK_RESULT",
            )
        names = self._tasks(tasks, obj)
        comp_id = self.add_component(id or _snake(type(obj).__name__), obj, ctx)
        self._app(ctx.target).filters.append((filter_type, names, comp_id))
        return comp_id

    def add_resources(self, resources: Sequence[str], ctx: JobCtx) -> None:
        """Files or folders to ship with the target's app (its custom folder)."""
        self._app(ctx.target).resources.extend(str(r) for r in resources)

    def check_kwargs(
        self, args_to_check: Mapping[str, Any], args_expected: Mapping[str, bool]
    ) -> None:
        """Refuse unexpected arguments and missing required ones.

        ``args_expected`` maps each accepted name to whether it is required.
        """
        unexpected = sorted(set(args_to_check) - set(args_expected))
        if unexpected:
            raise _err(
                f"unexpected argument(s) {unexpected}",
                f"accepted here: {sorted(args_expected) or 'none'}",
            )
        missing = sorted(k for k, req in args_expected.items() if req and k not in args_to_check)
        if missing:
            raise _err(f"missing required argument(s) {missing}", "pass them to job.to(...)")

    # -- reading the job back -------------------------------------------------------

    @property
    def apps(self) -> Mapping[str, App]:
        """The apps by target (``"server"``, site names, ``"@ALL"`` for every client)."""
        return dict(self._apps)

    def _app(self, target: str) -> App:
        if target not in self._apps:
            self._apps[target] = App(target)
        return self._apps[target]

    def _tasks(self, tasks: Sequence[str] | None, obj: Any) -> list[str]:
        if tasks is None:
            return list(ALL_TASKS)
        if isinstance(tasks, str) or not all(isinstance(t, str) for t in tasks):
            raise _err(
                f"{type(obj).__name__}: tasks={tasks!r}",
                "pass a list of task names, e.g. ['train']",
            )
        return list(tasks)

    def _add_referents(self, obj: Any, app: App) -> None:
        """Add the objects ``obj`` references through :meth:`as_id`, under those ids."""
        values = list(vars(obj).values()) if hasattr(obj, "__dict__") else []
        for s in strings_in(values):
            ref = self._ids.get(s)
            if ref is not None and s not in app.components:
                app.components[s] = ref
                self._add_referents(ref, app)

    # -- running --------------------------------------------------------------------

    def export_job(self, job_root: str) -> str:
        """Write the job (description, scripts, initial models) under ``job_root/<name>``."""
        from shoal._job.export import export_job

        return str(export_job(self, job_root))

    def simulator_run(
        self,
        workspace: str,
        n_clients: int | None = None,
        threads: int | None = None,
        gpu: str | None = None,
        **options: Any,
    ) -> Any:
        """Run the job in shoal's simulator with sites ``site-1..site-N`` and ``server``.

        ``n_clients`` only when no site was named with :meth:`to`; ``threads`` is the
        simulator's worker count; ``gpu`` is accepted for FLARE's signature (CPU here).
        Returns the simulator's run (``run.globals["weights"]`` is the final model).
        """
        if RUNNER is None:  # shoal.job sets it: this package builds plans only
            raise ShoalError(
                "FedJob.simulator_run() needs shoal.job imported",
                code="job.unsupported",
                hint="import FedJob from shoal.job",
            )
        return RUNNER(self, workspace, n_clients, threads, gpu, **options)
