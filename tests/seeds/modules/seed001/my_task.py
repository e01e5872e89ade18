# Seed 001 "Base Task Interface": run() as the seed writes it; only the import changed.
from shoal.runtime import Task


class MyTask(Task):
    def run(self):
        """Main execution method called by the runtime."""
        # Access local data
        data = self.local.get_dataset("training_data")
        # Access global state
        global_params = self.world.globals["parameters"]
        # Perform computation
        results = self.compute(data, global_params)
        # Share results with other tasks
        self.world.results.add("output", results)

    # The seed leaves compute() to the reader.
    def compute(self, data, params):
        return float(data.sum()) * params


def main():
    MyTask().run()
