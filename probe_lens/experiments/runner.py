"""The study runner: the paper's comparison end to end, with controls, resumable, one folder per study.

What a study measures. Every pre-training probe (the trained-against candidates and the held-out ones)
is *tracked in every cell*, so the probe a cell trains against has its controls: the same probe,
measured the same way, in the cells that do not train against it (``base``, the classifier baselines).
Probes are scored on two evaluation sets at every telemetry step: **on-policy** rows (the base model's
own continuations of held-out pool prompts, labelled by the output classifier: on-policy but noisy) and
a **curated** labelled text set shipped in the package (clean labels, off-policy). Each seed redraws
which pool prompts fit the probes and which give on-policy rows (stratified by topic), so intervals
over seeds include probe-data variance.

:class:`Study` coordinates the rooms that do the work, each a module of ``probe_lens.experiments``:
``run_folder`` (the folder's layout and identity), ``ranks`` (torchrun), ``prompt_plan`` (prompts and seed
splits), ``study_data`` (probe pool, evaluation sets, training samples), ``probe_suite`` (the tracked
probes), ``study_telemetry``, ``cell_training``, ``evaluation``, ``results`` and ``timings``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from probe_lens._io import atomic_write
from probe_lens.activations import resolve_hook
from probe_lens.behaviours import BehaviourNames, LabelledRows
from probe_lens.data.builder import ActivationDataset
from probe_lens.data.reference import ReferenceSet
from probe_lens.experiments import monitor, results as R, study_data
from probe_lens.experiments.adapters import settings_section
from probe_lens.experiments.cell_training import CellContext, _run_none, _run_objective, _train_config
from probe_lens.experiments.cells import CellSpec
from probe_lens.experiments.config import StudyConfig, model_depth
from probe_lens.experiments.evaluation import CellEvaluation
from probe_lens.experiments.instruments import Instruments
from probe_lens.experiments.probe_suite import ProbeSuite
from probe_lens.experiments.prompt_plan import (
    PromptPlan,
    SeedSplit,
    StudyDataError,
    make_prompt_plan,
    make_seed_split,
    pool_union,
)
from probe_lens.experiments.ranks import Ranks, rank0_only, rank0_then_read, rank_device, under_torchrun
from probe_lens.experiments.run_folder import RunFolder, StudyFolderError, read_derived_json, read_json, write_json
from probe_lens.experiments.study_telemetry import CURATED, BaseMeasurements, StudyTelemetry, build_telemetry
from probe_lens.experiments.timings import Clock
from probe_lens.experiments.yardsticks import lexical_baselines
from probe_lens.models import Generation, LensModel, is_bridge, load_model
from probe_lens.scorers import get_scorer
from probe_lens.training import DriftSet, distributed as D

__all__ = ["CellContext", "PromptPlan", "SeedSplit", "Study", "StudyDataError", "StudyFolderError", "StudyTelemetry"]

log = logging.getLogger(__name__)

_METRIC_ROWS = ("all", "training", "telemetry")

_prompt_plan = make_prompt_plan  # its name before the rooms (experiments.plan imports it)


def _check_backend_of(model: LensModel, backend: str) -> None:
    """A caller's ``model`` must be of the study's ``backend`` (study.json records it)."""
    if is_bridge(model) != (backend == "bridge"):
        kind = type(getattr(model, "module", model)).__name__
        raise ValueError(f"the model passed is a {kind} but the study's backend is {backend!r}; set backend to match")


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
        lock: hold the run folder's writer lock for the rest of the process (one writer per folder; another
            is refused with ``FolderLockedError``); a reader of a study already there passes False.

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
        lock: bool = True,
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
            study_data.check_prelabelled(config)
        # a behaviour with too few prompts for these sizes, or layers the model lacks: say so now, before
        # anything is written or loaded
        make_prompt_plan(config)
        n_layers = model.cfg.n_layers if model is not None else model_depth(config.model)
        if n_layers is not None:
            config.check_layers(n_layers, model.cfg.model_name if model is not None else None)
        elif overwrite and (Path(out_dir) / "study.json").exists():  # deleting a study for one that cannot start
            raise ValueError(
                f"--overwrite would replace the study in {out_dir}, but model {config.model!r} cannot be found here "
                "(its config does not load); check the name (or load it once online) before deleting anything"
            )
        self.export_png, self.progress = export_png, progress
        self.out, self.folder = Path(out_dir), RunFolder(out_dir)
        self.suite = ProbeSuite(
            config.probes, config.data.pooling, config.eval.ci_method, self.behaviour.positive_label
        )
        self.clock = Clock()
        self._model = None
        self._base_state: dict[str, Any] | None = None
        self._scorer = scorer
        if model is not None:
            _check_backend_of(model, config.backend)
            self._adopt_model(model)
        self._plan: PromptPlan | None = None
        self._plans: dict[int, PromptPlan] = {}
        self._splits: dict[int, SeedSplit] = {}
        self._probes: dict[int, dict[str, Any]] = {}
        self._pool_tokens: Any = None
        self._eval_sets: dict[str, DriftSet] | None = None
        self._base = BaseMeasurements()  # the base model's telemetry, shared by every cell of a seed
        self.report_figures: dict[str, Any] = {}  # the last report's figures, by name (for experiment trackers)
        self._open_ranks(model)
        self._prepare_folder(resume=resume, overwrite=overwrite, lock=lock)
        if self.dist.enabled and not self.folder.study_json.exists():
            raise RuntimeError(
                f"rank {self.dist.rank} cannot see {self.folder.study_json}, which rank 0 wrote: under torchrun "
                "the run folder must be on a filesystem every process shares"
            )

    # ------------------------------------------------------------------ torchrun
    def _open_ranks(self, model) -> None:
        distributed = under_torchrun()
        self._device = rank_device(self.config.device) if distributed else self.config.device
        if distributed and model is not None:
            rank_device(str(next(model.parameters()).device))  # a caller's model must sit on this rank's GPU
        self.ranks = Ranks(
            D.init_from_env(next(model.parameters()).device if model is not None else (self._device or "cpu"))
        )
        self.dist = self.ranks.dist
        if self.dist.enabled:
            self._check_world()

    def _on_main(self, fn: Callable[[], Any], *, share: bool = False) -> Any:
        """``fn()`` on rank 0 only (see :meth:`Ranks.on_main`)."""
        return self.ranks.on_main(fn, share=share)

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

    # ------------------------------------------------------------------ folder, model, scorer
    @rank0_only
    def _prepare_folder(self, *, resume: bool, overwrite: bool, lock: bool = True) -> None:
        self.folder.prepare(self.config, self.behaviour.describe(), resume=resume, overwrite=overwrite, lock=lock)

    def _adopt_model(self, model) -> None:
        self._model = model
        # the base weights live on the CPU (a GPU copy would cost a second model's memory)
        self._base_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    @property
    def model(self):
        """The model (loaded on first use); :meth:`reset_model` restores its base weights."""
        if self._model is None:
            self.clock.start()
            with self.clock.timed("load_model_s"):
                self._adopt_model(load_model(self.config.model, backend=self.config.backend, device=self._device))
        return self._model

    @contextlib.contextmanager
    def base_weights(self) -> Iterator[Any]:
        """A context in which the model holds the base weights (its own copied to the CPU, restored on exit):
        the base model without a second model in memory."""
        model = self.model
        assert self._base_state is not None
        own = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        model.load_state_dict(self._base_state)
        try:
            yield model
        finally:
            model.load_state_dict(own)
            del own

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

    def _signal_scorer(self):
        """The scorer that labels fresh samples; None for a pre-labelled behaviour (nothing does)."""
        return None if self.prelabelled else self.scorer

    # ------------------------------------------------------------------ prompts and data
    @property
    def prompt_plan(self) -> PromptPlan:
        """The prompt plan fixed by ``prompt_seed``: every seed's when ``eval.prompts_per_seed`` is false (else
        each seed draws its own, :meth:`plan_for`)."""
        if self._plan is None:
            self._plan = make_prompt_plan(self.config)
            self._record_plans()
        return self._plan

    def plan_for(self, seed: int) -> PromptPlan:
        """Seed ``seed``'s evaluation prompts, probe pool and training pool (:func:`make_prompt_plan`)."""
        if seed not in self._plans:
            self._plans[seed] = make_prompt_plan(self.config, seed if self.config.eval.prompts_per_seed else None)
        return self._plans[seed]

    @functools.cached_property
    def pool_prompts(self) -> list[Any]:
        """Every seed's pool prompts (the probe-pool dataset holds their continuations)."""
        return pool_union(self.config)

    def _record_plans(self) -> None:
        """``prompts.json``: the fixed plan, and with ``eval.prompts_per_seed`` every seed's own plan."""
        path = self.folder.prompts_json
        if not self.dist.is_main or path.exists():
            return
        if self.config.eval.prompts_per_seed:
            record: dict[str, Any] = {
                "prompts_per_seed": True,
                "seeds": {str(s): self.plan_for(s).as_ids() for s in self.config.seeds},
                "pool_union": [p.id for p in self.pool_prompts],
            }
        else:
            record = {**self.prompt_plan.as_ids(), "prompts_per_seed": False}
        write_json(path, record)

    def seed_split(self, seed: int) -> SeedSplit:
        """This seed's draw of probe-fit and on-policy prompts (stratified), of their continuations, and its
        training prompts."""
        if seed not in self._splits:
            self._record_plans()
            split = make_seed_split(self.config, self.plan_for(seed), self.build_data(), seed, self.names)
            path = self.folder.split_json(seed)
            if self.dist.is_main and read_derived_json(path) is None:
                write_json(path, split.info)
            self._splits[seed] = split
        return self._splits[seed]

    @rank0_then_read
    def build_data(self) -> ActivationDataset:
        """The base model's labelled continuations of every seed's pool prompts (built once, shared by every seed;
        from a reference set: all of its continuations of each prompt, each seed draws ``k`` of them)."""
        self.clock.start()
        folder = self.folder.probe_pool
        if (folder / "meta.json").exists():
            return ActivationDataset.load(folder)
        with self.clock.timed("build_data_s"):
            source = "labelled" if self.prelabelled else self.reference_set()  # labelled: no sampling
            return study_data.build_probe_pool(
                self.model,
                self.pool_prompts,
                self.scorer,
                self.config,
                source,
                out_dir=folder,
                progress=self.progress,
                behaviour=self.behaviour,
            )

    def reference_set(self) -> ReferenceSet | None:
        """The reference continuations the probe pool is read from (``data_source``), or None to sample
        (see :func:`~probe_lens.experiments.study_data.choose_reference`)."""
        return study_data.choose_reference(self.config, lambda: self.model, self.pool_prompts)

    def drift_set(self, seed: int | None = None) -> DriftSet:
        """Seed ``seed``'s on-policy set: probe-fit rows (re-fits read them) + on-policy rows (AUROCs read them)."""
        seed = self.config.seeds[0] if seed is None else seed
        return study_data.onpolicy_set(self.build_data(), self.seed_split(seed))

    def curated_set(self) -> DriftSet | None:
        """The behaviour's curated labelled texts as an evaluation-only set (None when ``eval.curated`` is null)."""
        return self.eval_sets().get(CURATED)

    @functools.cached_property
    def curated_rows(self) -> dict[str, list[Any]]:
        """The curated evaluation sets' rows: ``curated`` and ``curated_hard`` (see :func:`study_data.curated_rows`)."""
        return study_data.curated_rows(self.config, self.behaviour)

    def eval_sets(self) -> dict[str, DriftSet]:
        """``{name: evaluation-only set}`` every probe is scored on besides the on-policy rows (the curated sets)."""
        if self._eval_sets is None:
            rows = self.curated_rows
            self._eval_sets = {k: study_data.curated_drift_set(v, self.behaviour, self.model) for k, v in rows.items()}
        return self._eval_sets

    @rank0_then_read
    def train_data(self, seed: int) -> tuple[Generation, dict[str, Any]]:
        """Seed ``seed``'s training samples, scored by every signal (classifier, probe, ensemble; no
        classifier for a pre-labelled behaviour)."""
        folder = self.folder.train_data(seed)
        saved = study_data.load_train_data(folder)
        if saved is not None and set(self._signal_probes(None)) <= set(saved[1]):
            return saved
        probes = self.fit_probes(seed)
        batch = self.config.data.batch_size
        self.reset_model()
        if saved is not None:  # a cell added since trains against a token probe: score the samples by it too
            gen, scores = saved
            missing = {k: v for k, v in self._signal_probes(probes).items() if k not in scores}
            scores.update(study_data.score_train_data(self.model, gen, None, missing, batch, self.clock))
            study_data.save_train_data(folder, gen, scores)
            return gen, scores
        prompts = self.seed_split(seed).train_prompts
        td = self.config.train_data
        with self.clock.timed("generate_train_s"):
            gen = study_data.sample(self.model, prompts, td.samples_per_prompt, td, seed, self.config, self.progress)
        signals = self._signal_probes(probes)
        scores = study_data.score_train_data(self.model, gen, self._signal_scorer(), signals, batch, self.clock)
        study_data.save_train_data(folder, gen, scores)
        return gen, scores

    def _signal_probes(self, probes: dict[str, Any] | None) -> dict[str, Any]:
        """``{signal: probe}`` the training samples are scored by: ``probe`` and ``ensemble`` always, a token
        probe's signal when a cell trains against it (``probes``: the seed's; None: the signals' names only)."""
        n = self.probe_names()
        wanted = {"probe": n["single"][0], "ensemble": n["ensemble"][0]}
        families = self.config.probes.token_probes
        wanted |= {c.signal: c.trained_against(n)[0] for c in self.config.cell_specs if c.signal in families}
        return {s: (name if probes is None else probes[name]) for s, name in wanted.items()}

    # ------------------------------------------------------------------ probes
    def probe_names(self) -> dict[str, list[str]]:
        """``single`` / ``ensemble`` / ``heldout`` / ``heldout_members`` (see :meth:`ProbeSuite.names`)."""
        return self.suite.names()

    def tracked_probes(self) -> list[str]:
        """Every pre-training probe, measured in every cell."""
        return self.suite.tracked()

    def retrain_factory(self) -> Callable[[], Any]:
        """``() -> unfitted estimator`` of the probes re-fit on the current model at each telemetry step."""
        return self.suite.retrain_factory()

    def _layer_hook(self, layer: int | None = None) -> str:
        """The residual-stream hook of ``layer`` (default: the trained-against probes' layer)."""
        return resolve_hook(self.model, self.config.probes.layer if layer is None else layer)

    @rank0_then_read
    def fit_probes(self, seed: int | None = None) -> dict[str, Any]:
        """Fit (or load) seed ``seed``'s tracked probes on its probe-fit rows of the base model."""
        self.clock.start()
        seed = self.config.seeds[0] if seed is None else seed
        if seed not in self._probes:
            folder = self.folder.probes(seed)
            if self.suite.saved(folder):
                self._probes[seed] = self.load_probes(seed)
                return self._probes[seed]
            ds, split = self.build_data(), self.seed_split(seed)
            tokens = self.pool_tokens()
            with self.clock.timed("fit_probes_s"):
                p = self.config.probes
                hooks = {L: self._layer_hook(L) for L in (p.layer, *p.heldout_layers)}
                probes = self.suite.fit(ds, split, hooks, tokens)
                self.suite.save(probes, ds, split, folder, tokens)
            self._probes[seed] = probes
        return self._probes[seed]

    def pool_tokens(self) -> Any:
        """The probe pool's response-token activations at the trained-against layer (base model; collected once,
        kept in ``data/probe_pool_tokens.safetensors``), or None without ``probes.token_probes``."""
        if not self.config.probes.token_probes:
            return None
        if self._pool_tokens is None:
            with self.clock.timed("pool_tokens_s"), self.base_weights() as model:
                self._pool_tokens = study_data.pool_token_acts(
                    model,
                    self.build_data(),
                    self._layer_hook(),
                    self.folder.probe_pool_tokens,
                    batch_size=self.config.data.batch_size,
                    progress=self.progress,
                )
        return self._pool_tokens

    def load_probes(self, seed: int | None = None) -> dict[str, Any]:
        seed = self.config.seeds[0] if seed is None else seed
        return self.suite.load(self.folder.probes(seed))

    @rank0_then_read
    def noise_floor(self, seed: int) -> dict[str, dict[str, float]]:
        """Each probe's cosine with its own estimator re-fit on bootstrap resamples of its probe-fit rows
        (base model): how far a drift cosine moves from 1 by refitting noise alone."""
        path = self.folder.noise_floor_json(seed)
        saved = read_derived_json(path)
        if saved is not None:
            return saved
        if self.config.probes.noise_floor_resamples == 0:
            return {}
        with self.clock.timed("noise_floor_s"):
            probes, tokens = self.fit_probes(seed), self.pool_tokens()
            out = self.suite.noise_floor(self.build_data(), self.seed_split(seed), probes, seed, tokens)
            write_json(path, out)
        return out

    # ------------------------------------------------------------------ cells
    def cell_dir(self, cell: str, seed: int) -> Path:
        return self.folder.cell_dir(cell, seed)

    def is_done(self, cell: str, seed: int) -> bool:
        return self.folder.is_done(cell, seed)

    def trained_against(self, spec: CellSpec) -> list[str]:
        return spec.trained_against(self.probe_names())

    def _train_config(self, spec: CellSpec):
        return _train_config(self.config, spec)

    def telemetry(self, seed: int, trained: list[str]) -> StudyTelemetry:
        """Telemetry of one cell: every tracked probe (``trained`` ones as trained-against), both sets."""
        probes = self.fit_probes(seed)
        templates = self.suite.refit_templates(probes, trained, self._layer_hook())
        sets = (self.drift_set(seed), self.eval_sets())
        rate_prompts = [q.text for q in self.plan_for(seed).eval_provocative]
        return build_telemetry(
            self.config,
            self.names,
            seed,
            probes,
            trained,
            templates,
            sets,
            rate_prompts,
            self._signal_scorer(),
            self.retrain_factory(),
        )

    def _measure_base(self, seed: int, trained: list[str]) -> tuple[StudyTelemetry, tuple[dict, dict, list[str]]]:
        """A cell's telemetry primed with the base model's (the model must hold the base weights), and the
        base model's geometry (points, basis, hooks)."""
        tele = self.telemetry(seed, trained)
        self._base.prime(tele, self.model, seed)
        monitor.thresholds_for(self.folder.monitor_thresholds_json(seed), lambda: tele.scores(self.model))
        self._instruments(seed).prime_base(self.model, seed, tele)
        hooks = [self._layer_hook()]
        return tele, (*self._base.geometry_before(tele, seed, hooks), hooks)

    def _cell_info(self, spec: CellSpec, seed: int, trained: list[str]) -> dict[str, Any]:
        return {
            "cell": spec.name,
            "seed": seed,
            "objective": spec.objective,
            "signal": spec.signal,
            "trained_against": trained,
        }

    def run_cell(self, cell: str, seed: int) -> dict[str, Any]:
        """Train (resuming), evaluate and save cell ``cell`` of seed ``seed``; a finished cell is read back.

        Under torchrun every rank calls it and gets the result: rank 0 prepares (telemetry, the resume
        decision), every rank trains (data-parallel), rank 0 evaluates and writes.
        """
        spec = self.config.cell(cell)
        if seed not in self.config.seeds:
            raise ValueError(f"unknown seed {seed}; this study's seeds: {self.config.seeds}")
        cdir = self.cell_dir(cell, seed)
        done = self._on_main(lambda: read_json(cdir / "eval.json") if self.is_done(cell, seed) else None, share=True)
        if done is not None:
            return done
        probes = self.fit_probes(seed)
        self.noise_floor(seed)
        gen, scores = self.train_data(seed)
        self.reset_model()
        trained = self.trained_against(spec)
        tdir = cdir / "train"

        def prepare():
            tele, geometry = self._measure_base(seed, trained)
            return tele, geometry, (tdir / "config.json").exists() or (tdir / "checkpoints").exists()

        # rank 0 alone measures telemetry (the other ranks get None) and decides resume for every rank
        tele, geometry, resume = self._on_main(prepare) or (None, None, None)
        resume = self.ranks.broadcast(resume)
        ctx = CellContext(self, spec, seed, probes, trained, gen, scores, tele, tdir, resume=bool(resume))
        with self.clock.timed("train_s"):
            info = self._cell_info(spec, seed, trained)
            if spec.trains:
                info.update(study_data.train_composition(gen, scores, self.config.eval.threshold))
            # a training cell trains on every rank (data-parallel); one that does not only measures, on rank 0
            info.update((_run_objective(ctx) if spec.trains else self._on_main(lambda: _run_none(ctx))) or {})

        def finish():
            assert tele is not None and geometry is not None  # finish runs on rank 0, which prepared them
            if info.get("stopped_reason") == "nan":
                log.warning(
                    "cell %s seed %s stopped on a non-finite loss; evaluating the last good weights", cell, seed
                )
            with self.clock.timed("evaluate_s"):
                result = self._finish_cell(spec, seed, tele, geometry, info)
            if not self.config.keep_checkpoints:
                shutil.rmtree(tdir / "checkpoints", ignore_errors=True)
            return result

        return self._on_main(finish, share=True)

    @rank0_only
    def evaluate_pending(self) -> int:
        """Evaluate cells whose training finished (final checkpoint) but whose evaluation did not."""
        from probe_lens.training import load_checkpoint

        n = 0
        for seed in self.config.seeds:
            for spec in self.config.cell_specs:
                ckpt = self._final_checkpoint(spec, seed)
                if ckpt is None:
                    continue
                self.reset_model()
                trained = self.trained_against(spec)
                tele, geometry = self._measure_base(seed, trained)  # the seed's reference directions: base model
                load_checkpoint(ckpt, self.model, restore_rng=False, verify=False)  # verified by latest_checkpoint
                info = {**self._cell_info(spec, seed, trained), "evaluated_from": str(ckpt)}
                self._finish_cell(spec, seed, tele, geometry, info)
                n += 1
        return n

    def _final_checkpoint(self, spec: CellSpec, seed: int) -> Path | None:
        """The final checkpoint of a training cell not yet evaluated; None if it has none (or is done)."""
        if self.is_done(spec.name, seed) or not spec.trains:
            return None
        return self.folder.final_checkpoint(spec.name, seed, self._train_config(spec).max_steps)

    # ------------------------------------------------------------------ evaluation
    def _evaluation(self, seed: int) -> CellEvaluation:
        return CellEvaluation(
            self.config,
            self.plan_for(seed),
            self.names,
            self.behaviour.name,
            self.scorer,
            self.prelabelled,
            self.progress,
            self.clock,
            kinds={k: [r.kind for r in v] for k, v in self.curated_rows.items()},
            instruments=self._instruments(seed),
        )

    def _instruments(self, seed: int) -> Instruments:
        plan = self.plan_for(seed)
        texts = [q.text for q in plan.eval_provocative], [q.text for q in plan.eval_neutral]
        return Instruments(
            self.config, self.folder, self.probe_names(), self._signal_scorer(), *texts, clock=self.clock
        )

    def _eval_inputs(self, spec: CellSpec, seed: int) -> dict[str, Any]:
        trained = self.trained_against(spec)
        probe = self.fit_probes(seed)[(trained or self.probe_names()["single"])[0]]
        return {
            "probe": probe,
            "split_info": self.seed_split(seed).info,
            "floors": self.noise_floor(seed),
            "thresholds": read_derived_json(self.folder.monitor_thresholds_json(seed)),
            "base_weights": self.base_weights,
        }

    def evaluate(self, spec: CellSpec, seed: int, tele: StudyTelemetry) -> dict[str, Any]:
        """The behaviour's rates, degeneration and fluency of fresh samples; every tracked probe on both sets,
        with intervals (no rates for a pre-labelled behaviour: nothing labels fresh samples)."""
        cdir = self.cell_dir(spec.name, seed)
        return self._evaluation(seed).evaluate(self.model, spec.name, seed, tele, cdir, **self._eval_inputs(spec, seed))

    def _finish_cell(self, spec: CellSpec, seed: int, tele: StudyTelemetry, geometry, info: dict) -> dict[str, Any]:
        """Evaluate the model as cell ``spec`` and write its files (``eval.json`` last): the run's and
        :meth:`evaluate_pending`'s one way to finish a cell."""
        cdir = self.cell_dir(spec.name, seed)
        inputs = self._eval_inputs(spec, seed)
        evaluation = self._evaluation(seed)
        return evaluation.finish(
            self.model, spec.name, seed, tele, self._base, cdir, info=info, geometry=geometry, **inputs
        )

    # ------------------------------------------------------------------ all of it
    @rank0_only
    def check_disk(self) -> None:
        """Stop before training when the disk cannot hold the largest checkpoint a cell will write."""
        configs = [tc for spec in self.config.cell_specs if (tc := self._train_config(spec)) is not None]
        if configs:
            self.folder.check_space(self.model, configs)

    def run(self) -> pd.DataFrame:
        """Every step: build the data, then train, evaluate and save each (cell, seed) not yet finished, then
        :meth:`report`. Returns the summary over seeds: one row per cell, each metric's mean and its interval
        (the table of ``summary.csv``); the per-seed rows are :meth:`results`, the logged rows :meth:`metrics`."""
        cfg = self.config
        self.clock.start()
        self.check_disk()
        self._on_main(self.build_data)  # the other ranks never need the dataset itself
        todo = [(c.name, s) for s in cfg.seeds for c in cfg.cell_specs]
        for i, (cell, seed) in enumerate(
            tqdm(todo, desc="study cells", disable=not (self.progress and self.dist.is_main)), start=1
        ):
            if self._on_main(functools.partial(self.is_done, cell, seed), share=True):
                log.info("cell %d/%d %s seed %d: finished earlier, kept", i, len(todo), cell, seed)
                continue
            log.info("cell %d/%d %s seed %d: running", i, len(todo), cell, seed)
            self.run_cell(cell, seed)
            log.info("cell %d/%d %s seed %d: done", i, len(todo), cell, seed)
        # from this object's first step (a caller may have built the data or loaded the model before run())
        self.clock.stop()
        return self.report()

    def results(self) -> pd.DataFrame:
        """One row per finished (cell, seed), with ``cell`` and ``seed`` columns, in the study's cell order: every
        number of the cell's ``eval.json``, its intervals (``<metric>/ci_low|ci_high``) and the headline probe
        columns (the table of ``results.csv``; see :func:`~probe_lens.experiments.results.results_table`).
        Raises FileNotFoundError before any cell has finished."""
        return R.results_table(self.folder, self.config, self.behaviour.name, self.probe_names())

    def metrics(self, rows: str = "all") -> pd.DataFrame:
        """The rows logged while training each cell and seed (``cell``, ``seed``, ``step`` and the metrics).

        ``rows``: ``"all"`` (default: both kinds in file order, NaN where a row lacks a metric),
        ``"training"`` (the optimizer's ``train/*`` rows: loss, its terms, lr, grad norm) or ``"telemetry"``
        (probe AUROCs, drift cosines, geometry, the behaviour's rate); a chosen kind drops the columns it
        never fills. Empty before any cell has logged a row.
        """
        if rows not in _METRIC_ROWS:
            raise ValueError(f"rows must be one of {_METRIC_ROWS}, got {rows!r}")
        table = R.metrics_table(self.folder)
        if rows == "all" or table.empty:
            return table
        train_cols = [c for c in table.columns if str(c).startswith("train/")]
        is_train = table[train_cols].notna().any(axis=1) if train_cols else pd.Series(False, index=table.index)
        chosen = table[is_train if rows == "training" else ~is_train]
        return chosen.dropna(axis=1, how="all").reset_index(drop=True)

    @rank0_only
    def report(self) -> pd.DataFrame:
        """Write ``results.csv``, ``summary.csv``/``.md``, ``contrasts.csv``, ``headline.md``, ``metrics.parquet``
        and ``report.html`` from the finished cells; returns the summary over seeds (as :meth:`run`)."""
        from probe_lens.experiments.report import write_report

        results = self.results()
        summary = R.write_tables(self.folder, results)
        lexical_baselines(self.out, self.curated_rows, self._signal_scorer(), self.behaviour.name)
        n_curated = (
            len(self.curated_set().labels) if self.config.eval.curated is not None and self._model is not None else None
        )
        names = self.probe_names()
        headline = R.write_headline(
            self.folder,
            results,
            summary,
            self.config,
            names,
            R.seed_records(self.folder, self.config.seeds, self.seed_split, self.noise_floor),
            n_curated,
        )
        metrics = self.metrics()
        if len(metrics):
            atomic_write(self.out / "metrics.parquet", lambda p: metrics.to_parquet(p, index=False))
        geometry = R.geometry_table(self.folder, self.config.seeds)
        config = R.report_config(
            self.config,
            self._model.cfg.model_name if self._model is not None else self.config.model,
            self.scorer.describe(),
            self.behaviour.describe(),
            names,
            trained_against={c.name: self.trained_against(c) for c in self.config.cell_specs},
            timings=R.timings_record(self.folder, self.clock.timings),
        )
        png_dir = self.out / "assets" if self.export_png else None
        self.report_figures.clear()
        write_report(
            self.out,
            results=results,
            metrics=metrics,
            geometry=geometry,
            config=config,
            png_dir=png_dir,
            headline=headline,
            figures=self.report_figures,
        )
        return summary
