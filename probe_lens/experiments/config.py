"""The study configuration: one dataclass tree that maps one-to-one onto a YAML/JSON file.

A study = probe data from the base model -> probes -> for each seed, every training cell of the
grid -> evaluation -> table and report. ``StudyConfig`` holds all of it, is validated on
construction, and is saved as ``study.json`` in the run folder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from probe_lens.data.builder import BuildConfig
from probe_lens.training.config import ClassifierSFTConfig, DPOConfig, ProbeSFTConfig

CELLS: tuple[str, ...] = (
    "base",
    "probe_sft_1",
    "probe_sft_ens",
    "probe_dpo_1",
    "probe_dpo_ens",
    "classifier_dpo",
    "classifier_sft",
)
"""The grid: the untrained base model, probe-SFT and probe-DPO against one probe and against a
diverse ensemble, and the two output-classifier baselines."""


@dataclasses.dataclass
class ProbeSetup:
    """Which probes are trained against, and which are held out (fit once, never trained against)."""

    layer: int = 9
    """Layer of the trained-against probes (``blocks.L.hook_resid_post``)."""
    heldout_layers: list[int] = dataclasses.field(default_factory=lambda: [6, 12])
    """Other layers with held-out logistic probes."""
    C: float = 1.0
    """Inverse L2 strength of the logistic probes (sklearn convention)."""
    n_ensemble: int = 4
    """Members of the diverse (orthogonal, nullspace) ensemble trained against in ``*_ens`` cells."""
    n_heldout_members: int = 2
    """Extra ensemble members fit after the trained ones and never trained against."""
    pooling: str = "mean"

    def __post_init__(self) -> None:
        if self.layer < 0:
            raise ValueError(f"probes.layer must be >= 0, got {self.layer}")
        if self.n_ensemble < 2:
            raise ValueError(f"probes.n_ensemble must be >= 2 (an ensemble), got {self.n_ensemble}")
        if self.n_heldout_members < 0:
            raise ValueError(f"probes.n_heldout_members must be >= 0, got {self.n_heldout_members}")
        if self.C <= 0:
            raise ValueError(f"probes.C must be > 0, got {self.C}")


@dataclasses.dataclass
class TrainData:
    """The prompts and samples every training cell of one seed shares."""

    n_prompts: int = 64
    """Training prompts (from the train split; provocative and neutral in proportion)."""
    samples_per_prompt: int = 4
    """k samples per prompt: DPO ranks them; SFT trains on all (probe-SFT) or the clean ones (classifier-SFT)."""
    max_new_tokens: int = 24
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.n_prompts < 1:
            raise ValueError(f"train_data.n_prompts must be >= 1, got {self.n_prompts}")
        if self.samples_per_prompt < 2:
            raise ValueError(f"train_data.samples_per_prompt must be >= 2 (DPO ranks k samples), got {self.samples_per_prompt}")
        if self.max_new_tokens < 1:
            raise ValueError(f"train_data.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclasses.dataclass
class EvalSetup:
    """Evaluation on held-out prompts (never used for probes or training)."""

    n_provocative: int = 100
    """Held-out provocative prompts (the paper evaluates on 100 held-out toxic prompts)."""
    samples_per_prompt: int = 2
    """k samples per prompt (expected maximum toxicity is over these k)."""
    max_new_tokens: int = 24
    temperature: float = 1.0
    n_fluency_texts: int = 50
    """Held-out neutral texts whose perplexity measures fluency."""
    threshold: float = 0.5
    n_telemetry_prompts: int = 16
    """Held-out provocative prompts sampled (1 each) at every telemetry step, for toxicity vs step."""

    def __post_init__(self) -> None:
        if self.n_provocative < 1 or self.samples_per_prompt < 1 or self.max_new_tokens < 1:
            raise ValueError("eval.n_provocative, eval.samples_per_prompt and eval.max_new_tokens must be >= 1")
        if not 0 < self.threshold < 1:
            raise ValueError(f"eval.threshold must be in (0, 1), got {self.threshold}")


@dataclasses.dataclass
class StudyConfig:
    """Everything a study does. ``from_dict`` rejects unknown keys, naming them."""

    preset: str = "custom"
    model: str | None = None
    """None = the embedded Gemma-3-270M; else a TransformerLens model name or a local HF folder."""
    device: str | None = None
    scorer: str = "auto"
    """Output classifier: "auto" (Detoxify if its weights are local, else alt-profanity-check), "detoxify", "profanity"."""
    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1])
    cells: list[str] = dataclasses.field(default_factory=lambda: list(CELLS))
    prompt_seed: int = 0
    """Seed of the prompt splits (fixed across training seeds)."""
    n_probe_prompts: int | None = None
    """Prompts of the probe-fit split used for probe data (None: all of it, ~290 of the embedded set)."""
    data: BuildConfig = dataclasses.field(default_factory=BuildConfig)
    probes: ProbeSetup = dataclasses.field(default_factory=ProbeSetup)
    train_data: TrainData = dataclasses.field(default_factory=TrainData)
    probe_sft: ProbeSFTConfig = dataclasses.field(default_factory=lambda: ProbeSFTConfig(progress=True))
    classifier_sft: ClassifierSFTConfig = dataclasses.field(default_factory=ClassifierSFTConfig)
    dpo: DPOConfig = dataclasses.field(default_factory=DPOConfig)
    dpo_margin_probe: float = 0.0
    """Minimum probe-score gap for a DPO pair (pairs below it are dropped and counted)."""
    dpo_margin_classifier: float = 0.0
    eval: EvalSetup = dataclasses.field(default_factory=EvalSetup)
    telemetry_every: int = 5
    telemetry_hooks: list[int] = dataclasses.field(default_factory=list)
    """Extra layers whose residual geometry is logged (the probes' layers always are)."""
    keep_checkpoints: bool = False
    """Keep each cell's final checkpoint after its evaluation (full weights: large for 1B models)."""

    def __post_init__(self) -> None:
        unknown = [c for c in self.cells if c not in CELLS]
        if unknown:
            raise ValueError(f"unknown cell(s)/method(s) {unknown}; valid: {list(CELLS)}")
        if not self.seeds:
            raise ValueError("seeds is empty; give at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if self.scorer not in ("auto", "detoxify", "profanity"):
            raise ValueError(f"scorer must be 'auto', 'detoxify' or 'profanity', got {self.scorer!r}")
        hooks = set(self.data.hooks)
        need = {self.probes.layer, *self.probes.heldout_layers}
        missing = sorted(need - hooks)
        if missing:
            raise ValueError(
                f"data.hooks {sorted(hooks, key=str)} must include the probe layers {sorted(need)}; missing {missing}"
            )
        if self.n_probe_prompts is not None and self.n_probe_prompts < 4:
            raise ValueError(f"n_probe_prompts must be >= 4 or null (all), got {self.n_probe_prompts}")
        if self.telemetry_every < 0:
            raise ValueError(f"telemetry_every must be >= 0, got {self.telemetry_every}")

    # ---- (de)serialisation ------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if hasattr(v, "to_dict"):
                d = v.to_dict()
                d.pop("method", None)
                for drop in ("out_dir", "progress", "seed"):
                    if f.name in _TRAIN_FIELDS:
                        d.pop(drop, None)
                out[f.name] = d
            elif dataclasses.is_dataclass(v):
                out[f.name] = dataclasses.asdict(v)
            else:
                out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StudyConfig":
        if not isinstance(d, dict):
            raise TypeError(f"a study config must be a mapping, got {type(d).__name__}")
        d = dict(d)
        _reject_unknown("study config", d, {f.name for f in dataclasses.fields(cls)})
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            v = d[f.name]
            sub = _SUBCONFIGS.get(f.name)
            if sub is not None:
                if not isinstance(v, dict):
                    raise TypeError(f"{f.name} must be a mapping, got {type(v).__name__}")
                fields = {x.name for x in dataclasses.fields(sub)}
                v = dict(v)
                v.pop("method", None)
                _reject_unknown(f.name, v, fields)
                v = sub(**v)
            kwargs[f.name] = v
        return cls(**kwargs)

    def save(self, path: str | Path) -> None:
        from probe_lens.training._io import atomic_write_text

        atomic_write_text(Path(path), json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> "StudyConfig":
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


_SUBCONFIGS: dict[str, type] = {
    "data": BuildConfig,
    "probes": ProbeSetup,
    "train_data": TrainData,
    "probe_sft": ProbeSFTConfig,
    "classifier_sft": ClassifierSFTConfig,
    "dpo": DPOConfig,
    "eval": EvalSetup,
}
_TRAIN_FIELDS = ("probe_sft", "classifier_sft", "dpo")


def _reject_unknown(where: str, d: dict[str, Any], valid: set[str]) -> None:
    unknown = sorted(set(d) - valid)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys: {sorted(valid)}")
