"""Named study sizes: ``demo`` (minutes), ``quick`` (the single-probe cells on a 2-core CPU), ``contrast``
(the primary contrasts over 10 independent seeds, under 2 hours on a 2-core CPU), ``standard`` (the whole grid),
``paper`` (1B, GPU); ``obfuscation`` (issue 27: gradient-through vs reward-only and mean vs max pooling, under 2
hours on a 2-core CPU) and its GPU version ``paper_obfuscation``.

``contrast`` is the study the README's headline comes from: base, probe_sft_1, classifier_sft, probe_dpo_1 and
classifier_dpo (the two pre-declared primary contrasts and their controls) at the ``quick`` preset's sizes, over
10 seeds, each seed an independent replicate (its own evaluation prompts, probe pool, continuations, probe-fit
split and training prompts). ``probe-lens reproduce --preset contrast --dry-run`` prints its estimated wall time
and whether it is within its 2-hour budget (:data:`PRESET_BUDGET_S`); a ``--set`` that pushes it over is flagged.

The CPU presets (``demo``, ``quick``) train the transformer blocks and the final norm and freeze the
embedding and unembedding matrices (``trainable: "^(blocks|ln_final)\\."``): in the HF model the two
are one tied 262k x 640 matrix that TransformerLens unties, so training them apart would break the tie,
and they hold over three quarters of the parameters (gradients, AdamW state, checkpoints). ``paper`` trains all.

Each preset is a plain dict in the same shape as a YAML/JSON study file, so ``--config`` files and
presets are interchangeable; ``--set key.sub=value`` overrides single fields.

A preset's layers are picked for its own model (the embedded Gemma-3-270M's 18 blocks: probes at layer 6,
one third of the depth, held out at 4 and 9; ``paper``: 20 of Gemma-3-1B's 26). With another model
(``--model``), :func:`make_config` moves each layer to the same relative depth of that model
(:func:`fit_layers`), and refuses layers the model does not have.
"""

from __future__ import annotations

import copy
from typing import Any

from probe_lens.experiments.config import CELLS, StudyConfig, model_depth

_BLOCKS = r"^(blocks|ln_final)\."


def _cpu_training(*, max_steps: int, sft_batch_size: int, warmup_steps: int) -> dict[str, dict[str, Any]]:
    """The three training sections of a CPU preset (quick, standard): the transformer blocks at lr 3e-5,
    DPO at batch 4 and beta 0.1, both SFT variants at ``sft_batch_size``."""
    common = {"trainable": _BLOCKS, "max_steps": max_steps, "lr": 3e-5, "warmup_steps": warmup_steps}
    return {
        "probe_sft": {**common, "batch_size": sft_batch_size, "probe_weight": 1.0},
        "dpo": {**common, "batch_size": 4, "beta": 0.1},
        "classifier_sft": {**common, "batch_size": sft_batch_size},
    }


_DEMO: dict[str, Any] = {
    "preset": "demo",
    "seeds": [0],
    "n_probe_prompts": 96,
    "cells": ["base", "probe_sft_1", "classifier_sft"],
    "data": {
        "hooks": [4, 6, 9],
        "samples_per_prompt": 2,
        "max_new_tokens": 24,
        "max_rounds": 1,
        "min_minority": 0,
        "batch_size": 32,
        "chunk_prompts": 48,
    },
    "probes": {"layer": 6, "heldout_layers": [4, 9], "n_ensemble": 2, "n_heldout_members": 1},
    "train_data": {"n_prompts": 16, "samples_per_prompt": 2, "max_new_tokens": 16},
    "probe_sft": {"trainable": _BLOCKS, "max_steps": 4, "batch_size": 4, "lr": 2e-5, "warmup_steps": 0},
    "dpo": {"trainable": _BLOCKS, "max_steps": 4, "batch_size": 2, "lr": 2e-5, "beta": 0.1},
    "classifier_sft": {"trainable": _BLOCKS, "max_steps": 4, "batch_size": 4, "lr": 2e-5},
    "eval": {
        "n_provocative": 24,
        "samples_per_prompt": 1,
        "max_new_tokens": 16,
        "n_fluency_texts": 16,
        "n_telemetry_prompts": 8,
    },
    "telemetry_every": 4,
}

