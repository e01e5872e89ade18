# Seed 001 "Interface Consistency": run() as the seed writes it; only the import changed.
from shoal.runtime import Task


class StandardWorker(Task):
    def run(self):
        # Standard input format
        params = self.world.globals["model_parameters"]
        hyperparams = self.world.globals["hyperparameters"]

        # Standard processing
        results = self.train(params, hyperparams)

        # Standard output format
        self.world.results.add("model_update", results)
        self.world.results.add("metrics", self.get_metrics())

    # The seed leaves these to the reader.
    def train(self, params, hyperparams):
        return [p - hyperparams["learning_rate"] for p in params]

    def get_metrics(self):
        return {"loss": 0.5}


def main():
    StandardWorker().run()
