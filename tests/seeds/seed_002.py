"""Seed 002 (Manta Swarm guide), as the seed writes it; only import lines changed.

The guide's snippets use module objects they never define (``trainer_module``, ...);
they are defined at the top, pointing at module files beside this one.
"""

from pathlib import Path

from shoal import Driver, Module, Swarm, Task

code = (Path(__file__).parent / "modules" / "worker.py").read_text()
trainer_module = Module(python_program="modules/trainer.py", image="manta:pytorch")
aggregator_module = Module(python_program="modules/aggregator.py", image="manta:pytorch")
scheduler_module = Module(python_program="modules/scheduler", image="manta:pytorch")
backend_module = Module(python_program="modules/worker.py")
worker_module = Module(python_program="modules/worker.py")
map_module = Module(python_program="modules/map.py")
reduce_module = Module(python_program="modules/reduce.py")
initial_weights = [0.0] * 4


class MySwarm(Swarm):
    """Simple federated learning swarm"""

    def __init__(self):
        super().__init__()
        self.name = "federated_mnist"
        # Set global parameters
        self.set_global("epochs", 10)
        self.set_global("batch_size", 32)

    def execute(self):
        # Define module
        fl_module = Module(
            name="fl_trainer", python_program="modules/trainer.py", image="manta:pytorch"
        )
        # Create tasks
        aggregator = Task(module=fl_module, method="any", maximum=1, alias="aggregator")
        workers = Task(module=fl_module, method="all", alias="workers")
        # Define execution flow
        return aggregator(workers)


class PackagedSwarm(Swarm):
    name = "packaged"

    def execute(self):
        module = Module(
            name="my_module",
            python_program=code,  # Python code or file
            image="manta:latest",  # Container image
            requirements=["numpy"],  # Dependencies
            resources={  # Resource requirements
                "cpu": 2,
                "memory": "4Gi",
            },
        )
        task = Task(
            module=module,  # Module to execute
            method="all",  # Scheduling method
            fixed=False,  # Dynamic node assignment
            maximum=10,  # Max nodes to use
            network="overlay",  # Network type
            gpu=False,  # GPU requirement
            alias="worker",  # Task identifier
        )
        self.add_network("overlay", Driver.OVERLAY)
        return task()


class ChainSwarm(Swarm):
    def execute(self):
        module1, module2, module3 = trainer_module, aggregator_module, scheduler_module
        # Sequential execution
        task1 = Task(module1)
        task2 = Task(module2)
        task3 = Task(module3)
        # Chain tasks
        flow = task3(task2(task1))
        return flow


class ParallelSwarm(Swarm):
    def execute(self):
        module = worker_module
        # Parallel execution
        parallel_tasks = [Task(module) for _ in range(5)]
        aggregator = Task(aggregator_module)
        # Aggregate parallel results
        flow = aggregator(parallel_tasks)
        return flow


class StatefulSwarm(Swarm):
    def __init__(self):
        super().__init__()
        # Set global parameters
        self.set_global("model_weights", initial_weights)
        self.set_global("hyperparameters", {"learning_rate": 0.01, "momentum": 0.9})

    def execute(self):
        return Task(worker_module)()


class NetworkedSwarm(Swarm):
    def __init__(self):
        super().__init__()
        # Add custom networks
        self.add_network("backend", Driver.BRIDGE)
        self.add_network("frontend", Driver.OVERLAY)

    def execute(self):
        # Assign tasks to networks
        backend_task = Task(module=backend_module, network="backend")
        return backend_task()


class DynamicSwarm(Swarm):
    def __init__(self):
        super().__init__()
        self.aggregator = Task(aggregator_module, method="any", maximum=1)

    def execute(self):
        # Generate tasks based on conditions
        num_workers = self.get_global("num_workers", 5)
        workers = [Task(module=worker_module, alias=f"worker_{i}") for i in range(num_workers)]
        return self.aggregator(workers)


class RecoverySwarm(Swarm):
    def execute(self):
        module = worker_module
        task = Task(
            module=module,
            method="any",
            maximum=3,  # Try up to 3 nodes
            excepted_ids=["failed_node_1"],  # Exclude failed nodes
        )
        # Optimize resource usage
        half = Task(
            module=module,
            method="any",
            maximum=0.5,  # Use 50% of available nodes
            gpu=True,  # Require GPU nodes
            alias="half",
        )
        # Keep data local to nodes
        local = Task(
            module=module,
            fixed=True,  # Pin to specific nodes
            specified_ids=["node1", "node2"],  # Data-local nodes
            alias="local",
        )
        return [task(), half(), local()]


class FederatedLearning(Swarm):
    name = "fl_experiment"

    def execute(self):
        # Training tasks on each node
        trainers = Task(module=trainer_module, method="all", alias="trainers")
        # Aggregation on single node
        aggregator = Task(module=aggregator_module, method="any", maximum=1, alias="aggregator")
        # Scheduler for iterations
        scheduler = Task(module=scheduler_module, method="any", maximum=1, alias="scheduler")
        # Connect in cycle for iterations
        return scheduler(aggregator(trainers))


class MapReduce(Swarm):
    name = "mapreduce_job"

    def execute(self):
        # Map phase - parallel processing
        mappers = [Task(module=map_module, alias=f"mapper_{i}") for i in range(10)]
        # Reduce phase - aggregation
        reducer = Task(module=reduce_module, method="any", maximum=1, alias="reducer")
        # Connect mappers to reducer
        return reducer(mappers)
