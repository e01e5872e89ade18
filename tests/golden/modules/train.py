"""A file module of the golden swarm (its bytes are part of the golden plan's digests)."""

from shoal.runtime import Task


class Train(Task):
    def run(self):
        self.world.results.add("weights", self.world.globals["weights"])


def main():
    Train().run()
