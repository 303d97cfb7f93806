"""The study configuration: one dataclass tree that maps one-to-one onto a YAML/JSON file.

A study = probe data from the base model -> probes -> for each seed, every training cell of the
grid -> evaluation -> table and report. ``StudyConfig`` holds all of it, is validated on
construction, and is saved as ``study.json`` in the run folder.

Sections are read into the dataclass each field is annotated with (no table to keep in step); the
training settings of an objective registered after this file was written live under
``objectives: {<name>: {...}}``, typed by that objective's registered config class.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import typing
from pathlib import Path
from typing import Any

from probe_lens.data.builder import BuildConfig
from probe_lens.experiments.adapters import get_study_objective, own_section, settings_class
from probe_lens.experiments.cells import BUILTIN_CELLS, DEFAULT_GRID, CellSpec, resolve_cells
from probe_lens.models.bridge import check_backend
from probe_lens.training.config import ClassifierSFTConfig, DPOConfig, ProbeSFTConfig, TrainConfig

CELLS: tuple[str, ...] = DEFAULT_GRID
"""The default grid: the untrained base model, probe-SFT and probe-DPO against one probe and against a
diverse ensemble, the two output-classifier baselines and probe-filtered SFT (see ``cells.py``)."""


FIT_ROWS = ("weighted", "balanced")
"""``probes.fit_rows``: class-weighted fits on every probe-fit row, or balanced fits on a class-balanced subsample."""

TOKEN_PROBES = ("maxpool", "attention")
"""``probes.token_probes``: the probe families that read every response token (``probe_suite.TOKEN_FAMILIES``
builds them): ``maxpool`` (``MaxPooledLogisticProbe``) and ``attention`` (``AttentionProbe``)."""


@dataclasses.dataclass
class ProbeSetup:
    """Which probes are trained against, and which are held out (fit once, never trained against)."""

    layer: int = 9
    """Layer of the trained-against probes (``blocks.L.hook_resid_post``)."""
    heldout_layers: list[int] = dataclasses.field(default_factory=lambda: [6, 12])
    """Other layers with held-out logistic probes."""
    C: float | str = 1.0
    """Inverse L2 strength of every logistic probe (trained-against, held-out, ensemble members, the
    re-fit and retrained ones), sklearn convention; ``"cv"`` picks it by cross-validation on the probe-fit rows."""
    standardize: bool = True
    """Logistic probes standardise features before fitting (directions are mapped back to activation space)."""
    n_ensemble: int = 4
    """Members of the diverse (orthogonal) ensemble trained against in ensemble cells."""
    n_heldout_members: int = 2
    """Extra ensemble members fit after the trained ones and never trained against."""
    ensemble_method: str = "nullspace"
    """How ensemble members are made orthogonal: ``nullspace`` (fit, project out, repeat) or ``penalty``."""
    massmean_covariance: str = "none"
    """Held-out mass-mean probe: ``none`` (difference of class means) or ``tied`` (LDA-style whitening)."""
    retrain_estimator: str = "logistic"
    """Estimator of the probes re-fit on the current model at every telemetry step: ``logistic`` or ``massmean``."""
    noise_floor_resamples: int = 20
    """Bootstrap re-fits on the base model giving each probe's cosine noise floor (0: none)."""
    pooling: str | None = None
    """Pooling over response tokens; None = ``data.pooling`` (probes are fit on activations pooled that way,
    and probe-SFT pools the live activations the same way)."""
    fit_rows: str = "weighted"
    """Which of the probe-fit prompts' continuations fit the probes: ``weighted`` (all of them, logistic probes
    with ``class_weight="balanced"``) or ``balanced`` (the old way: the majority class downsampled, per seed,
    to the minority's size when ``data.balance``; the other rows discarded)."""
    token_probes: list[str] = dataclasses.field(default_factory=lambda: list(TOKEN_PROBES))
    """Held-out probes that read every response token at ``layer`` (``maxpool_L<layer>``, ``attention_L<layer>``),
    fit on the base model's token activations of the probe-fit rows and tracked in every cell; ``[]``: none."""

    def __post_init__(self) -> None:
        if isinstance(self.token_probes, str) or not isinstance(self.token_probes, (list, tuple)):
            raise ValueError(
                f"probes.token_probes must be a list of {list(TOKEN_PROBES)} ([] for none), got {self.token_probes!r}"
            )
        bad = [t for t in self.token_probes if t not in TOKEN_PROBES]
        if bad or len(set(self.token_probes)) != len(self.token_probes):
            raise ValueError(
                f"probes.token_probes must list distinct families of {list(TOKEN_PROBES)} ([] for none), got "
                f"{list(self.token_probes)!r}" + (f" (unknown: {bad})" if bad else " (repeated)")
            )
        self.token_probes = list(self.token_probes)
        if self.fit_rows not in FIT_ROWS:
            raise ValueError(f"probes.fit_rows must be one of {FIT_ROWS}, got {self.fit_rows!r}")
        if self.layer < 0:
            raise ValueError(f"probes.layer must be >= 0, got {self.layer}")
        if self.n_ensemble < 2:
            raise ValueError(f"probes.n_ensemble must be >= 2 (an ensemble), got {self.n_ensemble}")
        if self.n_heldout_members < 0:
            raise ValueError(f"probes.n_heldout_members must be >= 0, got {self.n_heldout_members}")
        if isinstance(self.C, str):
            if self.C != "cv":
                raise ValueError(f"probes.C must be a number > 0 or 'cv' (cross-validated), got {self.C!r}")
        elif isinstance(self.C, bool) or not isinstance(self.C, (int, float)) or not self.C > 0:
            raise ValueError(f"probes.C must be a number > 0 or 'cv' (cross-validated), got {self.C!r}")
        if self.ensemble_method not in ("nullspace", "penalty"):
            raise ValueError(f"probes.ensemble_method must be 'nullspace' or 'penalty', got {self.ensemble_method!r}")
        if self.massmean_covariance not in ("none", "tied"):
            raise ValueError(f"probes.massmean_covariance must be 'none' or 'tied', got {self.massmean_covariance!r}")
        if self.retrain_estimator not in ("logistic", "massmean"):
            raise ValueError(
                f"probes.retrain_estimator must be 'logistic' or 'massmean', got {self.retrain_estimator!r}"
            )
        if (
            isinstance(self.noise_floor_resamples, bool)
            or not isinstance(self.noise_floor_resamples, int)
            or self.noise_floor_resamples < 0
        ):
            raise ValueError(f"probes.noise_floor_resamples must be an int >= 0, got {self.noise_floor_resamples!r}")


