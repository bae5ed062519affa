"""Newton's method for L2-regularised multinomial logistic regression on few features.

With d features and k classes there are only k(d+1) - 1 parameters (29 for msd's 9 features
and 3 outcomes), so the Hessian is a tiny matrix: an iteration is one pass over the rows for
probabilities and gradient, a Hessian and a Cholesky solve, and from zeros the optimum is
reached in a handful of iterations where L-BFGS needs dozens of passes. The Hessian is taken
over at most HESSIAN_ROWS evenly spaced rows (it only shapes the step; the gradient, and so
the optimum and the convergence test, always use every row), and a backtracking line search
keeps every step a descent.

The objective is the one msd.ml.models.LogisticModel documents: mean cross-entropy of
softmax(Z W + b) + alpha/2 |W|^2, with the first class's intercept fixed at 0 (the intercepts
are free, the weights penalised, so the optimum is unique). Pure numpy/scipy, no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.linalg import LinAlgError, cho_factor, cho_solve

HESSIAN_ROWS = 65_536
_ARMIJO = 1e-4
_MIN_STEP = 1e-10


@dataclass(frozen=True)
class NewtonResult:
    coef: np.ndarray          # (d, k)
    intercept: np.ndarray     # (k,), intercept[0] == 0
    converged: bool
    n_iter: int
    loss: float


def _loss(Z1: np.ndarray, y: np.ndarray, B: np.ndarray, alpha: float) -> tuple[float, np.ndarray]:
    """(objective, P) at B = [W; b] of shape (d + 1, k); P = softmax(Z W + b) by row."""
    logits = Z1 @ B
    true = logits[np.arange(len(y)), y]
    # row maximum and sum column by column: a reduction along a 3-wide axis is several times
    # slower than these whole-column operations
    top = logits[:, 0].copy()
    for column in range(1, logits.shape[1]):
        np.maximum(top, logits[:, column], out=top)
    logits -= top[:, None]
    np.exp(logits, out=logits)
    total = logits[:, 0].copy()
    for column in range(1, logits.shape[1]):
        total += logits[:, column]
    logits /= total[:, None]
    loss = float(np.mean(np.log(total) + top - true) + 0.5 * alpha * np.sum(B[:-1] ** 2))
    return loss, logits


def _gradient(Z1: np.ndarray, y: np.ndarray, P: np.ndarray, B: np.ndarray,
              alpha: float) -> np.ndarray:
    """d objective / dB, shape (d + 1, k). Turns P into the residual P - Y in place."""
    P[np.arange(len(y)), y] -= 1.0
    G = Z1.T @ P
    G /= len(y)
    G[:-1] += alpha * B[:-1]
    return G


def _hessian(Z1: np.ndarray, P: np.ndarray, alpha: float) -> np.ndarray:
    """The Hessian over vec(B.T) (class-major blocks of d + 1: weights then intercept), from
    the rows given. Block (a, c) is mean_i p_ia (delta_ac - p_ic) z_i z_i^T with z_i = (x_i, 1):
    the diagonal part from Z1^T A and the rest from A^T A, A = rows [p_i1 z_i, ..., p_ik z_i]."""
    n, m = Z1.shape
    k = P.shape[1]
    A = (P[:, :, None] * Z1[:, None, :]).reshape(n, k * m)
    H = -(A.T @ A)
    diagonal = Z1.T @ A
    for a in range(k):
        H[a * m:(a + 1) * m, a * m:(a + 1) * m] += diagonal[:, a * m:(a + 1) * m]
    H /= n
    penalised = np.flatnonzero(np.arange(k * m) % m != m - 1)    # weights, not intercepts
    H[penalised, penalised] += alpha
    return H


def fit_multinomial(Z1: np.ndarray, y: np.ndarray, k: int, alpha: float, *, max_iter: int = 100,
                    gtol: float = 1e-8, start: tuple[np.ndarray, np.ndarray] | None = None
                    ) -> NewtonResult:
    """Minimise the objective for the design Z1 (standardised features and a last column of
    ones, for the intercepts) and class indices y in 0..k-1. `start` = (coef (d, k), intercept (k,))
    warm-starts. Converged when every gradient entry is within gtol."""
    n, m = Z1.shape
    B = np.zeros((m, k))
    if start is not None:
        B[:-1], B[-1] = start[0], start[1] - start[1][0]
    free = np.ones(m * k, dtype=bool)
    free[m - 1] = False                           # class 0's intercept (class-major layout)
    sample = slice(None, None, max(1, -(-n // HESSIAN_ROWS)))     # evenly spaced rows
    loss, P = _loss(Z1, y, B, alpha)
    for iteration in range(max_iter + 1):
        P_sample = P[sample].copy()
        g = _gradient(Z1, y, P, B, alpha).T.ravel()[free]
        if np.max(np.abs(g)) <= gtol or iteration == max_iter:
            break
        H = _hessian(Z1[sample], P_sample, alpha)[np.ix_(free, free)]
        direction = np.zeros(m * k)
        direction[free] = _newton_direction(H, g)
        loss, P, B, moved = _line_search(Z1, y, B, alpha, loss, direction.reshape(k, m).T,
                                         float(g @ direction[free]))
        if not moved:      # no decrease representable in float64: as close as it gets
            break
    converged = bool(np.max(np.abs(g)) <= gtol)
    return NewtonResult(B[:-1].copy(), B[-1].copy(), converged, iteration, loss)


def _newton_direction(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    try:
        return -cho_solve(cho_factor(H), g)
    except LinAlgError:
        # Only the unpenalised intercepts can make H singular (a class with ~0 probability
        # everywhere): a small ridge keeps the step a descent direction.
        ridge = 1e-10 * max(1.0, float(np.abs(np.diag(H)).max()))
        return -cho_solve(cho_factor(H + ridge * np.eye(len(g))), g)


def _line_search(Z1, y, B, alpha, loss, direction, slope):
    """Backtracking (Armijo) from the full Newton step: (loss, P, B, moved)."""
    t = 1.0
    while t >= _MIN_STEP:
        candidate = B + t * direction
        new_loss, P = _loss(Z1, y, candidate, alpha)
        # the last term: near the optimum a decrease can be below float64's resolution
        if new_loss <= loss + _ARMIJO * t * slope + 1e-15 * abs(loss):
            return new_loss, P, candidate, True
        t *= 0.5
    _, P = _loss(Z1, y, B, alpha)
    return loss, P, B, False
