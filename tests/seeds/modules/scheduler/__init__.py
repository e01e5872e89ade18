from shoal.runtime import Task


class Scheduler(Task):
    def run(self):
        self.world.stop_swarm()


def main():
    Scheduler().run()
