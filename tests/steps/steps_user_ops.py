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
