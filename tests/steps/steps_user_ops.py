"""User operations for the steps tests: an ordinary top-level module the artifact bundles."""

from __future__ import annotations

from shoal.steps import Environment, Operation


class Seed(Operation):
    """Initialize: hands every node a scale factor."""

    scale: float

    def run(self, env: Environment) -> None:
        env.products["scale"] = self.scale


class ScaledSum(Operation):
    """Parallel: this node's sum of ``column`` times the initiator's scale."""

    reads_data = True
    column: str

    def run(self, env: Environment) -> None:
        (scale,) = env.resource("scale")
        env.products["part"] = float(env.df[self.column].sum()) * scale


class Total(Operation):
    """Finalize: adds every node's part; also says how many parts it saw."""

    def run(self, env: Environment) -> None:
        parts = env.resource("part")
        env.products["total"] = sum(parts)
        env.products["parts"] = len(parts)


class Visit(Operation):
    """Chain / ring: the visited nodes so far, plus this one."""

    reads_data = True

    def run(self, env: Environment) -> None:
        before = env.resource("visited")  # the previous slot's (or nothing at the start)
        env.products["visited"] = [*(before[0] if before else []), env.node]


class Gather(Operation):
    """Finalize: every value of ``visited`` it received."""

    def run(self, env: Environment) -> None:
        env.products["all"] = env.resource("visited")


class Start(Operation):
    """Initialize: the value an Iterate's passes improve."""

    def run(self, env: Environment) -> None:
        env.products["x"] = 0.0
        env.products["history"] = []


class Nudge(Operation):
    """Parallel (inside an Iterate): the x it received plus one; passes the history on."""

    reads_data = True

    def run(self, env: Environment) -> None:
        (x,) = set(env.resource("x"))
        (history,) = env.resource("history")
        env.products["part"] = x + 1.0
        env.products["history"] = history


class Average(Operation):
    """Initialize (the Iterate's last step): the mean of the parts is the next x."""

    def run(self, env: Environment) -> None:
        parts = env.resource("part")
        x = sum(parts) / len(parts)
        env.products["x"] = x
        env.products["history"] = [*env.resource("history")[0], x]


class Report(Operation):
    """Finalize (after the Iterate): what the last pass produced."""

    def run(self, env: Environment) -> None:
        (x,) = env.resource("x")
        (history,) = env.resource("history")
        env.products["final_x"] = x
        env.products["history"] = history