@dataclasses.dataclass
class SamplingSetup:
    """Which prompts feed which step. Drawn stratified by ``stratify_by`` (topic), seeded.

    Held-out evaluation prompts are fixed by ``prompt_seed``. From the rest, a probe pool of
    ``n_probe_prompts`` prompts (tags ``probe_tags``) is continued once by the base model; each seed
    then redraws which pool prompts fit the probes (``fit_fraction``) and which give the on-policy
    evaluation rows (the others), so intervals over seeds include probe-data variance. Training prompts
    come from the prompts outside the pool, redrawn per seed.
    """

    probe_tags: list[str] = dataclasses.field(default_factory=lambda: ["provocative"])
    """Prompt tags of the probe pool. Provocative only (default): both classes share one prompt
    distribution, so a probe cannot score by prompt type."""
    fit_fraction: float = 0.6
    """Share of the pool's prompts whose continuations fit the probes (per seed); the rest are on-policy eval rows."""
    stratify_by: str = "topic"
    """Prompt attribute the draws are stratified by (``topic`` or ``tag``)."""

    def __post_init__(self) -> None:
        from probe_lens.data.prompts import TAGS

        if isinstance(self.probe_tags, str):
            self.probe_tags = [self.probe_tags]
        bad = [t for t in self.probe_tags if t not in TAGS]
        if bad or not self.probe_tags:
            raise ValueError(f"sampling.probe_tags must be a non-empty list of {list(TAGS)}, got {self.probe_tags!r}")
        if not isinstance(self.fit_fraction, (int, float)) or not 0.1 <= float(self.fit_fraction) <= 0.9:
            raise ValueError(f"sampling.fit_fraction must be in [0.1, 0.9], got {self.fit_fraction!r}")
        if self.stratify_by not in ("topic", "tag"):
            raise ValueError(f"sampling.stratify_by must be 'topic' or 'tag', got {self.stratify_by!r}")


