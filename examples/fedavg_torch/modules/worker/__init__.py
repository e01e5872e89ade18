"""A package module: shoal runs its ``main()``."""

from .worker_task import Worker


def main() -> None:
    Worker().run()
