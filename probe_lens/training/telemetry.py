"""Drift telemetry: do the probes still work on the model being trained, and how has the geometry moved?

Every measurement reads pooled activations of the *current* model on a fixed labelled drift set and
returns flat metrics with stable names::

    probe/auroc_frozen/<name>          AUROC of a trained-against probe (frozen weights)
    probe/auroc_heldout/<name>         AUROC of a held-out probe (fit before training, never trained against)
    probe/auroc_retrained/<hook>       AUROC of a probe re-fit on the current activations (fit half -> eval half)
    drift/cosine/<name>                cosine(original probe direction, the direction of the same estimator
                                       re-fit on the current activations)
    geometry/<hook>/mean_diff_norm     ||mean(toxic) - mean(clean)||
    geometry/<hook>/mean_diff_cos_orig cosine(mean difference, original direction at that hook)
    geometry/<hook>/proj_toxic         mean(toxic) . original direction  (proj_<positive class> in general)
    geometry/<hook>/proj_clean         mean(clean) . original direction  (proj_<negative class>)
    geometry/<hook>/resid_norm         mean L2 norm of the pooled activations
    geometry/<hook>/pca_var_top<k>     variance fraction of the top-k principal components

Ensemble members are named ``<name>/m<i>``. AUROCs are measured on the evaluation part of the drift
set; re-fit probes are fit on the other part. Extra evaluation-only sets (``eval_sets``, e.g. a curated
labelled text set) give the same AUROCs under ``<set>/auroc_frozen/<name>``, ``<set>/auroc_heldout/<name>``
and ``<set>/auroc_retrained/<hook>`` (the retrained probes are still fit on the drift set's fit rows).
Geometry is read on the evaluation rows only (rows no probe was fit on). A probe's drift cosine
compares it with a fresh copy of *the same estimator* (type and hyper-parameters, sklearn ``clone``) fit on the current activations:
member ``i`` of an ensemble with member ``i`` of the re-fit ensemble, so a mass-mean probe or an
orthogonal ensemble member is compared with its own kind, not with a logistic direction (a probe that
``clone`` cannot copy is compared with ``refit_factory()``). A probe cut out of a larger ensemble can
name that ensemble and its index in ``refit_templates``. A token probe (``TokenProbe``: max-pooled,
attention) reads the current model's response-token activations at its hook (:meth:`DriftTelemetry.token_activations`,
cached like the pooled ones) for its scores and its re-fit. The "original direction" at a hook is the one
given in ``reference_directions`` (pass the same ones to every run you compare); else the first
trained-against probe's (else the first held-out probe's) direction; at hooks without either it is
the class-mean difference at the first measurement (kept in ``state_dict`` for resumes).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from jaxtyping import Int

from probe_lens._common import metric_word
from probe_lens.activations import collect, collect_tokens, resolve_hooks
from probe_lens.models import Generation
from probe_lens.probes.metrics import auroc, cosine as _cos
from probe_lens.probes.tokens import TokenProbe
from probe_lens.training import metric_keys as K
from probe_lens.training.metric_keys import LABELS, retrained_score_name, score_key
from probe_lens.training.probes_util import FlatProbe, flatten_probes, named_probes

if TYPE_CHECKING:
    from probe_lens.data.builder import ActivationDataset


@dataclasses.dataclass
class DriftSet:
    """Fixed texts with binary labels (1 = toxic) on which telemetry reads the current model.

    ``pool_mask`` marks the positions pooled (normally the response tokens); ``is_eval`` marks the
    rows AUROCs are measured on (the others fit the re-fit probes).
    """

    tokens: Int[torch.Tensor, "n pos"]
    attention_mask: Int[torch.Tensor, "n pos"]
    pool_mask: Int[torch.Tensor, "n pos"]
    labels: np.ndarray
    is_eval: np.ndarray
    eval_only: bool = False
    """An evaluation-only set (every row is an eval row; nothing is fit on it)."""
    groups: np.ndarray | None = None
    """Each row's cluster id (its prompt, when a prompt has several continuations), for clustered
    intervals; None: every row independent."""

    def __post_init__(self) -> None:
        n = self.tokens.shape[0]
        self.labels = np.asarray(self.labels).astype(np.int64).reshape(-1)
        self.is_eval = np.asarray(self.is_eval, dtype=bool).reshape(-1)
        if self.attention_mask.shape != self.tokens.shape or self.pool_mask.shape != self.tokens.shape:
            raise ValueError("tokens, attention_mask and pool_mask must have the same [n, pos] shape")
        if len(self.labels) != n or len(self.is_eval) != n:
            raise ValueError(f"{len(self.labels)} labels / {len(self.is_eval)} eval flags for {n} texts")
        if self.groups is not None:
            self.groups = np.asarray(self.groups).reshape(-1)
            if len(self.groups) != n:
                raise ValueError(f"{len(self.groups)} group ids for {n} texts; pass one per text (or None)")
        if not np.isin(self.labels, [0, 1]).all():
            raise ValueError("labels must be 0/1 (1 = toxic)")
        if self.eval_only and not self.is_eval.all():
            raise ValueError("an eval_only set must mark every row as an evaluation row")
        parts = (
            (("evaluation", self.is_eval),)
            if self.eval_only
            else (("evaluation", self.is_eval), ("fit", ~self.is_eval))
        )
        for part, mask in parts:
            if len(np.unique(self.labels[mask])) < 2:
                raise ValueError(
                    f"the {part} part of the drift set holds one class only; it needs toxic and clean texts "
                    "(use more texts or a different eval_fraction)"
                )

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def from_generation(
        cls, generation: Generation, labels: Any, *, eval_fraction: float = 0.5, seed: int = 0
    ) -> DriftSet:
        """Drift set from a :class:`Generation` (pooled over its responses) and its 0/1 labels.

        The eval rows are a stratified random ``eval_fraction`` of each class (seeded).
        """
        if not 0 < eval_fraction < 1:
            raise ValueError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
        y = np.asarray(labels.cpu() if isinstance(labels, torch.Tensor) else labels).astype(np.int64).reshape(-1)
        if len(y) != len(generation):
            raise ValueError(f"{len(y)} labels for {len(generation)} texts")
        rng = np.random.default_rng(seed)
        is_eval = np.zeros(len(y), dtype=bool)
        for c in (0, 1):
            idx = rng.permutation(np.flatnonzero(y == c))
            is_eval[idx[: int(round(eval_fraction * len(idx)))]] = True
        return cls(generation.tokens, generation.attention_mask, generation.response_mask, y, is_eval)

    @classmethod
    def from_dataset(cls, dataset: ActivationDataset) -> DriftSet:
        """Drift set from a built probe dataset: its balanced rows, with the dataset's by-prompt split
        (probes are re-fit on its ``train`` rows and AUROCs read on its ``test`` rows)."""
        rows = dataset.rows(None)
        gen = dataset.generation.select(rows.tolist())
        is_eval = dataset.examples["split"].to_numpy()[rows] == "test"
        labels = dataset.examples["label"].to_numpy()[rows]
        groups = dataset.examples["prompt_id"].to_numpy()[rows] if "prompt_id" in dataset.examples else None
        return cls(gen.tokens, gen.attention_mask, gen.response_mask, labels, is_eval, groups=groups)

    @classmethod
    def from_texts(cls, model, prompt: str, texts: Sequence[str], labels: Any) -> DriftSet:
        """An evaluation-only set of labelled ``texts``, each read as the response to ``prompt``
        (pooled over the response tokens), e.g. a curated labelled set."""
        from probe_lens.models.generation import tokenize_pairs

        gen = tokenize_pairs(model, [prompt] * len(texts), list(texts))
        y = np.asarray(labels).astype(np.int64).reshape(-1)
        return cls(gen.tokens, gen.attention_mask, gen.response_mask, y, np.ones(len(y), dtype=bool), eval_only=True)

    def select(self, rows: Any) -> DriftSet:
        """The rows ``rows`` of this set (same flags)."""
        idx = torch.as_tensor(np.asarray(rows, dtype=np.int64))
        return DriftSet(
            self.tokens[idx],
            self.attention_mask[idx],
            self.pool_mask[idx],
            self.labels[idx.numpy()],
            self.is_eval[idx.numpy()],
            eval_only=self.eval_only,
            groups=None if self.groups is None else self.groups[idx.numpy()],
        )


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    """The package's one AUROC (``probes.metrics.auroc``), logged as NaN where a set holds one class."""
    if len(np.unique(y)) < 2:
        return float("nan")
    return auroc(y, s)


