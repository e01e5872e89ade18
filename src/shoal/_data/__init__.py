"""Data for simulated federations: dataset partitioning and virtual nodes' data maps.

Used by the simulator, ``shoal.testing`` and ``shoal up`` (which splits a dataset
across real node agents the same way).
"""
