"""The table of world operations (shoal._runtime.ops) is the one place that names them.

Adding an operation is one row and one handler: a row without a handler (or a handler
without a row) stops the world service from starting, naming it; no other source file
spells an operation's name; the task side stays free of pydantic and driver code.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from shoal._errors import ShoalError
from shoal._runtime import ops
from shoal._store.memory import MemoryStore
from shoal._wire import Wire
from shoal._world.service import Handler, InstanceInfo, WorldService

SRC = Path(__file__).resolve().parents[1] / "src" / "shoal"


def _service() -> WorldService:
    return WorldService(MemoryStore(), {}, lambda i: None, lambda i, a, n: None)


def test_the_world_service_has_exactly_one_handler_per_row() -> None:
    assert set(_service().handlers()) == set(ops.TABLE)


def test_a_row_without_a_handler_stops_the_world_service_naming_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    new = ops.Op("model.save", ops.StateSetArgs, value=True)
    monkeypatch.setattr(ops, "TABLE", {**ops.TABLE, new.name: new})
    with pytest.raises(ShoalError) as e:
        _service()
    assert e.value.code == "runtime.ops"
    assert "WorldService" in str(e.value) and "no handler for 'model.save'" in str(e.value)
    assert "shoal._runtime.ops.TABLE" in (e.value.hint or "")


def test_a_handler_the_table_lacks_stops_the_world_service_naming_it() -> None:
    class Extra(WorldService):
        def handlers(self) -> dict[str, Handler]:
            return {**super().handlers(), "model.load": lambda info, args: None}

    with pytest.raises(ShoalError, match=r"Extra .*'model.load', which the table lacks"):
        Extra(MemoryStore(), {}, lambda i: None, lambda i, a, n: None)


def test_a_local_row_without_an_answer_on_the_node_stops_the_proxy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import threading

    from shoal._node.cache import Caches
    from shoal._node.client import CoordinatorClient
    from shoal._node.proxy import WorldProxy

    client = CoordinatorClient("http://127.0.0.1:9", threading.Event(), 1.0)
    try:
        caches = Caches(tmp_path, client)
        WorldProxy(client, caches, gpu=False)  # every local row has its answer
        new = ops.Op("local.gpus", ops.NoArgs, local=True)
        monkeypatch.setattr(ops, "TABLE", {**ops.TABLE, new.name: new})
        with pytest.raises(ShoalError, match=r"WorldProxy .*no handler for 'local\.gpus'"):
            WorldProxy(client, caches, gpu=False)
    finally:
        client.close()


def test_an_unknown_operation_is_refused_with_the_known_ones() -> None:
    info = InstanceInfo("s", "s/0/t/0/0", "n", "t", 0)
    with pytest.raises(ShoalError) as e:
        _service().handle(info, "rm -rf", {})
    assert e.value.code == "runtime.op" and "globals.get" in (e.value.hint or "")


def test_rows_are_consistent_with_their_argument_schemas() -> None:
    for op in ops.TABLE.values():
        hints = get_type_hints(op.args)
        assert op.value == (hints.get("value") == Wire), op.name
        if op.numbered:
            assert "n" in op.args.__optional_keys__, op.name
    with pytest.raises(ShoalError, match="numbered needs an 'n' argument"):
        ops.Op("oops", ops.KeyArgs, numbered=True, one_way=True)
    with pytest.raises(ShoalError, match="only one-way notes can be deferred"):
        ops.Op("oops", ops.KeyArgs, deferrable=True)


def test_properties_select_rows() -> None:
    assert ops.names(deferrable=True) == {"results.add"}
    assert ops.names(batched=True) == {"log", "metric"}
    assert ops.names(local=True) == {
        "local.dataset",
        "local.resources",
        "local.performance",
        "local.network",
        "local.privacy",
        "local.secret",
    }
    assert ops.names(value=True) == {"globals.set", "results.add", "state.set", "invoke.call"}


def test_the_coordinator_validates_the_rows_schemas() -> None:
    from shoal._coord.schemas import WORLD_ARGS

    assert set(WORLD_ARGS) == set(ops.TABLE) - ops.names(local=True) | {ops.BATCH}
    model = WORLD_ARGS[ops.RESULTS_ADD.name]
    blob = {"blob": "sha256:" + "0" * 64, "length": 3}
    assert model.model_validate({"tag": "t", "value": blob}).model_dump() == {
        "tag": "t",
        "value": blob,
    }
    for bad in (
        {"tag": "t", "value": {"file": "/etc/passwd", "offset": 0, "length": 3}},  # not here
        {"tag": "t", "value": {"blob": "sha256:nothex", "length": 3}},
        {"tag": "t", "value": {"inline": "not bytes"}},
        {"tag": "t", "value": {"inline": b"x", "extra": 1}},
        {"tag": 1, "value": {"inline": b"x"}},
    ):
        with pytest.raises(ValueError):
            model.model_validate(bad)
    log = WORLD_ARGS[ops.LOG.name]
    assert log.model_validate({"level": "info", "message": "m"}).model_dump(exclude_unset=True) == {
        "level": "info",
        "message": "m",
    }
    with pytest.raises(ValueError):
        log.model_validate({"level": "info", "message": "m", "n": -1})
    batch = WORLD_ARGS[ops.BATCH]
    with pytest.raises(ValueError, match="cannot be batched"):
        batch.model_validate({"calls": [{"op": "globals.set", "args": {}}]})


# ------------------------------------------------------------- one place for the names

# Literals equal to an operation's name that are not that operation (reason given).
ALLOWED = {
    # The registry of error codes: the code `local.dataset` is not the operation.
    ("_codes.py", "local.dataset"),
    # A column title of the simulator's summary table, not an operation.
    ("_cli/simulate.py", "metric"),
    # The dashboard's compare page: the name of its query parameter (?metric=...).
    ("_ui/pages.py", "metric"),
    # The steps dialect's Iterate(until={"metric": ...}): a key of the user's condition.
    ("_steps/_artifact.py", "metric"),
    ("steps/_compile.py", "metric"),
    # FLARE's Client API function `flare.log`, named in the module's __all__.
    ("job/client.py", "log"),
}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def _error_codes(tree: ast.AST) -> set[int]:
    """``code="local.dataset"``: an error's stable code, not an operation."""
    return {
        id(k.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        for k in node.keywords
        if k.arg == "code" and isinstance(k.value, ast.Constant)
    }


def test_no_operation_name_is_spelled_outside_the_table() -> None:
    names = set(ops.TABLE) | {ops.BATCH}
    found = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        if rel == "_runtime/ops.py":
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        skip = _docstrings(tree) | _error_codes(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and node.value in names
                and id(node) not in skip
                and (rel, node.value) not in ALLOWED
            ):
                found.append(f"{rel}:{node.lineno}: {node.value!r}")
    assert not found, "use the rows of shoal._runtime.ops instead:\n" + "\n".join(found)


# ----------------------------------------------------------------------- the task side


def _imports(package: str) -> set[str]:
    """Every shoal module imported by the files of ``package`` (relative ones resolved)."""
    out: set[str] = set()
    for path in (SRC / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                out |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                mod = node.module or ""
                if node.level:
                    mod = f"shoal.{package}.{mod}".rstrip(".")
                out.add(mod)
    return {m for m in out if m == "shoal" or m.startswith("shoal.")}


@pytest.mark.parametrize(
    ("package", "allowed"),
    [
        ("_runtime", ("shoal._runtime", "shoal._errors", "shoal._wire", "shoal._codec")),
        (
            "_api",
            ("shoal._api", "shoal._errors", "shoal._wire", "shoal._plan", "shoal._engine"),
        ),
    ],
)
def test_layers(package: str, allowed: tuple[str, ...]) -> None:
    bad = sorted(m for m in _imports(package) if not m.startswith(allowed))
    assert not bad, f"{package} imports {bad}"


def test_the_task_side_imports_no_pydantic() -> None:
    code = "import sys, shoal.runtime, shoal._runtime.ops, shoal._exec.pool_worker; "
    code += "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'fastapi')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_the_task_side_imports_without_typing_extensions() -> None:
    """A task image may hold only numpy and msgpack (the agent binds its shoal)."""
    code = "import sys; sys.modules['typing_extensions'] = None; "
    code += "import shoal.runtime, shoal._runtime.ops as o, shoal._node.task_runner; "
    code += "print(o.RESULTS_ADD)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "results.add"


def _args(op: ops.Op[Any]) -> set[str]:
    return set(op.args.__required_keys__ | op.args.__optional_keys__)


def test_what_the_runtime_sends_fits_each_rows_schema() -> None:
    """The task-side API, run in process against the real service, sends only the
    arguments its rows declare."""
    sent: list[tuple[str, dict[str, Any]]] = []

    class Recording:
        outbox = None

        def __init__(self, service: WorldService, info: InstanceInfo) -> None:
            self._service, self._info = service, info

        def request(self, op: str, args: dict[str, Any]) -> Any:
            sent.append((op, dict(args)))
            return self._service.handle(self._info, op, args)

        notify = request

    from shoal._runtime.api import Local, Logger, World
    from shoal._runtime.context import InstanceContext
    from shoal._world.service import NodeInfo

    class Invoker:  # the drivers' half of world.invoke, as the service's other callbacks
        invoke_retry_s = 0.01

        def invoke_call(self, info: InstanceInfo, call_id: str, *rest: Any) -> float:
            return 1.0

        def invoke_wait(self, info: InstanceInfo, call_id: str) -> dict[str, Any]:
            results = {"n": "s/0/t/0/0"}
            return {"status": "succeeded", "reason": "", "results": results, "failures": []}

    service = WorldService(
        MemoryStore(),
        {"n": NodeInfo("n", {"d": Path("/data/d")})},
        lambda i: None,
        lambda i, a, n: None,
        invoker=Invoker(),
    )
    info = InstanceInfo("s", "s/0/t/0/0", "n", "t", 0, {"t": ("s/0/t/0/0",)})
    ctx = InstanceContext("s", "s/0/t/0/0", "n", "t", 0, 0, Recording(service, info))
    world, local, logger = World(ctx), Local(ctx), Logger(ctx)
    world.globals["k"] = 1
    assert world.globals["k"] == 1 and world.globals.keys() == ["k"]
    world.results.add("r", 2)
    assert world.results.select("r") == {"n": 2}
    local.set_state("s", 3)
    assert local.get_state("s") == 3
    assert str(local.get_dataset_path("d")) == "/data/d"
    assert local.get_resources().cpu >= 1
    assert local.get_performance_metrics()["cpu_usage"] == 0.0
    assert local.get_network_quality() == 1.0
    charge = {"kind": "gaussian", "noise_multiplier": 1.0}
    assert local.spend_privacy("d", charge)["budget_epsilon"] is None  # no budget for d
    assert len(local.secret("secagg")) == 32
    logger.info("hello")
    logger.metric("m", 1.0)
    world.schedule_next_iter(["n"], "t")
    world.reply({"x": 1})
    assert world.invoke("t", inputs=[1]) == {"n": {"x": 1}}
    assert world.inputs is None  # not an invoked instance
    world.stop_swarm()
    assert {op for op, _ in sent} == set(ops.TABLE)
    for op, args in sent:
        row = ops.TABLE[op]
        assert set(args) <= _args(row), op
        assert set(args) >= set(row.args.__required_keys__), op
