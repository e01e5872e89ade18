"""Strategies: what the aggregating task does with the workers' updates each round.

Every strategy works on flat float64 vectors (:mod:`._params`): ``aggregate(weights,
updates, state)`` takes the current global model ``x``, the round's client updates
``delta_i = y_i - x`` and the server state it returned last round, and returns the new
model and state. That one method is what the ready-made aggregator module runs, and
what the tests compare with each paper's equations.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from shoal.strategies import _robust
from shoal.strategies._keys import config_key

if TYPE_CHECKING:
    from shoal import Swarm, Task

State = dict[str, np.ndarray]


@dataclass(frozen=True)
class ClientUpdate:
    """One worker's contribution to a round.

    Attributes
    ----------
    delta
        The flat update ``y_i - x`` (trained model minus the global model it started
        from).
    num_examples
        The sample count it trained on (FedAvg's weight).
    control
        SCAFFOLD only: the change of the client's control variate.
    within_clip
        DP-FedAvg only: whether the update's norm was within the clip norm before the
        client clipped it (adaptive clipping counts these).
    node_id
        Who sent it (for logs).
    """

    delta: np.ndarray
    num_examples: float = 1.0
    control: np.ndarray | None = None
    node_id: str = ""
    within_clip: bool | None = None


def weighted_mean(
    updates: Iterable[ClientUpdate], *, weighted: bool = True
) -> tuple[np.ndarray, int, np.ndarray | None]:
    """Mean of the updates' deltas (and controls), reading one update at a time.

    Memory is O(model) whatever the number of updates: this is what makes FedAvg,
    FedAvgM, FedOpt and SCAFFOLD stream.

    Returns
    -------
    tuple
        ``(mean delta, number of updates, unweighted mean of controls or None)``.
    """
    total: np.ndarray | None = None
    control: np.ndarray | None = None
    weight = 0.0
    count = 0
    for u in updates:
        w = float(u.num_examples) if weighted else 1.0
        if w < 0:
            raise ValueError(f"num_examples={u.num_examples} of {u.node_id!r} is negative")
        d = np.asarray(u.delta, dtype=np.float64)
        total = w * d if total is None else total + w * d
        if u.control is not None:
            c = np.asarray(u.control, dtype=np.float64)
            control = c.copy() if control is None else control + c
        weight += w
        count += 1
    if total is None or weight == 0:
        raise ValueError("no client updates (or only empty ones) to aggregate")
    return total / weight, count, None if control is None else control / count


def _stack(updates: Iterable[ClientUpdate]) -> np.ndarray:
    rows = [np.asarray(u.delta, dtype=np.float64) for u in updates]
    if not rows:
        raise ValueError("no client updates to aggregate")
    return np.stack(rows)


_REGISTRY: dict[str, type[Strategy]] = {}

_SOURCE = '''"""shoal.strategies: the ready-made aggregator ({name})."""

import json

from shoal.strategies._entry import run_aggregator

CONFIG = json.loads({config!r})


def main() -> None:
    run_aggregator(CONFIG)
'''


@dataclass(frozen=True)
class Strategy:
    """Base class of a server-side aggregation rule.

    Subclasses are frozen dataclasses whose fields are their parameters; a strategy is
    therefore plain data, and the aggregator task rebuilds it from its fields.
    """

    #: The strategy's name in plans and logs.
    name: ClassVar[str] = "strategy"
    #: Whether :meth:`aggregate` reads the updates one at a time (O(model) memory).
    streaming: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:  # not the abstract bases (_FedOpt, _Robust)
            _REGISTRY[cls.name] = cls

    def aggregate(
        self,
        weights: np.ndarray,
        updates: Iterable[ClientUpdate],
        state: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, State]:
        """One server step.

        Parameters
        ----------
        weights
            The global model ``x_t`` as a flat vector.
        updates
            The round's client updates (an iterator is read once).
        state
            What this method returned as state last round (empty at first).

        Returns
        -------
        tuple
            ``(x_{t+1}, new state)``.
        """
        raise NotImplementedError

    def client_config(self) -> dict[str, Any]:
        """What the workers' :func:`train_round` needs to know (JSON-able)."""
        return {"name": self.name}

    def config(self) -> dict[str, Any]:
        """The strategy as plain data: its name and parameters."""
        return {"name": self.name, "params": dataclasses.asdict(self)}

    @staticmethod
    def from_config(config: Mapping[str, Any]) -> Strategy:
        """The strategy :meth:`config` describes."""
        cls = _REGISTRY.get(str(config["name"]))
        if cls is None:
            raise ValueError(f"unknown strategy {config['name']!r}; known: {sorted(_REGISTRY)}")
        return cls(**config.get("params", {}))

    def task(
        self,
        swarm: Swarm,
        *,
        key: str = "weights",
        **task_options: Any,
    ) -> Task:
        """The aggregating task of a swarm using this strategy.

        It is a ready-made module of shoal's library, bundled like any module: it reads
        the workers' ``"update"`` results, applies :meth:`aggregate` to the global model
        ``key`` and writes it back. This also sets the global the workers'
        :func:`train_round` reads (the strategy's client-side settings).

        Parameters
        ----------
        swarm
            The swarm the task belongs to (its globals get the client settings).
        key
            The global holding the model (the swarm sets its initial value).
        **task_options
            Passed to :class:`shoal.Task`; by default ``method="any", maximum=1``.

        Returns
        -------
        shoal.Task
            Call it on the worker task in ``execute()``: ``self.aggregator(self.worker())``.
        """
        from shoal import Module, Task

        swarm.set_global(config_key(key), self.client_config())
        source = _SOURCE.format(
            name=self.name, config=json.dumps({"strategy": self.config(), "key": key})
        )
        options: dict[str, Any] = {"method": "any", "maximum": 1, **task_options}
        return Task(Module(source, name=f"shoal_{self.name}"), **options)


@dataclass(frozen=True)
class FedAvg(Strategy):
    """Federated averaging (McMahan et al., 2017), weighted by sample count.

    ``x_{t+1} = x_t + lr * sum_i n_i delta_i / sum_i n_i``. Streams.

    Parameters
    ----------
    lr
        Server learning rate (1.0: plain FedAvg, the new model is the weighted mean).
    weighted
        Weight by ``num_examples`` (False: every client counts once).
    """

    name: ClassVar[str] = "fedavg"
    lr: float = 1.0
    weighted: bool = True

    def aggregate(
        self,
        weights: np.ndarray,
        updates: Iterable[ClientUpdate],
        state: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, State]:
        """See :meth:`Strategy.aggregate`."""
        mean, _, _ = weighted_mean(updates, weighted=self.weighted)
        return weights + self.lr * mean, {}


@dataclass(frozen=True)
class FedProx(FedAvg):
    """FedProx (Li et al., 2020): FedAvg whose workers add a proximal term.

    The server step is FedAvg's; each worker minimises ``F_i(w) + mu/2 ||w - x_t||^2``.
    :func:`train_round` gives the worker ``ctx.adjust`` (numpy gradients) and
    :func:`proximal_term` (a torch loss term) for it. Streams.

    Parameters
    ----------
    mu
        Weight of the proximal term (0: FedAvg).
    lr, weighted
        As for :class:`FedAvg`.
    """

    name: ClassVar[str] = "fedprox"
    mu: float = 0.01

    def client_config(self) -> dict[str, Any]:
        """The workers need ``mu``."""
        return {"name": self.name, "mu": self.mu}


@dataclass(frozen=True)
class FedAvgM(Strategy):
    """FedAvg with server momentum (Hsu et al., 2019).

    ``v_t = momentum * v_{t-1} + mean_t``; ``x_{t+1} = x_t + lr * v_t``, with
    ``mean_t`` the weighted mean update. Streams.

    Parameters
    ----------
    lr
        Server learning rate.
    momentum
        Server momentum ``beta`` in ``[0, 1)``.
    """

    name: ClassVar[str] = "fedavgm"
    lr: float = 1.0
    momentum: float = 0.9

    def aggregate(
        self,
        weights: np.ndarray,
        updates: Iterable[ClientUpdate],
        state: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, State]:
        """See :meth:`Strategy.aggregate`."""
        mean, _, _ = weighted_mean(updates)
        v = (state or {}).get("momentum")
        v = mean if v is None else self.momentum * v + mean
        return weights + self.lr * v, {"momentum": v}


@dataclass(frozen=True)
class _FedOpt(Strategy):
    """Adaptive server optimisers (Reddi et al., 2021, Algorithm 2).

    With ``Delta_t`` the weighted mean update::

        m_t = beta1 * m_{t-1} + (1 - beta1) * Delta_t
        v_t = (per optimiser, below)
        x_{t+1} = x_t + lr * m_t / (sqrt(v_t) + tau)

    starting from ``m_{-1} = 0`` and ``v_{-1} = tau**2`` (the paper's ``v_{-1} >=
    tau**2``), with no bias correction, as in the paper. Streams.
    """

    lr: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def _second(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def aggregate(
        self,
        weights: np.ndarray,
        updates: Iterable[ClientUpdate],
        state: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, State]:
        """See :meth:`Strategy.aggregate`."""
        delta, _, _ = weighted_mean(updates)
        state = state or {}
        m = state.get("m", np.zeros_like(delta))
        v = state.get("v", np.full_like(delta, self.tau**2))
        m = self.beta1 * m + (1 - self.beta1) * delta
        v = self._second(v, delta * delta)
        return weights + self.lr * m / (np.sqrt(v) + self.tau), {"m": m, "v": v}


@dataclass(frozen=True)
class FedAdagrad(_FedOpt):
    """FedAdagrad (Reddi et al., 2021): ``v_t = v_{t-1} + Delta_t**2``.

    Parameters
    ----------
    lr, beta1, beta2, tau
        Server learning rate ``eta``, first-moment decay, (unused) second-moment decay,
        adaptivity ``tau``.
    """

    name: ClassVar[str] = "fedadagrad"

    def _second(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return np.asarray(v + d2)


@dataclass(frozen=True)
class FedAdam(_FedOpt):
    """FedAdam (Reddi et al., 2021): ``v_t = beta2 v_{t-1} + (1 - beta2) Delta_t**2``.

    Parameters
    ----------
    lr, beta1, beta2, tau
        Server learning rate ``eta``, moment decays, adaptivity ``tau``.
    """

    name: ClassVar[str] = "fedadam"

    def _second(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return np.asarray(self.beta2 * v + (1 - self.beta2) * d2)


@dataclass(frozen=True)
class FedYogi(_FedOpt):
    """FedYogi (Reddi et al., 2021):
    ``v_t = v_{t-1} - (1 - beta2) Delta_t**2 sign(v_{t-1} - Delta_t**2)``.

    Parameters
    ----------
    lr, beta1, beta2, tau
        Server learning rate ``eta``, moment decays, adaptivity ``tau``.
    """

    name: ClassVar[str] = "fedyogi"

    def _second(self, v: np.ndarray, d2: np.ndarray) -> np.ndarray:
        return np.asarray(v - (1 - self.beta2) * d2 * np.sign(v - d2))


@dataclass(frozen=True)
class Scaffold(Strategy):
    """SCAFFOLD (Karimireddy et al., 2020), control variates with option II.

    Workers correct every local gradient by ``c - c_i`` (``ctx.adjust``) and keep their
    control variate ``c_i`` in node state (``self.local.set_state``)::

        c_i+ = c_i - c + (x - y_i) / (K * local_lr)

    The server takes unweighted means, as in the paper::

        x_{t+1} = x_t + lr * mean_i(delta_i)
        c_{t+1} = c_t + (|S| / N) * mean_i(c_i+ - c_i)

    Streams.

    Parameters
    ----------
    lr
        Global learning rate ``eta_g``.
    total_clients
        ``N``, the number of clients; None: every client takes part (``|S| = N``).
    """

    name: ClassVar[str] = "scaffold"
    lr: float = 1.0
    total_clients: int | None = None

    def aggregate(
        self,
        weights: np.ndarray,
        updates: Iterable[ClientUpdate],
        state: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, State]:
        """See :meth:`Strategy.aggregate`; ``state["c"]`` is the server control."""
        mean, count, control = weighted_mean(updates, weighted=False)
        c = (state or {}).get("c", np.zeros_like(mean))
        if control is None:
            raise ValueError("SCAFFOLD updates carry no control variates: use train_round")
        share = count / (self.total_clients or count)
        return weights + self.lr * mean, {"c": c + share * control}

    def client_config(self) -> dict[str, Any]:
        """Workers correct their gradients with control variates."""
        return {"name": self.name, "scaffold": True}


@dataclass(frozen=True)
class _Robust(Strategy):
    streaming: ClassVar[bool] = False
    lr: float = 1.0

    def _rule(self, stacked: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def aggregate(
        self,
        weights: np.ndarray,
        updates: Iterable[ClientUpdate],
        state: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, State]:
        """See :meth:`Strategy.aggregate`. Holds every update in memory (unweighted)."""
        return weights + self.lr * self._rule(_stack(updates)), {}


@dataclass(frozen=True)
class Median(_Robust):
    """Coordinate-wise median of the updates (Yin et al., 2018). Does not stream.

    Parameters
    ----------
    lr
        Server learning rate.
    """

    name: ClassVar[str] = "median"

    def _rule(self, stacked: np.ndarray) -> np.ndarray:
        return _robust.coordinate_median(stacked)


@dataclass(frozen=True)
class TrimmedMean(_Robust):
    """Coordinate-wise trimmed mean (Yin et al., 2018). Does not stream.

    Parameters
    ----------
    trim
        Fraction of values cut at each end of every coordinate, ``[0, 0.5)``.
    lr
        Server learning rate.
    """

    name: ClassVar[str] = "trimmed_mean"
    trim: float = 0.2

    def _rule(self, stacked: np.ndarray) -> np.ndarray:
        return _robust.trimmed_mean(stacked, self.trim)


@dataclass(frozen=True)
class Krum(_Robust):
    """Krum, or Multi-Krum with ``select > 1`` (Blanchard et al., 2017). Does not stream.

    Parameters
    ----------
    byzantine
        ``f``, the Byzantine clients tolerated; needs ``n > 2f + 2`` updates.
    select
        ``m``: average the ``m`` best-scored updates (1: Krum).
    lr
        Server learning rate.
    """

    name: ClassVar[str] = "krum"
    byzantine: int = 1
    select: int = 1

    def _rule(self, stacked: np.ndarray) -> np.ndarray:
        return _robust.krum(stacked, self.byzantine, self.select)


@dataclass(frozen=True)
class MultiKrum(Krum):
    """Multi-Krum (Blanchard et al., 2017): the mean of the ``select`` updates Krum
    scores best. Does not stream.

    Parameters
    ----------
    byzantine, select, lr
        As for :class:`Krum` (``select`` defaults to 3).
    """

    name: ClassVar[str] = "multikrum"
    select: int = 3


@dataclass(frozen=True)
class Bulyan(_Robust):
    """Bulyan over Krum (El Mhamdi et al., 2018). Does not stream.

    Parameters
    ----------
    byzantine
        ``f``; needs ``n >= 4f + 3`` updates.
    lr
        Server learning rate.
    """

    name: ClassVar[str] = "bulyan"
    byzantine: int = 1

    def _rule(self, stacked: np.ndarray) -> np.ndarray:
        return _robust.bulyan(stacked, self.byzantine)
