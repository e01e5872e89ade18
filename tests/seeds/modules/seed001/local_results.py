# Produces "local_results" and "sample_weights" for GenericAggregator (not from the seed).
from shoal.runtime import Task


class LocalResults(Task):
    def run(self):
        index = int(self.world.node_id.rsplit("-", 1)[1])
        self.world.results.add("local_results", float(index))
        self.world.results.add("sample_weights", float(index + 1))


def main():
    LocalResults().run()
