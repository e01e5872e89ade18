"""The estimators' secure sum over a chain (``Estimator(secure=True)``).

Seed 003 says count and mean "use noise and require a Sequential task order to hide the
number of records on each node". Ferdelance's additive noise was not modular and left
each node's count readable from its neighbours' values; here it is an exact secure sum
in the ring ``Z_{2**64}``, built from :mod:`shoal.privacy`'s secure-aggregation code
(the same fixed-point :func:`~shoal.privacy._secagg.encode`, PRG and X25519 key
agreement as secure FedAvg):

0. ``Initialize`` (only when the artifact names an initiator): the initiator publishes
   a public key of its *initiator role*, derived from a secret that never leaves it.
1. ``Parallel``: each node publishes a public key of its own, and the :meth:`facts` the
   vector's layout needs (the group keys it holds; whether a summed column is integral;
   nothing under DP or with declared ``groups``).
2. ``Sequential`` (the engine's chain): the first node fixes the layout and the key
   directory from every node's step-1 products; each node in turn adds, modulo
   ``2**64``, its encoded statistics plus its *pairwise mask*
   (:func:`~shoal.privacy._secagg.pairwise_mask`): ``+/-PRG(s_uv)`` for every other
   party ``v`` (every node, and the initiator role), ``s_uv`` agreed by X25519.
3. ``Finalize`` on the initiator: the pairwise masks of all parties sum to zero, and
   the initiator role never added its own, so the running total is the sum minus the
   initiator's mask; the initiator adds it back (removes the mask), decodes, and
   computes the result.

Every running total a node or the coordinator sees carries the masks of pairs it does
not hold, so it is uniform in the ring and independent of any single node's value.
Without an initiator the pairwise masks alone cancel and the last total is the sum in
the clear (seen by the coordinator and the Finalize node). docs/privacy.md has the
threat model.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

import numpy as np

from shoal._steps._entity import DUMP, LOAD, StepsError
from shoal._steps._estimators import Estimator
from shoal._steps._operation import Environment, Operation

INITIATOR = "secure.initiator"
ADVERT = "secure.advert"
CHAIN = "secure.chain"
LABEL = "shoal.steps.secure-sum"
_NODE_ROLE, _INITIATOR_ROLE = "node", "initiator"

_Est = Annotated[Estimator, LOAD, DUMP]


def _keys(env: Environment, role: str) -> Any:
    from shoal.privacy import _secagg

    if env.secret is None:
        raise StepsError(
            "the secure sum needs the node's secret: run the artifact as a swarm",
            code="steps.secure",
        )
    return _secagg.ClientKeys.derive(env.secret(f"{LABEL}/{role}"), LABEL)


def _public(env: Environment, role: str) -> bytes:
    key: bytes = _keys(env, role).public()["s"]
    return key


def parties(directory: dict[str, bytes], initiator: dict[str, Any] | None) -> dict[str, Any]:
    """Party numbers: the initiator role is 0, the nodes 1..n by sorted node id.

    Returns ``{"ids": {node: number}, "publics": {number: {"s": key}}}``.
    """
    ids = {node: i + 1 for i, node in enumerate(sorted(directory))}
    publics: dict[int, dict[str, bytes]] = {ids[n]: {"s": k} for n, k in directory.items()}
    if initiator is not None:
        publics[0] = {"s": initiator["s"]}
    return {"ids": ids, "publics": publics}


def encode_vector(values: list[Any], n_int: int, frac_bits: int) -> np.ndarray:
    """``values`` in ``Z_{2**64}``: the first ``n_int`` exactly (0 fractional bits),
    the rest in fixed point with ``frac_bits`` (shoal.privacy's encoder)."""
    from shoal.privacy._secagg import encode

    ints = encode(np.asarray(values[:n_int], dtype=np.float64), 0)
    reals = encode(np.asarray(values[n_int:], dtype=np.float64), frac_bits)
    return np.concatenate([ints, reals]).astype(np.uint64)


def decode_vector(total: np.ndarray, n_int: int, frac_bits: int) -> list[Any]:
    """The inverse of :func:`encode_vector` (on a sum)."""
    from shoal.privacy._secagg import decode

    total = np.asarray(total, dtype=np.uint64)
    ints = [int(v) for v in total[:n_int].view(np.int64)]
    reals = [float(v) for v in decode(total[n_int:], frac_bits)]
    return ints + reals


class SecureStart(Operation):
    """Initialize: the initiator publishes its role's public key."""

    estimator: _Est

    def run(self, env: Environment) -> None:
        """Publish ``{"node", "s"}`` under ``secure.initiator``."""
        env.products[INITIATOR] = {"node": env.node, "s": _public(env, _INITIATOR_ROLE)}


class SecureAdvertise(Operation):
    """Parallel: each node's public key and the facts the layout needs."""

    reads_data: ClassVar[bool] = True
    estimator: _Est

    def run(self, env: Environment) -> None:
        """Publish ``secure.advert`` and pass the initiator's key on."""
        est = self.estimator
        facts = est.facts(est.frame(env.df)) if est.privacy is None else {}
        env.products[ADVERT] = {"s": _public(env, _NODE_ROLE), "facts": facts}
        initiator = env.resource(INITIATOR)
        if initiator:
            env.products[INITIATOR] = initiator[0]


class SecureAdd(Operation):
    """Sequential: add this node's encoded, masked statistics to the running total."""

    reads_data: ClassVar[bool] = True
    estimator: _Est

    def _first(self, env: Environment) -> dict[str, Any]:
        adverts = env.resources.get(ADVERT, {})
        if not adverts:
            raise StepsError(
                "the secure sum's chain started without any node's keys",
                code="steps.secure",
            )
        initiator = env.resource(INITIATOR)
        facts = [adverts[n]["facts"] for n in sorted(adverts)]
        plan = self.estimator.plan(facts)
        n_int = 0 if self.estimator.privacy is not None else self.estimator.integer_slots(plan)
        return {
            "plan": plan,
            "n_int": n_int,
            "directory": {n: a["s"] for n, a in adverts.items()},
            "initiator": initiator[0] if initiator else None,
            "contributors": [],
            "acc": None,
        }

    def run(self, env: Environment) -> None:
        """Publish the new running total (and what the next node needs) as ``secure.chain``."""
        from shoal.privacy._secagg import pairwise_mask

        est = self.estimator
        previous = env.resource(CHAIN)
        state = dict(previous[0]) if previous else self._first(env)
        directory = state["directory"]
        if env.node not in directory:
            raise StepsError(
                f"node {env.node!r} is in the secure sum's chain but advertised no key "
                f"(the directory holds {sorted(directory)})",
                code="steps.secure",
                hint="the nodes of the chain must be the nodes of the Parallel step before it",
            )
        values = est.release(est.frame(env.df), state["plan"], env.spend)
        n_int = int(state["n_int"])
        limit = 2.0 ** (63 - est.frac_bits) / max(len(directory), 1)
        big = [v for v in values[n_int:] if not abs(v) < limit]
        if big:
            raise StepsError(
                f"{type(est).__name__}: a statistic of node {env.node!r} ({big[0]:.4g}) is "
                f"too large for the secure sum's fixed point ({est.frac_bits} fractional "
                f"bits, {len(directory)} nodes: |value| < {limit:.3g})",
                code="steps.secure",
                hint="pass a smaller frac_bits (fewer decimals, larger range)",
            )
        encoded = encode_vector(values, n_int, est.frac_bits)
        who = parties(directory, state["initiator"])
        me = who["ids"][env.node]
        mask = pairwise_mask(me, _keys(env, _NODE_ROLE), who["publics"], LABEL, encoded.size)
        acc = np.zeros(encoded.size, np.uint64) if state["acc"] is None else state["acc"]
        acc = np.asarray(acc, dtype=np.uint64)
        if acc.size != encoded.size:
            raise StepsError(
                f"node {env.node!r}: the running total has {acc.size} entries, its "
                f"statistics {encoded.size}",
                code="steps.secure",
            )
        state["acc"] = np.asarray(acc + encoded + mask, dtype=np.uint64)  # mod 2**64
        state["contributors"] = [*state["contributors"], env.node]
        env.products[CHAIN] = state


class SecureFinish(Operation):
    """Finalize: remove the initiator's mask, decode and combine; product ``"result"``."""

    estimator: _Est

    def run(self, env: Environment) -> None:
        """Read the last running total and publish the result."""
        from shoal.privacy._secagg import pairwise_mask

        est = self.estimator
        last = env.resource(CHAIN)
        if len(last) != 1:
            raise StepsError(
                f"the secure sum's Finalize received {len(last)} running totals, not 1",
                code="steps.secure",
            )
        state = last[0]
        directory = state["directory"]
        missing = sorted(set(directory) - set(state["contributors"]))
        if missing:
            raise StepsError(
                f"the secure sum is incomplete: nodes {missing} advertised keys but added "
                "nothing, so their masks do not cancel",
                code="steps.secure",
                hint="every node of the chain must succeed (no min_results for a secure sum)",
            )
        total = np.asarray(state["acc"], dtype=np.uint64)
        initiator = state["initiator"]
        if initiator is not None:
            mine = _public(env, _INITIATOR_ROLE)
            if initiator["node"] != env.node or initiator["s"] != mine:
                raise StepsError(
                    f"the secure sum's Finalize runs on node {env.node!r}, but the mask was "
                    f"drawn by the initiator {initiator['node']!r}",
                    code="steps.secure",
                    hint="Initialize and Finalize must run on the artifact's initiator",
                )
            who = parties(directory, initiator)
            role = _keys(env, _INITIATOR_ROLE)
            total = total + pairwise_mask(0, role, who["publics"], LABEL, total.size)
        values = decode_vector(total, int(state["n_int"]), est.frac_bits)
        env.products["result"] = est.combine(state["plan"], values)


def secure_artifact(est: Estimator, dataset: str, initiator: str | None, name: str) -> Any:
    """The secure-sum artifact of ``est`` (see the module docstring)."""
    from shoal._steps._artifact import (
        Artifact,
        Distribute,
        Finalize,
        Initialize,
        Parallel,
        Sequential,
    )

    steps: list[Any] = []
    if initiator is not None:
        steps.append(Initialize(operation=SecureStart(estimator=est), distribution=Distribute()))
    steps += [
        Parallel(operation=SecureAdvertise(estimator=est)),
        Sequential(operation=SecureAdd(estimator=est)),
        Finalize(operation=SecureFinish(estimator=est)),
    ]
    return Artifact(steps=steps, dataset=dataset, initiator=initiator, name=name)
