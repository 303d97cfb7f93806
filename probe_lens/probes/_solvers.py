"""Solvers shared by the probes: preconditioned L-BFGS for L2 logistic regression.

Objective (per unit of data, the same minimiser as sklearn's ``C * sum(log-loss) + ||w||^2 / 2``)::

    f(w, b) = mean_i log(1 + exp(-s_i (z_i @ w + b))) + ||w||^2 / (2 C n)        s_i = 2 y_i - 1

Plain L-BFGS on activations is slow to converge when C is large (sklearn's default stops ~0.98
cosine away from the optimum on d=1152). We precondition with the Cholesky factor of the logistic
Hessian at w=0, ``H0 = [Z 1]^T [Z 1] / (4n) + diag(1/(C n), 0)``, and run scipy's L-BFGS-B in the
whitened coordinates ``v = L^T [w; b]``: about 10 iterations reach ~1e-9 of the optimum. The Gram
matrix costs one n*d^2 product (float32), done once per dataset and reused across C values.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import scipy.optimize
import torch
import torch.nn.functional as F
from threadpoolctl import threadpool_limits

# Rows used for the preconditioner's Gram matrix: a subsample is enough for a preconditioner.
_GRAM_ROWS_PER_DIM = 4


# Below this many multiply-adds per gradient, one thread is faster: the solver's small ops
# otherwise spend their time in thread hand-offs (60x slower measured on a loaded 2-core box).
_SMALL_WORK = 4_000_000


@contextmanager
def compute_threads(work: float) -> Iterator[None]:
    """Run small problems single-threaded (torch and BLAS); restore the thread counts after."""
    if work >= _SMALL_WORK:
        yield
        return
    previous = torch.get_num_threads()
    with threadpool_limits(limits=1):
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


@dataclass
class LogisticSolution:
    w: np.ndarray  # float64 [d]
    b: float
    n_iter: int
    converged: bool


def gram_with_intercept(Z: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """``[Z 1]^T [Z 1] / n`` in float64 [d+1, d+1], from at most 4d rows (float32 product)."""
    n, d = Z.shape
    rows = max(_GRAM_ROWS_PER_DIM * d, 2048)
    if n > rows:
        gen = torch.Generator().manual_seed(seed)
        Z = Z[torch.randperm(n, generator=gen)[:rows]]
    m = Z.shape[0]
    Z32 = Z.to(torch.float32)
    G = torch.empty(d + 1, d + 1, dtype=torch.float64)
    G[:d, :d] = (Z32.T @ Z32).to(torch.float64)
    col = Z32.sum(0).to(torch.float64)
    G[:d, d] = col
    G[d, :d] = col
    G[d, d] = m
    return G / m


def preconditioner(gram: torch.Tensor, lam: float) -> torch.Tensor:
    """Lower Cholesky factor L of ``gram / 4 + diag(lam, 0)`` (+ a tiny jitter for safety)."""
    d1 = gram.shape[0]
    H = gram / 4.0
    idx = torch.arange(d1 - 1)
    H[idx, idx] += lam
    jitter = 1e-8 * float(torch.diagonal(H).mean())
    H += jitter * torch.eye(d1, dtype=H.dtype)
    L, info = torch.linalg.cholesky_ex(H)
    if int(info) != 0:  # fall back to a diagonal preconditioner
        L = torch.diag(torch.sqrt(torch.diagonal(H).clamp_min(1e-12)))
    return L


def fit_logistic(
    Z: torch.Tensor,
    y: torch.Tensor,
    C: float,
    *,
    gram: torch.Tensor | None = None,
    w0: np.ndarray | None = None,
    b0: float = 0.0,
    tol: float = 1e-6,
    max_iter: int = 500,
    sample_weight: torch.Tensor | None = None,
) -> LogisticSolution:
    """Minimise ``f(w, b)`` above. Z: float64 [n, d] (standardised), y: float64 {0,1} [n];
    ``sample_weight`` (float64 [n], default ones) multiplies each row's log-loss, as sklearn's
    ``sample_weight`` / ``class_weight`` do (the penalty is unchanged)."""
    n, d = Z.shape
    lam = 1.0 / (C * n)
    sw = torch.ones(n, dtype=torch.float64) if sample_weight is None else sample_weight.to(torch.float64)
    if gram is None:
        gram = gram_with_intercept(Z)
    L = preconditioner(gram, lam)
    LT = L.T.contiguous()

    def to_theta(v: torch.Tensor) -> torch.Tensor:  # theta = L^-T v
        return torch.linalg.solve_triangular(LT, v[:, None], upper=True)[:, 0]

    def fun(v_np: np.ndarray) -> tuple[float, np.ndarray]:
        theta = to_theta(torch.from_numpy(v_np))
        w = theta[:d]
        z = torch.addmv(theta[d].expand(n), Z, w)
        loss = (sw @ (F.softplus(z) - y * z)) / n + 0.5 * lam * (w @ w)
        r = sw * (torch.sigmoid(z) - y) / n
        g = torch.empty(d + 1, dtype=torch.float64)
        g[:d] = r @ Z + lam * w
        g[d] = r.sum()
        gv = torch.linalg.solve_triangular(L, g[:, None], upper=False)[:, 0]
        return float(loss), gv.numpy()

    theta0 = torch.zeros(d + 1, dtype=torch.float64)
    if w0 is not None:
        theta0[:d] = torch.as_tensor(w0, dtype=torch.float64)
        theta0[d] = float(b0)
    v0 = (LT @ theta0).numpy()
    res = scipy.optimize.minimize(
        fun,
        v0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "gtol": tol, "ftol": 1e-15, "maxcor": 20},
    )
    theta = to_theta(torch.from_numpy(res.x)).numpy()
    return LogisticSolution(w=theta[:d].copy(), b=float(theta[d]), n_iter=int(res.nit), converged=bool(res.success))


def platt_scale(s: np.ndarray, y: np.ndarray, *, C: float = 1e4) -> tuple[float, float]:
    """1-D logistic calibration ``P(y=1) = sigmoid(a * s + c)``; returns (a, c)."""
    std = float(s.std()) or 1.0
    Z = torch.as_tensor((s / std)[:, None], dtype=torch.float64)
    with compute_threads(len(s)):
        sol = fit_logistic(Z, torch.as_tensor(y, dtype=torch.float64), C, tol=1e-10, max_iter=200)
    return float(sol.w[0]) / std, sol.b
