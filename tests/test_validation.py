"""Declaration-time validation reports every problem at once, each with its fix."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from shoal import Module, ShoalWarning, Swarm, SwarmValidationError, Task

MODULES = Path(__file__).parent / "seeds" / "modules"


def _module(name: str = "worker.py") -> Module:
    return Module(MODULES / name)


class FourProblems(Swarm):
    def __init__(self) -> None:
        super().__init__()
        self.a = Task(_module(), alias="a")
        self.b = Task(_module("aggregator.py"), alias="b")
        self.dup1 = Task(_module(), alias="dup")
        self.dup2 = Task(_module(), alias="dup")
        self.net = Task(_module(), alias="net", network="nowhere")
        self.zero = Task(_module(), alias="zero", maximum=0)

    def execute(self) -> list[Task]:
        self.a(self.b)
        self.b(self.a)  # a cycle
        return [self.dup1(), self.dup2(), self.net(), self.zero(), self.a]


def test_one_error_lists_all_four_problems() -> None:
    with pytest.raises(SwarmValidationError) as info:
        FourProblems().prepare_graph()
    err = info.value
    codes = sorted(p.code for p in err.problems)
    assert codes == ["graph.cycle", "graph.sink", "task.alias", "task.maximum", "task.network"]
    text = str(err)
    assert "'a' -> 'b' -> 'a'" in text or "'b' -> 'a' -> 'b'" in text
    assert "task 'dup'" in text and "task 'net'" in text and "'nowhere'" in text
    assert "maximum=0" in text
    # every line names the object and says what to do
    for p in err.problems:
        assert p.obj and p.fix
        assert f"{p.obj}: " in text and "Fix: " in text


@pytest.mark.parametrize(
    ("kwargs", "code", "needle"),
    [
        ({"method": "sometimes"}, "task.method", "'sometimes'"),
        ({"maximum": -2}, "task.maximum", "maximum=-2"),
        ({"maximum": 1.5}, "task.maximum", "fraction"),
        ({"maximum": "3"}, "task.maximum", "not a number"),
        ({"specified_ids": ["n1", "n2"], "excepted_ids": ["n2"]}, "task.ids", "['n2']"),
        ({"method": "fixed"}, "task.ids", "specified_ids"),
        ({"retries": -1}, "task.retries", "retries"),
        ({"min_results": 0}, "task.min_results", "min_results"),
        ({"timeout": 0}, "task.timeout", "timeout"),
        ({"condition": "whenever"}, "task.condition", "whenever"),
    ],
)
def test_bad_task_options(kwargs: dict[str, object], code: str, needle: str) -> None:
    class S(Swarm):
        def execute(self) -> Task:
            return Task(_module(), alias="t", **kwargs)()  # type: ignore[arg-type]

    with pytest.raises(SwarmValidationError) as info:
        S().prepare_graph()
    assert [p.code for p in info.value.problems] == [code]
    assert needle in str(info.value)


def test_module_path_problems(tmp_path: Path) -> None:
    no_main = tmp_path / "no_main.py"
    no_main.write_text("def run():\n    pass\n")
    bad_syntax = tmp_path / "bad.py"
    bad_syntax.write_text("def main(:\n")
    no_init = tmp_path / "pkg"
    no_init.mkdir()

    class S(Swarm):
        def execute(self) -> list[Task]:
            return [
                Task(Module(tmp_path / "missing.py"), alias="missing")(),
                Task(Module(no_main), alias="no_main")(),
                Task(Module(bad_syntax), alias="bad")(),
                Task(Module(no_init), alias="pkg")(),
                Task(Module("x = 1\ny = 2\n", name="src"), alias="src")(),
            ]

    with pytest.raises(SwarmValidationError) as info:
        S().prepare_graph()
    codes = sorted(p.code for p in info.value.problems)
    assert codes == ["module.main", "module.main", "module.package", "module.path", "module.syntax"]
    assert "missing.py" in str(info.value) and "line 1" in str(info.value)


def test_relative_module_path_resolves_against_the_defining_file(
    seeds: dict[str, ModuleType],
) -> None:
    # tests/seeds/seed_001.py uses "modules/worker": it must resolve beside that file,
    # whatever the working directory.
    assert seeds["001"].worker_module._path == MODULES / "worker"


def test_unreachable_task_is_a_warning_not_an_error() -> None:
    class S(Swarm):
        def __init__(self) -> None:
            self.used = Task(_module(), alias="used")
            self.forgotten = Task(_module(), alias="forgotten")

        def execute(self) -> Task:
            return self.used()

    with pytest.warns(ShoalWarning, match="forgotten"):
        plan = S().prepare_graph()
    assert [t.alias for t in plan.tasks] == ["used"]


def test_execute_returning_nothing_and_bad_arguments() -> None:
    class Nothing(Swarm):
        def execute(self):  # type: ignore[no-untyped-def]
            Task(_module())()

    with pytest.raises(SwarmValidationError, match="returned NoneType"):
        Nothing().prepare_graph()


def test_unencodable_global_is_reported() -> None:
    class S(Swarm):
        def __init__(self) -> None:
            self.set_global("fn", lambda x: x)

        def execute(self) -> Task:
            return Task(_module())()

    with pytest.raises(SwarmValidationError) as info:
        S().prepare_graph()
    assert info.value.problems[0].obj == "global 'fn'"
    assert "function" in str(info.value)


def test_validation_error_is_picklable_with_its_problems() -> None:
    import pickle  # only to check the error object itself survives a round trip

    with pytest.raises(SwarmValidationError) as info:
        FourProblems().prepare_graph()
    again = pickle.loads(pickle.dumps(info.value))
    assert again.problems == info.value.problems and again.code == "swarm.invalid"


# ----------------------------------------------------------- names (issue #14, point 5)
def test_alias_with_a_path_is_refused_at_declaration() -> None:
    class S(Swarm):
        def execute(self) -> Task:
            return Task(_module(), alias="../evil")()

    with pytest.raises(SwarmValidationError) as info:
        S().prepare_graph()
    (p,) = info.value.problems
    assert p.code == "name.alias" and p.obj == "task '../evil'"
    text = str(info.value)
    assert "'../evil' is not a valid name" in text and "letters, digits" in text
    assert "alias=" in p.fix


def test_every_bad_name_is_reported_with_its_object() -> None:
    class S(Swarm):
        def execute(self) -> list[Task]:
            m = Module(MODULES / "worker.py", datasets=["ok", "a/b", ""], image="ghcr.io/x/y")
            return [
                Task(m, alias="t", specified_ids=["node 1"], excepted_ids=[".."])(),
                Task(_module("aggregator.py"), alias="with space")(),
            ]

    with pytest.raises(SwarmValidationError) as info:
        S().prepare_graph()
    got = sorted((p.code, p.obj) for p in info.value.problems)
    assert got == [
        ("name.alias", "task 'with space'"),
        ("name.dataset", "module 'worker'"),
        ("name.dataset", "module 'worker'"),
        ("name.image", "module 'worker'"),
        ("name.node_id", "task 't'"),
        ("name.node_id", "task 't'"),
    ]
    text = str(info.value)
    for needle in ("'a/b'", "''", "'ghcr.io/x/y'", "'node 1'", "'..'", "[images]"):
        assert needle in text


def test_names_at_their_limits_are_accepted() -> None:
    long = "a" * 128

    class S(Swarm):
        def execute(self) -> Task:
            m = Module(MODULES / "worker.py", datasets=[long, "x.y_z-1"], image="manta:pytorch")
            return Task(m, alias="A1._-b", specified_ids=["node-00001", long])()

    plan = S().prepare_graph()
    assert plan.task("A1._-b").placement.specified_ids == ("node-00001", long)

    class TooLong(Swarm):
        def execute(self) -> Task:
            return Task(_module(), alias=long + "a")()

    with pytest.raises(SwarmValidationError) as info:
        TooLong().prepare_graph()
    assert [p.code for p in info.value.problems] == ["name.alias"]
