# Seed 001 "Cross-Domain Applications": run() as the seed writes it; only the import changed.
from shoal.runtime import Task


class GenericAggregator(Task):
    def run(self):
        method = self.world.globals.get("aggregation_method", "average")
        results = self.world.results.select("local_results")

        if method == "average":
            aggregated = self.federated_averaging(results)
        elif method == "weighted":
            weights = self.world.results.select("sample_weights")
            aggregated = self.weighted_averaging(results, weights)

        self.world.globals["aggregated_result"] = aggregated

    # The seed leaves these to the reader.
    def federated_averaging(self, results):
        return sum(results.values()) / len(results)

    def weighted_averaging(self, results, weights):
        total = sum(weights.values())
        return sum(results[n] * weights[n] for n in results) / total


def main():
    GenericAggregator().run()
