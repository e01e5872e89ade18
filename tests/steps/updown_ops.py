"""User operations for the steps ``shoal up`` tests: an ordinary top-level module the
artifact file imports and every step that names them bundles."""

from __future__ import annotations

import time
from pathlib import Path

from shoal.steps import Environment, Operation


class Tally(Operation):
    """Chain / ring: the nodes seen so far with their row and positive-label counts,
    as the product ``name``; ``keep`` names earlier tallies passed on unchanged.

    Integers only, kept sorted by node: the answer does not depend on the chain order
    (which is seeded by the run's id, so differs between two runs).
    """

    reads_data = True
    name: str = "tally"
    keep: tuple[str, ...] = ()
    label: str = "target"
    pause: float = 0.0  # seconds to sleep after saying it started (the kill tests)
    mark: str = ""  # a folder: a file per node that started, for the kill tests

    def run(self, env: Environment) -> None:
        if self.mark:
            (Path(self.mark) / env.node).write_text(str(time.time()))
        print(f"tally started on {env.node}", flush=True)
        time.sleep(self.pause)
        before = env.resource(self.name)
        seen = dict(before[0]) if before else {}
        seen[env.node] = [len(env.df), int(env.df[self.label].sum())]
        env.products[self.name] = dict(sorted(seen.items()))
        for name in self.keep:
            env.products[name] = env.resource(name)[0]


class Tallies(Operation):
    """Finalize: every value of each of ``names`` it received, sorted by content."""

    names: tuple[str, ...] = ("tally",)

    def run(self, env: Environment) -> None:
        for name in self.names:
            env.products[name] = sorted(env.resource(name), key=repr)
