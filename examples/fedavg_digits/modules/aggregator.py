"""FedAvg aggregator: the sample-weighted mean of the workers' weights.

    new global = sum_i n_i * w_i / sum_i n_i

The workers' models are read one at a time with ``results.stream``, so memory stays at
one running sum whatever the number of nodes.
"""

from __future__ import annotations

import numpy as np

from shoal.runtime import Task


class Aggregator(Task):
    def run(self) -> None:
        results = self.world.results
        n_samples = results.select("n_samples")  # {node_id: int}: small
        total = sum(n_samples.values())

        running: dict[str, np.ndarray] = {}
        for node_id, weights in results.stream("weights"):
            n = n_samples[node_id]
            for name, value in weights.items():
                if name in running:
                    running[name] += n * value
                else:
                    running[name] = n * np.asarray(value, dtype=np.float64)
        if not running or total == 0:
            raise RuntimeError("no worker results to aggregate")
        self.world.globals["weights"] = {name: s / total for name, s in running.items()}

        # Federated validation accuracy of the model the workers started from.
        correct = sum(results.select("val_correct").values())
        seen = sum(results.select("val_total").values())
        accuracy = correct / seen if seen else 0.0
        results.add("val_accuracy", accuracy)
        self.logger.info(
            f"round {self.world.iteration}: averaged {len(n_samples)} models "
            f"({total} samples); validation accuracy {accuracy:.4f} ({correct}/{seen})"
        )


def main() -> None:
    Aggregator().run()
