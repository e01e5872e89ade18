"""What the coordinator, the node agent and the user's client say to each other over HTTP.

- :mod:`shoal._api.records`: the typed records users get back (swarm status, task
  counts, failures, logs, metrics, nodes), plain frozen dataclasses, also returned by the
  simulator; exported from :mod:`shoal`.
- :mod:`shoal._api.schemas`: the pydantic models of request and answer bodies and of
  the instructions the coordinator hands nodes, validated on both sides.

This package may import only ``shoal._errors``, ``shoal._wire``, ``shoal._plan`` and
``shoal._engine`` (views and messages); never a driver, the node agent or the client.
Importing it does not import pydantic (only :mod:`~shoal._api.schemas` does).
"""