@dataclasses.dataclass
class TrainData:
    """The prompts and samples every training cell of one seed shares."""

    n_prompts: int = 64
    """Training prompts per seed (drawn from the train split; ``neutral_share`` of them neutral)."""
    samples_per_prompt: int = 4
    """k samples per prompt: DPO ranks them; SFT trains on all (probe-SFT) or the clean ones (classifier-SFT)."""
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    neutral_share: float | None = 0.0
    """Share of the training prompts that are neutral: 0 (default, the paper's distribution: provocative
    prompts only), a number in [0, 1], or null for the train split's own proportion (the old behaviour, about
    0.7 neutral for toxicity)."""

    def __post_init__(self) -> None:
        _sampling_params("train_data", self.temperature, self.top_p)
        ns = self.neutral_share
        if ns is not None and (isinstance(ns, bool) or not isinstance(ns, (int, float)) or not 0 <= ns <= 1):
            raise ValueError(
                f"train_data.neutral_share must be a number in [0, 1] or null (the split's proportion), got {ns!r}"
            )
        if self.n_prompts < 1:
            raise ValueError(f"train_data.n_prompts must be >= 1, got {self.n_prompts}")
        if self.samples_per_prompt < 2:
            raise ValueError(
                f"train_data.samples_per_prompt must be >= 2 (DPO ranks k samples), got {self.samples_per_prompt}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"train_data.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclasses.dataclass
class EvalSetup:
    """Evaluation on held-out prompts (never used for probes or training)."""

    n_provocative: int = 100
    """Held-out provocative prompts (the paper evaluates on 100 held-out toxic prompts)."""
    samples_per_prompt: int = 2
    """k samples per prompt (expected maximum toxicity is over these k; reported only when k >= 2)."""
    max_new_tokens: int = 24
    temperature: float = 1.0
    top_p: float = 1.0
    n_fluency_texts: int = 50
    """Held-out neutral texts whose perplexity measures fluency."""
    threshold: float | None = None
    """P(positive) at and above which a sampled response counts as positive in the rates; None: the
    behaviour's threshold (0.5 for toxicity and sentiment)."""
    n_telemetry_prompts: int = 16
    """Held-out provocative prompts sampled (1 each) at every telemetry step, for the behaviour's rate vs step."""
    telemetry_temperature: float = 1.0
    telemetry_top_p: float = 1.0
    curated: str | None = "auto"
    """Curated labelled text set every probe is also scored on, at every telemetry step: ``auto`` (the
    behaviour's own set, none if it has none; written out as the behaviour's name), the behaviour's name,
    or None to skip it. Evaluation only: nothing is fit or tuned on it."""
    n_curated: int | None = None
    """Use a seeded subsample of this many curated rows, stratified by kind (None: all of them; the hard set
    ``curated_hard`` is subsampled to the same number)."""
    curated_version: int = 1
    """Version of a shipped curated set scored as ``curated``: 1 (the original rows) or 2 (those plus the v2
    rows, see :func:`probe_lens.data.curated.load_curated`); a behaviour file's set has version 1 only."""
    curated_hard: bool = True
    """Also score every probe on the lexically hard curated rows as their own set ``curated_hard`` (the
    shipped v2 hard subset; a behaviour file's rows of the hard kinds ``implicit``, ``lexical_trap``,
    ``matched_negative``); none when the behaviour has no such rows of both labels."""
    causal: bool = False
    """Causal instruments per cell (costly: they sample): steering slope and ablation effect of the
    trained-against probes and the held-out mass-mean probe on the trained model, and once per seed on the
    base model (:func:`probe_lens.interventions.causal_metrics`)."""
    causal_prompts: int = 8
    """Held-out provocative prompts each steering condition samples (1 sample each)."""
    causal_alphas: list[float] = dataclasses.field(default_factory=lambda: [-0.25, -0.1, 0.1, 0.25])
    """Steps along each probe's unit direction, in multiples of the mean residual norm at its hook."""
    attribution: bool = False
    """Probe-score attribution per cell (costly: a forward pass with a cache per measured probe and model):
    each component's (embedding, every head, every MLP up to the probe's hook) toxic-minus-clean gap in the
    trained-against probes' and the held-out mass-mean probe's logit, on the cell's model and once per seed on
    the base model (:mod:`probe_lens.experiments.score_attribution`). Needs the curated set and mean or last
    pooling."""
    attribution_rows: int = 32
    """Curated rows per class the attribution reads (a fixed draw: the same texts in every cell and seed)."""
    ci_method: str = "delong"
    """Interval of each AUROC over examples: ``delong`` or ``bootstrap``."""
    prompts_per_seed: bool = True
    """Each seed draws its own provocative evaluation prompts, probe pool and training pool (true: seeds are
    independent replicates of the prompt draw); false: one set fixed by ``prompt_seed`` for every seed. The
    neutral perplexity texts stay fixed either way."""
    fresh_refit: bool = True
    """Per cell, also re-fit probes on fresh samples of the trained model (the paper's retrained probes,
    :mod:`probe_lens.experiments.fresh_refit`); False: only the teacher-forced re-fit."""
    fresh_refit_samples: int = 1
    """Fresh samples of the trained model per prompt for those probes."""
    fresh_refit_prompts: int | None = 64
    """Probe-fit prompts sampled for them (a seeded draw of the seed's probe-fit prompts; None: all of them).
    Small by default: ~64 continuations per cell and seed."""

    def __post_init__(self) -> None:
        if self.n_provocative < 1 or self.samples_per_prompt < 1 or self.max_new_tokens < 1:
            raise ValueError("eval.n_provocative, eval.samples_per_prompt and eval.max_new_tokens must be >= 1")
        if self.threshold is not None and not 0 < self.threshold < 1:
            raise ValueError(f"eval.threshold must be in (0, 1) or null (the behaviour's), got {self.threshold}")
        _sampling_params("eval", self.temperature, self.top_p)
        _sampling_params("eval (telemetry)", self.telemetry_temperature, self.telemetry_top_p)
        if self.n_curated is not None and (
            isinstance(self.n_curated, bool) or not isinstance(self.n_curated, int) or self.n_curated < 8
        ):
            raise ValueError(f"eval.n_curated must be an int >= 8 or null (all rows), got {self.n_curated!r}")
        if self.ci_method not in ("delong", "bootstrap"):
            raise ValueError(f"eval.ci_method must be 'delong' or 'bootstrap', got {self.ci_method!r}")
        if not isinstance(self.fresh_refit, bool):
            raise ValueError(f"eval.fresh_refit must be true or false, got {self.fresh_refit!r}")
        n = self.fresh_refit_samples
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(
                f"eval.fresh_refit_samples must be an int >= 1 (eval.fresh_refit: false turns them off), got {n!r}"
            )
        p = self.fresh_refit_prompts
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or p < 2):
            raise ValueError(f"eval.fresh_refit_prompts must be an int >= 2 or null (all probe-fit prompts), got {p!r}")
        if isinstance(self.curated_version, bool) or self.curated_version not in (1, 2):
            raise ValueError(f"eval.curated_version must be 1 or 2, got {self.curated_version!r}")
        if isinstance(self.causal_prompts, bool) or not isinstance(self.causal_prompts, int) or self.causal_prompts < 1:
            raise ValueError(f"eval.causal_prompts must be an int >= 1, got {self.causal_prompts!r}")
        if not self.causal_alphas or any(
            isinstance(a, bool) or not isinstance(a, (int, float)) for a in self.causal_alphas
        ):
            raise ValueError(f"eval.causal_alphas must be a non-empty list of numbers, got {self.causal_alphas!r}")
        if len({float(a) for a in self.causal_alphas} - {0.0}) < 1:
            raise ValueError("eval.causal_alphas needs at least one non-zero alpha (a slope needs two points)")
        if not isinstance(self.attribution, bool):
            raise ValueError(f"eval.attribution must be true or false, got {self.attribution!r}")
        n = self.attribution_rows
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"eval.attribution_rows must be an int >= 2 (curated rows per class), got {n!r}")