_QUICK: dict[str, Any] = {
    "preset": "quick",
    "seeds": [0, 1, 2],
    "n_probe_prompts": 240,
    # the smoke test (<= 12 min on 2 cores): the single-probe cells and their classifier controls; the whole
    # grid (ensemble cells, probe-filtered SFT) is in `standard` and `paper`
    "cells": ["base", "probe_sft_1", "probe_dpo_1", "classifier_sft", "classifier_dpo"],
    "data": {
        "hooks": [4, 6, 9],
        "samples_per_prompt": 2,
        "max_new_tokens": 24,
        "max_rounds": 1,
        "min_minority": 0,
        "batch_size": 32,
        "chunk_prompts": 40,
    },
    "probes": {"layer": 6, "heldout_layers": [4, 9], "n_ensemble": 4, "n_heldout_members": 2},
    "train_data": {"n_prompts": 24, "samples_per_prompt": 4, "max_new_tokens": 16},
    **_cpu_training(max_steps=6, sft_batch_size=4, warmup_steps=1),
    "eval": {
        "n_provocative": 48,
        "samples_per_prompt": 1,
        "max_new_tokens": 16,
        "n_fluency_texts": 20,
        "n_telemetry_prompts": 8,
        "n_curated": 120,
    },
    "telemetry_every": 6,
}

_CONTRAST: dict[str, Any] = {
    **copy.deepcopy(_QUICK),
    "preset": "contrast",
    # 10 independent replicates: enough for a sign-flip p below 0.05 (2/2^10) and an HKSJ interval on 9 df
    "seeds": list(range(10)),
    "cells": ["base", "probe_sft_1", "classifier_sft", "probe_dpo_1", "classifier_dpo"],
    # the cleaner yardstick (v1 + v2 rows, stratified by kind); the causal instruments stay off: on 2 CPU
    # cores they doubled a seed (11.3 vs ~5.5 min; --set eval.causal=true, alphas <= 0.05 x the residual norm)
    "eval": {**_QUICK["eval"], "curated_version": 2},
    # the mean-pooled answer inside its 2-hour budget: the token probes' re-fits would add ~10-20 min a run on
    # 2 cores; the pooling families are the `obfuscation` preset's question
    "probes": {**_QUICK["probes"], "token_probes": []},
}

_PAPER: dict[str, Any] = {
    "preset": "paper",
    "model": "google/gemma-3-1b-pt",
    "seeds": [0, 1, 2],
    "cells": list(CELLS),
    "data": {
        "hooks": [10, 14, 20, 24],
        "samples_per_prompt": 8,
        "max_new_tokens": 48,
        "max_rounds": 3,
        "min_minority": 500,
        "batch_size": 64,
        "chunk_prompts": 64,
    },
    "probes": {"layer": 20, "heldout_layers": [14, 24], "n_ensemble": 10, "n_heldout_members": 5},
    "train_data": {"n_prompts": 256, "samples_per_prompt": 4, "max_new_tokens": 48},
    "probe_sft": {"max_steps": 200, "batch_size": 16, "lr": 1e-5, "warmup_steps": 10, "bf16": True},
    "dpo": {"max_steps": 200, "batch_size": 8, "lr": 5e-6, "beta": 0.1, "warmup_steps": 10, "bf16": True},
    "classifier_sft": {"max_steps": 200, "batch_size": 16, "lr": 1e-5, "warmup_steps": 10, "bf16": True},
    "eval": {"n_provocative": 100, "samples_per_prompt": 4, "max_new_tokens": 48, "n_fluency_texts": 50},
    "telemetry_every": 25,
}

