"""FedAvg aggregator: the sample-weighted mean of the workers' weights (torch tensors),
streamed one model at a time, and the federated validation accuracy as a metric."""

from __future__ import annotations

from shoal.runtime import Task


class Aggregator(Task):
    def run(self) -> None:
        results = self.world.results
        n_samples = results.select("n_samples")
        total = sum(n_samples.values())
        running = {}
        for node_id, weights in results.stream("weights"):
            share = n_samples[node_id] / total
            for name, value in weights.items():
                scaled = value.double() * share
                running[name] = running[name] + scaled if name in running else scaled
        if not running:
            raise RuntimeError("no worker results to aggregate")
        self.world.globals["weights"] = {name: s.float() for name, s in running.items()}

        correct = sum(results.select("val_correct").values())
        seen = sum(results.select("val_total").values())
        accuracy = correct / seen if seen else 0.0
        self.logger.metric("val_accuracy", accuracy)
        results.add("val_accuracy", accuracy)
        self.logger.info(f"round {self.world.iteration}: validation accuracy {accuracy:.4f}")


def main() -> None:
    Aggregator().run()
