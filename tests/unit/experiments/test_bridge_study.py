"""The study on the TransformerBridge backend (issue 28): a tiny study end to end, the CLI's ``--backend``,
and the pieces a study needs from a bridge (perplexity, sample stamps, response-only logits)."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from probe_lens.cli import main
from probe_lens.data.builder import _chunk_stamp
from probe_lens.experiments import Study, StudyConfig, StudyFolderError
from probe_lens.experiments.metrics import perplexity
from probe_lens.models.fast_sampling import sampler_id
from probe_lens.models.tiny import tiny_bridge, tiny_hf_config, tiny_tokenizer
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config
from probe_lens.training.losses import logits_from

CELLS = ["base", "probe_sft_1", "probe_dpo_1"]
FAST = dict(cells=CELLS, probes={"noise_floor_resamples": 2}, eval={"n_curated": 8, "n_telemetry_prompts": 2})


@pytest.fixture(scope="module")
def bridge():
    return tiny_bridge(n_layers=4)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("bridge_study")
    cfg = tiny_study_config(backend="bridge", **FAST)  # (the study trains its model: not the shared fixture)
    study = Study(cfg, out, model=tiny_bridge(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False)
    study.run()
    return study


# ------------------------------------------------------------------ the study
def test_tiny_study_runs_on_the_bridge(finished):
    results = pd.read_csv(finished.out / "results.csv")
    assert sorted(results["cell"]) == sorted(CELLS)
    probes = finished.tracked_probes()
    cols = [f"probe/{s}_auroc/{p}" for p in probes for s in ("onpolicy", "curated")]
    values = results[cols].to_numpy(dtype=float)
    assert np.isfinite(values).all() and ((values >= 0) & (values <= 1)).all()
    assert np.isfinite(results["eval/perplexity_neutral"]).all()
    assert yaml.safe_load((finished.out / "study.json").read_text())["backend"] == "bridge"


def test_bridge_probe_pool_is_stamped_with_the_bridge_sampler(finished):
    stamps = [yaml.safe_load(p.read_text()) for p in finished.folder.probe_pool.glob("chunks/*.json")]
    assert stamps and all(s["stamp"]["sampler"] == "bridge-reference" for s in stamps)


def test_changing_the_backend_is_another_study(finished):
    cfg = tiny_study_config(backend="hooked", **FAST)
    with pytest.raises(StudyFolderError, match=r"holds a different study \(differs in: backend\)"):
        Study(cfg, finished.out, resume=True, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False)


def test_a_model_of_the_other_backend_is_refused(tmp_path, bridge):
    with pytest.raises(ValueError, match="TransformerBridge but the study's backend is 'hooked'"):
        Study(tiny_study_config(**FAST), tmp_path / "a", model=bridge, scorer=non_ascii_scorer(), progress=False)
    with pytest.raises(ValueError, match="HookedTransformer but the study's backend is 'bridge'"):
        Study(tiny_study_config(backend="bridge", **FAST), tmp_path / "b", model=tiny_model(n_layers=4), progress=False)


def test_backend_is_validated():
    with pytest.raises(ValueError, match="unknown model backend 'bridged'; choose one of hooked, bridge"):
        StudyConfig(backend="bridged")
    assert StudyConfig().to_dict()["backend"] == "hooked"


# ------------------------------------------------------------------ the CLI
def test_cli_reproduce_on_the_bridge(tmp_path, monkeypatch):
    monkeypatch.setattr("probe_lens.experiments.runner.get_scorer", lambda name="auto", **kw: non_ascii_scorer())
    d = tiny_study_config(**{**FAST, "cells": ["base"], "telemetry_every": 0}).to_dict()
    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    out = tmp_path / "run"
    argv = ["reproduce", "--config", str(f), "--model", "probe-lens-tiny:4", "--backend", "bridge"]
    assert main([*argv, "--out", str(out), "--no-progress"]) == 0
    assert yaml.safe_load((out / "study.json").read_text())["backend"] == "bridge"
    assert pd.read_csv(out / "results.csv")["cell"].tolist() == ["base"]


def test_cli_refuses_an_unknown_backend(capsys):
    with pytest.raises(SystemExit):
        main(["config", "--backend", "hf"])
    assert "invalid choice: 'hf'" in capsys.readouterr().err


# ------------------------------------------------------------------ what the study needs from a bridge
TEXTS = ["hello world", "a much longer text, to make the batch left-padded", "xyz", "caf\u00e9 au lait"]


def test_bridge_perplexity_equals_hf_loss(bridge):
    """The oracle: HF's own loss of the same weights, one unpadded text at a time."""
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(0)
    hf = Gemma3ForCausalLM(tiny_hf_config(n_layers=4)).eval()
    tok = tiny_tokenizer()
    nll, n = 0.0, 0
    with torch.no_grad():
        for t in TEXTS:
            ids = tok(t, return_tensors="pt").input_ids
            assert ids[0, 0] == tok.bos_token_id
            nll += float(hf(ids, labels=ids).loss) * (ids.shape[1] - 1)
            n += ids.shape[1] - 1
    expect = math.exp(nll / n)
    for batch_size in (1, 3):
        assert perplexity(bridge, TEXTS, batch_size=batch_size) == pytest.approx(expect, rel=1e-4)


def test_sample_stamps_name_the_backend(bridge):
    hooked = tiny_model()
    assert sampler_id(True, hooked) == sampler_id(True)
    assert sampler_id(False, hooked) == "reference"
    meta = {
        "model_name": "m",
        "d_model": 32,
        "hooks": ["h"],
        "scorer": {"name": "s"},
        "config": {"fast_sampling": True},
    }
    a, b = (_chunk_stamp(meta, [], 0, m) for m in (hooked, bridge))
    assert a["sampler"] == sampler_id(True) and b["sampler"] == "bridge-reference"
    assert {k: v for k, v in a.items() if k != "sampler"} == {k: v for k, v in b.items() if k != "sampler"}


def test_logits_from_on_a_bridge_is_quiet_and_equal(bridge):
    tokens = bridge.to_tokens(TEXTS[:2], prepend_bos=True)
    with torch.no_grad():
        full = bridge(tokens)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with logits_from(bridge, 3):
                cut = bridge(tokens)
    torch.testing.assert_close(cut, full[:, 3:], rtol=1e-5, atol=1e-5)
