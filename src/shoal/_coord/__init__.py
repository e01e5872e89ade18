"""The coordinator: the engine driven over real time, HTTP and a store (docs/api.md)."""

from shoal._coord.app import create_app
from shoal._coord.server import serve

__all__ = ["create_app", "serve"]
