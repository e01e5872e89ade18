"""Seed 001's versioning and blue-green sections, as the seed writes them; only import
lines changed. The module files ``worker_v1.0.py`` and ``worker_v1.1.py`` sit beside this
file, and ``worker`` is the folder beside it (the seed never shows them)."""

from shoal import Module, Swarm, Task

# Version specification
module_v1_0 = Module(
    python_program="worker_v1.0.py",
    image="manta_light:pytorch",
    name="fl_worker",
    version="1.0.0",
)

module_v1_1 = Module(
    python_program="worker_v1.1.py",
    image="manta_light:pytorch",
    name="fl_worker",
    version="1.1.0",  # Backward compatible
)


# Gradual migration strategy
class ExperimentalSwarm(Swarm):
    def __init__(self):
        # 80% nodes use stable version
        self.worker_stable = Task(Module("worker", version="1.0.0"), method="random", maximum=0.8)
        # 20% nodes test new version
        self.worker_experimental = Task(
            Module("worker", version="1.1.0"), method="random", maximum=0.2
        )
