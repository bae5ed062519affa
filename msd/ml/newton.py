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
    if k == 2:
        return _fit_two_classes(Z1, y, alpha, max_iter=max_iter, gtol=gtol, start=start)
    n, m = Z1.shape
    B = np.zeros((m, k))
    if start is not None:
        B[:-1], B[-1] = start[0], start[1] - start[1][0]
    else:                              # weights 0, intercepts at the class frequencies' logits
        share = np.maximum(np.bincount(y, minlength=k) / n, 1e-12)
        B[-1] = np.log(share / share[0])
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
        loss, P, B, moved = _line_search(lambda at: _loss(Z1, y, at, alpha), B, loss,
                                         direction.reshape(k, m).T, float(g @ direction[free]))
        if not moved:      # no decrease representable in float64: as close as it gets
            break
    converged = bool(np.max(np.abs(g)) <= gtol)
    return NewtonResult(B[:-1].copy(), B[-1].copy(), converged, iteration, loss)


def _fit_two_classes(Z1: np.ndarray, y: np.ndarray, alpha: float, *, max_iter: int,
                     gtol: float, start: tuple[np.ndarray, np.ndarray] | None) -> NewtonResult:
    """The same objective with two classes, solved in its binary form.

    softmax over (z W0, z W1 + b1) is sigmoid(z w + b1) with w = W1 - W0, and for a given w the
    penalty alpha/2 (|W0|^2 + |W1|^2) is least at W1 = -W0 = w/2, where it is alpha/4 |w|^2: so
    the optimum is the binary logistic regression with penalty alpha/2 on w, mapped back. Its
    gradient entries are those of the multinomial form (up to sign), so the same gtol test
    applies. Half the parameters and one column of probabilities: about half the cost."""
    n, m = Z1.shape
    half = alpha / 2.0
    target = y.astype(np.float64)
    if start is None:                  # weights 0, intercept at the class frequencies' logit
        theta = np.zeros(m)
        share = float(np.clip(target.mean(), 1e-12, 1 - 1e-12))
        theta[-1] = np.log(share / (1.0 - share))
    else:
        theta = np.append(start[0][:, 1] - start[0][:, 0], start[1][1] - start[1][0])
    penalised = np.ones(m)
    penalised[-1] = 0.0

    def loss_at(point: np.ndarray) -> tuple[float, tuple[np.ndarray, np.ndarray]]:
        margin = Z1 @ point
        # log-loss = softplus(margin) - y margin, softplus(m) = max(m, 0) + log1p(exp(-|m|));
        # exp(-|m|) is kept for the probabilities (in place: few temporaries of n floats)
        shrink = np.abs(margin)
        np.negative(shrink, out=shrink)
        np.exp(shrink, out=shrink)
        loss = np.log1p(shrink)
        loss += np.maximum(margin, 0.0, out=np.empty_like(margin))
        total = float(loss.sum() - target @ margin) / n
        return total + 0.5 * half * point[:-1] @ point[:-1], (margin, shrink)

    sample = slice(None, None, max(1, -(-n // HESSIAN_ROWS)))
    loss, (margin, shrink) = loss_at(theta)
    for iteration in range(max_iter + 1):
        p = np.where(margin >= 0, 1.0, shrink)
        p /= 1.0 + shrink                                              # sigmoid(margin)
        residual = p - target
        g = Z1.T @ residual / n + half * penalised * theta
        if np.max(np.abs(g)) <= gtol or iteration == max_iter:
            break
        ps, Zs = p[sample], Z1[sample]
        H = Zs.T @ (Zs * (ps * (1.0 - ps))[:, None]) / len(ps)
        H[np.diag_indices(m)] += half * penalised
        step = _newton_direction(H, g)
        loss, (margin, shrink), theta, moved = _line_search(loss_at, theta, loss, step,
                                                            float(g @ step))
        if not moved:
            break
    w, b = theta[:-1], theta[-1]
    return NewtonResult(np.column_stack([-w / 2.0, w / 2.0]), np.array([0.0, b]),
                        bool(np.max(np.abs(g)) <= gtol), iteration, loss)


def _newton_direction(H: np.ndarray, g: np.ndarray) -> np.ndarray:
    try:
        return -cho_solve(cho_factor(H), g)
    except LinAlgError:
        # Only the unpenalised intercepts can make H singular (a class with ~0 probability
        # everywhere): a small ridge keeps the step a descent direction.
        ridge = 1e-10 * max(1.0, float(np.abs(np.diag(H)).max()))
        return -cho_solve(cho_factor(H + ridge * np.eye(len(g))), g)


def _line_search(loss_at, point: np.ndarray, loss: float, direction: np.ndarray, slope: float):
    """Backtracking (Armijo) from the full Newton step: (loss, aux, point, moved), where
    loss_at(point) -> (loss, aux) and aux is what the next gradient needs."""
    t = 1.0
    while t >= _MIN_STEP:
        candidate = point + t * direction
        new_loss, aux = loss_at(candidate)
        # the last term: near the optimum a decrease can be below float64's resolution
        if new_loss <= loss + _ARMIJO * t * slope + 1e-15 * abs(loss):
            return new_loss, aux, candidate, True
        t *= 0.5
    return (loss, loss_at(point)[1], point, False)
