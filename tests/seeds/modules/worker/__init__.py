# worker/__init__.py - Module entry point (seed 001)
from .worker_task import Worker


def main():
    Worker().run()
