"""The study runner: the paper's comparison end to end, with controls, resumable, one folder per study.

What a study measures. Every pre-training probe (the trained-against candidates and the held-out ones)
is *tracked in every cell*, so the probe a cell trains against has its controls: the same probe,
measured the same way, in the cells that do not train against it (``base``, the classifier baselines).
Probes are scored on two evaluation sets at every telemetry step: **on-policy** rows (the base model's
own continuations of held-out pool prompts, labelled by the output classifier: on-policy but noisy) and
a **curated** labelled text set shipped in the package (clean labels, off-policy). Each seed redraws
which pool prompts fit the probes and which give on-policy rows (stratified by topic), so intervals
over seeds include probe-data variance.

Layout of a run folder::

    study.json                      resolved StudyConfig (``behaviour`` names what it detects and trains against)
    behaviour.json                  the behaviour's record: class names, scorer, threshold, metric keys
    prompts.json                    the fixed prompt plan: evaluation prompts, probe pool, training pool
    data/probe_pool/                the base model's continuations of the pool prompts (builder format)
    seeds/<s>/split.json            this seed's probe-fit / on-policy prompts and rows, prompt-only baselines
    seeds/<s>/noise_floor.json      cosine between each probe and its bootstrap re-fits on the base model
    seeds/<s>/train_data/           the shared training samples of seed s, scored by every signal
    probes/seed<s>/<name>/          this seed's tracked probes (safetensors + JSON), report.csv
    cells/<cell>/seed<s>/train/     config.json, metrics.jsonl, checkpoints/ (training cells)
    cells/<cell>/seed<s>/eval.json  final evaluation: the cell is finished when this exists
    cells/<cell>/seed<s>/probe_scores.json   every tracked probe's score on every evaluation row
    results.csv, results.parquet    one row per (cell, seed)
    summary.csv, summary.md         mean and 95% CI over seeds per cell (every metric)
    headline.md, contrasts.csv      the headline table and the paired contrasts, in words
    metrics.parquet                 every telemetry row of every run
    report.html, assets/*.png       the drift report
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from probe_lens._io import atomic_write
from probe_lens.behaviours import DEFAULT_BEHAVIOUR, BehaviourNames, LabelledRows
from probe_lens.data import build_dataset
from probe_lens.data.builder import ActivationDataset, dataset_from_labelled, dataset_from_reference
from probe_lens.data.prompts import Prompt, stratified_partition, stratified_sample
from probe_lens.data.reference import ReferenceMismatch, ReferenceSet, load_reference, reference_mismatch
from probe_lens.experiments.adapters import cell_settings, settings_section, train_cell
from probe_lens.experiments.cells import CellSpec
from probe_lens.experiments.config import StudyConfig
from probe_lens.models import Generation, generate, load_model
from probe_lens.models.loading import default_device
from probe_lens.probes import DiverseProbeEnsemble, LogisticProbe, MassMeanProbe, load_probe, save_probe
from probe_lens.scorers import get_scorer
from probe_lens.training import (
    DriftSet,
    DriftTelemetry,
    distributed as D,
    probe_scores,
    read_metrics,
    scorer_scores,
)
from probe_lens.training.telemetry import model_state_key

log = logging.getLogger(__name__)

ONPOLICY, CURATED = "onpolicy", "curated"


class StudyFolderError(ValueError):
    """The output folder holds another study, or a finished one without --resume."""


class StudyDataError(ValueError):
    """The study's data cannot support it (e.g. the probe rows hold one class only): change the config."""


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=_json_default)))


def _read_derived_json(path: Path) -> Any | None:
    """A file the study derives and can rebuild (split, noise floor, scores): its JSON, or None when it
    is missing or unreadable (e.g. truncated by a full disk), named in a warning, so it is rebuilt."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        log.warning("%s is corrupt (%s: %s); rebuilding it", path, type(e).__name__, e)
        return None


def _json_default(o: Any):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _rank0_then_read(method):
    """A file-backed step: under torchrun rank 0 runs it (writing its files), then the other ranks run it,
    reading those files back. One process: the step itself."""

    @functools.wraps(method)
    def step(self, *args, **kwargs):
        return self._shared(lambda: method(self, *args, **kwargs))

    return step


def _rank0_only(method):
    """A step that under torchrun only rank 0 runs (it writes files); its result reaches every rank."""

    @functools.wraps(method)
    def step(self, *args, **kwargs):
        return self._on_main(lambda: method(self, *args, **kwargs), share=True)

    return step


def _rank_device(device: str | None) -> str:
    """This torchrun rank's device: ``cuda:$LOCAL_RANK`` for None or ``"cuda"`` on a GPU machine, else ``device``."""
    if device is not None and torch.device(device).type != "cuda":
        return str(device)
    local = default_device()
    if device is not None:
        if torch.device(local).type != "cuda":
            raise RuntimeError(f"device {device!r} but no CUDA device is visible")
        if torch.device(device).index not in (None, torch.device(local).index):
            raise ValueError(
                f"device {device!r} under torchrun: each rank takes cuda:$LOCAL_RANK (here {local}); "
                "pass device 'cuda' or leave it unset"
            )
    return local


@dataclasses.dataclass
class PromptPlan:
    """The study's fixed prompt partition (by ``prompt_seed``), stratified by topic within each tag."""

    eval_provocative: list[Prompt]
    eval_neutral: list[Prompt]
    pool: list[Prompt]
    """Prompts whose base-model continuations fit the probes and give on-policy evaluation rows."""
    train_pool: list[Prompt]
    """Prompts training samples are drawn from (per seed)."""

    def as_ids(self) -> dict[str, list[str]]:
        return {f.name: [p.id for p in getattr(self, f.name)] for f in dataclasses.fields(self)}


@dataclasses.dataclass
class SeedSplit:
    """One seed's draw: which pool prompts fit the probes, which give on-policy rows; the training prompts."""

    fit_rows: np.ndarray
    """Balanced rows of the pool dataset the probes are fit on."""
    onpolicy_rows: np.ndarray
    """Every row of the on-policy prompts (evaluation only)."""
    train_prompts: list[Prompt]
    info: dict[str, Any]


