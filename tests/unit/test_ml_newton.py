"""Newton's method (msd.ml.newton) reaches the optimum of the documented objective: checked
against scipy's L-BFGS on the same objective, for three classes and for the two-class case it
solves in binary form, from zeros and from a warm start."""
import numpy as np
import pytest
from scipy.optimize import minimize
from scipy.special import log_softmax

from msd.ml.newton import fit_multinomial


def _objective(theta, Z, y, k, alpha):
    d = Z.shape[1]
    W = theta[:d * k].reshape(d, k)
    b = np.concatenate([[0.0], theta[d * k:]])
    log_p = log_softmax(Z @ W + b, axis=1)
    loss = -np.mean(log_p[np.arange(len(y)), y]) + 0.5 * alpha * np.sum(W * W)
    residual = np.exp(log_p)
    residual[np.arange(len(y)), y] -= 1.0
    residual /= len(y)
    return loss, np.concatenate([(Z.T @ residual + alpha * W).ravel(), residual.sum(axis=0)[1:]])


def _data(n, k, seed):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 4))
    logits = Z @ rng.normal(size=(4, k)) + rng.normal(size=k)
    y = np.array([rng.choice(k, p=np.exp(row) / np.exp(row).sum()) for row in logits])
    return Z, y


@pytest.mark.parametrize("k", [2, 3])
@pytest.mark.parametrize("alpha", [1e-4, 0.1])
def test_newton_reaches_the_lbfgs_optimum(k, alpha):
    Z, y = _data(3000, k, seed=k)
    reference = minimize(_objective, np.zeros(4 * k + k - 1), args=(Z, y, k, alpha), jac=True,
                         method="L-BFGS-B", options={"gtol": 1e-10, "ftol": 1e-15, "maxiter": 5000})
    Z1 = np.column_stack([Z, np.ones(len(Z))])
    result = fit_multinomial(Z1, y, k, alpha, gtol=1e-9)
    assert result.converged and result.intercept[0] == 0.0
    np.testing.assert_allclose(result.coef, reference.x[:4 * k].reshape(4, k), atol=1e-6)
    np.testing.assert_allclose(result.intercept[1:], reference.x[4 * k:], atol=1e-6)
    assert result.loss == pytest.approx(reference.fun, abs=1e-10)


@pytest.mark.parametrize("k", [2, 3])
def test_a_warm_start_reaches_the_same_optimum_sooner(k):
    Z, y = _data(5000, k, seed=10 + k)
    Z1 = np.column_stack([Z, np.ones(len(Z))])
    cold = fit_multinomial(Z1, y, k, 0.01)
    nearby = fit_multinomial(Z1[:4000], y[:4000], k, 0.02)
    warm = fit_multinomial(Z1, y, k, 0.01, start=(nearby.coef, nearby.intercept))
    np.testing.assert_allclose(warm.coef, cold.coef, atol=1e-7)
    assert warm.converged and warm.n_iter <= cold.n_iter


def test_hessian_from_evenly_spaced_rows_still_converges_on_every_row(monkeypatch):
    """The Hessian only shapes the step: with it taken over a few rows the optimum (the
    gradient over all rows within gtol) is the same."""
    import msd.ml.newton as newton
    Z, y = _data(6000, 3, seed=7)
    Z1 = np.column_stack([Z, np.ones(len(Z))])
    full = fit_multinomial(Z1, y, 3, 0.01)
    monkeypatch.setattr(newton, "HESSIAN_ROWS", 500)
    sampled = fit_multinomial(Z1, y, 3, 0.01)
    assert sampled.converged
    np.testing.assert_allclose(sampled.coef, full.coef, atol=1e-7)
