# worker_v1.0.py: version 1.0.0 of fl_worker (seed 001's versioning section).
from shoal.runtime import Task


class Worker(Task):
    def run(self):
        self.logger.info("running version 1.0.0")
        self.world.results.add("version", "1.0.0")


def main():
    Worker().run()