class Study:
    """One study in one folder. Each step is resumable; :meth:`run` does them all.

    Args:
        config: the study.
        out_dir: the run folder.
        resume: continue a study already in ``out_dir`` (finished cells are skipped).
        overwrite: delete ``out_dir`` first if it holds a *different* study.
        model, scorer: use these instead of loading ``config.model`` / the scorer ``config.scorer`` names
            (``auto``: the behaviour's own).
        export_png: also write static PNGs of the key figures to ``assets/`` (needs kaleido + Chromium).

    The behaviour (``config.behaviour``) gives the prompts, the scorer, the curated set, the threshold
    and every metric name and word. A pre-labelled behaviour (its scorer a
    :class:`~probe_lens.behaviours.LabelledRows`, or ``scorer`` one) cannot label fresh generations: the
    probe pool is read from its rows (teacher-forced, no sampling), the rate metrics are left out, and
    cells whose signal is the output classifier are refused when the study is opened.

    Under ``torchrun`` every process runs the same calls with the same ``out_dir`` (a folder every process
    sees): each loads the model on ``cuda:$LOCAL_RANK``; rank 0 alone builds the data, fits the probes,
    generates and scores, measures the telemetry, evaluates, reports and writes every file, and the other
    ranks read its files back (or receive its results) after it is done; training cells run data-parallel
    on every rank, each training ``batch_size`` being the global batch split evenly over the ranks, so the
    results match one process.
    """

    def __init__(
        self,
        config: StudyConfig,
        out_dir: str | Path,
        *,
        resume: bool = False,
        overwrite: bool = False,
        progress: bool = True,
        model=None,
        scorer=None,
        export_png: bool = True,
    ) -> None:
        self.config = config
        self.behaviour = config.behaviour_spec
        self.names = BehaviourNames.of(self.behaviour)  # its words and metric keys, e.g. metric_keys["rate"]
        self.prelabelled = (
            isinstance(scorer, LabelledRows)
            if scorer is not None
            else (config.scorer == "auto" and self.behaviour.prelabelled)
        )
        if self.prelabelled:
            _check_prelabelled(config)
        _prompt_plan(
            config
        )  # a behaviour with too few prompts for these sizes: say so now, not after loading the model
        self.export_png = export_png
        self.out = Path(out_dir)
        self.progress = progress
        self._model = None
        self._base_state: dict[str, torch.Tensor] | None = None
        self._scorer = scorer
        if model is not None:
            self._adopt_model(model)
        self._timings: dict[str, float] = {}
        self._t_first: float | None = None  # when this object's first timed step began (for total_s)
        self._plan: PromptPlan | None = None
        self._splits: dict[int, SeedSplit] = {}
        self._probes: dict[int, dict[str, Any]] = {}
        self._curated: DriftSet | None = None
        # the base model's telemetry, shared by every cell of a seed (activations, rates, directions)
        self._base_acts: dict[int, dict[str, Any]] = {}
        self._base_rates: dict[int, dict[str, float]] = {}
        self._reference: dict[int, dict[str, np.ndarray]] = {}
        self._solo_depth = 0  # > 0 while this process runs a step on its own (rank 0's part of a step)
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        self._device = _rank_device(config.device) if distributed else config.device
        if distributed and model is not None:
            _rank_device(str(next(model.parameters()).device))  # a caller's model must sit on this rank's GPU
        self.dist = D.init_from_env(next(model.parameters()).device if model is not None else (self._device or "cpu"))
        if self.dist.enabled:
            self._check_world()
        self._prepare_folder(resume=resume, overwrite=overwrite)
        if self.dist.enabled and not (self.out / "study.json").exists():
            raise RuntimeError(
                f"rank {self.dist.rank} cannot see {self.out / 'study.json'}, which rank 0 wrote: under torchrun "
                "the run folder must be on a filesystem every process shares"
            )

    # ------------------------------------------------------------------ torchrun
    @contextlib.contextmanager
    def _solo(self):
        self._solo_depth += 1
        try:
            yield
        finally:
            self._solo_depth -= 1

    def _collective(self) -> bool:
        """True when every rank makes this call (distributed, and not inside rank 0's part of a step)."""
        return self.dist.enabled and self._solo_depth == 0

    def _on_main(self, fn: Callable[[], Any], *, share: bool = False) -> Any:
        """``fn()`` on rank 0 only (every rank waits; errors reach every rank): see ``distributed.on_main``."""
        if not self._collective():
            return fn()

        def alone():
            with self._solo():
                return fn()

        return D.on_main(alone, self.dist, share=share)

    def _shared(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0, then on the other ranks (which then find rank 0's files and read them)."""
        result = self._on_main(fn)
        if not self._collective() or self.dist.is_main:
            return result
        with self._solo():
            return fn()

    def _check_world(self) -> None:
        w = self.dist.world_size
        bad = {
            f"{settings_section(spec.objective)}.batch_size={tc.batch_size}"
            for spec in self.config.cell_specs
            if (tc := self._train_config(spec)) is not None and tc.batch_size % w
        }
        if bad:
            raise ValueError(
                f"under torchrun with {w} processes each training batch is split evenly over them, but "
                f"{', '.join(sorted(bad))} is not a multiple of {w}; change the batch size or --nproc_per_node"
            )

    # ------------------------------------------------------------------ folder & shared state
    @_rank0_only
    def _prepare_folder(self, *, resume: bool, overwrite: bool) -> None:
        spec = self.out / "study.json"
        wanted = self.config.to_dict()
        if spec.exists():
            try:
                saved = json.loads(spec.read_text())
                if not isinstance(saved, dict):
                    raise ValueError(f"it holds a JSON {type(saved).__name__}, not a study")
            except (ValueError, UnicodeDecodeError) as e:  # json.JSONDecodeError is a ValueError
                if not overwrite:
                    raise StudyFolderError(
                        f"{spec} is corrupt ({type(e).__name__}: {e}), so which study {self.out} holds is unknown. "
                        f"If it is this study, delete {spec} and run again with --resume (finished cells are kept); "
                        "or pass --overwrite to delete the folder and start again"
                    ) from e
                saved = None  # --overwrite: start again
            if saved is None or _comparable(saved) != _comparable(wanted):
                if not overwrite:
                    diff = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
                    raise StudyFolderError(
                        f"{self.out} holds a different study (differs in: {', '.join(diff)}). "
                        "Choose another --out, or pass --overwrite to delete it."
                    )
                shutil.rmtree(self.out)
            elif not resume and any((self.out / "cells").glob("*/*/eval.json")):
                raise StudyFolderError(
                    f"{self.out} already holds (part of) this study; pass --resume to continue it "
                    "(finished cells are kept) or --overwrite to start again"
                )
        self.out.mkdir(parents=True, exist_ok=True)
        self.config.save(spec)
        _write_json(self.out / "behaviour.json", self.behaviour.describe())

    def _adopt_model(self, model) -> None:
        self._model = model
        # the base weights live on the CPU (a GPU copy would cost a second model's memory)
        self._base_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    @property
    def model(self):
        """The model (loaded on first use); :meth:`reset_model` restores its base weights."""
        if self._model is None:
            self._start_clock()
            t0 = time.perf_counter()
            self._adopt_model(load_model(self.config.model, device=self._device))
            self._timings["load_model_s"] = time.perf_counter() - t0
        return self._model

    def reset_model(self) -> None:
        """Restore the base weights (every cell starts from the same model)."""
        model = self.model
        model.load_state_dict(self._base_state)
        model.zero_grad(set_to_none=True)
        model.eval()

    @property
    def scorer(self):
        """The output classifier: ``config.scorer`` by name, or for ``auto`` the behaviour's own."""
        if self._scorer is None:
            b, device = self.behaviour, self.config.scorer_device
            if self.config.scorer != "auto":
                self._scorer = get_scorer(self.config.scorer, device=device)
            elif isinstance(b.scorer, str):  # the behaviour's named scorer (for toxicity: get_scorer("auto"))
                self._scorer = get_scorer(b.scorer, device=device, **b.scorer_kwargs)
            else:
                self._scorer = b.get_scorer(device=device)
        return self._scorer

    def _start_clock(self) -> None:
        if self._t_first is None:
            self._t_first = time.perf_counter()

    def _tick(self, key: str, t0: float) -> None:
        self._timings[key] = self._timings.get(key, 0.0) + time.perf_counter() - t0

    # ------------------------------------------------------------------ prompts
    @property
    def prompt_plan(self) -> PromptPlan:
        """Held-out evaluation prompts, the probe pool and the training pool (fixed by ``prompt_seed``)."""
        if self._plan is None:
            self._plan = _prompt_plan(self.config)
            path = self.out / "prompts.json"
            if self.dist.is_main and not path.exists():
                _write_json(path, self.prompt_plan.as_ids())
        return self._plan

    def seed_split(self, seed: int) -> SeedSplit:
        """This seed's draw of probe-fit and on-policy prompts (stratified), and its training prompts."""
        if seed not in self._splits:
            self._splits[seed] = self._make_split(seed)
        return self._splits[seed]

    def _make_split(self, seed: int) -> SeedSplit:
        cfg, plan = self.config, self.prompt_plan
        ds = self.build_data()
        key = cfg.sampling.stratify_by
        parts = stratified_partition(
            plan.pool, {"fit": cfg.sampling.fit_fraction, ONPOLICY: 1.0 - cfg.sampling.fit_fraction}, seed=seed, key=key
        )
        pid = ds.examples["prompt_id"].to_numpy()
        labels = ds.examples["label"].to_numpy().astype(np.int64)
        fit_all = np.flatnonzero(np.isin(pid, [p.id for p in parts["fit"]]))
        onpolicy = np.flatnonzero(np.isin(pid, [p.id for p in parts[ONPOLICY]]))
        rng = np.random.default_rng(seed)
        pos, neg = fit_all[labels[fit_all] == 1], fit_all[labels[fit_all] == 0]
        n = min(len(pos), len(neg))
        fit = (
            np.sort(np.concatenate([rng.permutation(pos)[:n], rng.permutation(neg)[:n]]))
            if cfg.data.balance
            else fit_all
        )
        for what, rows in (("probe-fit", fit), ("on-policy", onpolicy)):
            if len(np.unique(labels[rows])) < 2:
                raise StudyDataError(
                    f"seed {seed}: the {what} rows hold one class only ({len(rows)} rows, {int(labels[rows].sum())} "
                    f"{self.names.positive_label}); sample more (data.samples_per_prompt, data.max_rounds, "
                    "n_probe_prompts) or lower data.threshold"
                )
        train = _train_prompts(plan.train_pool, cfg.train_data.n_prompts, seed, key)
        tags = ds.examples["tag"].to_numpy() if "tag" in ds.examples else np.array(["provocative"] * len(ds.examples))
        topics = {p.id: getattr(p, "topic", "") for p in plan.pool}
        info = {
            "seed": seed,
            "fit_prompts": [p.id for p in parts["fit"]],
            "onpolicy_prompts": [p.id for p in parts[ONPOLICY]],
            "train_prompts": [p.id for p in train],
            "n_fit_rows": int(len(fit)),
            self.names.metric_keys["n_fit_positive"]: int(labels[fit].sum()),
            "n_onpolicy_rows": int(len(onpolicy)),
            self.names.metric_keys["n_onpolicy_positive"]: int(labels[onpolicy].sum()),
            "baseline/auroc_prompt_type": _prompt_type_auroc(labels[onpolicy], tags[onpolicy]),
            "baseline/auroc_prompt_topic": _prompt_topic_auroc(
                labels, [topics.get(i, "") for i in pid], fit_all, onpolicy
            ),
        }
        path = self.out / "seeds" / str(seed) / "split.json"
        if self.dist.is_main and _read_derived_json(path) is None:
            _write_json(path, info)
        return SeedSplit(fit, onpolicy, train, info)

    # ------------------------------------------------------------------ step 1: probe data
    @_rank0_then_read
    def build_data(self) -> ActivationDataset:
        """The base model's labelled continuations of the probe pool (built once, shared by every seed)."""
        self._start_clock()
        folder = self.out / "data" / "probe_pool"
        if (folder / "meta.json").exists():
            return ActivationDataset.load(folder)
        t0 = time.perf_counter()
        common = {"out_dir": folder, "progress": self.progress, "behaviour": self.behaviour}
        pool, data = self.prompt_plan.pool, self.config.data
        if self.prelabelled:  # no sampling: the labelled rows of the pool prompts, read teacher-forced
            ds = dataset_from_labelled(self.model, pool, self.scorer, data, **common)
        elif (reference := self.reference_set()) is not None:
            ds = dataset_from_reference(self.model, reference, pool, self.scorer, data, **common)
        else:
            ds = build_dataset(self.model, pool, self.scorer, data, **common)
        self._tick("build_data_s", t0)
        return ds

    def reference_set(self) -> ReferenceSet | None:
        """The reference continuations the probe pool is read from (``data_source``), or None to sample.

        ``auto`` uses the shipped set for the embedded model when it covers the study's settings and logs
        why not otherwise; ``reference`` or a path insists (a mismatch is an error saying what differs).
        """
        src = self.config.data_source
        if src == "fresh":
            return None
        try:
            ref = load_reference(None if src in ("auto", "reference") else src)
        except FileNotFoundError:
            if src == "auto":
                return None
            raise
        why = reference_mismatch(ref, self.model, self.prompt_plan.pool, self.config.data)
        if why is None:
            return ref
        if src == "auto":
            log.info("sampling the probe pool afresh: the reference set does not cover this study (%s)", why)
            return None
        raise ReferenceMismatch(
            f"data_source={src!r}, but the reference set cannot replace sampling: {why}; "
            "use --fresh-data (data_source: fresh) or change those settings"
        )

    # ------------------------------------------------------------------ step 2: probes
    def probe_names(self) -> dict[str, list[str]]:
        """``single`` / ``ensemble``: the trained-against candidates; ``heldout``: never trained against
        (``heldout_members``: later orthogonal-ensemble members, noisy, kept out of headline averages)."""
        p = self.config.probes
        members = [f"ens_heldout{i}_L{p.layer}" for i in range(p.n_heldout_members)]
        return {
            "single": [f"logistic_L{p.layer}"],
            "ensemble": [f"ensemble{p.n_ensemble}_L{p.layer}"],
            "heldout": [f"massmean_L{p.layer}", *[f"logistic_L{L}" for L in p.heldout_layers], *members],
            "heldout_members": members,
        }

    def tracked_probes(self) -> list[str]:
        """Every pre-training probe, measured in every cell."""
        n = self.probe_names()
        return n["single"] + n["ensemble"] + n["heldout"]

    def _logistic(self, hook: str | None = None, **meta) -> LogisticProbe:
        p = self.config.probes
        return LogisticProbe(C=p.C, standardize=p.standardize, hook=hook, **meta)

    def _full_ensemble(self, hook: str, **meta) -> DiverseProbeEnsemble:
        """The ensemble the trained-against members and the held-out members are cut from."""
        p = self.config.probes
        return DiverseProbeEnsemble(
            n_probes=p.n_ensemble + p.n_heldout_members,
            method=p.ensemble_method,
            base=self._logistic(),
            hook=hook,
            progress=False,
            **meta,
        )

    def retrain_factory(self) -> Callable[[], Any]:
        """``() -> unfitted estimator`` of the probes re-fit on the current model at each telemetry step."""
        p = self.config.probes
        if p.retrain_estimator == "massmean":
            return lambda: MassMeanProbe(covariance=p.massmean_covariance)
        return lambda: LogisticProbe(C=p.C, standardize=p.standardize)

    @_rank0_then_read
    def fit_probes(self, seed: int | None = None) -> dict[str, Any]:
        """Fit (or load) seed ``seed``'s tracked probes on its probe-fit rows of the base model."""
        self._start_clock()
        seed = self.config.seeds[0] if seed is None else seed
        if seed in self._probes:
            return self._probes[seed]
        folder = self.out / "probes" / f"seed{seed}"
        names = self.tracked_probes()
        if all((folder / n / "probe.json").exists() for n in names) and (folder / "report.csv").exists():
            self._probes[seed] = self.load_probes(seed)
            return self._probes[seed]
        ds = self.build_data()
        split = self.seed_split(seed)
        p = self.config.probes
        t0 = time.perf_counter()
        meta = dict(model_name=ds.meta["model_name"], pooling=self.config.data.pooling)
        hook = f"blocks.{p.layer}.hook_resid_post"
        y = ds.examples["label"].to_numpy().astype(np.int64)
        X = functools.partial(_pooled, ds)
        Xf, yf = X(hook, split.fit_rows), y[split.fit_rows]
        n = self.probe_names()
        probes: dict[str, Any] = {n["single"][0]: self._logistic(hook, **meta).fit(Xf, yf)}
        full = self._full_ensemble(hook, **meta).fit(Xf, yf)
        probes[n["ensemble"][0]] = full.subset(list(range(p.n_ensemble)))
        probes[f"massmean_L{p.layer}"] = MassMeanProbe(covariance=p.massmean_covariance, hook=hook, **meta).fit(Xf, yf)
        for L in p.heldout_layers:
            h = f"blocks.{L}.hook_resid_post"
            probes[f"logistic_L{L}"] = self._logistic(h, **meta).fit(X(h, split.fit_rows), yf)
        for i, name in enumerate(n["heldout_members"]):
            probes[name] = full.member(p.n_ensemble + i)
        from probe_lens.experiments.stats import auroc_ci

        rows = []
        yo = y[split.onpolicy_rows]
        for name in names:
            probe = probes[name]
            h = probe.metadata.hook
            s = np.asarray(probe.predict_proba(X(h, split.onpolicy_rows)))[:, 1]
            a, lo, hi = auroc_ci(yo, s, method=self.config.eval.ci_method)
            role = "trained-against candidate" if name in n["single"] + n["ensemble"] else "held out"
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
            save_probe(probe, folder / name)
        atomic_write(folder / "report.csv", lambda f: pd.DataFrame(rows).to_csv(f, index=False))
        self._tick("fit_probes_s", t0)
        self._probes[seed] = probes
        return probes

    def load_probes(self, seed: int | None = None) -> dict[str, Any]:
        seed = self.config.seeds[0] if seed is None else seed
        folder = self.out / "probes" / f"seed{seed}"
        return {n: load_probe(folder / n) for n in self.tracked_probes()}

    @_rank0_then_read
    def noise_floor(self, seed: int) -> dict[str, dict[str, float]]:
        """Each probe's cosine with its own estimator re-fit on bootstrap resamples of its probe-fit rows
        (base model): how far a drift cosine moves from 1 by refitting noise alone."""
        path = self.out / "seeds" / str(seed) / "noise_floor.json"
        saved = _read_derived_json(path)
        if saved is not None:
            return saved
        from sklearn.base import clone

        B = self.config.probes.noise_floor_resamples
        if B == 0:
            return {}
        t0 = time.perf_counter()
        ds, split, probes = self.build_data(), self.seed_split(seed), self.fit_probes(seed)
        y = ds.examples["label"].to_numpy().astype(np.int64)
        rng = np.random.default_rng(50_000 + seed)
        pos, neg = split.fit_rows[y[split.fit_rows] == 1], split.fit_rows[y[split.fit_rows] == 0]
        n = self.probe_names()
        p = self.config.probes
        cosines: dict[str, list[float]] = {}
        for _ in range(B):
            rows = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
            full = None
            for name in self.tracked_probes():
                probe = probes[name]
                Xb = ds.acts[probe.metadata.hook][torch.as_tensor(rows)].numpy()
                if name in n["heldout_members"] or name in n["ensemble"]:
                    if full is None:
                        full = self._full_ensemble(probe.metadata.hook).fit(Xb, y[rows])
                    idx = (
                        list(range(p.n_ensemble))
                        if name in n["ensemble"]
                        else [p.n_ensemble + n["heldout_members"].index(name)]
                    )
                    orig = [probe.member(i) for i in range(len(probe.members_))] if name in n["ensemble"] else [probe]
                    for j, (o, i) in enumerate(zip(orig, idx)):
                        key = f"{name}/m{j}" if name in n["ensemble"] else name
                        cosines.setdefault(key, []).append(_cos(o.direction_, full.member(i).direction_))
                else:
                    est = clone(probe)
                    cosines.setdefault(name, []).append(_cos(probe.direction_, est.fit(Xb, y[rows]).direction_))
        out = {
            k: {"mean": float(np.mean(v)), "p05": float(np.quantile(v, 0.05)), "min": float(np.min(v)), "n": len(v)}
            for k, v in cosines.items()
        }
        _write_json(path, out)
        self._tick("noise_floor_s", t0)
        return out

    # ------------------------------------------------------------------ evaluation sets
    def drift_set(self, seed: int | None = None) -> DriftSet:
        """Seed ``seed``'s on-policy set: probe-fit rows (re-fits read them) + on-policy rows (AUROCs read them)."""
        seed = self.config.seeds[0] if seed is None else seed
        ds, split = self.build_data(), self.seed_split(seed)
        rows = np.concatenate([split.fit_rows, split.onpolicy_rows])
        gen = ds.generation.select(rows.tolist())
        labels = ds.examples["label"].to_numpy()[rows]
        is_eval = np.concatenate([np.zeros(len(split.fit_rows), bool), np.ones(len(split.onpolicy_rows), bool)])
        return DriftSet(gen.tokens, gen.attention_mask, gen.response_mask, labels, is_eval)

    def curated_set(self) -> DriftSet | None:
        """The behaviour's curated labelled texts as an evaluation-only set (None when ``eval.curated`` is null)."""
        if self.config.eval.curated is None:
            return None
        if self._curated is None:
            from probe_lens.data.curated import curated_arrays

            rows = self.behaviour.load_curated()
            if self.config.eval.n_curated is not None and self.config.eval.n_curated < len(rows):
                rows = _subsample_by_kind(rows, self.config.eval.n_curated, seed=self.config.prompt_seed)
            texts, labels = curated_arrays(rows)
            self._curated = DriftSet.from_texts(self.model, self.behaviour.curated_prompt, texts, labels)
        return self._curated

    # ------------------------------------------------------------------ step 3: training data per seed
    @_rank0_then_read
    def train_data(self, seed: int) -> tuple[Generation, dict[str, np.ndarray]]:
        """Seed ``seed``'s training samples, scored by every signal (classifier, probe, ensemble; no
        classifier for a pre-labelled behaviour)."""
        folder = self.out / "seeds" / str(seed) / "train_data"
        saved = _read_derived_json(folder / "scores.json")
        if saved is not None:
            return _load_generation(folder), {k: np.asarray(v) for k, v in saved.items()}
        td = self.config.train_data
        chosen = self.seed_split(seed).train_prompts
        texts = [p.text for p in chosen for _ in range(td.samples_per_prompt)]
        probes = self.fit_probes(seed)
        self.reset_model()
        t0 = time.perf_counter()
        gen = generate(
            self.model,
            texts,
            max_new_tokens=td.max_new_tokens,
            temperature=td.temperature,
            top_p=td.top_p,
            seed=seed,
            batch_size=self.config.data.batch_size,
            progress=self.progress,
            fast=self.config.data.fast_sampling,
        )
        self._tick("generate_train_s", t0)
        t0 = time.perf_counter()
        scores = {} if self.prelabelled else {"classifier": scorer_scores(self.scorer, gen)}
        self._tick("score_s", t0)
        names = self.probe_names()
        t0 = time.perf_counter()
        for signal, name in (("probe", names["single"][0]), ("ensemble", names["ensemble"][0])):
            scores[signal] = probe_scores(
                self.model, gen, probes[name], batch_size=self.config.data.batch_size, progress=False
            )
        self._tick("probe_scores_s", t0)
        _save_generation(folder, gen)
        _write_json(folder / "scores.json", {k: v.tolist() for k, v in scores.items()})
        return gen, scores

    # ------------------------------------------------------------------ step 4: cells
    def cell_dir(self, cell: str, seed: int) -> Path:
        return self.out / "cells" / cell / f"seed{seed}"

    def is_done(self, cell: str, seed: int) -> bool:
        return (self.cell_dir(cell, seed) / "eval.json").exists()

    def trained_against(self, spec: CellSpec) -> list[str]:
        n = self.probe_names()
        return spec.trained_against(n["single"][0], n["ensemble"][0])

    def telemetry(self, seed: int, trained: list[str]) -> StudyTelemetry:
        """Telemetry of one cell: every tracked probe (``trained`` ones as trained-against), both sets."""
        probes = self.fit_probes(seed)
        cfg, p, ev = self.config, self.config.probes, self.config.eval
        assert ev.threshold is not None  # StudyConfig resolves it from the behaviour
        heldout = {k: v for k, v in probes.items() if k not in trained}
        hook = f"blocks.{p.layer}.hook_resid_post"
        full = self._full_ensemble(
            hook,
            model_name=probes[trained[0] if trained else self.tracked_probes()[0]].metadata.model_name,
            pooling=cfg.data.pooling,
        )
        n = self.probe_names()
        templates = {name: (full, p.n_ensemble + i) for i, name in enumerate(n["heldout_members"]) if name in heldout}
        plan = self.prompt_plan
        k = min(ev.n_telemetry_prompts, len(plan.eval_provocative))
        curated = self.curated_set()
        tele = StudyTelemetry(
            self.drift_set(seed),
            {k_: probes[k_] for k_ in trained} or None,
            heldout,
            refit_factory=self.retrain_factory(),
            refit_templates=templates,
            eval_sets={CURATED: curated} if curated is not None else None,
            hooks=list(cfg.telemetry_hooks),
            batch_size=cfg.data.batch_size,
            pooling=cfg.data.pooling,
            class_names=self.names.class_names,
            metric_keys=self.names.metric_keys,
            rate_prompts=[] if self.prelabelled else [q.text for q in plan.eval_provocative[:k]],
            scorer=None if self.prelabelled else self.scorer,
            max_new_tokens=ev.max_new_tokens,
            threshold=ev.threshold,
            seed=20_000 + seed,
            temperature=ev.telemetry_temperature,
            top_p=ev.telemetry_top_p,
            fast_sampling=cfg.data.fast_sampling,
        )
        return tele

    def _prime_base(self, tele: StudyTelemetry, seed: int) -> None:
        """Give ``tele`` the base model's shared telemetry (computed once per seed) and the seed's
        reference directions (class-mean difference on the base model's probe-fit rows, per hook)."""
        model = self.model
        if seed in self._base_acts:
            tele.prime(model, self._base_acts[seed])
        if seed in self._base_rates:
            tele.prime_rates(model, self._base_rates[seed])
        self._base_acts[seed] = tele.all_activations(model)
        self._base_rates[seed] = tele.rates(model)
        if seed not in self._reference:
            acts, ds = self._base_acts[seed]["drift"], tele.drift_set
            fit, y = ~ds.is_eval, ds.labels
            self._reference[seed] = {}
            for h, X in acts.items():
                d = X[fit & (y == 1)].mean(axis=0) - X[fit & (y == 0)].mean(axis=0)
                self._reference[seed][h] = d / max(float(np.linalg.norm(d)), 1e-12)
        tele.reference_directions.update(self._reference[seed])

    def run_cell(self, cell: str, seed: int) -> dict[str, Any]:
        """Train (resuming), evaluate and save cell ``cell`` of seed ``seed``; a finished cell is read back.

        Under torchrun every rank calls it and gets the result: rank 0 prepares (telemetry, the resume
        decision), every rank trains (data-parallel), rank 0 evaluates and writes.
        """
        spec = self.config.cell(cell)
        if seed not in self.config.seeds:
            raise ValueError(f"unknown seed {seed}; this study's seeds: {self.config.seeds}")
        cdir = self.cell_dir(cell, seed)
        done = self._on_main(
            lambda: json.loads((cdir / "eval.json").read_text()) if self.is_done(cell, seed) else None, share=True
        )
        if done is not None:
            return done
        probes = self.fit_probes(seed)
        self.noise_floor(seed)
        gen, scores = self.train_data(seed)
        self.reset_model()
        trained = self.trained_against(spec)
        tdir = cdir / "train"

        def prepare():
            tele = self.telemetry(seed, trained)
            self._prime_base(tele, seed)
            before, basis = _geometry_points(
                self._base_acts[seed]["drift"], tele.drift_set, self._reference[seed], self._geometry_hooks()
            )
            return tele, before, basis, (tdir / "config.json").exists() or (tdir / "checkpoints").exists()

        # rank 0 alone measures telemetry (the other ranks get None) and decides resume for every rank
        tele, before, basis, resume = self._on_main(prepare) or (None, None, None, None)
        if self._collective():
            resume = D.broadcast_object(resume, self.dist)
        ctx = CellContext(self, spec, seed, probes, trained, gen, scores, tele, tdir, resume=bool(resume))
        t0 = time.perf_counter()
        info: dict[str, Any] = {
            "cell": cell,
            "seed": seed,
            "objective": spec.objective,
            "signal": spec.signal,
            "trained_against": trained,
        }
        # a training cell trains on every rank (data-parallel); one that does not only measures, on rank 0
        info.update((_run_objective(ctx) if spec.trains else self._on_main(lambda: _run_none(ctx))) or {})
        self._tick("train_s", t0)

        def finish():
            assert tele is not None  # finish runs on rank 0, which prepared the telemetry
            if info.get("stopped_reason") == "nan":
                log.warning(
                    "cell %s seed %s stopped on a non-finite loss; evaluating the last good weights", cell, seed
                )
            t0 = time.perf_counter()
            result = self.evaluate(spec, seed, tele)
            self._tick("evaluate_s", t0)
            after, _ = _geometry_points(
                tele.activations(self.model), tele.drift_set, self._reference[seed], self._geometry_hooks(), basis
            )
            result["info"] = info
            _write_json(cdir / "geometry.json", {"before": before, "after": after})
            _write_json(cdir / "eval.json", result)
            if not self.config.keep_checkpoints:
                shutil.rmtree(tdir / "checkpoints", ignore_errors=True)
            return result

        return self._on_main(finish, share=True)

    def _geometry_hooks(self) -> list[str]:
        return [f"blocks.{self.config.probes.layer}.hook_resid_post"]

    def _train_config(self, spec: CellSpec):
        """The cell's training settings (its objective's study adapter's); None for ``none``."""
        return cell_settings(self.config, spec) if spec.trains else None

    @_rank0_only
    def evaluate_pending(self) -> int:
        """Evaluate cells whose training finished (final checkpoint) but whose evaluation did not."""
        from probe_lens.training import latest_checkpoint, load_checkpoint

        n = 0
        for seed in self.config.seeds:
            for spec in self.config.cell_specs:
                cdir = self.cell_dir(spec.name, seed)
                ckpt_root = cdir / "train" / "checkpoints"
                if self.is_done(spec.name, seed) or not spec.trains or not ckpt_root.exists():
                    continue
                ckpt = latest_checkpoint(ckpt_root)
                if ckpt is None:
                    continue
                state = json.loads((ckpt / "state.json").read_text())
                if int(state.get("step", -1)) < self._train_config(spec).max_steps:
                    continue  # unfinished training: `train` resumes it
                self.reset_model()
                trained = self.trained_against(spec)
                tele = self.telemetry(seed, trained)
                self._prime_base(tele, seed)  # the seed's reference directions, fit on the base model
                before, basis = _geometry_points(
                    self._base_acts[seed]["drift"], tele.drift_set, self._reference[seed], self._geometry_hooks()
                )
                load_checkpoint(ckpt, self.model, restore_rng=False)
                result = self.evaluate(spec, seed, tele)
                after, _ = _geometry_points(
                    tele.activations(self.model), tele.drift_set, self._reference[seed], self._geometry_hooks(), basis
                )
                result["info"] = {
                    "cell": spec.name,
                    "seed": seed,
                    "objective": spec.objective,
                    "signal": spec.signal,
                    "trained_against": trained,
                    "evaluated_from": str(ckpt),
                }
                _write_json(cdir / "geometry.json", {"before": before, "after": after})
                _write_json(cdir / "eval.json", result)
                n += 1
        return n

    # ------------------------------------------------------------------ step 5: evaluation
    def evaluate(self, spec: CellSpec, seed: int, tele: StudyTelemetry) -> dict[str, Any]:
        """The behaviour's rates, degeneration and fluency of fresh samples; every tracked probe on both sets,
        with intervals (no rates for a pre-labelled behaviour: nothing labels fresh samples)."""
        from probe_lens.experiments.metrics import degeneration_metrics, evaluate_generation, perplexity
        from probe_lens.experiments.stats import auroc_ci

        ev = self.config.eval
        assert ev.threshold is not None  # StudyConfig resolves it from the behaviour
        model = self.model
        plan = self.prompt_plan
        texts = [p.text for p in plan.eval_provocative for _ in range(ev.samples_per_prompt)]
        t0 = time.perf_counter()
        gen = generate(
            model,
            texts,
            max_new_tokens=ev.max_new_tokens,
            temperature=ev.temperature,
            top_p=ev.top_p,
            seed=10_000 + seed,
            batch_size=self.config.data.batch_size,
            progress=self.progress,
            fast=self.config.data.fast_sampling,
        )
        self._tick("generate_eval_s", t0)
        t0 = time.perf_counter()
        sample_scores = None if self.prelabelled else scorer_scores(self.scorer, gen)
        self._tick("score_s", t0)
        out: dict[str, Any] = {"cell": spec.name, "seed": seed, "behaviour": self.behaviour.name}
        out.update(
            evaluate_generation(
                sample_scores,
                gen.response_texts,
                ev.samples_per_prompt,
                self.scorer.describe(),
                threshold=ev.threshold,
                metric_keys=self.names.metric_keys,
            )
        )
        resp = gen.tokens[:, gen.prompt_len :]
        out.update(degeneration_metrics(gen.response_mask[:, gen.prompt_len :], resp, model.tokenizer.eos_token_id))
        fluency = [p.text for p in plan.eval_neutral]
        out["eval/perplexity_neutral"] = perplexity(model, fluency, batch_size=self.config.data.batch_size)
        probes = self.fit_probes(seed)
        trained = self.trained_against(spec)
        name = (trained or self.probe_names()["single"])[0]
        out[self.names.metric_keys["probe_p"]] = float(
            probe_scores(model, gen, probes[name], batch_size=self.config.data.batch_size, progress=False).mean()
        )
        out.update(tele.measure(model, rates=False))
        out["eval/n_responses"] = len(gen)
        split = self.seed_split(seed)
        out["baseline/auroc_prompt_type"] = split.info["baseline/auroc_prompt_type"]
        out["baseline/auroc_prompt_topic"] = split.info["baseline/auroc_prompt_topic"]
        for k_, v in self.noise_floor(seed).items():
            out[f"drift/cosine_floor/{k_}"] = v["p05"]
        # every tracked probe's score on every evaluation row, and an interval per AUROC over examples
        scores = tele.scores(model)
        intervals: dict[str, list[float]] = {}
        for which, s in scores.items():
            label = ONPOLICY if which == "drift" else which
            for pname, vals in s.items():
                if pname == "__y__":
                    continue
                metric = _metric_name(label, pname)
                _, lo, hi = auroc_ci(s["__y__"], vals, method=ev.ci_method)
                intervals[metric] = [lo, hi]
        out["intervals"] = intervals
        cdir = self.cell_dir(spec.name, seed)
        cdir.mkdir(parents=True, exist_ok=True)
        _write_json(
            cdir / "probe_scores.json",
            {(ONPOLICY if w == "drift" else w): {k_: v.tolist() for k_, v in s.items()} for w, s in scores.items()},
        )
        samples = pd.DataFrame(
            {
                "prompt": gen.prompts,
                "response": gen.response_texts,
                "score": np.full(len(gen), np.nan) if sample_scores is None else sample_scores,
            }
        )
        atomic_write(cdir / "eval_samples.parquet", lambda p: samples.to_parquet(p, index=False))
        return out

    # ------------------------------------------------------------------ all of it
    @_rank0_only
    def check_disk(self) -> None:
        """Stop before training when the disk cannot hold the largest checkpoint a cell will write."""
        from probe_lens._disk import check_free_disk, checkpoint_bytes
        from probe_lens.training.trainer import select_trainable

        need = 0
        for spec in self.config.cell_specs:
            tc = self._train_config(spec)
            if tc is None:
                continue
            names = select_trainable(self.model, tc.trainable)
            need = max(
                need,
                checkpoint_bytes(self.model, names, with_optimizer=True, params=tc.checkpoint_params)
                * (tc.keep_checkpoints + 1),
            )
        if need:
            check_free_disk(self.out, need, "the training checkpoints of one cell (kept until it is evaluated)")

    def run(self) -> pd.DataFrame:
        cfg = self.config
        self._start_clock()
        self.check_disk()
        self._on_main(self.build_data)  # the other ranks never need the dataset itself
        todo = [(c.name, s) for s in cfg.seeds for c in cfg.cell_specs]
        for cell, seed in tqdm(todo, desc="study cells", disable=not (self.progress and self.dist.is_main)):
            if self._on_main(functools.partial(self.is_done, cell, seed), share=True):
                continue
            self.run_cell(cell, seed)
        # from this object's first step (a caller may have built the data or loaded the model before run())
        assert self._t_first is not None  # set by _start_clock()
        self._timings["total_s"] = time.perf_counter() - self._t_first
        return self.report()

    def results(self) -> pd.DataFrame:
        rows = []
        for f in sorted((self.out / "cells").glob("*/seed*/eval.json")):
            r = json.loads(f.read_text())
            info = r.pop("info", None) or {}
            intervals = r.pop("intervals", None) or {}
            for metric, (lo, hi) in intervals.items():
                r[f"{metric}/ci_low"], r[f"{metric}/ci_high"] = lo, hi
            r.setdefault("behaviour", self.behaviour.name)  # a run evaluated before behaviours: its study's
            r["trained_against"] = ",".join(info.get("trained_against") or []) or "none"
            r.update(_headline_probe_metrics(r, info.get("trained_against") or [], self.probe_names()))
            scorer = r.pop("eval/scorer", None)
            if isinstance(scorer, dict):
                r["scorer"] = f"{scorer.get('name')} {scorer.get('version')}"
            elif scorer is not None:
                r["scorer"] = scorer
            rows.append(r)
        if not rows:
            raise FileNotFoundError(f"no finished cells under {self.out / 'cells'}; run the study first")
        df = pd.DataFrame(rows)
        order = {c.name: i for i, c in enumerate(self.config.cell_specs)}
        return df.sort_values(["cell", "seed"], key=lambda s: s.map(order) if s.name == "cell" else s).reset_index(
            drop=True
        )

    def metrics(self) -> pd.DataFrame:
        frames = []
        for f in sorted((self.out / "cells").glob("*/seed*/train/metrics.jsonl")):
            df = read_metrics(f)
            df["cell"] = f.parts[-4]
            df["seed"] = int(f.parts[-3].removeprefix("seed"))
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    @_rank0_only
    def report(self) -> pd.DataFrame:
        from probe_lens.experiments.headline import contrasts, headline_table, write_headline
        from probe_lens.experiments.report import write_report
        from probe_lens.experiments.stats import summarize

        results = self.results()
        atomic_write(self.out / "results.csv", lambda p: results.to_csv(p, index=False))
        atomic_write(self.out / "results.parquet", lambda p: results.to_parquet(p, index=False))
        value_cols = [
            c
            for c in results.columns
            if c not in ("cell", "seed", "scorer", "trained_against", "behaviour")
            and not c.endswith(("/ci_low", "/ci_high"))
            and pd.api.types.is_numeric_dtype(results[c])
        ]
        summary = summarize(results, ["cell"], value_cols)
        atomic_write(self.out / "summary.csv", lambda p: summary.to_csv(p, index=False))
        from probe_lens.experiments.stats import format_table

        atomic_write(self.out / "summary.md", lambda p: p.write_text(format_table(summary)))
        con = contrasts(results, self.config, self.probe_names(), out_dir=self.out)
        atomic_write(self.out / "contrasts.csv", lambda p: con.to_csv(p, index=False))
        table = headline_table(summary, self.config, self.probe_names())
        seeds_info, floors = {}, {}
        for s in self.config.seeds:
            split_file, floor_file = (self.out / "seeds" / str(s) / f for f in ("split.json", "noise_floor.json"))
            if split_file.exists():  # a corrupt one is rebuilt
                seeds_info[s] = _read_derived_json(split_file)
                if seeds_info[s] is None:
                    seeds_info[s] = self.seed_split(s).info
                    _write_json(split_file, seeds_info[s])
            if floor_file.exists():
                floors[s] = self.noise_floor(s)
        n_curated = (
            len(self.curated_set().labels) if self.config.eval.curated is not None and self._model is not None else None
        )
        write_headline(
            self.out / "headline.md", table, con, seeds_info, floors, self.config, self.probe_names(), n_curated
        )
        metrics = self.metrics()
        if len(metrics):
            atomic_write(self.out / "metrics.parquet", lambda p: metrics.to_parquet(p, index=False))
        geometry = {}
        for f in sorted((self.out / "cells").glob("*/seed*/geometry.json")):
            cell, seed = f.parts[-3], int(f.parts[-2].removeprefix("seed"))
            if seed == min(self.config.seeds) or cell not in geometry:
                g = json.loads(f.read_text())
                geometry[cell] = {h: {"before": g["before"][h], "after": g["after"][h]} for h in g["before"]}
        config = self.config.to_dict()
        name = self._model.cfg.model_name if self._model is not None else self.config.model
        config["model"] = (
            "embedded Gemma-3-270M (google/gemma-3-270m, Q4_K_M GGUF dequantised)"
            if self.config.model is None and name in (None, "gemma-3-270m")
            else name
        )
        config["scorer"] = self.scorer.describe()
        config["behaviour"] = self.behaviour.describe()
        config["heldout_probes"] = self.probe_names()["heldout"]
        config["trained_against"] = {c.name: self.trained_against(c) for c in self.config.cell_specs}
        config["headline_probes"] = [n for n in self.tracked_probes() if n not in self.probe_names()["heldout_members"]]
        timings_file = self.out / "timings.json"
        timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
        if self._timings:  # a report-only call has none of its own: keep the run's
            timings = dict(self._timings)
            _write_json(timings_file, timings)
        config["timings"] = timings
        write_report(
            self.out,
            results=results,
            metrics=metrics,
            geometry=geometry,
            config=config,
            png_dir=self.out / "assets" if self.export_png else None,
            headline={"table": table, "contrasts": con},
        )
        return summary


# ---------------------------------------------------------------------------------------------
# objectives: a training cell is trained by its objective's study adapter (experiments.adapters
# .train_cell); a ``none`` cell only measures the base model
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CellContext:
    """What an objective's study adapter gets: the study, the cell, and the seed's shared data.

    Under torchrun a training cell runs on every rank; ``telemetry`` is None except on rank 0.
    """

    study: Study
    spec: CellSpec
    seed: int
    probes: dict[str, Any]
    trained: list[str]
    generation: Generation
    scores: dict[str, np.ndarray]
    telemetry: StudyTelemetry | None
    train_dir: Path
    resume: bool

    def train_config(self, base):
        """``base`` (the cell's settings) with this cell's seed, folder, telemetry and per-rank batch."""
        cfg = self.study.config
        tc = dataclasses.replace(
            base,
            seed=self.seed,
            out_dir=str(self.train_dir),
            telemetry_every=cfg.telemetry_every,
            progress=self.study.progress,
        )
        world = self.study.dist.world_size
        if world > 1:  # the study's batch is the global one: each rank takes its share (checked to divide)
            tc = dataclasses.replace(tc, batch_size=tc.batch_size // world)
        return tc


def _run_none(ctx: CellContext) -> dict[str, Any]:
    ctx.train_dir.mkdir(parents=True, exist_ok=True)
    assert ctx.telemetry is not None  # called on rank 0, which holds the telemetry
    row = {"step": 0, **ctx.telemetry.measure(ctx.study.model, 0)}
    atomic_write(ctx.train_dir / "metrics.jsonl", lambda p: p.write_text(json.dumps(row) + "\n"))
    return {}


def _run_objective(ctx: CellContext) -> dict[str, Any]:
    """Train a cell with its objective's study adapter."""
    res = train_cell(ctx)
    return {**res.info, "stopped_reason": res.stopped_reason, "final_step": res.final_step}


# ---------------------------------------------------------------------------------------------
# telemetry with the behaviour's rates and role-free probe names
# ---------------------------------------------------------------------------------------------


def _metric_name(which: str, probe_or_retrained: str) -> str:
    """``probe/<set>_auroc/<probe>`` or ``probe/<set>_auroc_retrained/<hook>``: the same name in every cell."""
    if probe_or_retrained.startswith("retrained/"):
        return f"probe/{which}_auroc_retrained/{probe_or_retrained[len('retrained/') :]}"
    return f"probe/{which}_auroc/{probe_or_retrained}"


class StudyTelemetry(DriftTelemetry):
    """Drift telemetry for a study: every tracked probe under one name in every cell, and the behaviour's rate.

    Probe AUROCs are logged as ``probe/onpolicy_auroc/<probe>`` and ``probe/curated_auroc/<probe>``
    (retrained: ``probe/<set>_auroc_retrained/<hook>``) whether or not the cell trains against the probe
    (which it does is in the cell's ``eval.json`` info), so a probe's curve in a cell that trains against
    it and in its control cells share a column. Adds the rate and mean score (``metric_keys`` roles
    ``rate`` and ``mean``: ``eval/toxicity_rate``, ``eval/mean_toxicity`` for toxicity, the default) of a
    few held-out provocative prompts (1 sample each, ``rate_prompts``; none: no rates) to every row, for
    the rate vs step.
    """

    def __init__(
        self,
        *args,
        rate_prompts: list[str],
        scorer,
        max_new_tokens: int,
        threshold: float,
        seed: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        fast_sampling: bool = False,
        metric_keys: Mapping[str, str] | None = None,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.fast_sampling = fast_sampling
        self.rate_prompts = rate_prompts
        self.metric_keys = dict(BehaviourNames.of(None).metric_keys if metric_keys is None else metric_keys)
        self.scorer = scorer
        self.max_new_tokens = max_new_tokens
        self.threshold = threshold
        self.seed = seed
        self.temperature = temperature
        self.top_p = top_p
        self._rate_cache: tuple[Any, dict[str, float]] | None = None

    def measure(self, model, step: int | None = None, *, rates: bool = True) -> dict[str, float]:
        raw = super().measure(model, step)
        out: dict[str, float] = {}
        for k, v in raw.items():
            head, _, rest = k.partition("/")
            which = ONPOLICY if head == "probe" else head
            kind, _, name = rest.partition("/")
            if kind in ("auroc_frozen", "auroc_heldout"):
                out[_metric_name(which, name)] = v
            elif kind == "auroc_retrained":
                out[_metric_name(which, f"retrained/{name}")] = v
            else:
                out[k] = v
        if rates:
            out.update(self.rates(model))
        return out

    def rates(self, model) -> dict[str, float]:
        """The behaviour's rate and mean score of the telemetry prompts' samples (cached per model state)."""
        if not self.rate_prompts:
            return {}
        key = model_state_key(model)
        if self._rate_cache is not None and self._rate_cache[0] == key:
            return dict(self._rate_cache[1])
        gen = generate(
            model,
            self.rate_prompts,
            max_new_tokens=self.max_new_tokens,
            seed=self.seed,
            temperature=self.temperature,
            top_p=self.top_p,
            batch_size=self.batch_size,
            progress=False,
            fast=self.fast_sampling,
        )
        scores = np.asarray(self.scorer.score(gen.response_texts))
        out = {
            self.metric_keys["rate"]: float((scores >= self.threshold).mean()),
            self.metric_keys["mean"]: float(scores.mean()),
        }
        self._rate_cache = (key, out)
        return dict(out)

    def prime_rates(self, model, values: dict[str, float]) -> None:
        """Declare ``values`` (from :meth:`rates` of an identical model and seed) as ``model``'s."""
        self._rate_cache = (model_state_key(model), dict(values))


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _prompt_plan(cfg: StudyConfig) -> PromptPlan:
    """Evaluation prompts, the probe pool and the training pool of the behaviour's prompts, each tag
    stratified by topic."""
    prompts = cfg.behaviour_spec.load_prompts()
    key, seed = cfg.sampling.stratify_by, cfg.prompt_seed
    by_tag = {t: [p for p in prompts if p.tag == t] for t in ("provocative", "neutral")}
    n_eval = {"provocative": cfg.eval.n_provocative, "neutral": cfg.eval.n_fluency_texts}
    pool_tags = cfg.sampling.probe_tags
    td = cfg.train_data
    prov_share = len(by_tag["provocative"]) / max(1, len(prompts))
    # keep enough prompts outside the pool for the training draws (a quarter more, so seeds draw different ones)
    n_train_prov = int(round(td.n_prompts * prov_share))
    reserve = {
        "provocative": max(int(np.ceil(1.25 * n_train_prov)), 4),
        "neutral": max(int(np.ceil(1.25 * (td.n_prompts - n_train_prov))), 2),
    }
    pool_total = sum(max(0, len(by_tag[t]) - n_eval[t] - reserve[t]) for t in pool_tags)
    want = pool_total if cfg.n_probe_prompts is None else cfg.n_probe_prompts
    if pool_total < 4:
        raise ValueError(
            f"behaviour {cfg.behaviour!r} has {len(prompts)} prompts ({len(by_tag['provocative'])} provocative): after the "
            f"{n_eval} evaluation prompts and the training reserve {reserve} only {pool_total} are left for the probe "
            "pool (at least 4 needed); lower eval.n_provocative or train_data.n_prompts, or give more prompts"
        )
    if want > pool_total:
        raise ValueError(
            f"n_probe_prompts={want} but only {pool_total} of behaviour {cfg.behaviour!r}'s {'/'.join(pool_tags)} prompts "
            "are left after the "
            f"{n_eval} evaluation prompts and the training reserve {reserve}; lower n_probe_prompts or eval sizes"
        )
    parts: dict[str, list[Prompt]] = {"eval_provocative": [], "eval_neutral": [], "pool": [], "train_pool": []}
    for tag, group in by_tag.items():
        n_pool = 0
        if tag in pool_tags:
            avail = {t: max(0, len(by_tag[t]) - n_eval[t] - reserve[t]) for t in pool_tags}
            n_pool = int(round(want * avail[tag] / max(1, sum(avail.values()))))
        n_train = len(group) - n_eval[tag] - n_pool
        if n_train < 1:
            raise ValueError(
                f"not enough {tag} prompts ({len(group)}) for {n_eval[tag]} evaluation + {n_pool} pool prompts"
            )
        split = stratified_partition(group, {"eval": n_eval[tag], "pool": n_pool, "train": n_train}, seed=seed, key=key)
        parts[f"eval_{tag}"] = split["eval"]
        parts["pool"] += split["pool"]
        parts["train_pool"] += split["train"]
    return PromptPlan(**parts)


def _subsample_by_kind(rows: list[Any], n: int, seed: int) -> list[Any]:
    """``n`` of ``rows`` (curated texts), each ``kind`` in proportion (largest remainder), seeded, in id order."""
    rng = np.random.default_rng(seed)
    kinds = sorted({r.kind for r in rows})
    groups = {k: [r for r in rows if r.kind == k] for k in kinds}
    share = np.array([len(groups[k]) for k in kinds], dtype=float) * n / len(rows)
    counts = np.floor(share).astype(int)
    for i in np.argsort(-(share - counts))[: n - counts.sum()]:
        counts[i] += 1
    picked = [
        r for k, c in zip(kinds, counts) for r in (groups[k][i] for i in sorted(rng.permutation(len(groups[k]))[:c]))
    ]
    return sorted(picked, key=lambda r: r.id)


def _train_prompts(pool: list[Prompt], n: int, seed: int, key: str) -> list[Prompt]:
    """``n`` training prompts from ``pool``, tags in the pool's proportion, each tag stratified by ``key``."""
    by_tag = {t: [p for p in pool if p.tag == t] for t in sorted({p.tag for p in pool})}
    n = min(n, len(pool))
    counts = {t: int(round(n * len(g) / len(pool))) for t, g in by_tag.items()}
    drift = n - sum(counts.values())
    if drift and counts:
        t = max(counts, key=lambda t: len(by_tag[t]))
        counts[t] += drift
    chosen: list[Prompt] = []
    for t, g in by_tag.items():
        if counts[t] > 0:
            chosen += stratified_sample(g, min(counts[t], len(g)), seed=seed, key=key)
    return chosen


def _prompt_type_auroc(labels: np.ndarray, tags: np.ndarray) -> float:
    """AUROC of a detector that sees only the prompt's tag (provocative = 1): the prompt-type confound.
    0.5 when every row comes from one prompt type."""
    from sklearn.metrics import roc_auc_score

    if len(np.unique(labels)) < 2:
        return float("nan")
    return float(roc_auc_score(labels, (np.asarray(tags) == "provocative").astype(float)))


def _prompt_topic_auroc(
    labels: np.ndarray, topics: Sequence[str] | np.ndarray, fit_rows: np.ndarray, eval_rows: np.ndarray
) -> float:
    """AUROC on ``eval_rows`` of a detector that sees only the prompt's topic: each topic's share of
    label 1 on ``fit_rows`` (unseen topics: the overall share)."""
    from sklearn.metrics import roc_auc_score

    topics = np.asarray(topics)
    ye = labels[eval_rows]
    if len(np.unique(ye)) < 2:
        return float("nan")
    df = pd.DataFrame({"topic": topics[fit_rows], "y": labels[fit_rows]})
    rate = df.groupby("topic")["y"].mean().to_dict()
    overall = float(labels[fit_rows].mean())
    return float(roc_auc_score(ye, [rate.get(t, overall) for t in topics[eval_rows]]))


def _pooled(ds: ActivationDataset, hook: str, rows: np.ndarray) -> np.ndarray:
    """Pooled activations ``[len(rows), d_model]`` of the dataset's ``rows`` at ``hook``."""
    return ds.acts[hook][torch.as_tensor(rows)].numpy()


def _cos(a: Any, b: Any) -> float:
    a, b = np.asarray(a, dtype=np.float64).reshape(-1), np.asarray(b, dtype=np.float64).reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else float("nan")


def _headline_probe_metrics(row: dict[str, Any], trained: list[str], names: dict[str, list[str]]) -> dict[str, float]:
    """Summary columns comparable across cells.

    ``probe/<set>_auroc_trained_against``: the AUROC of the (first) probe this cell trains against (NaN
    for cells that train against none; the same probe's AUROC in control cells is its own column);
    ``probe/<set>_auroc_heldout_avg``: mean AUROC of the held-out probes *excluding* later orthogonal
    ensemble members (refitting noise at small n); ``drift/cosine_trained_against``: cosine between the
    trained-against probe's original direction and one re-fit on the trained model (an ensemble: its
    first member).
    """
    nan = float("nan")
    out: dict[str, float] = {}
    heldout = [n for n in names["heldout"] if n not in names["heldout_members"]]
    for which in (ONPOLICY, CURATED):
        out[f"probe/{which}_auroc_trained_against"] = (
            row.get(f"probe/{which}_auroc/{trained[0]}", nan) if trained else nan
        )
        vals = [row.get(f"probe/{which}_auroc/{n}") for n in heldout]
        finite = [v for v in vals if v is not None and np.isfinite(v)]
        out[f"probe/{which}_auroc_heldout_avg"] = float(np.mean(finite)) if finite else nan
    out["drift/cosine_trained_against"] = (
        row.get(f"drift/cosine/{trained[0]}", row.get(f"drift/cosine/{trained[0]}/m0", nan)) if trained else nan
    )
    return out


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    """Parts of a study config that change results (device and progress do not). A study file written
    before behaviours (no ``behaviour`` key) is a toxicity study."""
    d = copy.deepcopy(d)
    d.pop("device", None)
    d.setdefault("behaviour", DEFAULT_BEHAVIOUR)
    if d.get("behaviour_file") is None:
        d.pop("behaviour_file", None)
    return d


def _check_prelabelled(cfg: StudyConfig) -> None:
    """Refuse what a pre-labelled behaviour cannot do: cells trained against the output classifier
    (it would have to label fresh samples) and a probe pool from anywhere but its rows."""
    bad = [c.name for c in cfg.cell_specs if c.signal == "classifier"]
    if bad:
        keep = [
            c
            for c in cfg.cells
            if not (isinstance(c, str) and c in bad or isinstance(c, dict) and c.get("name") in bad)
        ]
        raise ValueError(
            f"behaviour {cfg.behaviour!r} is pre-labelled: its labels cover only the rows it was given, so nothing "
            f"labels the fresh samples that cell(s) {bad} rank or filter with the output classifier. Drop them "
            f"(--set cells={json.dumps(keep)}) or name a scorer (--set scorer=NAME)"
        )
    if cfg.data_source != "auto":
        raise ValueError(
            f"behaviour {cfg.behaviour!r} is pre-labelled: the probe pool is read from its rows, so data_source "
            f"must be 'auto', not {cfg.data_source!r}"
        )


def _save_generation(folder: Path, gen: Generation) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "generation.safetensors", lambda p: save_file(gen.state_dict(), str(p)))
    _write_json(
        folder / "generation.json",
        {"prompts": gen.prompts, "response_texts": gen.response_texts, "prompt_len": gen.prompt_len},
    )


def _load_generation(folder: Path) -> Generation:
    t = load_file(str(folder / "generation.safetensors"))
    meta = json.loads((folder / "generation.json").read_text())
    return Generation(
        meta["prompts"],
        t["tokens"],
        t["attention_mask"],
        t["response_mask"],
        int(meta["prompt_len"]),
        meta["response_texts"],
    )


def _geometry_points(
    acts: dict[str, np.ndarray],
    drift: DriftSet,
    reference: dict[str, np.ndarray],
    hooks: list[str],
    basis: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """On-policy evaluation rows projected on the seed's reference direction and on the top-2 PCs.

    The reference direction per hook is fit once on the base model (class-mean difference on the
    probe-fit rows) and the same in every cell; the PC basis (and centre) comes from ``basis`` when given
    (the base model's), so before and after share one coordinate system. Returns ``(points, basis)``.
    """
    rows = drift.is_eval
    points: dict[str, Any] = {}
    basis = dict(basis or {})
    for hook in hooks:
        X = np.asarray(acts[hook], dtype=np.float64)[rows]
        if hook not in basis:
            centre = X.mean(axis=0)
            _, _, vt = np.linalg.svd(X - centre, full_matrices=False)
            basis[hook] = {"centre": centre, "pcs": vt[:2]}
        centre, pcs = basis[hook]["centre"], basis[hook]["pcs"]
        proj = (X - centre) @ pcs.T
        points[hook] = {
            "x_dir": (X @ reference[hook]).tolist(),
            "x_pc1": proj[:, 0].tolist(),
            "x_pc2": proj[:, 1].tolist(),
            "label": np.asarray(drift.labels[rows]).astype(int).tolist(),
        }
    return points, basis
