"""The objects a job is made of: controllers, executors, filters, runners, model wrappers.

Each adds itself with ``add_to_fed_job`` through the object-developer API, as in
FLARE. They are data: the job description (:mod:`.export`) is read from their
constructor arguments, which they keep as attributes of the same name.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from shoal._errors import ShoalError
from shoal._job.model_controller import Backend, unbound, update_model

if TYPE_CHECKING:
    from shoal._job.fed_job import FedJob, JobCtx

_STOP = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(>=|<=|>|<|==)\s*(-?[0-9.eE+-]+)\s*$")


class Controller:
    """A server-side workflow. Sent to the server, it becomes one of its workflows."""

    def add_to_fed_job(self, job: FedJob, ctx: JobCtx, **kwargs: Any) -> str:
        """Add this controller as a workflow of the server."""
        job.check_kwargs(kwargs, {"id": False})
        return job.add_controller(self, ctx, id=kwargs.get("id"))


class ModelController(Controller):
    """Base of a user's own controller: override :meth:`run`.

    ``run()`` drives rounds with :meth:`sample_clients` and :meth:`send_model_and_wait`,
    which shoal runs as a controller task over on-demand tasks (DESIGN section 3).

    Parameters
    ----------
    persistor_id
        The component that loads and saves the global model (``PTModel`` adds one).
    """

    def __init__(self, persistor_id: str = "persistor") -> None:
        self.persistor_id = persistor_id

    #: Set while ``run()`` runs as a job's controller task (shoal.job._controller).
    _backend: Backend | None = None

    def run(self) -> None:
        """The workflow; a subclass overrides it."""
        raise NotImplementedError(f"{type(self).__name__}.run()")

    def _bound(self, what: str) -> Backend:
        if self._backend is None:
            raise unbound(type(self).__name__, what)
        return self._backend

    def sample_clients(self, num_clients: int | None = None) -> list[str]:
        """``num_clients`` sites for the next round, sampled with the job's seed
        (None: every site)."""
        return self._bound("sample_clients()").sample(num_clients)

    def send_model_and_wait(
        self, targets: Sequence[str] | None = None, data: Any = None, task_name: str = "train"
    ) -> list[Any]:
        """Run ``task_name`` on ``targets`` (default: every site) with the FLModel
        ``data`` and return their FLModel results (``meta["client_name"]`` says whose).
        A site that fails or is lost is left out while at least the job's
        ``min_clients`` answer; fewer fail the run (``shoal.InvokeError``)."""
        return self._bound("send_model_and_wait()").send(targets, data, task_name)

    def load_model(self) -> Any:
        """The global model (the persistor's initial model, then the last saved)."""
        return self._bound("load_model()").load()

    def save_model(self, model: Any) -> None:
        """Save the global model (the run's ``weights``; the persistor writes it)."""
        self._bound("save_model()").save(model)

    def update_model(self, model: Any, aggr_result: Any) -> Any:
        """The global model after an aggregated result (FULL replaces, DIFF adds)."""
        return update_model(model, aggr_result)

    def info(self, msg: str) -> None:
        """Log at info level."""
        if self._backend is not None:
            self._backend.log("info", msg)
        else:
            print(f"[{type(self).__name__}] {msg}")

    def warning(self, msg: str) -> None:
        """Log at warning level."""
        if self._backend is not None:
            self._backend.log("warning", msg)
        else:
            print(f"[{type(self).__name__}] WARNING {msg}")


def parse_stop_cond(stop_cond: str | None) -> tuple[str, str, float] | None:
    """``"accuracy >= 0.9"`` as ``("accuracy", ">=", 0.9)``; a clear error otherwise."""
    if stop_cond is None:
        return None
    m = _STOP.match(stop_cond)
    if m is None:
        raise ShoalError(
            f"stop_cond={stop_cond!r} is not 'METRIC OP NUMBER'",
            code="job.config",
            hint="write e.g. stop_cond='accuracy >= 0.9' (OP one of >=, <=, >, <, ==)",
        )
    return m.group(1), m.group(2), float(m.group(3))


def secure_setting(owner: str, secure: Any, num_clients: int, stop: Any, patience: Any) -> Any:
    """``secure`` checked: False, True or a ``shoal.strategies.SecureFedAvg``.

    Refuses what cannot work with a masked sum: fewer than 3 sites per round (two
    sites learn each other's update from the sum) and a stop condition or patience
    (the server never sees a site's metrics, only the sum of the masked updates).
    """
    if secure is False or secure is None:
        return False
    # _job may not import shoal.strategies (docs/architecture.md): SecureFedAvg is
    # recognised by what shoal.job._run uses of it.
    if secure is not True and not all(
        hasattr(secure, a) for a in ("threshold", "neighbours", "frac_bits", "tasks")
    ):
        raise ShoalError(
            f"{owner}(secure={secure!r})",
            code="job.config",
            hint="pass secure=True or secure=shoal.strategies.SecureFedAvg(threshold=..., "
            "neighbours=...)",
        )
    if num_clients < 3:
        raise ShoalError(
            f"{owner}(num_clients={num_clients}, secure=...): secure aggregation needs at "
            "least 3 sites per round (with 2, each learns the other's update from the sum)",
            code="job.config",
            hint="use num_clients >= 3, or drop secure",
        )
    if stop is not None or patience is not None:
        raise ShoalError(
            f"{owner}(secure=..., stop_cond/patience): under secure aggregation the server "
            "sees only the masked sum, never the sites' metrics the stop condition reads",
            code="job.unsupported",
            hint="drop stop_cond and patience, or drop secure",
        )
    return secure


class FedAvg(ModelController):
    """The built-in FedAvg workflow: compiles to an ordinary plan (no on-demand tasks).

    Each round sends the global model to the sites' ``train`` task and averages their
    results weighted by ``NUM_STEPS_CURRENT_ROUND`` (shoal.strategies' FedAvg). With
    ``secure``, each site's update is masked on the site (SecAgg+, shoal.strategies'
    :class:`~shoal.strategies.SecureFedAvg` tasks) and the server learns only the sum.

    Parameters
    ----------
    num_clients
        Sites per round (the round waits for this many; fewer than ``min_clients`` of
        the job fails it, never waits forever).
    num_rounds
        Rounds.
    persistor_id
        The model persistor's component id.
    stop_cond
        ``"METRIC OP NUMBER"``: stop early when the global metric meets it.
    patience
        Stop after this many rounds without improvement of the stop metric.
    task_name
        The task the sites run.
    secure
        Secure aggregation (docs/privacy.md): ``True`` for SecAgg+ with
        ``shoal.strategies.SecureFedAvg()``'s defaults, or a ``SecureFedAvg(threshold=,
        neighbours=, frac_bits=)`` of your own. The training script is unchanged; the
        site masks what it sent. Needs ``num_clients >= 3`` and every site in every
        round; refuses ``stop_cond``, ``patience`` and an ``IntimeModelSelector`` (the
        server never sees the sites' metrics) and result filters on the server.
    """

    def __init__(
        self,
        num_clients: int = 3,
        num_rounds: int = 5,
        persistor_id: str = "persistor",
        stop_cond: str | None = None,
        patience: int | None = None,
        task_name: str = "train",
        secure: Any = False,
    ) -> None:
        super().__init__(persistor_id)
        for n, v in (("num_clients", num_clients), ("num_rounds", num_rounds)):
            if not isinstance(v, int) or v < 1:
                raise ShoalError(
                    f"{type(self).__name__}({n}={v!r})",
                    code="job.config",
                    hint=f"{n} is an int >= 1",
                )
        self.num_clients = num_clients
        self.num_rounds = num_rounds
        self.stop_cond = stop_cond
        self._stop = parse_stop_cond(stop_cond)
        self.patience = patience
        self.task_name = task_name
        owner = type(self).__name__
        self.secure = secure_setting(owner, secure, num_clients, stop_cond, patience)

    def strategy(self) -> dict[str, Any]:
        """The server step, as shoal.strategies' config (the same code as every dialect)."""
        return {"name": "fedavg", "params": {"lr": 1.0, "weighted": True}}


class FedOpt(FedAvg):
    """FedAvg with a server-side optimizer (FedAdam / FedYogi / FedAdagrad / FedAvgM).

    Parameters
    ----------
    optimizer
        ``"adam"``, ``"yogi"``, ``"adagrad"`` or ``"sgdm"`` (server momentum).
    lr
        Server learning rate.
    num_clients, num_rounds, persistor_id, stop_cond, patience, task_name
        As for :class:`FedAvg`.
    """

    _OPT: ClassVar[dict[str, str]] = {
        "adam": "fedadam",
        "yogi": "fedyogi",
        "adagrad": "fedadagrad",
        "sgdm": "fedavgm",
    }

    def __init__(
        self,
        num_clients: int = 3,
        num_rounds: int = 5,
        optimizer: str = "adam",
        lr: float = 0.01,
        persistor_id: str = "persistor",
        stop_cond: str | None = None,
        patience: int | None = None,
        task_name: str = "train",
    ) -> None:
        super().__init__(num_clients, num_rounds, persistor_id, stop_cond, patience, task_name)
        if optimizer not in self._OPT:
            raise ShoalError(
                f"FedOpt(optimizer={optimizer!r})",
                code="job.config",
                hint=f"one of {sorted(self._OPT)}",
            )
        self.optimizer = optimizer
        self.lr = lr

    def strategy(self) -> dict[str, Any]:
        """The server optimizer as shoal.strategies' config."""
        return {"name": self._OPT[self.optimizer], "params": {"lr": self.lr}}


class Executor:
    """A site-side handler of tasks: override :meth:`execute`.

    Sent to a site with ``tasks=[...]`` (default all), it handles those task names.
    """

    def execute(
        self, task_name: str, data: Any, fl_ctx: Any = None, abort_signal: Any = None
    ) -> Any:
        """Handle one task; return its result."""
        raise NotImplementedError(f"{type(self).__name__}.execute()")

    def add_to_fed_job(self, job: FedJob, ctx: JobCtx, **kwargs: Any) -> str:
        """Add this executor to the site for ``tasks``."""
        job.check_kwargs(kwargs, {"tasks": False, "id": False})
        return job.add_executor(self, kwargs.get("tasks"), ctx, id=kwargs.get("id"))


class Filter:
    """A site-side transformation of task data or results: override :meth:`process`.

    Sent with ``filter_type=FilterType.TASK_DATA`` or ``TASK_RESULT`` and ``tasks``.
    """

    def process(self, data: Any, task_name: str) -> Any:
        """The filtered value."""
        raise NotImplementedError(f"{type(self).__name__}.process()")

    def add_to_fed_job(self, job: FedJob, ctx: JobCtx, **kwargs: Any) -> str:
        """Add this filter for ``filter_type`` and ``tasks``."""
        job.check_kwargs(kwargs, {"filter_type": True, "tasks": False, "id": False})
        ft = kwargs["filter_type"]
        return job.add_filter(self, ft, kwargs.get("tasks"), ctx, id=kwargs.get("id"))


class ScriptRunner:
    """Run a training script that uses the Client API on every site it is sent to.

    Parameters
    ----------
    script
        The script (shipped with the job).
    script_args
        Its arguments; ``{i}`` becomes the site's number, ``{site}`` its name.
    launch_external_process
        False: the script's ``__main__`` runs inside the task; True: ``command script
        args`` runs as a child process of the task, on the same channel.
    command
        The command line prefix in external mode.
    framework
        ``"pytorch"`` or ``"numpy"`` (how params travel: both through shoal's codec).
    """

    def __init__(
        self,
        script: str,
        script_args: str = "",
        launch_external_process: bool = False,
        command: str = "python3 -u",
        framework: str = "pytorch",
    ) -> None:
        if framework not in ("pytorch", "numpy", "raw"):
            raise ShoalError(
                f"ScriptRunner(framework={framework!r})",
                code="job.config",
                hint="framework is 'pytorch', 'numpy' or 'raw'",
            )
        self.script = script
        self.script_args = script_args
        self.launch_external_process = launch_external_process
        self.command = command
        self.framework = framework

    def argv(self, site: str) -> list[str]:
        """The script's arguments on ``site`` (placeholders filled in)."""
        m = re.search(r"(\d+)$", site)
        number = m.group(1) if m else site
        text = self.script_args.replace("{i}", number).replace("{site}", site)
        return text.split()

    def add_to_fed_job(self, job: FedJob, ctx: JobCtx, **kwargs: Any) -> dict[str, str]:
        """Add the script (a resource) and its executor to the site."""
        job.check_kwargs(kwargs, {"tasks": False})
        job.add_resources([self.script], ctx)
        comp = job.add_executor(self, kwargs.get("tasks"), ctx, id="script_runner")
        return {"executor": comp}


class PTModel:
    """A torch model as the job's initial global model, with its persistor.

    Parameters
    ----------
    model
        A ``torch.nn.Module``: its state dict is the initial global model.
    """

    def __init__(self, model: Any) -> None:
        if not hasattr(model, "state_dict"):
            raise ShoalError(
                f"PTModel({type(model).__name__}): not a torch.nn.Module",
                code="job.config",
                hint="pass the network instance, e.g. PTModel(Net())",
            )
        self.model = model

    def add_to_fed_job(self, job: FedJob, ctx: JobCtx, **kwargs: Any) -> dict[str, str]:
        """Add the persistor (initial model, per-round and best models) and the locator."""
        job.check_kwargs(kwargs, {})
        persistor = job.add_component("persistor", ModelPersistor(self.model, "pytorch"), ctx)
        return {"persistor_id": persistor}


class NPModel(PTModel):
    """A dict of NumPy arrays as the job's initial global model.

    Parameters
    ----------
    model
        ``{name: numpy array}``.
    """

    def __init__(self, model: Any) -> None:
        if not isinstance(model, dict):
            raise ShoalError(
                f"NPModel({type(model).__name__}): not a dict of arrays",
                code="job.config",
                hint="pass {'w': np.zeros(...), ...}",
            )
        self.model = model

    def add_to_fed_job(self, job: FedJob, ctx: JobCtx, **kwargs: Any) -> dict[str, str]:
        """Add the persistor of the NumPy model."""
        job.check_kwargs(kwargs, {})
        persistor = job.add_component("persistor", ModelPersistor(self.model, "numpy"), ctx)
        return {"persistor_id": persistor}


class ModelPersistor:
    """Writes the global model of each round to the workspace, and the best one.

    Parameters
    ----------
    model
        The initial model (torch module or dict of arrays).
    framework
        ``"pytorch"`` or ``"numpy"``.
    """

    def __init__(self, model: Any, framework: str) -> None:
        self.model = model
        self.framework = framework


class IntimeModelSelector:
    """Marks the best global model by ``key_metric`` as the rounds go.

    Parameters
    ----------
    key_metric
        The validation metric the sites send (higher is better unless ``negate``).
    negate_key_metric
        Lower is better.
    """

    def __init__(self, key_metric: str = "val_accuracy", negate_key_metric: bool = False) -> None:
        self.key_metric = key_metric
        self.negate_key_metric = negate_key_metric
