"""Task side: the body of every step's ready-made module.

Runs inside a task process, so it imports only :mod:`shoal.runtime` and the pure
dialect. The step travels as JSON in the module's source; user operations' modules
travel beside it in the bundle.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

from shoal._steps._artifact import Finalize
from shoal._steps._entity import Entity, StepsError
from shoal._steps._operation import Environment
from shoal.runtime import Task

PRODUCTS = "products"
"""The result tag every step publishes its products under."""


class _StepTask(Task):
    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__()
        self.spec = spec

    def run(self) -> None:
        step = Entity.from_spec(self.spec["step"])
        op = step.operation  # type: ignore[attr-defined]
        resources: dict[str, dict[str, Any]] = {}
        records = self.world.results.select_all(PRODUCTS)
        carry = self.spec.get("carry")
        if any(r.alias == carry for r in records):
            # A later pass of an Iterate: its first step reads the last step's products.
            records = [r for r in records if r.alias == carry]
        for r in records:
            for name, value in (r.value or {}).items():
                resources.setdefault(name, {})[r.node_id] = value
        env = Environment(node=self.world.node_id, resources=resources)
        env.secret = self.local.secret
        env.spend = self._spend
        if op.reads_data:
            env.df = self.local.get_dataset(self.spec["dataset"])
        op.run(env)
        self.world.results.add(PRODUCTS, env.products)
        # The last step's products are the run's globals, and so are every Finalize's
        # (an Aggregation that distributes its model on still hands it to the user).
        if self.spec["last"] or isinstance(step, Finalize):
            for name, value in env.products.items():
                if not name.startswith("__"):
                    self.world.globals[name] = value
        self.logger.info(f"step {self.spec['index']} ({type(step).__name__}) done")

    def _spend(self, charge: Any) -> dict[str, Any]:
        from shoal.privacy import spend

        return spend(self, str(self.spec["dataset"]), charge)


def run_step(spec_json: str, here: str) -> None:
    """Run one step of an artifact on this node.

    Parameters
    ----------
    spec_json
        The step, its dataset name and the modules its entities need, as JSON.
    here
        The entry module's ``__file__``: user modules lie beside it.
    """
    spec = json.loads(spec_json)
    sys.path.insert(0, str(Path(here).resolve().parent))
    for name in spec["modules"]:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise StepsError(
                f"the artifact's module {name!r} cannot be imported on this node: {exc}",
                hint="define operations in a top-level .py module the artifact can bundle",
            ) from exc
    _StepTask(spec).run()
