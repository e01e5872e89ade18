"""Task-side code: the ready-made aggregator module's body and the worker helper.

Runs inside task processes, so it imports only :mod:`shoal.runtime` and numpy.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from shoal.runtime import Task
from shoal.strategies._keys import (
    CLIENT_CONTROL_STATE,
    NUM_EXAMPLES_TAG,
    UPDATE_TAG,
    clip_key,
    config_key,
    control_key,
    history_key,
    state_key,
)
from shoal.strategies._params import Layout, Weights, flatten
from shoal.strategies._strategy import ClientUpdate, Strategy


class LocalRound:
    """What a worker's training function is given besides the model.

    Attributes
    ----------
    global_weights
        The global model this round started from (read-only).
    iteration
        The swarm's iteration (the round number).
    mu
        FedProx's proximal weight (0 for other strategies).
    correction
        SCAFFOLD's gradient correction ``c - c_i`` in the model's structure, or None.
    steps
        How many times :meth:`adjust` was called (SCAFFOLD's ``K``).
    """

    def __init__(
        self,
        layout: Layout,
        x: np.ndarray,
        iteration: int,
        mu: float = 0.0,
        correction: np.ndarray | None = None,
    ) -> None:
        self._layout = layout
        self._x = x
        self._correction = correction
        self.iteration = iteration
        self.mu = mu
        self.steps = 0
        self.global_weights: Weights = layout.unflatten(x)
        self.correction: Weights | None = (
            None if correction is None else layout.unflatten(correction)
        )

    def adjust(self, grads: Weights, weights: Weights) -> Weights:
        """Gradients with the strategy's client-side terms added; call once per step.

        Adds FedProx's ``mu * (w - x_t)`` and SCAFFOLD's ``c - c_i``; for other
        strategies it returns ``grads`` unchanged (but still counts the step).

        Parameters
        ----------
        grads
            The loss gradient at ``weights``, in the model's structure.
        weights
            The current local model.
        """
        self.steps += 1
        if self.mu == 0 and self._correction is None:
            return grads
        g, _ = flatten(grads)
        if self.mu:
            w, _ = flatten(weights)
            g = g + self.mu * (w - self._x)
        if self._correction is not None:
            g = g + self._correction
        return self._layout.unflatten(g)


TrainFn = Callable[[Weights, LocalRound], tuple[Any, ...]]


def train_round(
    task: Task,
    train: TrainFn,
    *,
    key: str = "weights",
    local_lr: float | None = None,
    filters: Sequence[Callable[[Any], Any]] = (),
) -> None:
    """One round of a worker under any strategy: train from the global model, report.

    Reads the global model ``key``, calls ``train(weights, ctx)`` (a copy the function
    may change) and publishes the update ``y - x`` with the sample count as the result
    ``"update"`` (and ``"num_examples"``) that the strategy's aggregator reads.

    Under :class:`DPFedAvg` it first spends the round's charge from the strategy's
    ``dataset`` on this node (a refusal fails the task with ``privacy.budget`` before
    any data is read), then clips the update to the current clip norm and, in local
    mode, adds the Gaussian noise before anything leaves the node.

    Parameters
    ----------
    task
        The running :class:`shoal.runtime.Task` (``self``).
    train
        ``train(weights, ctx) -> (new_weights, num_examples)`` or ``(new_weights,
        num_examples, metrics)`` with ``metrics`` a dict of floats (averaged by the
        aggregator, weighted by sample count). ``ctx`` is a :class:`LocalRound`: call
        ``ctx.adjust(grads, weights)`` on every step's gradient for FedProx and SCAFFOLD.
    key
        The global holding the model.
    local_lr
        The local learning rate; SCAFFOLD needs it for its control variates.
    filters
        Applied in turn to the update ``y - x`` (in the model's structure) before
        anything else: e.g. ``[ExcludeVars(("b",), zero=True), Quantize(8)]`` from
        :mod:`shoal.privacy`. They must keep the model's keys and shapes.
    """
    world = task.world
    settings = world.globals.get(config_key(key)) or {"name": "fedavg"}
    x, layout = flatten(world.globals[key])
    dp = settings.get("dp")
    if dp and dp.get("dataset"):
        task.local.spend_privacy(
            str(dp["dataset"]),
            {
                "kind": "gaussian",
                "noise_multiplier": float(dp["noise_multiplier"]),
                "label": f"DP-FedAvg round {world.iteration} of swarm {world.swarm_id}",
            },
        )
    scaffold = bool(settings.get("scaffold"))
    c = c_i = None
    if scaffold:
        if not local_lr:
            raise ValueError("SCAFFOLD needs train_round(..., local_lr=) (the local step size)")
        c = np.asarray(world.globals.get(control_key(key), np.zeros_like(x)))
        c_i = np.asarray(task.local.get_state(CLIENT_CONTROL_STATE, np.zeros_like(x)))
    ctx = LocalRound(
        layout,
        x,
        world.iteration,
        mu=float(settings.get("mu", 0.0)),
        correction=None if c is None or c_i is None else c - c_i,
    )
    out = train(layout.unflatten(x.copy()), ctx)
    new, n = out[0], out[1]
    metrics: Mapping[str, float] = out[2] if len(out) > 2 else {}
    y, _ = flatten(new)
    delta = y - x
    if filters:
        for f in filters:
            delta, _ = flatten(f(layout.unflatten(delta)))
        y = x + delta
    within: bool | None = None
    if dp:
        from shoal.privacy import Gaussian, clip_by_norm  # only DP runs pay for the import

        clip = float(world.globals.get(clip_key(key), dp["clip"]))
        delta, within = clip_by_norm(delta, clip)
        if dp.get("mode") == "local":  # the noise is added before the update leaves
            std = float(dp["noise_multiplier"]) * clip
            delta = Gaussian(sensitivity=clip, sigma=std).randomise(delta)
    record: dict[str, Any] = {
        "delta": delta,
        "num_examples": int(n),
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    if c is not None and c_i is not None and local_lr:
        if ctx.steps == 0:
            raise ValueError("SCAFFOLD: call ctx.adjust(grads, weights) on every local step")
        c_new = c_i - c + (x - y) / (ctx.steps * local_lr)
        task.local.set_state(CLIENT_CONTROL_STATE, c_new)
        record["control"] = c_new - c_i
    if within is not None:
        record["within_clip"] = within
    if settings.get("secagg"):  # only the masked [n * delta, n] leaves the node
        from shoal.strategies._secure_entry import mask_update

        mask_update(task, np.concatenate([int(n) * delta, [float(n)]]), key)
        world.results.add(NUM_EXAMPLES_TAG, int(n))
        return
    world.results.add(UPDATE_TAG, record)
    world.results.add(NUM_EXAMPLES_TAG, int(n))


def run_aggregator(config: Mapping[str, Any]) -> None:
    """The body of the ready-made aggregator module (see :meth:`Strategy.task`)."""
    task = Task()
    world = task.world
    key = str(config["key"])
    strategy = Strategy.from_config(config["strategy"])
    x, layout = flatten(world.globals[key])
    state = world.globals.get(state_key(key)) or {}
    sums: dict[str, float] = {}
    seen = {"clients": 0, "examples": 0.0}

    def updates() -> Iterator[ClientUpdate]:
        for node_id, value in world.results.stream(UPDATE_TAG):
            n = float(value["num_examples"])
            seen["clients"] += 1
            seen["examples"] += n
            for name, v in (value.get("metrics") or {}).items():
                sums[name] = sums.get(name, 0.0) + n * float(v)
            control = value.get("control")
            yield ClientUpdate(
                np.asarray(value["delta"]),
                n,
                None if control is None else np.asarray(control),
                node_id,
                value.get("within_clip"),
            )

    new, state = strategy.aggregate(x, updates(), state)
    world.globals[key] = layout.unflatten(new)
    if state:
        world.globals[state_key(key)] = state
    if "c" in state and strategy.client_config().get("scaffold"):
        world.globals[control_key(key)] = state["c"]
    if "clip" in state and strategy.client_config().get("dp"):
        world.globals[clip_key(key)] = float(state["clip"][0])
        task.logger.metric("clip_norm", float(state["clip"][0]))
    means = {k: s / seen["examples"] for k, s in sums.items()} if seen["examples"] else {}
    if means:
        world.globals[history_key(key)] = [*world.globals.get(history_key(key), []), means]
        task.logger.metrics(means)
    task.logger.info(
        f"round {world.iteration}: {strategy.name} over {seen['clients']} updates "
        f"({seen['examples']:.0f} examples)"
    )
