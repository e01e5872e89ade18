"""shoal's library of federated strategies, usable from any dialect.

A swarm names a strategy for its aggregating task and lets its workers call
:func:`train_round`::

    import shoal
    from shoal import strategies

    class Digits(shoal.Swarm):
        def __init__(self):
            self.set_global("weights", {"W": np.zeros((64, 10)), "b": np.zeros(10)})
            self.worker = shoal.Task(shoal.Module("worker.py", datasets=["digits"]))
            self.aggregator = strategies.FedAdam(lr=0.05).task(self)

        def execute(self):
            return self.aggregator(self.worker())

and in ``worker.py``::

    class Worker(shoal.runtime.Task):
        def run(self):
            strategies.train_round(self, lambda w, ctx: (my_train(w, ctx), n_samples))

Streaming (O(model) memory, updates read one at a time): :class:`FedAvg`,
:class:`FedProx`, :class:`FedAvgM`, :class:`FedAdagrad`, :class:`FedAdam`,
:class:`FedYogi`, :class:`Scaffold`, :class:`DPFedAvg`. Not streaming (every update
held, O(clients x model)): :class:`Median`, :class:`TrimmedMean` (order statistics per coordinate),
:class:`Krum`, :class:`MultiKrum`, :class:`Bulyan` (pairwise distances).
"""

from __future__ import annotations

from shoal._public import publish as _publish
from shoal.strategies._dp import DPFedAvg
from shoal.strategies._entry import LocalRound, train_round
from shoal.strategies._params import Layout, flatten
from shoal.strategies._prox import proximal_gradient, proximal_term
from shoal.strategies._secure import SecureFedAvg, SecureTasks
from shoal.strategies._strategy import (
    Bulyan,
    ClientUpdate,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedProx,
    FedYogi,
    Krum,
    Median,
    MultiKrum,
    Scaffold,
    Strategy,
    TrimmedMean,
    weighted_mean,
)

__all__ = [
    "Bulyan",
    "ClientUpdate",
    "DPFedAvg",
    "FedAdagrad",
    "FedAdam",
    "FedAvg",
    "FedAvgM",
    "FedProx",
    "FedYogi",
    "Krum",
    "Layout",
    "LocalRound",
    "Median",
    "MultiKrum",
    "Scaffold",
    "SecureFedAvg",
    "SecureTasks",
    "Strategy",
    "TrimmedMean",
    "flatten",
    "proximal_gradient",
    "proximal_term",
    "train_round",
    "weighted_mean",
]

_publish(__name__, globals(), __all__)