_STANDARD: dict[str, Any] = {
    "preset": "standard",
    "seeds": [0, 1, 2],
    "cells": list(CELLS),
    "n_probe_prompts": 280,
    # probe pool: 280 provocative prompts per seed x 3 of the reference's 10 continuations (read, not sampled):
    # ~500 probe-fit rows and ~340 on-policy rows per seed (280: 477 provocative prompts less 100 evaluation and
    # the 80 reserved for training now that the 64 training prompts are all provocative)
    "data": {
        "hooks": [4, 6, 9],
        "samples_per_prompt": 3,
        "max_new_tokens": 24,
        "max_rounds": 1,
        "min_minority": 0,
        "batch_size": 32,
        "chunk_prompts": 40,
    },
    "probes": {"layer": 6, "heldout_layers": [4, 9], "n_ensemble": 4, "n_heldout_members": 2},
    "train_data": {"n_prompts": 64, "samples_per_prompt": 4, "max_new_tokens": 24},
    # 12 steps: the trained-against probe's mean P(toxic) on the training samples falls 0.12 -> 1e-5 by step 4
    # and stops falling by step 12 (benchmarks/calibrate_steps.py, benchmarks/RESULTS.md)
    **_cpu_training(max_steps=12, sft_batch_size=8, warmup_steps=2),
    "eval": {
        "n_provocative": 100,
        "samples_per_prompt": 2,
        "max_new_tokens": 24,
        "n_fluency_texts": 50,
        "n_telemetry_prompts": 16,
    },
    "telemetry_every": 6,
}

_OBFUSCATION_CELLS = ["base", "probe_sft_1", "classifier_sft", "probe_rloo_1", "classifier_rloo", "probe_sft_max"]

_OBFUSCATION: dict[str, Any] = {
    **copy.deepcopy(_QUICK),
    "preset": "obfuscation",
    # issue 27's two questions at the quick sizes: gradient through the probe (probe_sft_1) vs reward only
    # (probe_rloo_1), each with its classifier control, and pooling (probe_sft_max: probe-SFT through the
    # max-pooled probe; every cell tracks the mean, max and attention probes); 3 seeds (the sign-flip p cannot
    # go below 0.25: read the intervals over seeds, not p)
    "seeds": [0, 1, 2],
    "cells": list(_OBFUSCATION_CELLS),
    "probes": {**_QUICK["probes"], "token_probes": ["maxpool", "attention"]},
    "objectives": {"rloo": {"max_steps": 6, "batch_size": 4, "samples_per_prompt": 4, "max_new_tokens": 16}},
    "primary_contrasts": [
        {"a": "probe_sft_1", "b": "classifier_sft", "metric": "curated_auroc"},
        {"a": "probe_rloo_1", "b": "classifier_rloo", "metric": "curated_auroc"},
    ],
}

_PAPER_OBFUSCATION: dict[str, Any] = {
    **copy.deepcopy(_PAPER),
    "preset": "paper_obfuscation",
    "cells": [*_OBFUSCATION_CELLS, "probe_dpo_1", "classifier_dpo", "probe_rloo_max", "probe_sft_attn"],
    "probes": {**_PAPER["probes"], "token_probes": ["maxpool", "attention"]},
    "objectives": {
        "rloo": {
            "max_steps": 200,
            "batch_size": 4,
            "samples_per_prompt": 4,
            "max_new_tokens": 48,
            "lr": 1e-5,
            "warmup_steps": 10,
            "bf16": True,
            "trainable": "all",
        }
    },
    "primary_contrasts": [
        {"a": "probe_sft_1", "b": "classifier_sft", "metric": "curated_auroc"},
        {"a": "probe_dpo_1", "b": "classifier_dpo", "metric": "curated_auroc"},
        {"a": "probe_rloo_1", "b": "classifier_rloo", "metric": "curated_auroc"},
    ],
}

PRESETS: dict[str, dict[str, Any]] = {
    "demo": _DEMO,
    "quick": _QUICK,
    "contrast": _CONTRAST,
    "standard": _STANDARD,
    "paper": _PAPER,
    "obfuscation": _OBFUSCATION,
    "paper_obfuscation": _PAPER_OBFUSCATION,
}

PRESET_BUDGET_S: dict[str, float] = {"contrast": 2 * 3600.0, "obfuscation": 2 * 3600.0}
"""Wall-time budgets (seconds, 2 CPU cores) a preset promises; the dry run says whether a study keeps to its own."""


