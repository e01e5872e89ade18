# Seed 001 "Task Context and Interfaces", as the seed writes it; only the import changed.
from shoal.runtime import Task


class ExampleTask(Task):
    def run(self):
        # Local interface - node-specific data and resources
        local_dataset = self.local.get_dataset("mnist")
        node_resources = self.local.get_resources()
        # World interface - swarm-wide communication
        global_model = self.world.globals["model"]
        peer_results = self.world.results.select("gradients")
        # Logger interface - structured logging
        self.logger.info("Starting computation")
        self.logger.debug(f"Dataset shape: {local_dataset.shape}")
        # (added so the test can see what the task saw)
        self.world.results.add(
            "seen", [global_model, len(peer_results), node_resources.cpu, node_resources["cpu"]]
        )


def main():
    ExampleTask().run()
