"""The aggregator: the mean of the workers' accuracies, logged as a metric."""

from shoal.runtime import Task


class Aggregator(Task):
    def run(self) -> None:
        values = list(self.world.results.select("acc").values())
        mean = sum(values) / len(values)
        self.logger.metric("accuracy", mean)
        self.logger.warning(f"aggregated {len(values)} results")
        self.world.globals["accuracy"] = mean


def main() -> None:
    Aggregator().run()
