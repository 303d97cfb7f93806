"""The probe suite: the probes a study tracks in every cell (names and roles), fitting them on a seed's
probe-fit rows (class-weighted logistic probes on every row, or unweighted on class-balanced rows:
``probes.fit_rows``; the mass-mean direction, a difference of class means, is the same either way), saving and loading them, and their noise floors (how far a drift cosine moves from 1 by
refitting noise alone).

Token probes (``probes.token_probes``: ``maxpool``, ``attention``, built by :data:`TOKEN_FAMILIES`) read the
response tokens themselves, not a pooled vector: they are fit, saved, reported and floored on the probe pool's
token activations at the trained-against layer (``tokens``: float ``[n_rows, width, d_model]``, NaN-padded, rows
in the pool's order; :func:`~probe_lens.experiments.study_data.pool_token_acts`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from probe_lens._io import atomic_write
from probe_lens.data.builder import ActivationDataset
from probe_lens.experiments.config import ProbeSetup
from probe_lens.experiments.prompt_plan import SeedSplit
from probe_lens.probes import (
    AttentionProbe,
    DiverseProbeEnsemble,
    LogisticProbe,
    MassMeanProbe,
    MaxPooledLogisticProbe,
    TokenProbe,
    load_probe,
    save_probe,
)
from probe_lens.probes.metrics import cosine as _cos
from probe_lens.training.metric_keys import member_name

REPORT = "report.csv"

TOKEN_FAMILIES: dict[str, Callable[[ProbeSetup, float, str | None, dict[str, Any]], TokenProbe]] = {
    "maxpool": lambda p, C, class_weight, meta: MaxPooledLogisticProbe(
        C=C, standardize=p.standardize, class_weight=class_weight, **meta
    ),
    "attention": lambda p, C, class_weight, meta: AttentionProbe(C=C, standardize=p.standardize, **meta),
}
"""``probes.token_probes`` family -> ``(setup, C, class_weight, metadata) -> unfitted token probe``. The
attention probe takes no class weights (its L-BFGS objective is unweighted; AUROCs ignore the intercept)."""


class ProbeSuite:
    """The tracked probes of a study with probe settings ``setup``.

    Args:
        setup: the study's ``probes`` section.
        pooling: the study's ``data.pooling`` (recorded in each probe's metadata).
        ci_method: how the on-policy AUROC intervals of ``report.csv`` are computed.
        label: the behaviour's word for the positive class (recorded in each probe's metadata).
    """

    def __init__(self, setup: ProbeSetup, pooling: str, ci_method: str, label: str = "positive") -> None:
        self.setup = setup
        self.pooling = pooling
        self.ci_method = ci_method
        self.label = label

    # ---- names ---------------------------------------------------------------------------
    def names(self) -> dict[str, list[str]]:
        """``single`` / ``ensemble``: the trained-against candidates; ``heldout``: never trained against
        (``heldout_members``: later orthogonal-ensemble members, noisy, kept out of headline averages);
        ``token``: the token probes (``<family>_L<layer>``), outside the held-out average, and under each family's
        own key (``maxpool``, ``attention``) the probe a cell with that signal trains against."""
        p = self.setup
        members = [f"ens_heldout{i}_L{p.layer}" for i in range(p.n_heldout_members)]
        return {
            "single": [f"logistic_L{p.layer}"],
            "ensemble": [f"ensemble{p.n_ensemble}_L{p.layer}"],
            "heldout": [f"massmean_L{p.layer}", *[f"logistic_L{L}" for L in p.heldout_layers], *members],
            "heldout_members": members,
            "token": [f"{family}_L{p.layer}" for family in p.token_probes],
            **{family: [f"{family}_L{p.layer}"] for family in p.token_probes},  # a token signal's probe
        }

    def tracked(self) -> list[str]:
        """Every pre-training probe, measured in every cell."""
        n = self.names()
        return n["single"] + n["ensemble"] + n["heldout"] + n["token"]

    def massmean_name(self) -> str:
        return f"massmean_L{self.setup.layer}"

    # ---- estimators ------------------------------------------------------------------------
    def class_weight(self) -> str | None:
        """Logistic probes weigh each class equally on every probe-fit row (``probes.fit_rows: weighted``), or
        fit unweighted on class-balanced rows (``balanced``)."""
        return "balanced" if self.setup.fit_rows == "weighted" else None

    def logistic(self, hook: str | None = None, **meta) -> LogisticProbe:
        p = self.setup
        return LogisticProbe(C=p.C, standardize=p.standardize, class_weight=self.class_weight(), hook=hook, **meta)

    def full_ensemble(self, hook: str, **meta) -> DiverseProbeEnsemble:
        """The ensemble the trained-against members and the held-out members are cut from."""
        p = self.setup
        return DiverseProbeEnsemble(
            n_probes=p.n_ensemble + p.n_heldout_members,
            method=p.ensemble_method,
            base=self.logistic(label=self.label),
            hook=hook,
            progress=False,
            **meta,
        )

    def retrain_factory(self) -> Callable[[], Any]:
        """``() -> unfitted estimator`` of the probes re-fit on the current model at each telemetry step."""
        p = self.setup
        if p.retrain_estimator == "massmean":
            return lambda: MassMeanProbe(covariance=p.massmean_covariance)
        return lambda: LogisticProbe(C=p.C, standardize=p.standardize, class_weight=self.class_weight())

    def refit_templates(self, probes: dict[str, Any], trained: list[str], hook: str) -> dict[str, tuple[Any, int]]:
        """Telemetry's ``refit_templates``: each held-out member's ensemble (unfitted, at ``hook``) and index."""
        p = self.setup
        model_name = probes[trained[0] if trained else self.tracked()[0]].metadata.model_name
        full = self.full_ensemble(hook, model_name=model_name, pooling=self.pooling, label=self.label)
        members = self.names()["heldout_members"]
        return {name: (full, p.n_ensemble + i) for i, name in enumerate(members) if name not in trained}

    # ---- fit, save, load -------------------------------------------------------------------
    def fit(
        self, ds: ActivationDataset, split: SeedSplit, hooks: Mapping[int, str], tokens: Any = None
    ) -> dict[str, Any]:
        """Every tracked probe fit on ``split``'s probe-fit rows of ``ds`` (``hooks``: layer -> hook name;
        ``tokens``: the pool's token activations at ``hooks[layer]``, needed when ``probes.token_probes``)."""
        p, n = self.setup, self.names()
        meta = dict(model_name=ds.meta["model_name"], pooling=self.pooling, label=self.label)
        hook = hooks[p.layer]
        y = _labels(ds)
        Xf, yf = _pooled(ds, hook, split.fit_rows), y[split.fit_rows]
        probes: dict[str, Any] = {n["single"][0]: self.logistic(hook, **meta).fit(Xf, yf)}
        full = self.full_ensemble(hook, **meta).fit(Xf, yf)
        probes[n["ensemble"][0]] = full.subset(list(range(p.n_ensemble)))
        probes[self.massmean_name()] = MassMeanProbe(covariance=p.massmean_covariance, hook=hook, **meta).fit(Xf, yf)
        for L in p.heldout_layers:
            probes[f"logistic_L{L}"] = self.logistic(hooks[L], **meta).fit(_pooled(ds, hooks[L], split.fit_rows), yf)
        for i, name in enumerate(n["heldout_members"]):
            probes[name] = full.member(p.n_ensemble + i)
        probes.update(self.fit_token_probes(tokens, split.fit_rows, yf, hook, probes[n["single"][0]].C_, meta))
        return probes

    def fit_token_probes(
        self, tokens: Any, rows: np.ndarray, y: np.ndarray, hook: str, C: float, meta: dict[str, Any]
    ) -> dict[str, Any]:
        """``{name: token probe}`` of every ``probes.token_probes`` family fit on ``tokens[rows]`` (C: the single
        logistic probe's, so ``probes.C: cv`` gives them the cross-validated value)."""
        names = self.names()["token"]
        if not names:
            return {}
        if tokens is None:
            raise ValueError(f"token probes {names} need the pool's token activations (tokens=...)")
        meta = {**meta, "pooling": None}  # they read every token; no pooling applies
        cw = self.class_weight()
        return {
            name: TOKEN_FAMILIES[family](self.setup, float(C), cw, {**meta, "hook": hook}).fit(_tokens(tokens, rows), y)
            for name, family in zip(names, self.setup.token_probes)
        }

    def save(
        self, probes: dict[str, Any], ds: ActivationDataset, split: SeedSplit, folder: Path, tokens: Any = None
    ) -> None:
        """Save every tracked probe under ``folder`` and ``report.csv``: each probe's on-policy AUROC (with an
        interval); ``tokens``: the pool's token activations (the token probes read them)."""
        from probe_lens.experiments.stats import auroc_ci

        n, rows = self.names(), []
        yo = _labels(ds)[split.onpolicy_rows]
        prompts = ds.examples["prompt_id"].to_numpy()[split.onpolicy_rows]  # clusters: continuations of a prompt
        for name in self.tracked():
            probe = probes[name]
            h = probe.metadata.hook
            on = split.onpolicy_rows
            X = _tokens(tokens, on) if isinstance(probe, TokenProbe) else _pooled(ds, h, on)
            s = np.asarray(probe.predict_proba(X))[:, 1]
            a, lo, hi = auroc_ci(yo, s, method=self.ci_method, clusters=prompts)
            role = "trained-against candidate" if name in n["single"] + n["ensemble"] else "held out"
            role = "held out (token)" if name in n["token"] else role
            rows.append(
                {
                    "probe": name,
                    "role": role,
                    "hook": h,
                    "type": type(probe).__name__,
                    "onpolicy_auroc": a,
                    "ci_low": lo,
                    "ci_high": hi,
                }
            )
            save_probe(probe, folder / name, overwrite=True)  # a re-fit after an interrupted save replaces it
        atomic_write(folder / REPORT, lambda f: pd.DataFrame(rows).to_csv(f, index=False))

    def saved(self, folder: Path) -> bool:
        """Whether ``folder`` holds every tracked probe and the report (a finished :meth:`save`)."""
        return all((folder / n / "probe.json").exists() for n in self.tracked()) and (folder / REPORT).exists()

    def load(self, folder: Path) -> dict[str, Any]:
        return {n: load_probe(folder / n) for n in self.tracked()}

    # ---- noise floors ----------------------------------------------------------------------
    def noise_floor(
        self, ds: ActivationDataset, split: SeedSplit, probes: dict[str, Any], seed: int, tokens: Any = None
    ) -> dict[str, dict[str, float]]:
        """Each probe's cosine with its own estimator re-fit on bootstrap resamples of its probe-fit rows
        (``mean``, ``p05``, ``min``, ``n`` per probe; ensemble members ``<probe>/m<i>``; token probes re-fit on
        ``tokens`` of the resampled rows)."""
        y = _labels(ds)
        rng = np.random.default_rng(50_000 + seed)
        pos, neg = split.fit_rows[y[split.fit_rows] == 1], split.fit_rows[y[split.fit_rows] == 0]
        cosines: dict[str, list[float]] = {}
        for _ in range(self.setup.noise_floor_resamples):
            rows = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
            for key, value in self._resample_cosines(ds, probes, rows, y[rows], tokens):
                cosines.setdefault(key, []).append(value)
        return {
            k: {"mean": float(np.mean(v)), "p05": float(np.quantile(v, 0.05)), "min": float(np.min(v)), "n": len(v)}
            for k, v in cosines.items()
        }

    def _resample_cosines(
        self, ds: ActivationDataset, probes: dict[str, Any], rows: np.ndarray, y: np.ndarray, tokens: Any = None
    ) -> list[tuple[str, float]]:
        """``(name, cosine)`` of each tracked probe (each member of the ensemble) with its re-fit on ``rows``."""
        from sklearn.base import clone

        n, k = self.names(), self.setup.n_ensemble
        out: list[tuple[str, float]] = []
        full = None
        for name in self.tracked():
            probe = probes[name]
            if isinstance(probe, TokenProbe):
                out.append((name, _cos(probe.direction_, clone(probe).fit(_tokens(tokens, rows), y).direction_)))
                continue
            Xb = ds.acts[probe.metadata.hook][torch.as_tensor(rows)].numpy()
            if name in n["heldout_members"] or name in n["ensemble"]:
                if full is None:
                    full = self.full_ensemble(probe.metadata.hook).fit(Xb, y)
                if name in n["ensemble"]:
                    pairs = [(member_name(name, j), probe.member(j), j) for j in range(min(len(probe.members_), k))]
                else:
                    pairs = [(name, probe, k + n["heldout_members"].index(name))]
                out += [(key, _cos(o.direction_, full.member(i).direction_)) for key, o, i in pairs]
            else:
                out.append((name, _cos(probe.direction_, clone(probe).fit(Xb, y).direction_)))
        return out


def _labels(ds: ActivationDataset) -> np.ndarray:
    return ds.examples["label"].to_numpy().astype(np.int64)


def _pooled(ds: ActivationDataset, hook: str, rows: np.ndarray) -> np.ndarray:
    """Pooled activations ``[len(rows), d_model]`` of the dataset's ``rows`` at ``hook``."""
    return ds.acts[hook][torch.as_tensor(rows)].numpy()


def _tokens(tokens: Any, rows: np.ndarray) -> np.ndarray:
    """Token activations ``[len(rows), width, d_model]`` (NaN-padded) of the pool's ``rows``, trailing columns
    that are padding in every chosen row dropped."""
    if tokens is None:
        raise ValueError("token probes need the pool's token activations (tokens=...)")
    X = torch.as_tensor(tokens)[torch.as_tensor(rows)]
    real = ~torch.isnan(X).all(dim=2)
    width = int(real.sum(dim=1).max()) if len(X) else 0
    return X[:, :width].numpy()
