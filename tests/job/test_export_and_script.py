"""export_job writes a readable job; the in-process ScriptRunner runs a script's round."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import shoal.job.client as flare
from shoal import ShoalError
from shoal._codec import decode
from shoal._job.client import FLModel
from shoal._job.script import run_in_process
from shoal.job import (
    ExcludeVars,
    FedAvg,
    FedJob,
    FilterType,
    ModelDequantizer,
    ModelQuantizer,
    NPModel,
    PercentilePrivacy,
    ScriptRunner,
)

SCRIPT = """
import argparse
import numpy as np
import shoal.job.client as flare

p = argparse.ArgumentParser()
p.add_argument("--scale", type=float)
args = p.parse_args()
flare.init()
while flare.is_running():
    m = flare.receive()
    params = {k: np.asarray(v) * args.scale for k, v in m.params.items()}
    flare.log("loss", 0.5, global_step=m.current_round)
    flare.send(flare.FLModel(params=params, metrics={"accuracy": 0.75},
                             meta={"NUM_STEPS_CURRENT_ROUND": 10, "site": flare.get_site_name(),
                                   "train": flare.is_train()}))
"""


@pytest.mark.timeout(30)
def test_export_job_round_trip(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    job = FedJob("demo", min_clients=2, mandatory_clients=["site-1"])
    job.to_server(FedAvg(num_clients=2, num_rounds=3, stop_cond="accuracy >= 0.9"))
    job.to_server(NPModel({"w": np.arange(4.0)}))
    job.to_clients(ScriptRunner(str(script), script_args="--scale 2 --data /d/site-{i}"))
    job.to(ExcludeVars(["b"]), "site-1", tasks=["train"], filter_type=FilterType.TASK_RESULT)
    out = Path(job.export_job(str(tmp_path / "jobs")))
    meta = json.loads((out / "meta.json").read_text())
    assert meta["min_clients"] == 2 and meta["mandatory_clients"] == ["site-1"]
    desc = json.loads((out / "job.json").read_text())
    server = desc["apps"]["server"]
    assert server["workflows"] == ["fed_avg"]
    assert server["components"]["fed_avg"]["args"]["stop_cond"] == "accuracy >= 0.9"
    assert server["components"]["fed_avg"]["path"] == "shoal.job.FedAvg"
    clients = desc["apps"]["@ALL"]
    assert clients["executors"] == [{"tasks": ["*"], "executor": "script_runner"}]
    assert clients["resources"] == ["train.py"]
    assert (out / "app_all" / "custom" / "train.py").read_text() == SCRIPT
    assert desc["apps"]["site-1"]["task_result_filters"] == [
        {"tasks": ["train"], "filter": "exclude_vars"}
    ]
    model = decode((out / "app_server" / "models" / "persistor.msgpack").read_bytes())
    np.testing.assert_array_equal(model["w"], np.arange(4.0))
    # exporting twice gives the same files
    again = Path(job.export_job(str(tmp_path / "jobs")))
    assert (again / "job.json").read_text() == (out / "job.json").read_text()


@pytest.mark.timeout(30)
def test_missing_resource_is_named(tmp_path: Path) -> None:
    job = FedJob("demo")
    job.to_clients(ScriptRunner("nope/train.py"))
    with pytest.raises(ShoalError, match=r"'nope/train\.py' for '@ALL' does not exist"):
        job.export_job(str(tmp_path))


@pytest.mark.timeout(30)
def test_in_process_round_with_placeholders(tmp_path: Path) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    runner = ScriptRunner(str(script), script_args="--scale 3 --x site-{i}")
    assert runner.argv("site-7") == ["--scale", "3", "--x", "site-7"]
    model = FLModel(params={"w": np.ones(3)}, current_round=0, total_rounds=2)
    s = run_in_process(script, ["--scale", "3"], "site-2", "job-1", "train", model)
    assert s.sent is not None
    np.testing.assert_array_equal(s.sent.params["w"], np.full(3, 3.0))
    assert s.sent.meta == {"NUM_STEPS_CURRENT_ROUND": 10, "site": "site-2", "train": True}
    assert s.logs == [("loss", 0.5, 0)]


ALL_FILTERS: list[tuple[str, Any]] = [
    ("exclude", ExcludeVars(["b"])),
    ("percentile", PercentilePrivacy(percentile=50, gamma=0.5)),
    ("quantize", ModelQuantizer()),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", [FilterType.TASK_DATA, FilterType.TASK_RESULT])
@pytest.mark.parametrize("task", ["train", "validate"])
@pytest.mark.parametrize(("name", "flt"), ALL_FILTERS)
def test_each_filter_type_on_each_task_name(
    tmp_path: Path, kind: FilterType, task: str, name: str, flt: Any
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    routed = [(["train"], flt)]  # routed to "train" only
    if name == "quantize":
        routed.append((["train"], ModelDequantizer()))
    model = FLModel(params={"w": np.linspace(-1, 1, 8), "b": np.ones(2)}, current_round=0)
    data, result = (routed, []) if kind is FilterType.TASK_DATA else ([], routed)
    s = run_in_process(script, ["--scale", "1"], "site-1", "j", task, model, data, result)
    assert s.sent is not None and s.sent.params is not None
    out = s.sent.params
    if task != "train":  # not routed: untouched
        np.testing.assert_array_equal(out["w"], np.linspace(-1, 1, 8))
        assert "b" in out
    elif name == "exclude":
        assert "b" not in out
    elif name == "percentile":
        assert np.abs(out["w"]).max() <= 0.5 and (out["w"] == 0).sum() >= 3
    else:
        np.testing.assert_allclose(out["w"], np.linspace(-1, 1, 8), atol=2 / 255)
        assert not np.array_equal(out["w"], np.linspace(-1, 1, 8))


@pytest.mark.timeout(10)
def test_client_api_outside_a_round_names_the_fix() -> None:
    with pytest.raises(ShoalError, match="no job round is running") as e:
        flare.receive()
    assert e.value.code == "job.outside"


@pytest.mark.timeout(30)
def test_script_that_never_sends_is_named(tmp_path: Path) -> None:
    script = tmp_path / "lazy.py"
    script.write_text("import shoal.job.client as flare\nflare.init()\n")
    with pytest.raises(ShoalError, match=r"lazy\.py on 'site-1' ended without flare\.send\(\)"):
        run_in_process(script, [], "site-1", "j", "train", FLModel(params={}, current_round=0))


@pytest.mark.timeout(60)
@pytest.mark.parametrize("framework", ["numpy", "pytorch"])
def test_external_process_round(tmp_path: Path, framework: str) -> None:
    import sys

    from shoal._job.script import run_external

    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    if framework == "pytorch":
        torch = pytest.importorskip("torch")
        params: dict[str, Any] = {"w": torch.ones(3)}
        script.write_text(SCRIPT.replace("np.asarray(v) * args.scale", "v * args.scale"))
    else:
        params = {"w": np.ones(3)}
    model = FLModel(params=params, current_round=1, total_rounds=2)
    flt = [(["train"], ExcludeVars(["b"]))]
    s = run_external(
        f"{sys.executable} -u", script, ["--scale", "4"], "site-3", "j", "train", model, [], flt
    )
    assert s.sent is not None and s.sent.params is not None
    np.testing.assert_array_equal(np.asarray(s.sent.params["w"]), np.full(3, 4.0))
    assert s.sent.meta["site"] == "site-3" and s.logs == [("loss", 0.5, 1)]


@pytest.mark.timeout(60)
def test_external_script_dying_is_named(tmp_path: Path) -> None:
    import sys

    from shoal._job.script import run_external

    script = tmp_path / "die.py"
    script.write_text("import sys, shoal.job.client as flare\nflare.receive()\nsys.exit(5)\n")
    model = FLModel(params={"w": np.ones(1)}, current_round=0)
    with pytest.raises(ShoalError, match=r"exit code 5 before flare\.send"):
        run_external(sys.executable, script, [], "site-1", "j", "train", model)
