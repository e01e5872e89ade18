# Seed 001, "Adaptive Modules", with only the import line changed. The seed leaves the
# three training methods to the user; here each says which branch ran.
from shoal.runtime import Task


class AdaptiveWorker(Task):
    def run(self):
        # Analyze current conditions
        node_performance = self.local.get_performance_metrics()
        network_quality = self.local.get_network_quality()

        # Adapt training strategy
        if network_quality < 0.5:
            # Use local updates with less communication
            self.run_local_training_rounds(extra_rounds=3)
        elif node_performance["cpu_usage"] > 0.8:
            # Reduce computational load
            self.run_lightweight_training()
        else:
            # Standard training
            self.run_standard_training()
        self.world.results.add(
            "seen",
            {
                "cpu_usage": node_performance["cpu_usage"],
                "memory_usage": node_performance["memory_usage"],
                "quality": float(network_quality),
                "rtt_s": network_quality.rtt_s,
                "loss": network_quality.loss,
            },
        )

    def run_local_training_rounds(self, extra_rounds):
        self.world.results.add("strategy", f"local rounds +{extra_rounds}")

    def run_lightweight_training(self):
        self.world.results.add("strategy", "lightweight")

    def run_standard_training(self):
        self.world.results.add("strategy", "standard")


def main():
    AdaptiveWorker().run()