def mark_model_updated(model) -> None:
    """Tell caches keyed by :func:`model_state_key` that ``model``'s weights changed.

    The training loop calls it after every optimizer step: fused or foreach optimizers (and in-place
    writes under ``torch.no_grad`` through ``.data``) need not bump torch's version counters.
    """
    model._probe_lens_updates = getattr(model, "_probe_lens_updates", 0) + 1


def model_state_key(model) -> tuple:
    """Changes whenever ``model``'s weights change: an explicit update counter (bumped by
    :func:`mark_model_updated` after each optimizer step) plus torch's per-parameter version counters
    (bumped by in-place writes such as ``load_state_dict``)."""
    return (id(model), getattr(model, "_probe_lens_updates", 0), tuple(p._version for p in model.parameters()))


def _direction(probe: Any) -> np.ndarray:
    return np.asarray(probe.direction_, dtype=np.float64).reshape(-1)


def _default_refit():
    from probe_lens.probes import LogisticProbe

    return LogisticProbe()


class DriftTelemetry:
    """Measure probe reliability and residual-stream geometry of the current model on a :class:`DriftSet`.

    Args:
        drift_set: fixed labelled texts.
        trained_probes: the probes trained against (probe, ensemble, list or ``{name: probe}``).
        heldout_probes: probes fit before training and never trained against.
        hooks: extra hooks/layers whose geometry to log (the probes' hooks are always logged).
        refit_factory: ``() -> unfitted probe`` used for the per-hook re-fit probes whose AUROC is
            ``probe/auroc_retrained/<hook>`` (default ``LogisticProbe()``).
        refit_templates: ``{probe name: (unfitted estimator, member index)}`` for probes whose drift
            cosine must be measured against member ``index`` of a re-fit ``estimator`` (e.g. a held-out
            member cut from a larger ensemble); other probes are re-fit as ``clone(probe)``.
        eval_sets: ``{name: evaluation-only DriftSet}`` every probe is also scored on (``<name>/...``).
        reference_directions: ``{hook: direction}`` the geometry is projected on (fix these once, on
            the base model, and pass the same to every run you compare).
        pooling: pooling of the drift activations (default: the first probe's, else ``"mean"``).
        pca_ks: the k of each ``pca_var_top<k>`` metric.
        class_names: ``(label 0, label 1)`` names in the geometry keys ``proj_<name>``; default
            ``("clean", "toxic")`` (a behaviour's ``class_names``, e.g. ``("not negative", "negative")``).
        batch_size, progress: for the activation pass.
    """

    def __init__(
        self,
        drift_set: DriftSet,
        trained_probes: Any = None,
        heldout_probes: Any = None,
        hooks: Sequence[str | int] | None = None,
        refit_factory: Callable[[], Any] | None = None,
        *,
        refit_templates: dict[str, tuple[Any, int]] | None = None,
        eval_sets: dict[str, DriftSet] | None = None,
        reference_directions: dict[str, np.ndarray] | None = None,
        pooling: str | None = None,
        pca_ks: Sequence[int] = (1, 5),
        batch_size: int = 16,
        progress: bool = False,
        class_names: tuple[str, str] = ("clean", "toxic"),
    ) -> None:
        if not isinstance(drift_set, DriftSet):
            raise TypeError(f"drift_set must be a DriftSet, got {type(drift_set).__name__}")
        self.drift_set = drift_set
        self.trained_probes = named_probes(trained_probes)
        self.heldout_probes = named_probes(heldout_probes)
        overlap = set(self.trained_probes) & set(self.heldout_probes)
        if overlap:
            raise ValueError(f"probe names {sorted(overlap)} are both trained and held out; give distinct names")
        self.extra_hooks = list(hooks or [])
        self.refit_factory = refit_factory or _default_refit
        self.refit_templates = dict(refit_templates or {})
        unknown = set(self.refit_templates) - set(self.trained_probes) - set(self.heldout_probes)
        if unknown:
            raise ValueError(f"refit_templates names unknown probes {sorted(unknown)}")
        self.eval_sets = dict(eval_sets or {})
        for name, es in self.eval_sets.items():
            if not isinstance(es, DriftSet):
                raise TypeError(f"eval_sets[{name!r}] must be a DriftSet, got {type(es).__name__}")
            if "/" in name or name in ("probe", "drift", "geometry"):
                raise ValueError(f"eval set name {name!r} must not contain '/' or shadow a metric prefix")
        self._acts_cache: dict[str, tuple[Any, dict[str, np.ndarray]]] = {}
        self._tokens_cache: dict[str, tuple[Any, dict[str, np.ndarray]]] = {}
        self.pooling = pooling
        self.pca_ks = tuple(int(k) for k in pca_ks)
        if any(k < 1 for k in self.pca_ks):
            raise ValueError(f"pca_ks must be positive, got {self.pca_ks}")
        self.batch_size = batch_size
        self.progress = progress
        words = tuple(metric_word(str(c)) for c in class_names)
        if len(words) != 2 or not all(words) or words[0] == words[1]:
            raise ValueError(f"class_names must be two different names (label 0, label 1), got {class_names!r}")
        self._proj_keys = tuple(f"proj_{w}" for w in words)
        self.reference_directions: dict[str, np.ndarray] = {
            h: np.asarray(v, dtype=np.float64).reshape(-1) for h, v in (reference_directions or {}).items()
        }

    # ---- state (for resuming) ----------------------------------------------------------

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f"refdir.{h}": torch.as_tensor(v) for h, v in self.reference_directions.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for k, v in state.items():
            if k.startswith("refdir."):
                self.reference_directions[k[len("refdir.") :]] = v.numpy()

    # ---- measuring ---------------------------------------------------------------------

    def _resolve(self, model) -> tuple[list[FlatProbe], list[FlatProbe], list[str]]:
        trained = flatten_probes(model, self.trained_probes) if self.trained_probes else []
        heldout = flatten_probes(model, self.heldout_probes) if self.heldout_probes else []
        hooks = {p.hook for p in trained + heldout}
        if self.extra_hooks:
            hooks |= set(resolve_hooks(model, self.extra_hooks))
        if not hooks:
            raise ValueError("DriftTelemetry has no probe and no hook to measure; pass probes or hooks=[...]")
        for p in trained + heldout:  # original direction per hook: trained first, then held out
            self.reference_directions.setdefault(p.hook, np.asarray(p.probe.direction_, dtype=np.float64))
        return trained, heldout, sorted(hooks)

    @torch.no_grad()
    def activations(self, model, which: str = "drift") -> dict[str, np.ndarray]:
        """Pooled activations ``{hook: float64 [n, d_model]}`` of ``model`` now, on the drift set
        (``which="drift"``) or on the evaluation set of that name.

        Cached until ``model``'s weights change (:func:`model_state_key`), so measuring, evaluating
        and drawing geometry of one model state cost one forward pass. Treat the arrays as read-only.
        """
        trained, heldout, hooks = self._resolve(model)
        key = model_state_key(model)
        cached = self._acts_cache.get(which)
        if cached is not None and cached[0] == key and set(hooks) <= set(cached[1]):
            return cached[1]
        if which == "drift":
            ds = self.drift_set
        elif which in self.eval_sets:
            ds = self.eval_sets[which]
        else:
            raise ValueError(f"unknown set {which!r}; this telemetry has 'drift' and {sorted(self.eval_sets)}")
        pooling = self.pooling or next((p.pooling for p in trained + heldout if p.pooling), None) or "mean"
        acts = collect(
            model,
            ds.tokens,
            ds.attention_mask,
            ds.pool_mask,
            hooks,
            pooling=pooling,
            batch_size=self.batch_size,
            progress=self.progress,
        )
        out = {h: a.double().numpy() for h, a in acts.items()}
        self._acts_cache[which] = (key, out)
        return out

    def all_activations(self, model) -> dict[str, dict[str, np.ndarray]]:
        """``{"drift": acts, <eval set>: acts, ...}`` of ``model`` now (cached like :meth:`activations`)."""
        return {w: self.activations(model, w) for w in ("drift", *self.eval_sets)}

    def _set(self, which: str) -> DriftSet:
        if which == "drift":
            return self.drift_set
        if which in self.eval_sets:
            return self.eval_sets[which]
        raise ValueError(f"unknown set {which!r}; this telemetry has 'drift' and {sorted(self.eval_sets)}")

    def token_hooks(self, model) -> list[str]:
        """The hooks token probes read (none: no token probe)."""
        trained, heldout, _ = self._resolve(model)
        return sorted({p.hook for p in trained + heldout if isinstance(p.probe, TokenProbe)})

    @torch.no_grad()
    def token_activations(self, model, which: str = "drift") -> dict[str, np.ndarray]:
        """Response-token activations ``{hook: float32 [n, width, d_model]}`` (NaN-padded, as
        :func:`~probe_lens.activations.collect_tokens`) of ``model`` now at the token probes' hooks, on the drift
        set or the evaluation set ``which``; ``{}`` without token probes. Cached like :meth:`activations`."""
        hooks = self.token_hooks(model)
        if not hooks:
            return {}
        key = model_state_key(model)
        cached = self._tokens_cache.get(which)
        if cached is not None and cached[0] == key and set(hooks) <= set(cached[1]):
            return cached[1]
        ds = self._set(which)
        acts, _ = collect_tokens(
            model, ds.tokens, ds.attention_mask, ds.pool_mask, hooks, batch_size=self.batch_size, progress=self.progress
        )
        out = {h: a.float().numpy() for h, a in acts.items()}
        self._tokens_cache[which] = (key, out)
        return out

    def all_token_activations(self, model) -> dict[str, dict[str, np.ndarray]]:
        """``{"drift": tokens, <eval set>: tokens, ...}`` (:meth:`token_activations`) of ``model`` now."""
        return {w: self.token_activations(model, w) for w in ("drift", *self.eval_sets)}

    def prime(self, model, acts: dict[str, Any], tokens: dict[str, dict[str, np.ndarray]] | None = None) -> None:
        """Declare ``acts`` (from :meth:`activations` or :meth:`all_activations` of an identical model)
        as ``model``'s current ones, and ``tokens`` (from :meth:`all_token_activations`) as its token
        activations. For runners that restore the same base weights many times."""
        key = model_state_key(model)
        if acts and all(isinstance(v, dict) for v in acts.values()):
            for which, a in acts.items():
                self._acts_cache[which] = (key, a)
        else:
            self._acts_cache["drift"] = (key, acts)
        for which, t in (tokens or {}).items():
            self._tokens_cache[which] = (key, t)

    def _read(self, probe: Any, hook: str, pooled: dict[str, np.ndarray], tokens: dict[str, np.ndarray], rows) -> Any:
        """The activations ``probe`` reads at ``hook`` for ``rows``: token activations for a token probe
        (trailing all-padding columns dropped), else pooled."""
        if not isinstance(probe, TokenProbe):
            return pooled[hook][rows]
        X = tokens[hook][rows]
        width = int((~np.isnan(X[..., 0])).sum(axis=1).max()) if len(X) else 0
        return X[:, :width]

    def _refit_directions(
        self,
        acts: dict[str, np.ndarray],
        fit_rows: np.ndarray,
        hook_of: dict[str, str],
        tokens: dict[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray]:
        """``{flat probe name: direction}`` of each probe's own estimator re-fit on ``acts``."""
        from sklearn.base import clone

        y = self.drift_set.labels
        fitted: dict[int, Any] = {}
        out: dict[str, np.ndarray] = {}
        for named in (self.trained_probes, self.heldout_probes):
            for name, probe in named.items():
                template, index = self.refit_templates.get(name, (probe, None))
                hook = hook_of[name]
                if id(template) not in fitted:
                    try:
                        est = clone(template)
                    except TypeError:  # not an sklearn-style estimator: fall back to the default re-fit
                        est = self.refit_factory()
                    if hasattr(est, "progress"):
                        est.set_params(progress=False)
                    X = self._read(template, hook, acts, tokens or {}, fit_rows)
                    fitted[id(template)] = est.fit(X, y[fit_rows])
                est = fitted[id(template)]
                members = getattr(est, "members_", None)
                if index is not None:
                    out[name] = _direction(members[index] if members is not None else est)
                elif members is not None:
                    out.update({K.member_name(name, i): _direction(m) for i, m in enumerate(members)})
                else:
                    out[name] = _direction(est)
        return out

    def scores(self, model) -> dict[str, dict[str, np.ndarray]]:
        """``{set: {probe or member name: P(toxic) per eval row}}`` of ``model`` now, plus ``{set: {"__y__": labels}}``.

        Sets: ``"drift"`` (its evaluation rows) and every eval set. Retrained probes (fit on the drift
        set's fit rows of the current model) appear as ``retrained/<hook>``.
        """
        trained, heldout, hooks = self._resolve(model)
        acts = self.all_activations(model)
        tokens = self.all_token_activations(model)
        ev = self.drift_set.is_eval
        fit_acts, fit_y = acts["drift"], self.drift_set.labels
        retrained = {h: self.refit_factory().fit(fit_acts[h][~ev], fit_y[~ev]) for h in hooks}
        out: dict[str, dict[str, np.ndarray]] = {}
        for which, a in acts.items():
            ds = self.drift_set if which == "drift" else self.eval_sets[which]
            rows = ds.is_eval
            s: dict[str, np.ndarray] = {LABELS: ds.labels[rows]}
            for flat, named in ((trained, self.trained_probes), (heldout, self.heldout_probes)):
                for p in flat:
                    if p.name != p.parent:
                        X = self._read(p.probe, p.hook, a, tokens[which], rows)
                        s[p.name] = np.asarray(p.probe.predict_proba(X))[:, 1]
                for name, probe in named.items():
                    hook = next(p.hook for p in flat if p.parent == name)
                    X = self._read(probe, hook, a, tokens[which], rows)
                    s[name] = np.asarray(probe.predict_proba(X))[:, 1]
            for h, probe in retrained.items():
                s[retrained_score_name(h)] = np.asarray(probe.predict_proba(a[h][rows]))[:, 1]
            out[which] = s
        return out

    def measure(self, model, step: int | None = None) -> dict[str, float]:
        """All metrics for ``model`` as it is now (flat names, floats)."""
        trained, heldout, hooks = self._resolve(model)
        acts = self.activations(model)
        y, ev = self.drift_set.labels, self.drift_set.is_eval
        out: dict[str, float] = {}
        trained_names = {p.name for p in trained} | set(self.trained_probes)
        for which, scores in self.scores(model).items():
            ys = scores[LABELS]
            for name, s in scores.items():
                if name != LABELS:
                    out[str(score_key(which, name, trained_names))] = _auroc(ys, s)
        hook_of = {p.parent: p.hook for p in trained + heldout}
        refit_dirs = self._refit_directions(acts, ~ev, hook_of, self.token_activations(model))
        for p in trained + heldout:
            out[str(K.cosine(p.name))] = _cos(_direction(p.probe), refit_dirs[p.name])
        for h in hooks:  # geometry on the evaluation rows: no probe or reference direction was fit on them
            X, yg = acts[h][ev], y[ev]
            mu1, mu0 = X[yg == 1].mean(axis=0), X[yg == 0].mean(axis=0)
            diff = mu1 - mu0
            if h not in self.reference_directions:
                self.reference_directions[h] = diff / max(np.linalg.norm(diff), 1e-12)
            u = self.reference_directions[h]
            u = u / max(np.linalg.norm(u), 1e-12)
            out[str(K.geometry(h, "mean_diff_norm"))] = float(np.linalg.norm(diff))
            out[str(K.geometry(h, "mean_diff_cos_orig"))] = _cos(diff, u)
            out[str(K.geometry(h, self._proj_keys[1]))] = float(mu1 @ u)
            out[str(K.geometry(h, self._proj_keys[0]))] = float(mu0 @ u)
            out[str(K.geometry(h, "resid_norm"))] = float(np.linalg.norm(X, axis=1).mean())
            sv = np.linalg.svd(X - X.mean(axis=0), compute_uv=False) ** 2
            total = float(sv.sum())
            for k in self.pca_ks:
                out[str(K.geometry(h, f"pca_var_top{k}"))] = float(sv[:k].sum() / total) if total > 0 else float("nan")
        return out
