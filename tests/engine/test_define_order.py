"""Task(order=, rounds=, on_demand=) are checked at declaration, each with its fix."""

from __future__ import annotations

import pytest
from helpers import task_module

from shoal import Swarm, Task
from shoal._define.compile import compile_swarm
from shoal._errors import ShoalError

pytestmark = pytest.mark.timeout(30)

BODY = "pass"


def compiled(**kw: object) -> object:
    class S(Swarm):
        max_iterations = 1

        def __init__(self) -> None:
            self.a = Task(task_module(BODY, "A"), alias="a", **kw)  # type: ignore[arg-type]
            self.helper = Task(task_module(BODY, "H"), alias="helper", on_demand=True)

        def execute(self) -> Task:
            return self.a()

    return compile_swarm(S()).plan


def test_order_rounds_and_on_demand_reach_the_plan() -> None:
    plan = compiled(order="ring", rounds=2)
    assert plan.task("a").order.value == "ring" and plan.task("a").rounds == 2
    assert plan.task("helper").on_demand and "helper" not in plan.sinks
    assert '"order"' not in compiled().to_json().split('"helper"')[0]  # default left out


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({"order": "zigzag"}, "unknown order 'zigzag'"),
        ({"rounds": 3}, "rounds=3 needs order='ring'"),
        ({"order": "chain", "condition": "result"}, "order='chain' with condition=RESULT"),
        ({"on_demand": True, "order": "chain"}, "is on-demand and has order='chain'"),
        ({"on_demand": True}, "is on-demand but is wired into the graph"),
    ],
)
def test_bad_declarations_name_the_task_and_the_fix(kw: dict[str, object], says: str) -> None:
    with pytest.raises(ShoalError) as err:
        compiled(**kw)
    assert says in str(err.value) and "task 'a'" in str(err.value)
