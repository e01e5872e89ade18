"""Seed 000 (Manta, older API), as the seed writes it; only import lines changed.

The seed elides Module arguments as ``Module(...)``; they are filled in with the
worker-module example the same seed gives.
"""

from pathlib import Path

from shoal import Module, Swarm

# Define a Worker Module
worker_module = Module(
    Path("modules/worker.py"),  # Path to the script defining the task
    "fl-pytorch-mnist:latest",  # Container image for task execution
    maximum=4,  # Maximum number of instances allowed
    alias="worker",  # Alias for referencing the module in the Swarm
    method="any",  # Execution method (e.g., any, all)
)


class FLSwarm(Swarm):
    def __init__(self):
        super().__init__()
        self.m1 = Module(Path("modules/worker.py"), "fl-pytorch-mnist:latest")
        self.m2 = Module(Path("modules/worker"), "fl-pytorch-mnist:latest")
        self.m3 = Module(
            Path("modules/aggregator.py"), "fl-pytorch-mnist:latest", maximum=1, method="any"
        )

    def execute(self):
        m1 = self.m1()
        m2 = self.m2()
        m3 = self.m3([m1, m2])
        return m3


class SplitSwarm(Swarm):
    def __init__(self):
        super().__init__()
        self.m3 = Module(Path("modules/worker.py"), "fl-pytorch-mnist:latest")
        self.m4 = Module(Path("modules/aggregator.py"), "fl-pytorch-mnist:latest", method="any")
        self.m5 = Module(Path("modules/scheduler"), "fl-pytorch-mnist:latest", method="any")

    def execute(self):
        m3 = self.m3()
        m4 = self.m4(m3)
        m5 = self.m5(m3)
        return [m4, m5]


class WorkerModuleSwarm(Swarm):
    def __init__(self):
        super().__init__()
        self.worker = worker_module

    def execute(self):
        return self.worker()
