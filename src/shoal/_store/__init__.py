"""Stores: where a driver keeps globals, results, state, logs and metrics."""
