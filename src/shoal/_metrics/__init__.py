"""Metrics as users read them: tidy tables, per-iteration aggregates, the headline
values of a live swarm, plots and experiment trackers (TensorBoard, MLflow).

Every function here takes :class:`~shoal.MetricRecord` values, whichever driver stored
them: the simulator's run (``SimulationRun.metrics``), the coordinator through
``shoal.Client.metrics``, the CLI (``shoal metrics``, the live displays, ``--track``)
and the dashboard all read metrics through this one package, so an aggregate means the
same everywhere. Optional libraries (pandas, matplotlib, tensorboard, mlflow) are
imported only when used.
"""
