"""DP-FedAvg: client-level clipping and Gaussian noise, central or local.

McMahan et al. 2018 ("Learning differentially private recurrent language models") for
fixed clipping; Andrew et al. 2021 ("Differentially private learning with adaptive
clipping") for the adaptive clip norm.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from shoal import ShoalError
from shoal.privacy import Charge, Gaussian, clip_by_norm
from shoal.strategies._strategy import ClientUpdate, State, Strategy


def _bad(message: str, hint: str) -> ShoalError:
    return ShoalError(message, code="privacy.mechanism", hint=hint)


def adaptive_clip(clip: float, fraction: float, target: float, lr: float) -> float:
    """Andrew et al. 2021's geometric update: ``C * exp(-lr * (fraction - target))``.

    ``fraction`` is the (noisy) share of clients whose update norm was within ``clip``;
    the clip norm moves towards the ``target`` quantile of the update norms.
    """
    return float(clip * np.exp(-lr * (fraction - target)))


def sum_noise_multiplier(z: float, count_stddev: float) -> float:
    """The noise multiplier left for the sum when adaptive clipping spends some on the
    clipped-count query (Andrew et al. 2021, Theorem 1):
    ``z_Delta = (z**-2 - (2 sigma_b)**-2) ** -1/2``.

    Raises
    ------
    ShoalError
        ``privacy.mechanism`` unless ``2 sigma_b > z``.
    """
    rest = z**-2 - (2 * count_stddev) ** -2
    if rest <= 0:
        raise _bad(
            f"adaptive clipping with noise_multiplier={z} needs clip_count_stddev > {z / 2}",
            "raise clip_count_stddev (the paper suggests expected clients / 20) or the noise",
        )
    return float(rest**-0.5)


@dataclass(frozen=True)
class DPFedAvg(Strategy):
    """DP-FedAvg: every client's update clipped to L2 norm ``clip``, Gaussian noise of
    std ``noise_multiplier * clip`` added, an unweighted mean taken.

    ``mode="central"``: the aggregator adds the noise once, to the sum (a trusted
    aggregator; with secure aggregation it sees only the sum). ``mode="local"``: every
    worker adds it to its own update before sending (no trust in the aggregator, noise
    ``sqrt(n)`` times larger on the mean). Each round costs every worker's dataset one
    Gaussian charge of ``noise_multiplier`` (client-level DP, which implies record-level
    DP for its records), spent from the node's budget before training when ``dataset``
    is set. Weights are uniform: weighting by sample count would let one client's
    sensitivity grow with its size. Streams.

    Parameters
    ----------
    clip
        The L2 clip norm ``C`` (the initial one with ``adaptive``).
    noise_multiplier
        ``z``: noise std over ``C``.
    mode
        ``"central"`` or ``"local"``.
    adaptive
        Adapt ``C`` towards the ``target_quantile`` of update norms (central only).
    target_quantile, clip_lr
        ``gamma`` and ``eta_C`` of the adaptive update.
    clip_count_stddev
        ``sigma_b``, the noise on the count of clients within the clip (adaptive);
        None: clients / 20, the paper's choice.
    dataset
        The dataset each worker's node charges per round; None: nothing is charged.
    lr
        Server learning rate.
    seed
        Seeds the aggregator's noise: for tests only (seeded noise is predictable).
    """

    name: ClassVar[str] = "dp_fedavg"
    clip: float = 1.0
    noise_multiplier: float = 1.0
    mode: str = "central"
    adaptive: bool = False
    target_quantile: float = 0.5
    clip_lr: float = 0.2
    clip_count_stddev: float | None = None
    dataset: str | None = None
    lr: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in ("central", "local"):
            raise _bad(f"DPFedAvg(mode={self.mode!r})", "mode is 'central' or 'local'")
        if not self.clip > 0 or not self.noise_multiplier > 0:
            raise _bad(
                f"DPFedAvg(clip={self.clip}, noise_multiplier={self.noise_multiplier})",
                "both must be > 0",
            )
        if self.adaptive and self.mode != "central":
            raise _bad(
                "adaptive clipping is implemented for mode='central' only",
                "use mode='central', or a fixed clip with mode='local'",
            )

    def charge(self, label: str = "") -> Charge:
        """What one round costs each worker's dataset."""
        return Charge("gaussian", self.noise_multiplier, label=label)

    def client_config(self) -> dict[str, Any]:
        """Workers clip (and in local mode add noise) and charge their dataset."""
        return {
            "name": self.name,
            "dp": {
                "clip": self.clip,
                "noise_multiplier": self.noise_multiplier,
                "mode": self.mode,
                "dataset": self.dataset,
            },
        }

    def aggregate(
        self,
        weights: np.ndarray,
        updates: Iterable[ClientUpdate],
        state: Mapping[str, np.ndarray] | None = None,
    ) -> tuple[np.ndarray, State]:
        """See :meth:`Strategy.aggregate`; ``state["clip"]`` is the current clip norm."""
        state = state or {}
        clip = float(np.asarray(state.get("clip", self.clip)).reshape(-1)[0])
        rounds = int(np.asarray(state.get("rounds", 0)).reshape(-1)[0])
        rng = np.random.default_rng(None if self.seed is None else [self.seed, rounds])
        total: np.ndarray | None = None
        n = within = 0
        for u in updates:
            if self.mode == "central":  # clip again: the bound must not rest on clients
                d, ok = clip_by_norm(u.delta, clip)
                ok = ok if u.within_clip is None else u.within_clip
            else:
                d, ok = np.asarray(u.delta, dtype=np.float64), bool(u.within_clip)
            total = d.copy() if total is None else total + d
            n += 1
            within += int(ok)
        if total is None:
            raise ValueError("no client updates to aggregate")
        z = self.noise_multiplier
        new_state: State = {"rounds": np.array([rounds + 1])}
        if self.mode == "central":
            if self.adaptive:
                sigma_b = self.clip_count_stddev or n / 20
                z = sum_noise_multiplier(z, sigma_b)
                fraction = (within + Gaussian(sigma=sigma_b).noise(rng=rng)) / n
                next_clip = adaptive_clip(clip, fraction, self.target_quantile, self.clip_lr)
            else:
                next_clip = clip
            total = Gaussian(sensitivity=clip, sigma=z * clip).randomise(total, rng)
            new_state["clip"] = np.array([next_clip])
        else:
            new_state["clip"] = np.array([clip])
        return weights + self.lr * total / n, new_state
