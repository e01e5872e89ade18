"""``Operation`` (what a step runs) and the ``Environment`` it sees on a node."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from shoal._steps._entity import Entity


@dataclass
class Environment:
    """What an operation sees where it runs.

    Attributes
    ----------
    node
        The node's id.
    df
        The local data frame (None on a step that reads no dataset).
    X_tr, Y_tr, X_ts, Y_ts
        Train/test splits an earlier operation on this node set (None until then).
    resources
        Incoming resources: ``{name: {node_id: value}}`` from the previous step.
    products
        Outgoing products: ``{name: value}``, sent on by the step's distribution.
    locals
        Per-node values kept between this artifact's steps on this node.
    secret
        ``secret(purpose)``: 32 bytes this node derives for this run and ``purpose``
        and never sends (the secure sum's keys); None outside a task.
    spend
        ``spend(charge)``: spend a :class:`shoal.privacy.Charge` from the node's budget
        for the artifact's dataset, or raise ``privacy.budget``; None outside a task.
    """

    node: str = ""
    df: Any = None
    X_tr: Any = None
    Y_tr: Any = None
    X_ts: Any = None
    Y_ts: Any = None
    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    products: dict[str, Any] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    secret: Callable[[str], bytes] | None = None
    spend: Callable[[Any], dict[str, Any]] | None = None

    def resource(self, name: str) -> list[Any]:
        """The values of resource ``name`` from every sender, in node order."""
        by_node = self.resources.get(name, {})
        return [by_node[n] for n in sorted(by_node)]


class Operation(Entity):
    """The work of a step: subclass it and implement :meth:`run`.

    An operation is an entity (its fields are its JSON parameters); it runs on a node
    given the :class:`Environment`, reads ``env.df`` / ``env.resources`` and writes
    ``env.products``. A user operation lives in an ordinary module that the artifact
    bundles; wrapping a federated transformer or model is a subclass whose ``run`` calls
    its ``local`` / ``merge`` / ``apply`` methods.

    Attributes
    ----------
    reads_data
        Whether the step needs the artifact's dataset on its node (True: it runs only on
        nodes that have it).
    """

    reads_data: ClassVar[bool] = False

    def run(self, env: Environment) -> None:
        """Do the work on one node."""
        raise NotImplementedError(f"{type(self).__name__}.run is not implemented")