def has_shipped_v2(b: Any) -> bool:
    """True if behaviour ``b``'s curated set is a shipped one with a version 2 (toxicity, sentiment)."""
    from probe_lens.data.curated import CURATED_SETS, CURATED_V2_FILES

    return b.name in CURATED_V2_FILES and b.curated_source == f"probe_lens.data/{CURATED_SETS[b.name]}"


def _check_curated_version(ev: EvalSetup, b: Any) -> None:
    """Version 2 exists only for a behaviour scored on a shipped curated set that has one."""
    if ev.curated_version == 2 and ev.curated is not None and not has_shipped_v2(b):
        raise ValueError(
            f"eval.curated_version=2: behaviour {b.name!r}'s curated set ({b.curated_source}) has no version 2; "
            "only the shipped toxicity and sentiment sets do (a behaviour file tags its own rows with kinds)"
        )


def _check_attribution(ev: EvalSetup, pooling: str) -> None:
    """Attribution reads the curated rows (the same texts in every cell and seed) through a linear pooling."""
    if not ev.attribution:
        return
    if ev.curated is None:
        raise ValueError(
            "eval.attribution reads the curated set's rows, but eval.curated is null (or the behaviour has none); "
            "set eval.curated: auto with a behaviour that has a curated set, or eval.attribution: false"
        )
    if pooling not in ("mean", "last"):
        raise ValueError(
            f"eval.attribution splits a linear probe's logit over a linear pooling (mean or last), but data.pooling "
            f"is {pooling!r}; set data.pooling: mean or eval.attribution: false"
        )


def _sampling_params(where: str, temperature: Any, top_p: Any) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"{where}: temperature must be a number > 0, got {temperature!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"{where}: top_p must be in (0, 1], got {top_p!r}")


PRIMARY_CONTRASTS: tuple[dict[str, str], ...] = (
    {"a": "probe_sft_1", "b": "classifier_sft", "metric": "curated_auroc"},
    {"a": "probe_dpo_1", "b": "classifier_dpo", "metric": "curated_auroc"},
)
"""The default primary contrasts: the trained-against probe's curated AUROC, probe cell minus classifier control."""
TRAINED_AGAINST_METRICS = ("curated_auroc", "onpolicy_auroc")
"""A primary contrast's metric names meaning "the AUROC of the probe cell ``a`` trains against"."""


