# worker/__init__.py: the module both versions of ExperimentalSwarm run (seed 001).
from shoal.runtime import Task


class Worker(Task):
    def run(self):
        self.world.results.add("node", self.world.node_id)


def main():
    Worker().run()
