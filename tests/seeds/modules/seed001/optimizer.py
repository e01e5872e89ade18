# Seed 001 "Stateful Modules": run() as the seed writes it; only the import changed.
from shoal.runtime import Task


class StatefulOptimizer(Task):
    def run(self):
        # Load persistent state
        momentum = self.local.get_state("optimizer_momentum", default={})
        # Perform optimization step
        gradients = self.world.results.select("gradients")
        updated_params, new_momentum = self.sgd_with_momentum(gradients, momentum)
        # Save updated state
        self.local.set_state("optimizer_momentum", new_momentum)
        self.world.globals["parameters"] = updated_params

    # The seed leaves the optimizer to the reader: momentum counts the steps taken.
    def sgd_with_momentum(self, gradients, momentum):
        steps = momentum.get("steps", 0) + 1
        total = sum(float(g.sum()) for g in gradients.values())
        return total * steps, {"steps": steps}


def main():
    StatefulOptimizer().run()