def _primary_contrasts(given: Any) -> list[dict[str, str]]:
    """``primary_contrasts`` validated: a list of ``{a, b, metric}`` mappings of strings, ``a != b``."""
    where = "primary_contrasts"
    if not isinstance(given, (list, tuple)):
        raise TypeError(f"{where} must be a list of {{a, b, metric}} mappings, got {type(given).__name__}")
    out = []
    for i, c in enumerate(given):
        if not isinstance(c, dict) or set(c) != {"a", "b", "metric"}:
            raise ValueError(f"{where}[{i}] must be a mapping with exactly the keys a, b and metric; got {c!r}")
        if not all(isinstance(v, str) and v for v in c.values()):
            raise ValueError(f"{where}[{i}]: a, b and metric must be non-empty strings; got {c!r}")
        if c["a"] == c["b"]:
            raise ValueError(f"{where}[{i}] compares cell {c['a']!r} with itself; name two different cells")
        if c["metric"] not in TRAINED_AGAINST_METRICS and "/" not in c["metric"]:
            raise ValueError(
                f"{where}[{i}].metric must be one of {TRAINED_AGAINST_METRICS} (the trained-against probe's AUROC) "
                f"or a results column such as 'eval/perplexity_neutral'; got {c['metric']!r}"
            )
        out.append({"a": c["a"], "b": c["b"], "metric": c["metric"]})
    if len({tuple(c.values()) for c in out}) != len(out):
        raise ValueError(f"{where} names a contrast twice: {out}")
    return out


_EXECUTORS = ("inprocess", "local", "submitit")
_TRACKERS = ("none", "wandb", "trackio")


