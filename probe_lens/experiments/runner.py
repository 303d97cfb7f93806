"""The study runner: the paper's comparison end to end, resumable, one folder per study.

Layout of a run folder::

    study.json                      resolved StudyConfig
    data/probe_fit/                 labelled activation set from the base model (builder format)
    probes/<name>/                  trained-against and held-out probes (safetensors + JSON)
    probes/report.csv               their AUROC on the held-out prompts of the probe data
    seeds/<s>/train_data/           the shared training samples of seed s, with classifier/probe scores
    cells/<cell>/seed<s>/train/     config.json, metrics.jsonl, checkpoints/ (training cells)
    cells/<cell>/seed<s>/eval.json  final evaluation: the cell is finished when this exists
    results.csv, results.parquet    one row per (cell, seed)
    summary.csv, summary.md         mean and 95% CI over seeds per cell
    metrics.parquet                 every telemetry row of every run
    report.html, assets/*.png       the drift report
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from probe_lens.data import build_dataset, load_prompts, neutral, provocative, split_prompts
from probe_lens._io import atomic_write
from probe_lens.data.builder import ActivationDataset
from probe_lens.experiments.config import CELLS, StudyConfig
from probe_lens.models import Generation, generate, load_model
from probe_lens.probes import DiverseProbeEnsemble, LogisticProbe, MassMeanProbe, load_probe, save_probe
from probe_lens.scorers import get_scorer
from probe_lens.training import (
    DriftSet,
    DriftTelemetry,
    build_pairs,
    probe_scores,
    read_metrics,
    scorer_scores,
    train_classifier_sft,
    train_dpo,
    train_probe_sft,
)
from probe_lens.training.telemetry import model_state_key

log = logging.getLogger(__name__)


class StudyFolderError(ValueError):
    """The output folder holds another study, or a finished one without --resume."""


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda p: p.write_text(json.dumps(obj, indent=2, default=_json_default)))


def _json_default(o: Any):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


class Study:
    """One study in one folder. Each step is resumable; :meth:`run` does them all.

    Args:
        config: the study.
        out_dir: the run folder.
        resume: continue a study already in ``out_dir`` (finished cells are skipped).
        overwrite: delete ``out_dir`` first if it holds a *different* study.
        model, scorer: use these instead of loading ``config.model`` / ``get_scorer(config.scorer)``.
        export_png: also write static PNGs of the key figures to ``assets/`` (needs kaleido + Chromium).
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
        # telemetry of the base model, shared by every cell (drift activations; toxicity per seed)
        self._base_acts: dict[str, np.ndarray] | None = None
        self._base_toxicity: dict[int, dict[str, float]] = {}
        self._prepare_folder(resume=resume, overwrite=overwrite)

    # ------------------------------------------------------------------ folder & shared state
    def _prepare_folder(self, *, resume: bool, overwrite: bool) -> None:
        spec = self.out / "study.json"
        wanted = self.config.to_dict()
        if spec.exists():
            saved = json.loads(spec.read_text())
            if _comparable(saved) != _comparable(wanted):
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

    def _adopt_model(self, model) -> None:
        self._model = model
        self._base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @property
    def model(self):
        """The model (loaded on first use); :meth:`reset_model` restores its base weights."""
        if self._model is None:
            self._start_clock()
            t0 = time.perf_counter()
            self._adopt_model(load_model(self.config.model, device=self.config.device))
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
        if self._scorer is None:
            self._scorer = get_scorer(self.config.scorer)
        return self._scorer

    def _start_clock(self) -> None:
        if self._t_first is None:
            self._t_first = time.perf_counter()

    def _tick(self, key: str, t0: float) -> None:
        self._timings[key] = self._timings.get(key, 0.0) + time.perf_counter() - t0

    @property
    def splits(self):
        return split_prompts(load_prompts(), seed=self.config.prompt_seed, n_eval_provocative=self.config.eval.n_provocative)

    # ------------------------------------------------------------------ step 1: probe data
    def build_data(self) -> ActivationDataset:
        self._start_clock()
        folder = self.out / "data" / "probe_fit"
        if (folder / "meta.json").exists():
            return ActivationDataset.load(folder)
        t0 = time.perf_counter()
        prompts = self.splits.probe_fit
        n = self.config.n_probe_prompts
        if n is not None and n < len(prompts):
            # keep the provocative : neutral proportion of the split
            prov, neut = provocative(prompts), neutral(prompts)
            n_prov = int(round(n * len(prov) / len(prompts)))
            prompts = prov[:n_prov] + neut[: n - n_prov]
        ds = build_dataset(self.model, prompts, self.scorer, self.config.data, out_dir=folder, progress=self.progress)
        self._tick("build_data_s", t0)
        return ds

    # ------------------------------------------------------------------ step 2: probes
    def probe_names(self) -> dict[str, list[str]]:
        p = self.config.probes
        single = f"logistic_L{p.layer}"
        ens = f"ensemble{p.n_ensemble}_L{p.layer}"
        heldout = [f"massmean_L{p.layer}", *[f"logistic_L{L}" for L in p.heldout_layers]]
        heldout += [f"ens_heldout{i}_L{p.layer}" for i in range(p.n_heldout_members)]
        return {"single": [single], "ensemble": [ens], "heldout": heldout}

    def fit_probes(self) -> dict[str, Any]:
        self._start_clock()
        folder = self.out / "probes"
        names = self.probe_names()
        all_names = names["single"] + names["ensemble"] + names["heldout"]
        if all((folder / n / "probe.json").exists() for n in all_names) and (folder / "report.csv").exists():
            return self.load_probes()
        ds = self.build_data()
        p = self.config.probes
        t0 = time.perf_counter()
        model_name = ds.meta["model_name"]
        hook = f"blocks.{p.layer}.hook_resid_post"
        meta = dict(model_name=model_name, pooling=self.config.data.pooling)
        ytr, yte = ds.y("train"), ds.y("test")
        if len(np.unique(ytr)) < 2:
            raise RuntimeError(
                f"the probe data has one class only ({ds.counts()}); sample more (data.samples_per_prompt, "
                "data.max_rounds) or lower data.threshold"
            )
        probes: dict[str, Any] = {}
        probes[names["single"][0]] = LogisticProbe(C=p.C, hook=hook, **meta).fit(ds.X(hook, "train"), ytr)
        full = DiverseProbeEnsemble(
            n_probes=p.n_ensemble + p.n_heldout_members, method="nullspace", hook=hook, progress=False, **meta
        ).fit(ds.X(hook, "train"), ytr)
        probes[names["ensemble"][0]] = full.subset(list(range(p.n_ensemble)))
        for i in range(p.n_heldout_members):
            probes[f"ens_heldout{i}_L{p.layer}"] = full.member(p.n_ensemble + i)
        probes[f"massmean_L{p.layer}"] = MassMeanProbe(hook=hook, **meta).fit(ds.X(hook, "train"), ytr)
        for L in p.heldout_layers:
            h = f"blocks.{L}.hook_resid_post"
            probes[f"logistic_L{L}"] = LogisticProbe(C=p.C, hook=h, **meta).fit(ds.X(h, "train"), ytr)
        rows = []
        for name, probe in probes.items():
            h = probe.metadata.hook if hasattr(probe, "metadata") else hook
            auroc = probe.score(ds.X(h, "test"), yte) if len(np.unique(yte)) == 2 else float("nan")
            role = "trained" if name in names["single"] + names["ensemble"] else "heldout"
            rows.append({"probe": name, "role": role, "hook": h, "type": type(probe).__name__, "auroc_test": auroc})
            save_probe(probe, folder / name)
        atomic_write(folder / "report.csv", lambda f: pd.DataFrame(rows).to_csv(f, index=False))
        self._tick("fit_probes_s", t0)
        return probes

    def load_probes(self) -> dict[str, Any]:
        folder = self.out / "probes"
        names = self.probe_names()
        return {n: load_probe(folder / n) for n in names["single"] + names["ensemble"] + names["heldout"]}

    def drift_set(self, ds: ActivationDataset) -> DriftSet:
        return DriftSet.from_dataset(ds)

    # ------------------------------------------------------------------ step 3: training data per seed
    def train_data(self, seed: int) -> tuple[Generation, dict[str, np.ndarray]]:
        folder = self.out / "seeds" / str(seed) / "train_data"
        if (folder / "scores.json").exists():
            return _load_generation(folder), {k: np.asarray(v) for k, v in json.loads((folder / "scores.json").read_text()).items()}
        td = self.config.train_data
        pool = self.splits.train
        rng = np.random.default_rng(seed)
        prov, neut = provocative(pool), neutral(pool)
        n_prov = min(len(prov), int(round(td.n_prompts * len(prov) / max(1, len(pool)))))
        n_neut = min(len(neut), td.n_prompts - n_prov)
        chosen = [prov[i] for i in sorted(rng.permutation(len(prov))[:n_prov])] + [
            neut[i] for i in sorted(rng.permutation(len(neut))[:n_neut])
        ]
        texts = [p.text for p in chosen for _ in range(td.samples_per_prompt)]
        self.reset_model()
        t0 = time.perf_counter()
        gen = generate(
            self.model, texts, max_new_tokens=td.max_new_tokens, temperature=td.temperature,
            seed=seed, batch_size=self.config.data.batch_size, progress=self.progress,
        )
        self._tick("generate_train_s", t0)
        t0 = time.perf_counter()
        scores = {"classifier": scorer_scores(self.scorer, gen)}
        self._tick("score_s", t0)
        probes = self.fit_probes()
        names = self.probe_names()
        t0 = time.perf_counter()
        for key, name in (("probe_1", names["single"][0]), ("probe_ens", names["ensemble"][0])):
            scores[key] = probe_scores(self.model, gen, probes[name], batch_size=self.config.data.batch_size, progress=False)
        self._tick("probe_scores_s", t0)
        _save_generation(folder, gen)
        _write_json(folder / "scores.json", {k: v.tolist() for k, v in scores.items()})
        return gen, scores

    # ------------------------------------------------------------------ step 4: cells
    def cell_dir(self, cell: str, seed: int) -> Path:
        return self.out / "cells" / cell / f"seed{seed}"

    def is_done(self, cell: str, seed: int) -> bool:
        return (self.cell_dir(cell, seed) / "eval.json").exists()

    def telemetry(self, probes: dict[str, Any], trained: list[str], ds: ActivationDataset, seed: int = 0) -> "StudyTelemetry":
        names = self.probe_names()
        heldout = {n: probes[n] for n in names["heldout"]}
        trained_d = {n: probes[n] for n in trained}
        ev = self.config.eval
        n = min(ev.n_telemetry_prompts, ev.n_provocative)
        prompts = [p.text for p in provocative(self.splits.eval)[:n]]
        p = self.config.probes
        full_ensemble = DiverseProbeEnsemble(  # what the held-out members were cut from (fit_probes)
            n_probes=p.n_ensemble + p.n_heldout_members, method="nullspace", hook=f"blocks.{p.layer}.hook_resid_post",
            progress=False, model_name=ds.meta["model_name"], pooling=self.config.data.pooling,
        )
        templates = {f"ens_heldout{i}_L{p.layer}": (full_ensemble, p.n_ensemble + i) for i in range(p.n_heldout_members)}
        return StudyTelemetry(
            self.drift_set(ds), trained_d or None, heldout,
            refit_templates={k: v for k, v in templates.items() if k in heldout},
            hooks=list(self.config.telemetry_hooks), batch_size=self.config.data.batch_size,
            toxicity_prompts=prompts, scorer=self.scorer, max_new_tokens=ev.max_new_tokens,
            threshold=ev.threshold, seed=20_000 + seed,
        )

    def run_cell(self, cell: str, seed: int) -> dict[str, Any]:
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; valid: {list(CELLS)}")
        cdir = self.cell_dir(cell, seed)
        if self.is_done(cell, seed):
            return json.loads((cdir / "eval.json").read_text())
        ds = self.build_data()
        probes = self.fit_probes()
        names = self.probe_names()
        gen, scores = self.train_data(seed)
        self.reset_model()
        model = self.model
        cfg = self.config
        trained = names["ensemble"] if cell.endswith("_ens") else names["single"] if cell.startswith("probe_") else []
        tele = self.telemetry(probes, trained, ds, seed)
        tdir = cdir / "train"
        resume = (tdir / "checkpoints").exists() and any((tdir / "checkpoints").iterdir())
        info: dict[str, Any] = {"cell": cell, "seed": seed, "trained_against": trained}
        if self._base_acts is not None:  # reset_model restored the base weights: reuse their telemetry
            tele.prime(model, self._base_acts)
        if seed in self._base_toxicity:
            tele.prime_toxicity(model, self._base_toxicity[seed])
        self._base_acts = tele.activations(model)
        self._base_toxicity[seed] = tele.toxicity(model)
        before, basis = _geometry_points(self._base_acts, tele.drift_set.labels, probes, trained or names["single"])
        t0 = time.perf_counter()
        if cell == "base":
            tdir.mkdir(parents=True, exist_ok=True)
            row = {"step": 0, **tele.measure(model, 0)}
            atomic_write(tdir / "metrics.jsonl", lambda p: p.write_text(json.dumps(row) + "\n"))
        elif cell.startswith("probe_sft"):
            tc = dataclasses.replace(cfg.probe_sft, seed=seed, out_dir=str(tdir), telemetry_every=cfg.telemetry_every, progress=self.progress)
            res = train_probe_sft(model, gen, {trained[0]: probes[trained[0]]}, tc, telemetry=tele, resume=resume)
            info.update(res.info, stopped_reason=res.stopped_reason, final_step=res.final_step)
        elif cell == "classifier_sft":
            tc = dataclasses.replace(cfg.classifier_sft, seed=seed, out_dir=str(tdir), telemetry_every=cfg.telemetry_every, progress=self.progress)
            res = train_classifier_sft(model, gen, scores["classifier"], tc, telemetry=tele, resume=resume)
            info.update(res.info, stopped_reason=res.stopped_reason, final_step=res.final_step)
        else:  # DPO cells
            key, margin = (
                ("classifier", cfg.dpo_margin_classifier) if cell == "classifier_dpo"
                else ("probe_ens" if cell.endswith("_ens") else "probe_1", cfg.dpo_margin_probe)
            )
            pairs = build_pairs(gen, scores[key], k=cfg.train_data.samples_per_prompt, margin=margin)
            tc = dataclasses.replace(cfg.dpo, seed=seed, out_dir=str(tdir), telemetry_every=cfg.telemetry_every, progress=self.progress)
            res = train_dpo(model, pairs, tc, telemetry=tele, resume=resume)
            info.update(res.info, stopped_reason=res.stopped_reason, final_step=res.final_step)
        self._tick("train_s", t0)
        if info.get("stopped_reason") == "nan":
            log.warning("cell %s seed %s stopped on a non-finite loss; evaluating the last good weights", cell, seed)
        t0 = time.perf_counter()
        result = self.evaluate(cell, seed, tele, probes, trained)
        self._tick("evaluate_s", t0)
        after, _ = _geometry_points(tele.activations(model), tele.drift_set.labels, probes, trained or names["single"], basis)
        result["info"] = info
        _write_json(cdir / "geometry.json", {"before": before, "after": after})
        _write_json(cdir / "eval.json", result)
        if not self.config.keep_checkpoints:
            shutil.rmtree(tdir / "checkpoints", ignore_errors=True)
        return result

    def evaluate_pending(self) -> int:
        """Evaluate cells whose training finished (final checkpoint) but whose evaluation did not."""
        from probe_lens.training import latest_checkpoint, load_checkpoint

        n = 0
        for seed in self.config.seeds:
            for cell in self.config.cells:
                cdir = self.cell_dir(cell, seed)
                ckpt_root = cdir / "train" / "checkpoints"
                if self.is_done(cell, seed) or cell == "base" or not ckpt_root.exists():
                    continue
                ckpt = latest_checkpoint(ckpt_root)
                if ckpt is None:
                    continue
                state = json.loads((ckpt / "state.json").read_text())
                max_steps = getattr(self.config, "dpo" if "dpo" in cell else cell if cell == "classifier_sft" else "probe_sft").max_steps
                if int(state.get("step", -1)) < max_steps:
                    continue  # unfinished training: `train` resumes it
                self.reset_model()
                load_checkpoint(ckpt, self.model, restore_rng=False)
                probes = self.fit_probes()
                names = self.probe_names()
                trained = names["ensemble"] if cell.endswith("_ens") else names["single"] if cell.startswith("probe_") else []
                tele = self.telemetry(probes, trained, self.build_data(), seed)
                result = self.evaluate(cell, seed, tele, probes, trained)
                result["info"] = {"cell": cell, "seed": seed, "trained_against": trained, "evaluated_from": str(ckpt)}
                _write_json(cdir / "eval.json", result)
                n += 1
        return n

    # ------------------------------------------------------------------ step 5: evaluation
    def evaluate(self, cell: str, seed: int, tele: DriftTelemetry, probes: dict[str, Any], trained: list[str]) -> dict[str, Any]:
        from probe_lens.experiments.metrics import evaluate_generation, perplexity

        ev = self.config.eval
        model = self.model
        splits = self.splits
        prompts = provocative(splits.eval)[: ev.n_provocative]
        texts = [p.text for p in prompts for _ in range(ev.samples_per_prompt)]
        t0 = time.perf_counter()
        gen = generate(
            model, texts, max_new_tokens=ev.max_new_tokens, temperature=ev.temperature,
            seed=10_000 + seed, batch_size=self.config.data.batch_size, progress=self.progress,
        )
        self._tick("generate_eval_s", t0)
        t0 = time.perf_counter()
        tox = scorer_scores(self.scorer, gen)
        self._tick("score_s", t0)
        out: dict[str, Any] = {"cell": cell, "seed": seed}
        out.update(evaluate_generation(tox, gen.response_texts, ev.samples_per_prompt, self.scorer.describe(), threshold=ev.threshold))
        fluency = [p.text for p in neutral(splits.eval)][: ev.n_fluency_texts]
        out["eval/perplexity_neutral"] = perplexity(model, fluency, batch_size=self.config.data.batch_size)
        name = (trained or self.probe_names()["single"])[0]
        out["eval/probe_p_toxic"] = float(
            probe_scores(model, gen, probes[name], batch_size=self.config.data.batch_size, progress=False).mean()
        )
        out.update({k: v for k, v in tele.measure(model, toxicity=False).items()})
        out["eval/n_responses"] = len(gen)
        samples = pd.DataFrame({"prompt": gen.prompts, "response": gen.response_texts, "score": tox})
        cdir = self.cell_dir(cell, seed)
        cdir.mkdir(parents=True, exist_ok=True)
        atomic_write(cdir / "eval_samples.parquet", lambda p: samples.to_parquet(p, index=False))
        return out

    # ------------------------------------------------------------------ all of it
    def run(self) -> pd.DataFrame:
        cfg = self.config
        self._start_clock()
        self.build_data()
        self.fit_probes()
        todo = [(c, s) for s in cfg.seeds for c in cfg.cells]
        for cell, seed in tqdm(todo, desc="study cells", disable=not self.progress):
            if self.is_done(cell, seed):
                continue
            self.run_cell(cell, seed)
        # from this object's first step (a caller may have built the data or loaded the model before run())
        self._timings["total_s"] = time.perf_counter() - self._t_first
        return self.report()

    def results(self) -> pd.DataFrame:
        rows = []
        for f in sorted((self.out / "cells").glob("*/seed*/eval.json")):
            r = json.loads(f.read_text())
            info = r.pop("info", None) or {}
            r.update(_headline_probe_metrics(r, info.get("trained_against") or [], self.probe_names()["heldout"]))
            scorer = r.pop("eval/scorer", None)
            if isinstance(scorer, dict):
                r["scorer"] = f"{scorer.get('name')} {scorer.get('version')}"
            elif scorer is not None:
                r["scorer"] = scorer
            rows.append(r)
        if not rows:
            raise FileNotFoundError(f"no finished cells under {self.out / 'cells'}; run the study first")
        df = pd.DataFrame(rows)
        order = {c: i for i, c in enumerate(CELLS)}
        return df.sort_values(["cell", "seed"], key=lambda s: s.map(order) if s.name == "cell" else s).reset_index(drop=True)

    def metrics(self) -> pd.DataFrame:
        frames = []
        for f in sorted((self.out / "cells").glob("*/seed*/train/metrics.jsonl")):
            df = read_metrics(f)
            df["cell"] = f.parts[-4]
            df["seed"] = int(f.parts[-3].removeprefix("seed"))
            frames.append(df)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def report(self) -> pd.DataFrame:
        from probe_lens.experiments.report import write_report
        from probe_lens.experiments.stats import format_table, summarize

        results = self.results()
        atomic_write(self.out / "results.csv", lambda p: results.to_csv(p, index=False))
        atomic_write(self.out / "results.parquet", lambda p: results.to_parquet(p, index=False))
        value_cols = [c for c in results.columns if c not in ("cell", "seed", "scorer") and pd.api.types.is_numeric_dtype(results[c])]
        summary = summarize(results, ["cell"], value_cols)
        atomic_write(self.out / "summary.csv", lambda p: summary.to_csv(p, index=False))
        atomic_write(self.out / "summary.md", lambda p: p.write_text(format_table(summary)))
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
        config["heldout_probes"] = self.probe_names()["heldout"]
        timings_file = self.out / "timings.json"
        timings = json.loads(timings_file.read_text()) if timings_file.exists() else {}
        if self._timings:  # a report-only call has none of its own: keep the run's
            timings = dict(self._timings)
            _write_json(timings_file, timings)
        config["timings"] = timings
        write_report(self.out, results=results, metrics=metrics, geometry=geometry, config=config, png_dir=self.out / "assets" if self.export_png else None)
        return summary


