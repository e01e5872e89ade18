"""A package module of the golden swarm (its bytes are part of the golden plan's digests)."""

from shoal.runtime import Task


class Aggregate(Task):
    def run(self):
        self.world.globals["rounds"] = self.world.globals.get("rounds", 0) + 1


def main():
    Aggregate().run()
