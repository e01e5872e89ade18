# Single-file worker module used by the seed-000 examples.
from shoal.runtime import Task


class Worker(Task):
    def run(self):
        data = self.local.get_dataset("mnist")
        self.world.results.add("model_params", float(len(data)))


def main():
    Worker().run()