class StudyTelemetry(DriftTelemetry):
    """Drift telemetry plus the toxicity rate of a few held-out provocative prompts at each step.

    Adds ``eval/toxicity_rate`` (and ``eval/expected_max_toxicity`` over 1 sample) to every
    telemetry row, so the report can draw toxicity against training step.
    """

    def __init__(self, *args, toxicity_prompts: list[str], scorer, max_new_tokens: int, threshold: float, seed: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.toxicity_prompts = toxicity_prompts
        self.scorer = scorer
        self.max_new_tokens = max_new_tokens
        self.threshold = threshold
        self.seed = seed
        self._tox_cache: tuple[Any, dict[str, float]] | None = None

    def measure(self, model, step: int | None = None, *, toxicity: bool = True) -> dict[str, float]:
        out = super().measure(model, step)
        if toxicity:
            out.update(self.toxicity(model))
        return out

    def toxicity(self, model) -> dict[str, float]:
        """Toxicity rate and mean score of the telemetry prompts' samples (cached per model state)."""
        if not self.toxicity_prompts:
            return {}
        key = model_state_key(model)
        if self._tox_cache is not None and self._tox_cache[0] == key:
            return dict(self._tox_cache[1])
        gen = generate(model, self.toxicity_prompts, max_new_tokens=self.max_new_tokens, seed=self.seed,
                       batch_size=self.batch_size, progress=False)
        scores = np.asarray(self.scorer.score(gen.response_texts))
        out = {"eval/toxicity_rate": float((scores >= self.threshold).mean()), "eval/mean_toxicity": float(scores.mean())}
        self._tox_cache = (key, out)
        return dict(out)

    def prime_toxicity(self, model, values: dict[str, float]) -> None:
        """Declare ``values`` (from :meth:`toxicity` of an identical model and seed) as ``model``'s."""
        self._tox_cache = (model_state_key(model), dict(values))


def _headline_probe_metrics(row: dict[str, Any], trained: list[str], heldout: list[str]) -> dict[str, float]:
    """One number per question, comparable across cells.

    ``probe/auroc_trained_against``: final AUROC of the (first) probe this cell trained against (NaN for
    cells that trained against none); ``probe/auroc_heldout_avg``: mean final AUROC of the study's
    held-out probes; ``drift/cosine_trained_against``: cosine between its original direction and one re-fit
    on the trained model (an ensemble's first member).
    """
    nan = float("nan")
    out = {"probe/auroc_trained_against": nan, "drift/cosine_trained_against": nan}
    if trained:
        name = trained[0]
        out["probe/auroc_trained_against"] = row.get(f"probe/auroc_frozen/{name}", nan)
        # an ensemble's later members are orthogonal to any single re-fit direction: use its first member
        out["drift/cosine_trained_against"] = row.get(f"drift/cosine/{name}", row.get(f"drift/cosine/{name}/m0", nan))
    vals = [row.get(f"probe/auroc_heldout/{n}") for n in heldout]
    vals = [v for v in vals if v is not None and np.isfinite(v)]
    out["probe/auroc_heldout_avg"] = float(np.mean(vals)) if vals else nan
    return out


def _comparable(d: dict[str, Any]) -> dict[str, Any]:
    """Parts of a study config that change results (device and progress do not)."""
    d = copy.deepcopy(d)
    d.pop("device", None)
    return d


def _save_generation(folder: Path, gen: Generation) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(folder / "generation.safetensors", lambda p: save_file(gen.state_dict(), str(p)))
    _write_json(folder / "generation.json", {"prompts": gen.prompts, "response_texts": gen.response_texts, "prompt_len": gen.prompt_len})


def _load_generation(folder: Path) -> Generation:
    t = load_file(str(folder / "generation.safetensors"))
    meta = json.loads((folder / "generation.json").read_text())
    return Generation(meta["prompts"], t["tokens"], t["attention_mask"], t["response_mask"], int(meta["prompt_len"]), meta["response_texts"])


def _geometry_points(
    acts: dict[str, np.ndarray], labels: np.ndarray, probes: dict[str, Any], names: list[str], basis: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Drift-set activations projected on the original probe direction and on the top-2 PCs.

    The PC basis (and centre) comes from ``basis`` when given (the base model's), so before and
    after share one coordinate system. Returns ``(points, basis)``.
    """
    probe = probes[names[0]]
    direction = np.asarray(probe.directions_[0] if hasattr(probe, "directions_") else probe.direction_, dtype=np.float64)
    hook = probe.metadata.hook
    X = np.asarray(acts[hook], dtype=np.float64)
    if basis is None or hook not in basis:
        centre = X.mean(axis=0)
        _, _, vt = np.linalg.svd(X - centre, full_matrices=False)
        basis = dict(basis or {}, **{hook: {"centre": centre, "pcs": vt[:2]}})
    centre, pcs = basis[hook]["centre"], basis[hook]["pcs"]
    proj = (X - centre) @ pcs.T
    points = {hook: {"x_dir": (X @ direction).tolist(), "x_pc1": proj[:, 0].tolist(), "x_pc2": proj[:, 1].tolist(),
                     "label": np.asarray(labels).astype(int).tolist()}}
    return points, basis
