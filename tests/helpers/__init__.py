"""Helpers shared by shoal's tests: waiting, ports, PostgreSQL, task and swarm builders.

``tests/`` is on ``sys.path`` while pytest runs (``tests/conftest.py`` sits in a folder
without ``__init__.py``), so tests import these as ``from helpers import poll_for``. The
PostgreSQL fixtures are a pytest plugin (:mod:`helpers.postgres`) that
``tests/conftest.py`` registers, so every test folder can ask for ``postgres_url``.
"""

from __future__ import annotations

from helpers.build import one_task, task_module, task_source, write_bundle
from helpers.files import ROOT, TESTS, load_file
from helpers.mounts import tiny_tmpfs
from helpers.net import free_port
from helpers.wait import poll_for

__all__ = [
    "ROOT",
    "TESTS",
    "free_port",
    "load_file",
    "one_task",
    "poll_for",
    "task_module",
    "task_source",
    "tiny_tmpfs",
    "write_bundle",
]