def preset_dict(name: str) -> dict[str, Any]:
    """A deep copy of preset ``name`` as a study-file dict."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return copy.deepcopy(PRESETS[name])


def apply_overrides(d: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML: numbers, lists, booleans, null)."""
    import yaml

    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key.sub=value (e.g. probe_sft.max_steps=20)")
        key, raw = item.split("=", 1)
        target = d
        parts = key.split(".")
        for p in parts[:-1]:
            target = target.setdefault(p, {})
            if not isinstance(target, dict):
                raise ValueError(f"override {item!r}: {p!r} is not a section")
        target[parts[-1]] = yaml.safe_load(raw)
    return d


def make_config(
    preset: str | None = None,
    *,
    config_file: str | None = None,
    model: str | None = None,
    seeds: int | None = None,
    overrides: list[str] | None = None,
) -> StudyConfig:
    """Resolve a study: preset (default ``quick``) < config file < flags (--model, --seeds) < --set."""

    d = preset_dict(preset or "quick") if preset or not config_file else {}
    preset_model = d.get("model")
    file_d = _read_study_file(config_file) if config_file else {}
    d = _deep_merge(d, file_d)
    if model is not None:
        d["model"] = None if model in ("embedded", "") else model
    if preset or not config_file:  # the preset's layers were picked for its own model
        _fit_preset_layers(d, file_d, preset_model)
    if seeds is not None:
        if seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {seeds}")
        d["seeds"] = list(range(seeds))
    apply_overrides(d, overrides or [])
    config = StudyConfig.from_dict(d)
    n_layers = model_depth(config.model)
    if n_layers is not None:
        config.check_layers(n_layers)
    return config


def _read_study_file(config_file: str) -> dict[str, Any]:
    import json
    from pathlib import Path

    path = Path(config_file)
    if not path.exists():
        raise FileNotFoundError(f"no config file at {path}")
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return yaml.safe_load(path.read_text()) or {}
    return json.loads(path.read_text())


_LAYER_KEYS = (("probes", "layer"), ("probes", "heldout_layers"), ("data", "hooks"), (None, "telemetry_hooks"))
"""Where a study names layers, the trained-against probe's first (it keeps its relative depth best)."""


def _fit_preset_layers(d: dict[str, Any], file_d: dict[str, Any], preset_model: str | None) -> None:
    """Move the preset's layers (those the study file does not set) to ``d["model"]``'s depth, in place."""
    model = d.get("model")
    if model == preset_model:
        return
    n_ref, n_new = model_depth(preset_model), model_depth(model)
    if n_ref is None or n_new is None or n_ref == n_new:
        return
    given = {(sec, key) for sec, key in _LAYER_KEYS if key in (file_d.get(sec, {}) if sec else file_d)}
    keys = [k for k in _LAYER_KEYS if k not in given]
    places = [(d.setdefault(sec, {}) if sec else d, key) for sec, key in keys]
    order = [x for holder, key in places for x in _as_list(holder.get(key))]
    moved = fit_layers(order, n_ref, n_new)
    for holder, key in places:
        if key in holder:
            new = [moved[x] for x in _as_list(holder[key]) if moved.get(x) is not None]
            holder[key] = new[0] if key == "layer" else list(dict.fromkeys(new))


def _as_list(v: Any) -> list[Any]:
    return [] if v is None else list(v) if isinstance(v, (list, tuple)) else [v]


def fit_layers(layers: list[Any], n_ref: int, n_new: int) -> dict[Any, int | None]:
    """``{layer: its layer in a model of n_new blocks}`` for layers picked in one of ``n_ref`` blocks.

    Each layer goes to the same relative depth (``round(layer * n_new / n_ref)``), or the nearest layer not
    already taken so that distinct layers stay distinct, in the order given; None when every layer is taken
    (a model too shallow for them all). Hook names and negative indices are kept as they are.
    """
    out: dict[Any, int | None] = {}
    for x in layers:
        if x in out:
            continue
        if isinstance(x, str) or x < 0:
            out[x] = x
            continue
        target = x * n_new / n_ref
        free = [c for c in range(n_new) if c not in out.values()]
        out[x] = min(free, key=lambda c: (abs(c - target), c)) if free else None
    return out


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out
