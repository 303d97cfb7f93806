"""Helpers for tests and tutorials: the tiny random-init model (from :mod:`probe_lens.models.tiny`), a scorer
that separates its random-byte text, and a minimal study config for it."""

from __future__ import annotations

from probe_lens.models.tiny import SPECIAL_TOKENS, TINY_MODEL_NAME, tiny_config, tiny_model, tiny_tokenizer

__all__ = [
    "SPECIAL_TOKENS",
    "TINY_MODEL_NAME",
    "non_ascii_scorer",
    "SCORER_PLUGIN",
    "tiny_config",
    "tiny_model",
    "tiny_study_config",
    "run_tiny_study",
    "tiny_tokenizer",
    "write_launch_study",
]


def non_ascii_scorer(threshold_hint: float = 0.75):
    """A deterministic scorer for the tiny model's random-byte text: the share of non-ASCII characters.

    The tiny model writes random bytes, which no toxicity classifier separates into two classes;
    this scorer does (roughly half its continuations score above ~0.75), so the whole pipeline can
    run on the tiny model in tests. It is a real scorer, just not a toxicity one.
    """
    from probe_lens.scorers.base import Scorer

    class NonAsciiScorer(Scorer):
        name = "non-ascii-share"
        version = "test"

        def _score(self, texts):
            return [sum(ord(c) > 127 for c in t) / max(1, len(t)) for t in texts]

    return NonAsciiScorer()


SCORER_PLUGIN = """
from probe_lens.scorers import register_scorer
from probe_lens.testing import non_ascii_scorer

register_scorer("non-ascii-test", lambda device="cpu", **kw: non_ascii_scorer(), replace=True)
"""
"""A plugin file's text that registers :func:`non_ascii_scorer` as the scorer ``non-ascii-test``: what worker
processes import (``--plugin``) to know the tiny study's output classifier."""


def write_launch_study(folder, name: str = "study.yaml"):
    """The launch tests' and executor benchmark's tiny study (base + probe-SFT, three steps, a checkpoint after
    each; the ``non-ascii-test`` scorer) written into ``folder``: ``(plugin file, study file)``, the plugin
    already imported here."""
    from pathlib import Path

    import yaml

    from probe_lens.launch.worker import import_plugins

    folder = Path(folder)
    plugin = folder / "launch_test_scorer.py"
    plugin.write_text(SCORER_PLUGIN)
    import_plugins([str(plugin)])  # the scorer must be known to build the config
    d = tiny_study_config(
        cells=["base", "probe_sft_1"],
        scorer="non-ascii-test",
        probe_sft={"max_steps": 3, "checkpoint_every": 1, "keep_checkpoints": 2, "out_dir": "<cell folder>"},
        probes={"noise_floor_resamples": 2},
        data={"samples_per_prompt": 3},  # per-seed pools: 2 leave seed 0's on-policy rows without a positive
        eval={"n_curated": 8, "n_telemetry_prompts": 2, "n_provocative": 4},
        telemetry_every=1,
    ).to_dict()
    d["model"] = f"{TINY_MODEL_NAME}:4"
    study = folder / name
    study.write_text(yaml.safe_dump(d, sort_keys=False))
    return plugin, study


def tiny_study_config(**overrides):
    """A StudyConfig for the tiny 4-layer model with minimal sizes (every cell, one seed)."""
    from probe_lens.experiments.presets import _deep_merge

    d = {
        "preset": "tiny",
        "seeds": [0],
        "n_probe_prompts": 60,
        "data": {
            "hooks": [1, 2, 3],
            "samples_per_prompt": 2,
            "max_new_tokens": 6,
            "max_rounds": 1,
            "min_minority": 0,
            "batch_size": 16,
            "chunk_prompts": 64,
            "threshold": 0.75,
        },
        "train_data": {"n_prompts": 8, "samples_per_prompt": 2, "max_new_tokens": 6},
        "probe_sft": {"max_steps": 2, "batch_size": 4, "lr": 1e-3},
        "dpo": {"max_steps": 2, "batch_size": 2, "lr": 1e-3},
        "classifier_sft": {"max_steps": 2, "batch_size": 4, "lr": 1e-3, "threshold": 0.75},
        "eval": {
            "n_provocative": 8,
            "samples_per_prompt": 2,
            "max_new_tokens": 6,
            "n_fluency_texts": 4,
            "threshold": 0.75,
            "n_curated": 24,
            # one prompt draw for every seed: the tiny model's positives are rare (~7% of its continuations),
            # and a per-seed draw can leave a seed's 24 on-policy prompts without one (test_replicates tests
            # the per-seed draws, the default of real studies)
            "prompts_per_seed": False,
        },
        "probes": {
            "layer": 2,
            "heldout_layers": [1, 3],
            "n_ensemble": 2,
            "n_heldout_members": 1,
            "noise_floor_resamples": 4,
        },
        "telemetry_every": 1,
    }
    from probe_lens.experiments.config import StudyConfig

    return StudyConfig.from_dict(_deep_merge(d, overrides))


def run_tiny_study(config, out, **kwargs):
    """Run ``config`` on the 4-layer tiny model with :func:`non_ascii_scorer` into ``out`` (no progress bars, no
    PNG export; ``kwargs`` go to :class:`~probe_lens.experiments.Study`): the finished study."""
    from probe_lens.experiments import Study

    opts = {"model": tiny_model(n_layers=4), "scorer": non_ascii_scorer(), "progress": False, "export_png": False}
    study = Study(config, out, **{**opts, **kwargs})
    study.run()
    return study


def first_divergence_gap(model, prompt_ids: list[int], a: list[int], b: list[int]) -> float | None:
    """None when greedy continuations ``a`` and ``b`` of ``prompt_ids`` are equal; else ``model``'s logit gap
    between ``a``'s and ``b``'s token at their first difference (teacher-forced on the shared prefix).

    Greedy decoding on another CPU kind, batch layout or code path may flip a near-tie (gap ~0) and diverge
    from there; a gap far from 0 is a real difference. Tests compare across such changes with this.
    """
    import torch

    if a == b:
        return None
    t = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    if t >= min(len(a), len(b)):
        return float("inf")  # one is a strict prefix of the other: not a flip of one token
    with torch.no_grad():
        logits = model(torch.tensor([list(prompt_ids) + list(a[:t])]))[0, -1]
    return abs(float(logits[a[t]] - logits[b[t]]))
