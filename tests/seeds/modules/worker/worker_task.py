# worker/worker_task.py - Task implementation (seed 001)
from shoal.runtime import Task

from .model import MLP


class Worker(Task):
    def run(self):
        model = MLP()
        # Training logic here...
        self.world.results.add("model_params", model.params())
