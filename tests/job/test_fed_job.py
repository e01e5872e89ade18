"""FedJob: targets, component ids, as_id, add_to_fed_job, set_up_client, check_kwargs."""

from __future__ import annotations

from typing import Any

import pytest

from shoal import ShoalError
from shoal.job import (
    Executor,
    FedAvg,
    FedAvgJob,
    FedJob,
    FilterType,
    IntimeModelSelector,
    JobCtx,
    ModelController,
    PercentilePrivacy,
    ScriptRunner,
)


class Comp:
    def __init__(self, a: int, sub_id: str = "") -> None:
        self.a = a
        self._sub_id = sub_id  # "_"-prefixed is read too


class Forgetful:
    def __init__(self, lr: float) -> None:
        self.rate = lr  # not kept as self.lr: cannot be exported


@pytest.mark.timeout(10)
def test_components_get_ids_incremented_on_reuse() -> None:
    job = FedJob("j")
    assert job.to_server(Comp(1)) == "comp"
    assert job.to_server(Comp(2)) == "comp1"
    assert job.to_server(Comp(3), id="x") == "x"
    assert job.to_server(Comp(4), id="x") == "x1"
    assert set(job.apps["server"].components) == {"comp", "comp1", "x", "x1"}


@pytest.mark.timeout(10)
def test_as_id_referent_is_added_with_its_referrer() -> None:
    job = FedJob("j")
    inner = Comp(7)
    ref = job.as_id(inner)
    assert job.as_id(inner) == ref  # stable
    job.to(Comp(1, sub_id=ref), "site-1")
    comps = job.apps["site-1"].components
    assert comps[ref] is inner
    assert "server" not in job.apps  # added only where its referrer went


@pytest.mark.timeout(10)
def test_unkept_constructor_argument_is_refused_at_export(tmp_path: Any) -> None:
    job = FedJob("j")
    job.to_server(Forgetful(0.1))
    with pytest.raises(ShoalError, match=r"self\.lr = lr") as e:
        job.export_job(str(tmp_path))
    assert e.value.code == "job.config"


@pytest.mark.timeout(10)
def test_targets_are_node_ids() -> None:
    job = FedJob("j")
    with pytest.raises(ShoalError, match="not a node id"):
        job.to(Comp(1), "site 1/x")
    with pytest.raises(ShoalError, match="controllers run on the server"):
        job.to(FedAvg(num_clients=2, num_rounds=1), "site-1")
    with pytest.raises(ShoalError, match="executors run on sites"):
        job.to_server(ScriptRunner("train.py"))


class Counting(FedJob):
    def __init__(self) -> None:
        super().__init__("counting", min_clients=2)
        self.set_up: list[str] = []

    def set_up_client(self, target: str) -> None:
        self.set_up.append(target)
        self.to(IntimeModelSelector(key_metric="acc"), target)


@pytest.mark.timeout(10)
def test_set_up_client_runs_once_per_client_target() -> None:
    job = Counting()
    job.to_server(Comp(1))
    job.to(Comp(1), "site-1")
    job.to(Comp(2), "site-1")
    job.to(Comp(1), "site-2")
    assert job.set_up == ["site-1", "site-2"]
    assert "intime_model_selector" in job.apps["site-2"].components


class Wrapper:
    """A user object that adds itself as two components and an executor."""

    def __init__(self, n: int) -> None:
        self.n = n

    def add_to_fed_job(self, job: FedJob, ctx: JobCtx, **kwargs: Any) -> dict[str, str]:
        job.check_kwargs(kwargs, {"tasks": True, "tag": False})
        helper = job.add_component("helper", Comp(self.n), ctx)
        ex = job.add_executor(MyExec(), kwargs["tasks"], ctx)
        return {"helper": helper, "executor": ex}


class MyExec(Executor):
    def execute(
        self, task_name: str, data: Any, fl_ctx: Any = None, abort_signal: Any = None
    ) -> Any:
        return data


@pytest.mark.timeout(10)
def test_add_to_fed_job_and_check_kwargs() -> None:
    job = FedJob("j")
    ids = job.to(Wrapper(3), "site-1", tasks=["train"])
    assert ids == {"helper": "helper", "executor": "my_exec"}
    assert job.apps["site-1"].executors == [(["train"], "my_exec")]
    with pytest.raises(ShoalError, match=r"missing required argument\(s\) \['tasks'\]"):
        job.to(Wrapper(3), "site-1")
    with pytest.raises(ShoalError, match=r"unexpected argument\(s\) \['colour'\]"):
        job.to(Wrapper(3), "site-1", tasks=["t"], colour=1)


@pytest.mark.timeout(10)
def test_filters_are_routed_by_type_and_task_names() -> None:
    job = FedJob("j")
    f = PercentilePrivacy(percentile=10, gamma=0.01)
    job.to(f, "site-1", tasks=["train"], filter_type=FilterType.TASK_RESULT)
    job.to(f, "site-1", filter_type=FilterType.TASK_DATA)
    assert job.apps["site-1"].filters == [
        (FilterType.TASK_RESULT, ["train"], "percentile_privacy"),
        (FilterType.TASK_DATA, ["*"], "percentile_privacy1"),
    ]
    with pytest.raises(ShoalError, match=r"FilterType\.TASK_DATA or FilterType\.TASK_RESULT"):
        job.to(f, "site-1", filter_type="result")
    with pytest.raises(ShoalError, match=r"missing required argument\(s\) \['filter_type'\]"):
        job.to(f, "site-1")


@pytest.mark.timeout(10)
def test_controller_options_are_checked() -> None:
    with pytest.raises(ShoalError, match="METRIC OP NUMBER"):
        FedAvg(num_clients=2, num_rounds=3, stop_cond="accuracy is high")
    with pytest.raises(ShoalError, match="num_rounds is an int >= 1"):
        FedAvg(num_clients=2, num_rounds=0)
    assert FedAvg(stop_cond="accuracy >= 0.9")._stop == ("accuracy", ">=", 0.9)


class HandWritten(ModelController):
    def run(self) -> None:
        for _ in range(2):
            clients = self.sample_clients(2)
            self.send_model_and_wait(targets=clients, data=self.load_model())


@pytest.mark.timeout(10)
def test_model_controller_run_outside_a_job_run_fails_clearly() -> None:
    # Inside a job run it is a controller task (tests/job/test_model_controller.py).
    job = FedJob("j")
    job.to_server(HandWritten())
    with pytest.raises(ShoalError, match="outside a job run") as e:
        HandWritten().run()
    assert e.value.code == "job.outside"


@pytest.mark.timeout(30)
def test_fed_avg_job_pattern() -> None:
    torch = pytest.importorskip("torch")
    job = FedAvgJob(name="p", n_clients=2, num_rounds=3, initial_model=torch.nn.Linear(4, 2))
    server = job.apps["server"]
    assert server.workflows == ["fed_avg"]
    assert {"fed_avg", "persistor", "intime_model_selector"} <= set(server.components)
    assert job.min_clients == 2