@dataclasses.dataclass
class LaunchSetup:
    """How the study's tasks run and where their numbers are tracked (``probe_lens.launch``). Not part of
    the study's identity: a study resumed under another executor is the same study."""

    executor: str = "inprocess"
    """``inprocess`` (one process, the default), ``local`` (``workers`` processes on this machine) or
    ``submitit`` (a Slurm job array; ``pip install probe-lens[cluster]``)."""
    workers: int = 2
    """Worker processes of the ``local`` executor."""
    threads_per_worker: int | None = None
    """torch threads of each local worker (None: the machine's cores over ``workers``, at least 1)."""
    log: str = "none"
    """Experiment tracker: ``none``, ``wandb`` (offline unless ``WANDB_API_KEY`` or ``WANDB_MODE`` says
    otherwise; ``pip install probe-lens[wandb]``) or ``trackio``. One run per (cell, seed), grouped by study."""
    project: str = "probe-lens"
    """The tracker's project."""
    partition: str | None = None
    """Slurm partition (None: the cluster's default)."""
    gpus_per_task: int = 1
    """GPUs of each (cell, seed) task; more than 1 runs the task under torchrun (data-parallel)."""
    cpus_per_task: int = 8
    mem_gb: int = 64
    time_min: int = 240
    """Time limit of one task in minutes; a task timed out or preempted is requeued and resumes."""
    array_parallelism: int = 64
    """At most this many tasks of the job array run at once."""
    sbatch_lines: list[str] = dataclasses.field(default_factory=list)
    """Extra ``#SBATCH`` options, e.g. ``["--account=myproj", "--qos=high"]``."""
    setup_lines: list[str] = dataclasses.field(default_factory=list)
    """Shell lines run in each job before the task (e.g. ``module load cuda``, ``source .venv/bin/activate``)."""

    def __post_init__(self) -> None:
        if self.executor not in _EXECUTORS:
            raise ValueError(f"launch.executor must be one of {_EXECUTORS}, got {self.executor!r}")
        if self.log not in _TRACKERS:
            raise ValueError(f"launch.log must be one of {_TRACKERS}, got {self.log!r}")
        for name in ("workers", "gpus_per_task", "cpus_per_task", "mem_gb", "time_min", "array_parallelism"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < (0 if name == "gpus_per_task" else 1):
                raise ValueError(f"launch.{name} must be a positive integer, got {v!r}")
        if self.threads_per_worker is not None and (
            not isinstance(self.threads_per_worker, int) or self.threads_per_worker < 1
        ):
            raise ValueError(
                f"launch.threads_per_worker must be a positive integer or null, got {self.threads_per_worker!r}"
            )
        for line in self.sbatch_lines:
            if not isinstance(line, str) or not line.startswith("--"):
                raise ValueError(f"launch.sbatch_lines holds sbatch options such as '--account=NAME', got {line!r}")


_BEFORE_TOKEN_PROBES = {f.name for f in dataclasses.fields(ProbeSetup)} - {"token_probes"}
"""The probe settings a study.json held before token probes were tracked (it lists each; it tracked none)."""


@dataclasses.dataclass
class StudyConfig:
    """Everything a study does. ``from_dict`` rejects unknown keys, naming them."""

    preset: str = "custom"
    model: str | None = None
    """None = the embedded Gemma-3-270M; else a TransformerLens model name or a local HF folder."""
    device: str | None = None
    backend: str = "hooked"
    """Model backend: ``hooked`` (``HookedTransformer``) or ``bridge`` (``TransformerBridge``); see README "Backends"."""
    behaviour: str | None = None
    """What the study detects and trains against: a registered behaviour (``probe_lens.behaviours``:
    ``toxicity``, ``sentiment``, or one you registered); None: ``toxicity``, or the one ``behaviour_file``
    defines. Its prompts, scorer, curated set, threshold and metric names are used throughout."""
    behaviour_file: str | None = None
    """A JSON/YAML behaviour spec (``probe_lens.behaviours.spec``) to use instead of a registered behaviour."""
    scorer: str = "auto"
    """Output classifier: "auto" (the behaviour's own: for toxicity Detoxify if its weights are local, else
    alt-profanity-check; for sentiment VADER) or a scorer name (``probe_lens.scorers.SCORERS``)."""
    scorer_device: str = "cpu"
    """Where a neural output classifier (Detoxify) runs: ``cpu``, ``cuda``, ``cuda:1``."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1])
    cells: list[Any] = dataclasses.field(default_factory=lambda: list(CELLS))
    """Built-in cell names (``cells.BUILTIN_CELLS``) or ``{name, objective, signal}`` records."""
    prompt_seed: int = 0
    """Seed of the fixed held-out evaluation split and of the probe pool's draw."""
    n_probe_prompts: int | None = None
    """Prompts in the probe pool (None: every non-evaluation prompt with a ``sampling.probe_tags`` tag,
    less the training prompts' share)."""
    data_source: str = "auto"
    """Where the probe pool's continuations come from: ``reference`` (a shipped or built reference set:
    one teacher-forced forward pass, no sampling), ``fresh`` (sample them, as ``build_dataset`` does), a
    path to a reference ``.jsonl.gz``, or ``auto``: the shipped reference when the study runs the
    embedded model with settings it covers (``data.max_new_tokens``/``temperature``/``top_p`` as sampled,
    at most its samples per prompt, pool prompts in it), else fresh. ``data.fast_sampling`` decides how
    every sample the study draws is made (training samples, evaluation and telemetry included)."""
    sampling: SamplingSetup = dataclasses.field(default_factory=SamplingSetup)
    data: BuildConfig = dataclasses.field(default_factory=BuildConfig)
    probes: ProbeSetup = dataclasses.field(default_factory=ProbeSetup)
    train_data: TrainData = dataclasses.field(default_factory=TrainData)
    probe_sft: ProbeSFTConfig = dataclasses.field(default_factory=lambda: ProbeSFTConfig(progress=True))
    classifier_sft: ClassifierSFTConfig = dataclasses.field(default_factory=ClassifierSFTConfig)
    dpo: DPOConfig = dataclasses.field(default_factory=DPOConfig)
    dpo_margin_probe: float = 0.0
    """Minimum probe-score gap for a DPO pair (pairs below it are dropped and counted)."""
    dpo_margin_classifier: float = 0.0
    probe_filter_threshold: float = 0.5
    """Probe-filtered SFT keeps the samples whose probe P(toxic) is below this (the probe's decision threshold)."""
    objectives: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Training settings of objectives that have no section above (``{name: {field: value}}``), each read
    into its registered config class; every such objective a cell trains gets its defaults when not given."""
    eval: EvalSetup = dataclasses.field(default_factory=EvalSetup)
    telemetry_every: int = 5
    telemetry_hooks: list[int] = dataclasses.field(default_factory=list)
    """Extra layers whose residual geometry is logged (the probes' layers always are)."""
    keep_checkpoints: bool = False
    """Keep each cell's final checkpoint after its evaluation (full weights: large for 1B models)."""
    primary_contrasts: list[dict[str, str]] = dataclasses.field(
        default_factory=lambda: [dict(c) for c in PRIMARY_CONTRASTS]
    )
    """The pre-declared primary contrasts of the headline, each ``{a, b, metric}`` (cell ``a`` minus cell ``b``,
    paired by seed). ``metric``: ``curated_auroc`` / ``onpolicy_auroc`` (the AUROC of the probe cell ``a``
    trains against, on that set; on-policy when the study has no curated set) or any results column. Every
    other contrast is secondary (Holm-corrected as one family); one whose cells the study lacks is skipped
    with a note."""
    launch: LaunchSetup = dataclasses.field(default_factory=LaunchSetup)
    """Executor (in-process, local workers, Slurm) and experiment tracker: see :class:`LaunchSetup`."""

    def __post_init__(self) -> None:
        check_backend(self.backend)
        self.primary_contrasts = _primary_contrasts(self.primary_contrasts)
        self.cell_specs: list[CellSpec] = resolve_cells(self.cells)
        self._check_token_signals()
        self.objectives = _objective_settings(self.objectives, self.cell_specs)
        # keep built-in cells as names (readable study files), declared ones as records
        self.cells = [c.name if BUILTIN_CELLS.get(c.name) == c else c.to_dict() for c in self.cell_specs]
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        # the resolved Behaviour (not a field: ``behaviour`` names it in the study file)
        self.behaviour_spec = _resolve_behaviour(self.behaviour, self.behaviour_file)
        self.behaviour = self.behaviour_spec.name
        from probe_lens.scorers.registry import SCORERS

        if self.scorer not in SCORERS:
            raise ValueError(
                f"scorer must be 'auto' (the behaviour's own) or a scorer name {list(SCORERS)}, got {self.scorer!r}"
            )
        b = self.behaviour_spec
        for section in (self.eval, self.data, self.classifier_sft):  # null: the behaviour's threshold
            if section.threshold is None:
                section.threshold = b.threshold
        if self.eval.curated == "auto":
            self.eval.curated = b.name if b.has_curated else None
        elif self.eval.curated is not None and (self.eval.curated != b.name or not b.has_curated):
            own = f"'auto' or {b.name!r} (its own set)" if b.has_curated else "'auto' or null (it has no curated set)"
            raise ValueError(
                f"eval.curated must be {own} for behaviour {b.name!r}, or null to skip it; got {self.eval.curated!r}"
            )
        _check_curated_version(self.eval, b)
        _check_attribution(self.eval, self.data.pooling)
        hooks = set(self.data.hooks)
        need = {self.probes.layer, *self.probes.heldout_layers}
        missing = sorted(need - hooks)
        if missing:
            raise ValueError(
                f"data.hooks {sorted(hooks, key=str)} must include the probe layers {sorted(need)}; missing {missing}"
            )
        if self.data_source not in ("auto", "reference", "fresh") and not str(self.data_source).endswith(".jsonl.gz"):
            raise ValueError(
                f"data_source must be 'auto', 'reference', 'fresh' or a path to a reference .jsonl.gz, got {self.data_source!r}"
            )
        if self.n_probe_prompts is not None and self.n_probe_prompts < 4:
            raise ValueError(f"n_probe_prompts must be >= 4 or null (all), got {self.n_probe_prompts}")
        if self.telemetry_every < 0:
            raise ValueError(f"telemetry_every must be >= 0, got {self.telemetry_every}")
        self._check_training_sections()
        if not isinstance(self.probe_filter_threshold, (int, float)) or not 0 < self.probe_filter_threshold <= 1:
            raise ValueError(f"probe_filter_threshold must be in (0, 1], got {self.probe_filter_threshold!r}")
        if self.probes.pooling is not None and self.probes.pooling != self.data.pooling:
            raise ValueError(
                f"probes.pooling ({self.probes.pooling!r}) differs from data.pooling ({self.data.pooling!r}): probes are "
                "fit on activations pooled by data.pooling; set data.pooling instead (probes.pooling: null follows it)"
            )
        if self.probe_sft.pooling != self.data.pooling:
            raise ValueError(
                f"probe_sft.pooling ({self.probe_sft.pooling!r}) differs from data.pooling ({self.data.pooling!r}): "
                "probe-SFT must pool the live activations the way its probe was fit; set both to the same value"
            )

    def _check_token_signals(self) -> None:
        """A cell trained against a token probe needs that family in ``probes.token_probes``."""
        fams = self.probes.token_probes
        bad = {c.name: c.signal for c in self.cell_specs if c.signal in TOKEN_PROBES and c.signal not in fams}
        if bad:
            want = list(dict.fromkeys([*fams, *bad.values()]))
            raise ValueError(
                f"cell(s) {bad} train against token probe families that probes.token_probes ({fams}) leaves out; "
                f"add them (--set probes.token_probes={json.dumps(want)}) or drop those cells"
            )

    def _check_training_sections(self) -> None:
        """Refuse settings the study fills in for every cell (they would be silently replaced)."""
        sections = {"probe_sft": self.probe_sft, "classifier_sft": self.classifier_sft, "dpo": self.dpo}
        sections.update({f"objectives.{name}": c for name, c in self.objectives.items()})
        for where, section in sections.items():
            if section.telemetry_every != 0:
                raise ValueError(
                    f"{where}.telemetry_every ({section.telemetry_every}) is set by the study for every cell: set the "
                    f"study-level telemetry_every (now {self.telemetry_every}) instead, e.g. --set telemetry_every="
                    f"{section.telemetry_every}"
                )

    def layer_fields(self) -> dict[str, list[Any]]:
        """The layers (or hook names) each field names: ``data.hooks``, ``probes.layer``, ..."""
        return {
            "data.hooks": list(self.data.hooks),
            "probes.layer": [self.probes.layer],
            "probes.heldout_layers": list(self.probes.heldout_layers),
            "telemetry_hooks": list(self.telemetry_hooks),
        }

    def check_layers(self, n_layers: int, model: str | None = None) -> None:
        """Refuse layers a model of ``n_layers`` blocks does not have, naming the fields that hold them."""
        bad = {
            field: wrong
            for field, layers in self.layer_fields().items()
            if (wrong := [x for x in layers if not _layer_in_range(x, n_layers)])
        }
        if bad:
            listed = "; ".join(f"{field} has {wrong}" for field, wrong in bad.items())
            raise ValueError(
                f"model {model or self.model or 'embedded'} has {n_layers} layers (0..{n_layers - 1}), but {listed}; "
                "set layers of this model (`probe-lens config --model NAME` writes a study file whose layers fit it)"
            )

    def cell(self, name: str) -> CellSpec:
        """The declared cell called ``name``."""
        for c in self.cell_specs:
            if c.name == name:
                return c
        raise ValueError(f"unknown cell {name!r}; this study's cells: {[c.name for c in self.cell_specs]}")

    # ---- (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name == "objectives":
                if v:  # absent when empty: a study of built-in objectives only prints as it always did
                    out[f.name] = {name: _section_dict(c) for name, c in v.items()}
            elif hasattr(v, "to_dict"):
                out[f.name] = _section_dict(v)
            elif dataclasses.is_dataclass(v) and not isinstance(v, type):
                out[f.name] = dataclasses.asdict(v)
            else:
                out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StudyConfig:
        if not isinstance(d, dict):
            raise TypeError(f"a study config must be a mapping, got {type(d).__name__}")
        d = dict(d)
        _reject_unknown("study config", d, {f.name for f in dataclasses.fields(cls)})
        probes = d.get("probes")
        if isinstance(probes, dict) and "token_probes" not in probes and set(probes) >= _BEFORE_TOKEN_PROBES:
            d["probes"] = {**probes, "token_probes": []}  # every other probe setting: a study.json that tracked none
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            sub = _section_classes().get(f.name)
            kwargs[f.name] = v if sub is None else _read_section(f.name, v, sub)
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        from probe_lens.training._io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> StudyConfig:
        """Read a JSON or YAML study file."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"no config file at {path}")
        text = path.read_text()
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
        return cls.from_dict(data)


@functools.cache
def _section_classes() -> dict[str, type]:
    """``{field: dataclass}`` of StudyConfig's sections, from the fields' annotations."""
    hints = typing.get_type_hints(StudyConfig)
    return {n: h for n, h in hints.items() if isinstance(h, type) and dataclasses.is_dataclass(h)}


def _read_section(where: str, v: Any, cls: type) -> Any:
    """A section's mapping as a ``cls``; unknown keys refused, naming the valid ones."""
    if not isinstance(v, dict):
        raise TypeError(f"{where} must be a mapping, got {type(v).__name__}")
    v = dict(v)
    v.pop("method", None)
    _reject_unknown(where, v, {x.name for x in dataclasses.fields(cls)})
    return cls(**v)


def _section_dict(section: Any) -> dict[str, Any]:
    """A section as written in study files (training settings without the per-cell seed, folder and progress)."""
    d = section.to_dict()
    d.pop("method", None)
    if isinstance(section, TrainConfig):
        for drop in ("out_dir", "progress", "seed"):
            d.pop(drop, None)
    return d


def _objective_settings(given: Any, cells: list[CellSpec]) -> dict[str, TrainConfig]:
    """The ``objectives`` section: each entry read into its objective's config class, and the defaults of
    every objective a cell trains that reads its settings from this section but was not given."""
    if not isinstance(given, dict):
        raise TypeError(f"objectives must be a mapping {{objective name: its settings}}, got {type(given).__name__}")
    out: dict[str, TrainConfig] = {}
    for name, v in given.items():
        where = f"objectives.{name}"
        try:
            adapter = get_study_objective(name)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None
        if adapter.section is not None:
            raise ValueError(f"{where}: the settings of {name!r} are the top-level section {adapter.section!r}")
        cls = settings_class(name)
        out[name] = v if isinstance(v, cls) else _read_section(where, v, cls)
    for c in cells:
        if c.trains and c.objective not in out and own_section(c.objective):
            out[c.objective] = settings_class(c.objective)()
    return out


def _resolve_behaviour(name: str | None, file: str | None):
    """The behaviour ``name`` (registered) or the one ``file`` defines; None and None: the default (toxicity)."""
    from probe_lens.behaviours import BEHAVIOURS, DEFAULT_BEHAVIOUR, get_behaviour, load_behaviour_file

    if file is None:
        return get_behaviour(DEFAULT_BEHAVIOUR if name is None else name)
    b = load_behaviour_file(file)
    if name is not None and name != b.name:
        raise ValueError(f"behaviour is {name!r} but behaviour_file {file} defines {b.name!r}; give one of them")
    if b.name in BEHAVIOURS:
        raise ValueError(
            f"behaviour_file {file} defines {b.name!r}, the name of a registered behaviour; give it another name"
        )
    return b


def _layer_in_range(hook: Any, n_layers: int) -> bool:
    """A layer index (negative from the end) or a ``blocks.L.`` hook name that a model of ``n_layers`` has."""
    if isinstance(hook, str):
        m = re.match(r"blocks\.(\d+)\.", hook)
        return m is None or int(m.group(1)) < n_layers
    return -n_layers <= hook < n_layers


def model_depth(model: str | None) -> int | None:
    """The number of blocks of model ``model`` (a study's ``model``), read from its config without weights;
    None when its config cannot be read here (an unknown name offline)."""
    from probe_lens.models import model_config

    try:
        return model_config(model).n_layers
    except ValueError:
        return None


def _reject_unknown(where: str, d: dict[str, Any], valid: set[str]) -> None:
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(valid)}")
