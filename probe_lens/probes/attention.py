"""Attention-pooled probe: a learned query weighs the response tokens, a linear readout scores the mix."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float

from probe_lens.probes._solvers import compute_threads
from probe_lens.probes.base import ArrayLike, autocast_off, compute_dtype, standardization
from probe_lens.probes.tokens import TokenModule, TokenProbe

# Initial query norm (standardised space). Near 0 the probe starts as a mean-pooled one and the
# readout's direction pulls the query towards the tokens carrying it; a unit-norm random query
# instead fixed attention on a random direction and stalled in a local optimum (AUROC ~0.5 vs ~0.97
# on tests' one-token task with 48 tokens).
QUERY_INIT_SCALE = 0.01


class AttentionPoolModule(TokenModule):
    """``softmax_t(acts_t @ query)``-weighted mean of the masked tokens, then ``@ weight + bias``."""

    def __init__(self, query: np.ndarray, weight: np.ndarray, bias: float, *, trainable: bool = False) -> None:
        super().__init__(weight, bias, trainable=trainable)
        self.query = torch.nn.Parameter(torch.as_tensor(np.asarray(query, dtype=np.float64)), requires_grad=trainable)

    def attention(self, acts: torch.Tensor, mask: torch.Tensor) -> Float[torch.Tensor, "batch pos"]:
        """Softmax weights over the masked tokens (0 elsewhere), in the compute dtype."""
        compute = compute_dtype(acts)
        with autocast_off(acts.device):
            q = self.query.to(device=acts.device, dtype=compute)
            scores = (acts.to(compute) @ q).masked_fill(~mask, float("-inf"))
            return torch.softmax(scores, dim=-1)

    def pool_logits(self, acts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # the readout is linear and the weights sum to 1: (sum_t a_t x_t) @ w + b == sum_t a_t (x_t @ w + b), which
        # never builds the [batch, pos, d_model] product (the fit's cost was dominated by it)
        a = self.attention(acts, mask)
        with autocast_off(acts.device):
            z = self.token_logits(acts.to(a.dtype)).masked_fill(~mask, 0.0)  # padding may hold NaN
            return (a * z).sum(dim=-1)


class AttentionProbe(TokenProbe):
    """Attention-pooled probe: ``logit = (sum_t a_t x_t) @ coef_raw_ + bias_``, ``a = softmax_t(x_t @ query_)``.

    ``a`` runs over a sequence's real tokens only; on one token (``[n, d_model]`` input) it is 1
    and the probe is a linear probe. Fit by full-batch L-BFGS (torch, CPU, float64) on standardised
    tokens, minimising ``mean_i logloss_i + (||w||^2 + ||q||^2) / (2 C n)`` (intercept unpenalised,
    ``LogisticProbe``'s scaling), from ``w = 0`` and a small query drawn from ``random_state``: the
    same data and seed give the same probe. The objective is not convex: starting near uniform
    attention (mean pooling), the readout learns the mean-pooled direction, which then pulls the
    query towards the tokens carrying it (``QUERY_INIT_SCALE``). The fitted standardisation is folded into raw space (softmax ignores the shift).

    Args:
        C: inverse L2 strength (float > 0) on readout and query. standardize: standardise token
            features while fitting. tol: gradient tolerance. max_iter: L-BFGS iterations.
        random_state: seed of the query's initial draw.
        pos_label, model_name, hook, pooling, label: see ``BaseProbe``.

    Fitted: ``query_`` (float64 [d_model], raw space), ``coef_raw_``/``bias_``/``direction_`` (the
    readout), ``mean_``/``scale_``, ``n_iter_``, ``converged_``, ``n_fit_`` (sequences),
    ``n_tokens_fit_``, ``classes_``.
    """

    _extra_state = ("query_", "n_iter_", "converged_", "n_tokens_fit_")
    query_: np.ndarray

    def __init__(
        self,
        C: float = 1.0,
        *,
        standardize: bool = True,
        tol: float = 1e-6,
        max_iter: int = 300,
        random_state: int = 0,
        pos_label: Any = None,
        model_name: str | None = None,
        hook: str | None = None,
        pooling: str | None = None,
        label: str = "positive",
    ) -> None:
        super().__init__(pos_label=pos_label, model_name=model_name, hook=hook, pooling=pooling, label=label)
        self.C = C
        self.standardize = standardize
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state

    def _check_params(self) -> None:
        if isinstance(self.C, bool) or not isinstance(self.C, (int, float)) or not float(self.C) > 0:
            raise ValueError(f"C must be a positive float, got {self.C!r}")
        if not float(self.tol) > 0 or int(self.max_iter) < 1:
            raise ValueError(f"tol must be > 0 and max_iter >= 1, got {self.tol!r}, {self.max_iter!r}")

    def _fit_tokens(self, acts: np.ndarray, mask: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, float]:
        self._check_params()
        self.mean_, self.scale_ = standardization(acts[mask], self.standardize)
        Z = torch.from_numpy(np.where(mask[..., None], (acts - self.mean_) / self.scale_, 0.0))
        with compute_threads(2 * Z.numel()):
            module = self._train(Z, torch.from_numpy(mask), torch.from_numpy(y.astype(np.float64)))
        q, w, b = (p.detach().numpy() for p in (module.query, module.weight, module.bias))
        self.query_ = q / self.scale_
        coef = w / self.scale_
        return coef, float(b) - float(self.mean_ @ coef)

    def _train(self, Z: torch.Tensor, mask: torch.Tensor, y: torch.Tensor) -> AttentionPoolModule:
        n, _, d = Z.shape
        gen = torch.Generator().manual_seed(int(self.random_state))
        q0 = torch.randn(d, generator=gen, dtype=torch.float64) * (QUERY_INIT_SCALE / np.sqrt(d))
        module = AttentionPoolModule(q0.numpy(), np.zeros(d), 0.0, trainable=True)
        lam = 1.0 / (float(self.C) * n)
        params = list(module.parameters())
        opt = torch.optim.LBFGS(
            params,
            max_iter=int(self.max_iter),
            tolerance_grad=float(self.tol),
            tolerance_change=1e-15,
            history_size=20,
            line_search_fn="strong_wolfe",
        )

        def closure() -> torch.Tensor:
            opt.zero_grad()
            z = module.pool_logits(Z, mask)
            l2 = module.weight.square().sum() + module.query.square().sum()
            loss = F.binary_cross_entropy_with_logits(z, y) + 0.5 * lam * l2
            loss.backward()
            return loss

        opt.step(closure)
        grad = torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None])
        self.n_iter_ = int(opt.state[params[0]].get("n_iter", 0))
        self.converged_ = bool(grad.abs().max() <= float(self.tol))
        if not self.converged_:
            warnings.warn(
                f"AttentionProbe did not converge in {self.max_iter} L-BFGS iterations (C={self.C:g}); "
                "lower C or raise max_iter.",
                RuntimeWarning,
                stacklevel=4,
            )
        return module

    def as_module(self, *, trainable: bool = False) -> AttentionPoolModule:
        """An ``AttentionPoolModule`` with this probe's raw-space query and readout (frozen by default)."""
        self._check_fitted()
        return AttentionPoolModule(self.query_, self.coef_raw_, self.bias_, trainable=trainable)

    def attention(self, X: Float[ArrayLike, "n pos d_model"]) -> Float[np.ndarray, "n pos"]:
        """Each sequence's softmax weights over its tokens, float64 [n, pos] (0 at padding)."""
        acts, mask = self._token_data(X)
        with torch.no_grad():
            return self.as_module().attention(torch.from_numpy(acts), torch.from_numpy(mask)).numpy()
