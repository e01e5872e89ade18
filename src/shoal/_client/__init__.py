"""``shoal.Client``: the user side of the coordinator's HTTP API (docs/api.md).

``client`` holds the class, ``config`` finds the coordinator and the token, ``http``
turns responses and event streams into values and errors.
"""

from shoal._client.client import TERMINAL, Client
from shoal._client.config import config_path, resolve

__all__ = ["TERMINAL", "Client", "config_path", "resolve"]
