"""FedProx's proximal term for training loops that compute their own loss."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np


def proximal_gradient(weights: Any, global_weights: Any, mu: float) -> Any:
    """Gradient of ``mu/2 ||w - w_global||^2``: ``mu * (w - w_global)`` (numpy).

    Parameters
    ----------
    weights, global_weights
        Arrays, or dicts of arrays with the same keys.
    mu
        The proximal weight.

    Returns
    -------
    Any
        The gradient, in the structure of ``weights``.
    """
    if isinstance(weights, Mapping):
        return {k: proximal_gradient(weights[k], global_weights[k], mu) for k in weights}
    return mu * (np.asarray(weights, dtype=np.float64) - np.asarray(global_weights))


def proximal_term(parameters: Iterable[Any], global_parameters: Iterable[Any], mu: float) -> Any:
    """FedProx's loss term ``mu/2 * sum ||p - p_global||^2`` for torch (add it to the loss).

    Torch is imported only here and only if installed (``pip install torch``); autograd
    then adds ``mu * (p - p_global)`` to every gradient.

    Parameters
    ----------
    parameters
        The model's parameters (``model.parameters()``).
    global_parameters
        The global model's parameters, in the same order (tensors or arrays; they are
        constants, no gradient flows into them).
    mu
        The proximal weight.

    Returns
    -------
    torch.Tensor
        A scalar tensor.
    """
    import torch

    total = torch.zeros(())
    for p, g in zip(parameters, global_parameters, strict=True):
        ref = torch.as_tensor(g, dtype=p.dtype, device=p.device).detach()
        total = total + torch.sum((p - ref) ** 2)
    return (mu / 2.0) * total
