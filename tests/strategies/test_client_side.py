"""The worker side: LocalRound's gradient terms and FedProx's torch proximal term."""

from __future__ import annotations

import numpy as np
import pytest

from shoal.strategies import LocalRound, flatten, proximal_term


def test_adjust_adds_fedprox_drift_and_scaffold_correction() -> None:
    x = {"W": np.array([[1.0, 2.0]]), "b": np.array([0.5])}
    vec, layout = flatten(x)
    w = {"W": np.array([[2.0, 2.0]]), "b": np.array([0.0])}
    g = {"W": np.array([[0.1, 0.1]]), "b": np.array([0.1])}
    prox = LocalRound(layout, vec, 0, mu=0.5).adjust(g, w)
    np.testing.assert_allclose(prox["W"], [[0.1 + 0.5, 0.1]])
    np.testing.assert_allclose(prox["b"], [0.1 - 0.25])
    ctx = LocalRound(layout, vec, 0, correction=np.array([1.0, -1.0, 2.0]))
    out = ctx.adjust(g, w)
    np.testing.assert_allclose(out["W"], [[1.1, -0.9]])
    np.testing.assert_allclose(out["b"], [2.1])
    plain = LocalRound(layout, vec, 0)
    assert plain.adjust(g, w) is g and plain.steps == 1 and ctx.steps == 1


def test_torch_proximal_term_gives_mu_times_drift_as_gradient() -> None:
    torch = pytest.importorskip("torch")
    p = torch.tensor([1.0, 3.0], requires_grad=True)
    term = proximal_term([p], [np.array([0.0, 1.0])], mu=0.2)
    assert float(term.detach()) == pytest.approx(0.1 * (1 + 4))
    term.backward()
    assert p.grad is not None
    np.testing.assert_allclose(p.grad.numpy(), [0.2, 0.4])
