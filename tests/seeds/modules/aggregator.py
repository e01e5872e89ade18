# aggregator.py - Single file module (seed 001)
from shoal.runtime import Task


class Aggregator(Task):
    def run(self):
        """Aggregate models from worker nodes."""
        models = self.world.results.select("model_params")
        aggregated = self.aggregate_models(models)
        self.world.globals["global_model"] = aggregated

    def aggregate_models(self, models):
        return models


def main():
    Aggregator().run()
