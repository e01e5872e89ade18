# Produces the "gradients" the seed's StatefulOptimizer consumes (not from the seed).
import numpy as np

from shoal.runtime import Task


class Gradients(Task):
    def run(self):
        self.world.results.add("gradients", np.ones(3))


def main():
    Gradients().run()
