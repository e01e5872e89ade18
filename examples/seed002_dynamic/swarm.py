"""Seed 002's DynamicSwarm, as the seed writes it: only the import line changed.

The seed uses ``worker_module`` and ``aggregator_module`` without defining them, and
``self.aggregator`` without creating it; they are defined here. ``worker_<i>`` sums the
squares of ``10*i ... 10*i+9`` on every node; the aggregator adds one sum per worker, so
the answer is the sum of the squares of ``0 ... 10*num_workers - 1``.
"""

from shoal import Module, Swarm, Task

worker_module = Module(python_program="modules/worker.py")
aggregator_module = Module(python_program="modules/aggregator.py")


class DynamicSwarm(Swarm):
    def __init__(self):
        super().__init__()
        self.aggregator = Task(aggregator_module, method="any", maximum=1)

    def execute(self):
        # Generate tasks based on conditions
        num_workers = self.get_global("num_workers", 5)
        workers = [Task(module=worker_module, alias=f"worker_{i}") for i in range(num_workers)]
        return self.aggregator(workers)
