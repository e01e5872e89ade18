"""Secure FedAvg: the aggregator sees only the sum of the weighted updates."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shoal.strategies._keys import config_key

if TYPE_CHECKING:
    from shoal import Swarm, Task

_SOURCE = '''"""shoal.strategies: secure aggregation ({name})."""

import json

from shoal.strategies._secure_entry import {entry}

CONFIG = json.loads({config!r})


def main() -> None:
    {entry}(CONFIG)
'''


@dataclass(frozen=True)
class SecureFedAvg:
    """Sample-weighted FedAvg over secure aggregation (SecAgg+, Bell et al. 2020).

    Every worker sends ``encode([n_i * delta_i, n_i])`` masked so that only the sum over
    the clients can be recovered; the aggregating task and the coordinator see nothing
    else (docs/privacy.md: threat model, cost). Each client masks against and shares its
    keys with ``neighbours`` others on a graph every party derives from the round's
    public keys. A client that drops after sharing its keys is recovered as long as
    ``threshold`` of its share group (itself and its neighbours) reveal their shares.

    Parameters
    ----------
    threshold
        Shares needed to recover a secret: an int, or a fraction of the share group,
        ``neighbours + 1`` (rounded up). Security needs more than half the group; up to
        ``neighbours + 1 - t`` of a client's group may drop after sharing.
    neighbours
        Each client's number of neighbours ``k`` (even; odd numbers are rounded up).
        ``None``: the smallest that keeps the failure bounds of docs/privacy.md with 5%
        of the clients colluding and 5% dropping (the complete graph up to 39
        clients, 42 at 100, 48 at 1000); ``n - 1`` or more: the complete graph
        (Bonawitz et al. 2017).
    lr
        Server learning rate.
    frac_bits
        Fractional bits of the fixed-point encoding (precision ``2**-frac_bits`` per
        value; no overflow while ``n * max|n_i * delta_i| < 2**(63 - frac_bits)``).
    """

    threshold: float = 2 / 3
    lr: float = 1.0
    frac_bits: int = 24
    neighbours: int | None = None

    def __post_init__(self) -> None:
        if self.neighbours is not None and self.neighbours < 1:
            raise ValueError(f"neighbours must be at least 1, not {self.neighbours}")
        if self.threshold <= 0:
            raise ValueError(f"threshold must be positive, not {self.threshold}")
        if self.neighbours is not None and self.threshold >= 1:
            group = self.neighbours + self.neighbours % 2 + 1
            if self.threshold > group:
                raise ValueError(
                    f"threshold {self.threshold} is more than the {group} holders of a "
                    f"client's shares with neighbours={self.neighbours}"
                )

    def tasks(
        self,
        swarm: Swarm,
        *,
        datasets: list[str] | None = None,
        sites: Sequence[str] | None = None,
        server: str | None = None,
        key: str = "weights",
        worker: str = "worker",
        prefix: str = "secagg",
    ) -> SecureTasks:
        """The four tasks around the workers; call the result on the worker task in
        ``execute()``: ``return self.secure(self.worker)``.

        The client steps must run on the nodes the worker runs on: name them by the
        worker's ``datasets`` or by their node ids, ``sites`` (one of the two).

        Parameters
        ----------
        swarm
            The swarm (its globals get the settings the workers read).
        datasets
            The worker's datasets: the client steps run on the nodes that hold them.
        sites
            The worker's nodes by id (``specified_ids``), e.g. a FLARE job's sites.
        server
            The node the aggregator runs on (None: any node).
        key
            The global holding the model.
        worker
            The worker task's alias.
        prefix
            Aliases of the client steps: ``{prefix}_advertise``, ``_share``, ``_reveal``.
        """
        from shoal import Module, Task

        if (datasets is None) == (sites is None):
            raise ValueError(
                "SecureFedAvg.tasks(): name the worker's nodes by datasets= or by sites= "
                "(one of the two)"
            )
        aliases = {
            "advertise": f"{prefix}_advertise",
            "share": f"{prefix}_share",
            "reveal": f"{prefix}_reveal",
            "worker": worker,
        }
        swarm.set_global(
            config_key(key),
            {
                "name": "secure_fedavg",
                "secagg": {
                    "threshold": self.threshold,
                    "frac_bits": self.frac_bits,
                    "neighbours": self.neighbours,
                    **aliases,
                },
            },
        )
        config = json.dumps({"key": key, "lr": self.lr})

        def task(entry: str, alias: str) -> Task:
            source = _SOURCE.format(name=alias, entry=entry, config=config)
            if datasets is not None:
                return Task(Module(source, name=f"shoal_{alias}", datasets=datasets), alias=alias)
            return Task(Module(source, name=f"shoal_{alias}"), alias=alias, specified_ids=sites)

        return SecureTasks(
            task("run_advertise", aliases["advertise"]),
            task("run_share", aliases["share"]),
            task("run_reveal", aliases["reveal"]),
            Task(
                Module(
                    _SOURCE.format(name="aggregator", entry="run_secure_aggregator", config=config),
                    name="shoal_secure_aggregator",
                ),
                method="any",
                maximum=1,
                alias=f"{prefix}_aggregator",
                specified_ids=None if server is None else [server],
            ),
        )


@dataclass(frozen=True)
class SecureTasks:
    """The tasks of one secure FedAvg round; call it on the worker task."""

    advertise: Task
    share: Task
    reveal: Task
    aggregator: Task

    def __call__(self, worker: Task) -> Task:
        """advertise -> share -> worker -> reveal -> aggregator; returns the aggregator."""
        return self.aggregator(self.reveal(worker(self.share(self.advertise()))))
