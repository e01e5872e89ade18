"""Seed 001 (Manta, current API), as the seed writes it; only import lines changed."""

from shoal import Module, Swarm, Task

# Create a module for federated learning worker
worker_module = Module(
    python_program="modules/worker",  # Path to module code
    image="manta_light:pytorch",  # Execution environment
    datasets=["mnist"],  # Required datasets
    name="fl_worker",  # Module identifier
)

# Wrap module in a task for execution
worker_task = Task(
    module=worker_module,
    method="all",  # Execute on all nodes
    maximum=-1,  # No limit on nodes
    gpu=False,  # CPU execution
)


class FederatedLearningSwarm(Swarm):
    def __init__(self):
        super().__init__()
        # Worker module: local training logic
        self.worker = Task(
            Module("modules/worker", "pytorch", datasets=["mnist"]), method="all", maximum=-1
        )
        # Aggregator module: model combination logic
        self.aggregator = Task(Module("modules/aggregator", "pytorch"), method="any", maximum=1)
        # Scheduler module: convergence and coordination logic
        self.scheduler = Task(Module("modules/scheduler", "pytorch"), method="any", maximum=1)

    def execute(self):
        """Define execution flow."""
        results = self.worker()  # Parallel training
        aggregated = self.aggregator(results)  # Model aggregation
        return self.scheduler(aggregated)  # Coordination decision


# Federated learning module library
fl_modules = {
    "fedavg_worker": Module("modules/worker.py", "pytorch"),
    "fedavg_aggregator": Module("modules/aggregator.py", "pytorch"),
}


class FedAvgSwarm(Swarm):
    def __init__(self):
        self.worker = Task(fl_modules["fedavg_worker"])
        self.aggregator = Task(fl_modules["fedavg_aggregator"])


# Gradual migration strategy
class ExperimentalSwarm(Swarm):
    def __init__(self):
        # 80% nodes use stable version
        self.worker_stable = Task(
            Module("modules/worker", version="1.0.0"), method="random", maximum=0.8
        )
        # 20% nodes test new version
        self.worker_experimental = Task(
            Module("modules/worker", version="1.1.0"), method="random", maximum=0.2
        )
