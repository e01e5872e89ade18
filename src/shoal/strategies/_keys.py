"""The names strategies use in a swarm's globals, results and node state.

Both sides (the aggregator module and the worker helper) read them from here, so a
model kept in global ``key`` has its strategy's settings and state next to it.
"""

from __future__ import annotations

#: The result tag a worker's update is published under.
UPDATE_TAG = "update"
#: The result tag of a worker's sample count (also inside the update).
NUM_EXAMPLES_TAG = "num_examples"
#: SCAFFOLD's client control variate, in the worker's node state.
CLIENT_CONTROL_STATE = "shoal.scaffold.client_control"


def config_key(key: str) -> str:
    """Global holding what workers need to know of the strategy of model ``key``."""
    return f"shoal.strategy.{key}"


def state_key(key: str) -> str:
    """Global holding the server-side state (momentum, moments) of model ``key``."""
    return f"shoal.strategy_state.{key}"


def control_key(key: str) -> str:
    """Global holding SCAFFOLD's server control variate of model ``key``."""
    return f"shoal.scaffold.{key}"


def history_key(key: str) -> str:
    """Global holding the per-round weighted means of the workers' metrics."""
    return f"shoal.history.{key}"


def clip_key(key: str) -> str:
    """Global holding DP-FedAvg's current clip norm (adaptive clipping moves it)."""
    return f"shoal.dp_clip.{key}"
