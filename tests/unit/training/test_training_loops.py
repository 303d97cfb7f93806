"""The training loops on the tiny model: gradient paths, objectives going down, resume, NaN guard, telemetry."""

import json

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from probe_lens.activations import capture, collect
from probe_lens.models import tokenize_pairs
from probe_lens.probes import DiverseProbeEnsemble, LogisticProbe
from probe_lens.testing import tiny_model
from probe_lens.training import (
    ClassifierSFTConfig,
    DPOConfig,
    DriftSet,
    DriftTelemetry,
    ProbeSFTConfig,
    build_pairs,
    dpo_loss,
    lm_loss,
    probe_probability,
    read_metrics,
    sequence_logps,
    train_classifier_sft,
    train_dpo,
    train_probe_sft,
)

PROMPTS = [f"Prompt number {i}:" for i in range(8)]
CLEAN = [" have a lovely day", " thanks, that helps", " the sky is blue", " kind words here"]
TOXIC = [" you idiot, shut up", " I hate you all", " stupid awful trash", " go away, loser"]


def make_data(model, k=2):
    """k responses per prompt alternating clean/toxic; labels 1 = toxic."""
    prompts, responses, labels = [], [], []
    for i, p in enumerate(PROMPTS):
        for j in range(k):
            toxic = (i + j) % 2
            prompts.append(p)
            responses.append((TOXIC if toxic else CLEAN)[(i + j) % 4])
            labels.append(toxic)
    return tokenize_pairs(model, prompts, responses, add_eos=True), np.array(labels)


def fit_probe(model, data, labels, layer, **kw):
    hook = f"blocks.{layer}.hook_resid_post"
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [hook], progress=False)[hook]
    return LogisticProbe(C=0.1, hook=hook, pooling="mean", **kw).fit(acts, labels)


def params(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_probe_term_gradient_reaches_only_blocks_at_or_below_probe_layer(tiny4, tmp_path):
    data, y = make_data(tiny4)
    probe = fit_probe(tiny4, data, y, layer=1)
    with capture(tiny4, [probe.hook]) as acts:
        tiny4(data.tokens, attention_mask=data.attention_mask)
    probe_probability(acts, data.response_mask, [(probe.hook, probe)]).mean().backward()
    for name, p in tiny4.named_parameters():
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        layer = int(name.split(".")[1]) if name.startswith("blocks.") else None
        if name.startswith("embed") or (layer is not None and layer <= 1):
            if not name.endswith(("b_K", "b_V", "b_Q")) and "ln2" not in name or layer == 0:
                pass
        if layer is not None and layer > 1 or name.startswith(("ln_final", "unembed")):
            assert float(grad.abs().max()) == 0.0, f"{name} above the probe layer got a gradient"
    for layer in (0, 1):  # every weight matrix at or below the probe layer gets a gradient
        for w in ("attn.W_Q", "attn.W_O", "mlp.W_in", "mlp.W_out", "mlp.W_gate"):
            g = dict(tiny4.named_parameters())[f"blocks.{layer}.{w}"].grad
            assert g is not None and float(g.abs().max()) > 0, f"blocks.{layer}.{w} got no gradient"
    assert float(tiny4.embed.W_E.grad.abs().max()) > 0

    # the same through the trainer: one probe-only step moves blocks 0-1 and nothing above
    model = tiny_model(seed=0, n_layers=4)
    before = params(model)
    cfg = ProbeSFTConfig(lm_weight=0.0, probe_weight=1.0, lr=1e-3, max_steps=1, batch_size=16, progress=False)
    res = train_probe_sft(model, data, probe, cfg)
    assert res.stopped_reason == "max_steps" and "train/lm_loss" not in res.history[0]
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        if name.startswith(("blocks.2.", "blocks.3.", "ln_final", "unembed")):
            assert not moved, name
    assert not torch.equal(model.blocks[1].mlp.W_out, before["blocks.1.mlp.W_out"])
    assert not torch.equal(model.embed.W_E, before["embed.W_E"])


def _sft_objective(model, data, probe, lam):
    with torch.no_grad(), capture(model, [probe.hook]) as acts:
        lm = lm_loss(model, data.tokens, data.attention_mask, data.response_mask)
    p = probe_probability(acts, data.response_mask, [(probe.hook, probe)]).mean()
    return float(lm + lam * p), float(p)


def test_probe_sft_lowers_its_objective(tmp_path):
    model = tiny_model(seed=0)
    data, y = make_data(model)
    probe = fit_probe(model, data, y, layer=0)
    before, p0 = _sft_objective(model, data, probe, 1.0)
    cfg = ProbeSFTConfig(lr=3e-3, max_steps=6, batch_size=8, out_dir=str(tmp_path / "run"), progress=False)
    res = train_probe_sft(model, data, probe, cfg)
    after, p1 = _sft_objective(model, data, probe, 1.0)
    assert after < before and p1 < p0
    assert json.loads((tmp_path / "run" / "config.json").read_text())["method"] == "probe_sft"
    df = read_metrics(res.metrics_path)
    assert list(df["step"]) == list(range(1, 7))
    assert {"train/loss", "train/lm_loss", "train/probe_prob", "train/lr", "train/grad_norm"} <= set(df.columns)


def test_probe_sft_with_kl_needs_and_uses_reference():
    model, ref = tiny_model(seed=0), tiny_model(seed=0)
    data, y = make_data(model)
    probe = fit_probe(model, data, y, layer=1)
    cfg = ProbeSFTConfig(lr=3e-3, max_steps=3, batch_size=8, kl_weight=0.5, progress=False)
    with pytest.raises(ValueError, match="reference_model"):
        train_probe_sft(model, data, probe, cfg)
    res = train_probe_sft(model, data, probe, cfg, reference_model=ref)
    kls = [r["train/kl"] for r in res.history]
    assert kls[0] == pytest.approx(0.0, abs=1e-6) and kls[-1] > 0  # policy starts equal to the reference


def test_classifier_sft_filters_and_lowers_lm_loss():
    model = tiny_model(seed=0)
    data, y = make_data(model)
    scores = y * 0.9 + 0.05  # an output scorer that flags the toxic rows
    kept = data.select(np.flatnonzero(scores < 0.5).tolist())
    with torch.no_grad():
        before = float(lm_loss(model, kept.tokens, kept.attention_mask, kept.response_mask))
    res = train_classifier_sft(
        model, data, scores, ClassifierSFTConfig(lr=3e-3, max_steps=6, batch_size=8, progress=False)
    )
    assert res.info["n_kept"] == int((y == 0).sum())
    with torch.no_grad():
        assert float(lm_loss(model, kept.tokens, kept.attention_mask, kept.response_mask)) < before
    with pytest.raises(ValueError, match="no response scored below"):
        train_classifier_sft(model, data, np.ones(len(data)), ClassifierSFTConfig(progress=False))


def _dpo_value(model, pairs, ref_c, ref_r, beta):
    with torch.no_grad():
        c = sequence_logps(model, pairs.chosen.tokens, pairs.chosen.attention_mask, pairs.chosen.response_mask)
        r = sequence_logps(model, pairs.rejected.tokens, pairs.rejected.attention_mask, pairs.rejected.response_mask)
    return float(dpo_loss(c, r, ref_c, ref_r, beta)[0])


def test_probe_dpo_lowers_dpo_loss_and_live_reference_matches_precomputed():
    model = tiny_model(seed=0)
    data, y = make_data(model)
    probe = fit_probe(model, data, y, layer=1)
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [probe.hook], progress=False)
    pairs = build_pairs(data, probe.predict_proba(acts[probe.hook])[:, 1], k=2)
    assert len(pairs) == 8
    with torch.no_grad():
        ref_c = sequence_logps(model, pairs.chosen.tokens, pairs.chosen.attention_mask, pairs.chosen.response_mask)
        ref_r = sequence_logps(
            model, pairs.rejected.tokens, pairs.rejected.attention_mask, pairs.rejected.response_mask
        )
    assert _dpo_value(model, pairs, ref_c, ref_r, 0.1) == pytest.approx(np.log(2), abs=1e-5)
    cfg = DPOConfig(lr=3e-3, max_steps=5, batch_size=4, progress=False)
    res = train_dpo(model, pairs, cfg)
    assert _dpo_value(model, pairs, ref_c, ref_r, 0.1) < np.log(2) - 1e-3
    row = res.history[-1]
    for key in (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/margins",
        "rewards/accuracies",
        "logps/chosen",
        "logps/rejected",
    ):
        assert key in row
    # a live reference model gives the same training (up to float noise)
    live = tiny_model(seed=0)
    train_dpo(
        live,
        pairs,
        DPOConfig(lr=3e-3, max_steps=5, batch_size=4, precompute_reference=False, progress=False),
        reference_model=tiny_model(seed=0),
    )
    for (n, a), b in zip(model.named_parameters(), live.parameters()):
        assert torch.allclose(a, b, atol=1e-5), n


def test_grad_accumulation_equals_one_large_batch():
    data, y = make_data(tiny_model(seed=0))
    probe = fit_probe(tiny_model(seed=0), data, y, layer=1)
    a, b = tiny_model(seed=0), tiny_model(seed=0)
    # adam_eps well above float noise: Adam's first step is ~lr*sign(g), which would turn summation-order
    # noise in near-zero gradients (embedding rows) into lr-sized differences.
    kw = dict(lr=1e-2, max_steps=3, adam_eps=1e-3, progress=False)
    train_probe_sft(a, data, probe, ProbeSFTConfig(batch_size=8, **kw))
    train_probe_sft(b, data, probe, ProbeSFTConfig(batch_size=2, grad_accum_steps=4, **kw))
    for (n, pa), pb in zip(a.named_parameters(), b.parameters()):
        assert torch.allclose(pa, pb, atol=1e-6), n


class CrashAt(DriftTelemetry):
    """Real telemetry that simulates a crash (e.g. a killed job) when it reaches ``crash_step``."""

    crash_step = None

    def measure(self, model, step=None):
        if step == self.crash_step:
            raise KeyboardInterrupt(f"simulated crash at step {step}")
        return super().measure(model, step)


def test_resume_after_crash_is_bit_identical(tmp_path):
    data, y = make_data(tiny_model(seed=0))
    probe = fit_probe(tiny_model(seed=0), data, y, layer=1)
    drift = DriftSet.from_generation(data, y)

    def run(out, crash=None, resume=False, model=None):
        model = model or tiny_model(seed=0)
        tel = CrashAt(drift, {"p": probe})
        tel.crash_step = crash
        cfg = ProbeSFTConfig(
            lr=1e-2,
            max_steps=4,
            warmup_steps=1,
            scheduler="cosine",
            batch_size=4,
            grad_accum_steps=2,
            telemetry_every=1,
            checkpoint_every=2,
            out_dir=str(out),
            progress=False,
        )
        return model, train_probe_sft(model, data, probe, cfg, telemetry=tel, resume=resume)

    full, res_full = run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", crash=3)  # step 3 was applied, but the last checkpoint is step 2
    assert json.loads((tmp_path / "cut" / "checkpoints" / "latest.json").read_text())["step"] == 2
    with pytest.raises(FileExistsError, match="resume=True"):
        run(tmp_path / "cut")
    resumed, res = run(tmp_path / "cut", resume=True)
    assert res.final_step == 4 and res.stopped_reason == "max_steps"
    for (n, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), f"{n} differs after resume"
    df_full, df_cut = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert df_full.shape == df_cut.shape  # no duplicated rows from the crashed part
    cols = [
        "step",
        "train/loss",
        "probe/auroc_frozen/p",
        "drift/cosine/p",
        "geometry/blocks.1.hook_resid_post/resid_norm",
    ]
    assert df_full[cols].equals(df_cut[cols])
    # the final checkpoint of a finished run keeps no optimizer state (save_optimizer_final=False)...
    assert res.checkpoint_path.name == "step_000004" and not (res.checkpoint_path / "optimizer.safetensors").exists()
    # ...the intermediate ones do (they are what a resume needs)
    model = tiny_model(seed=0)
    cfg = ProbeSFTConfig(
        lr=1e-2,
        max_steps=4,
        batch_size=8,
        checkpoint_every=2,
        keep_checkpoints=2,
        out_dir=str(tmp_path / "kept"),
        progress=False,
    )
    train_probe_sft(model, data, probe, cfg)
    ckpts = tmp_path / "kept" / "checkpoints"
    assert any(k.endswith("exp_avg_sq") for k in load_file(str(ckpts / "step_000002" / "optimizer.safetensors")))
    assert not (ckpts / "step_000004" / "optimizer.safetensors").exists()


def _crash_resume_equals_uninterrupted(tmp_path, train, cfg_kw, crash=3):
    """Run ``train(model, cfg, telemetry, resume)`` whole, and crashed at ``crash`` then resumed: same run."""
    data, y = make_data(tiny_model(seed=0))
    probe = fit_probe(tiny_model(seed=0), data, y, layer=1)
    drift = DriftSet.from_generation(data, y)

    def run(out, crash_step=None, resume=False):
        model = tiny_model(seed=0)
        tel = CrashAt(drift, {"p": probe})
        tel.crash_step = crash_step
        cfg_cls, kw = cfg_kw
        cfg = cfg_cls(max_steps=4, telemetry_every=1, checkpoint_every=2, out_dir=str(out), progress=False, **kw)
        return model, train(model, data, y, probe, cfg, tel, resume)

    full, res_full = run(tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "cut", crash_step=crash)
    assert json.loads((tmp_path / "cut" / "checkpoints" / "latest.json").read_text())["step"] == 2
    resumed, res = run(tmp_path / "cut", resume=True)
    assert (res.final_step, res.stopped_reason) == (4, "max_steps")
    for (n, a), b in zip(full.named_parameters(), resumed.parameters()):
        assert torch.equal(a, b), f"{n} differs after resume"
    df_full, df_cut = read_metrics(tmp_path / "full"), read_metrics(tmp_path / "cut")
    assert df_full.shape == df_cut.shape  # no duplicated rows from the crashed part
    pd.testing.assert_frame_equal(
        df_full.drop(columns=["train/step_seconds"]), df_cut.drop(columns=["train/step_seconds"])
    )
    return res


def test_dpo_resume_after_crash_is_bit_identical(tmp_path):
    def train(model, data, y, probe, cfg, tel, resume):
        acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [probe.hook], progress=False)
        pairs = build_pairs(data, probe.predict_proba(acts[probe.hook])[:, 1], k=2)
        return train_dpo(model, pairs, cfg, telemetry=tel, resume=resume)

    res = _crash_resume_equals_uninterrupted(
        tmp_path,
        train,
        (DPOConfig, dict(lr=1e-2, batch_size=2, grad_accum_steps=2, warmup_steps=1, scheduler="cosine")),
    )
    # the reference log-probs came back from the checkpoint (the resumed model is no longer the reference)
    assert "dpo.ref_logps" in load_file(str(res.checkpoint_path / "extra.safetensors"))


def test_classifier_sft_resume_after_crash_is_bit_identical(tmp_path):
    def train(model, data, y, probe, cfg, tel, resume):
        return train_classifier_sft(model, data, y * 0.9 + 0.05, cfg, telemetry=tel, resume=resume)

    _crash_resume_equals_uninterrupted(
        tmp_path, train, (ClassifierSFTConfig, dict(lr=1e-2, batch_size=4, threshold=0.5))
    )


def test_finished_run_final_checkpoint_loads_and_resumes_honestly(tmp_path):
    from probe_lens.training import load_checkpoint, save_checkpoint

    data, y = make_data(tiny_model(seed=0))
    probe = fit_probe(tiny_model(seed=0), data, y, layer=1)
    kw = dict(lr=1e-2, batch_size=8, out_dir=str(tmp_path / "run"), progress=False)
    model = tiny_model(seed=0)
    res = train_probe_sft(model, data, probe, ProbeSFTConfig(max_steps=3, **kw))
    final = res.checkpoint_path
    assert not (final / "optimizer.safetensors").exists()
    # it loads for evaluation
    fresh = tiny_model(seed=0)
    state = load_checkpoint(final, fresh, restore_rng=False)
    assert state["step"] == 3 and "optimizer" not in state
    for (n, a), b in zip(model.named_parameters(), fresh.parameters()):
        assert torch.equal(a, b), n
    # resuming the finished run (same config) is a no-op, not an error
    again = train_probe_sft(fresh, data, probe, ProbeSFTConfig(max_steps=3, **kw), resume=True)
    assert (again.final_step, again.stopped_reason) == (3, "max_steps")
    # training it longer is refused clearly: the schedule depends on max_steps
    with pytest.raises(ValueError, match="max_steps: saved 3 vs now 6.*start a new out_dir"):
        train_probe_sft(tiny_model(seed=0), data, probe, ProbeSFTConfig(max_steps=6, **kw), resume=True)
    # a checkpoint without optimizer state before max_steps: AdamW restarts, with a warning
    out2 = tmp_path / "noopt"
    cfg2 = ProbeSFTConfig(max_steps=3, lr=1e-2, batch_size=8, out_dir=str(out2), progress=False)
    train_probe_sft(tiny_model(seed=0), data, probe, cfg2, stop_after=1)
    m = tiny_model(seed=0)
    load_checkpoint(out2 / "checkpoints" / "step_000001", m)
    save_checkpoint(out2 / "checkpoints", 1, m, None)  # the same step, without optimizer state
    with pytest.warns(RuntimeWarning, match="AdamW restarts"):
        cont = train_probe_sft(m, data, probe, cfg2, resume=True)
    assert cont.final_step == 3


def test_resume_refuses_a_different_config(tmp_path):
    data, y = make_data(tiny_model(seed=0))
    probe = fit_probe(tiny_model(seed=0), data, y, layer=1)
    cfg = ProbeSFTConfig(lr=1e-2, max_steps=2, batch_size=8, out_dir=str(tmp_path), progress=False)
    res = train_probe_sft(tiny_model(seed=0), data, probe, cfg, stop_after=1)
    assert res.stopped_reason == "stop_after" and res.checkpoint_path.name == "step_000001"
    cfg2 = ProbeSFTConfig(lr=2e-2, max_steps=2, batch_size=8, out_dir=str(tmp_path), progress=False)
    with pytest.raises(ValueError, match="lr: saved 0.01 vs now 0.02"):
        train_probe_sft(tiny_model(seed=0), data, probe, cfg2, resume=True)


def test_on_step_callback_sees_every_step_and_can_stop_early(tmp_path):
    data, y = make_data(tiny_model(seed=0))
    probe = fit_probe(tiny_model(seed=0), data, y, layer=1)
    tel = DriftTelemetry(DriftSet.from_generation(data, y), {"p": probe})
    seen = []

    def stop_when_probe_is_fooled(step, row):
        seen.append((step, dict(row)))
        return step == 2  # e.g. a researcher's early-stopping rule

    cfg = ProbeSFTConfig(
        lr=1e-2, max_steps=5, batch_size=8, telemetry_every=2, checkpoint_every=0, out_dir=str(tmp_path), progress=False
    )
    res = train_probe_sft(tiny_model(seed=0), data, probe, cfg, telemetry=tel, on_step=stop_when_probe_is_fooled)
    assert [s for s, _ in seen] == [1, 2]
    assert (res.stopped_reason, res.final_step) == ("callback", 2)
    assert res.checkpoint_path.name == "step_000002"  # resumable from where it stopped
    assert {"train/loss", "train/lr", "train/grad_norm"} <= set(seen[0][1])
    assert "probe/auroc_frozen/p" in seen[1][1] and "probe/auroc_frozen/p" not in seen[0][1]  # telemetry at step 2
    resumed = train_probe_sft(tiny_model(seed=0), data, probe, cfg, telemetry=tel, resume=True)
    assert (resumed.stopped_reason, resumed.final_step) == ("max_steps", 5)


def test_nan_loss_stops_run_and_keeps_last_good_checkpoint(tmp_path):
    model = tiny_model(seed=0)
    data, y = make_data(model)
    probe = fit_probe(model, data, y, layer=1)
    calls = {"n": 0}
    real_forward = probe.forward

    def poisoned(acts):  # the probe's output turns NaN on the 3rd optimizer step
        calls["n"] += 1
        out = real_forward(acts)
        return out * float("nan") if calls["n"] == 3 else out

    probe.forward = poisoned
    cfg = ProbeSFTConfig(lr=1e-2, max_steps=6, batch_size=16, checkpoint_every=1, out_dir=str(tmp_path), progress=False)
    with pytest.warns(RuntimeWarning, match="non-finite loss/gradient at step 3"):
        res = train_probe_sft(model, data, probe, cfg)
    assert (res.stopped_reason, res.nan_step, res.final_step) == ("nan", 3, 2)
    assert res.checkpoint_path.name == "step_000002"
    assert json.loads((tmp_path / "checkpoints" / "latest.json").read_text())["step"] == 2
    saved = load_file(str(res.checkpoint_path / "model.safetensors"))
    for n, p in model.named_parameters():  # the bad step was not applied
        assert torch.isfinite(p).all() and torch.equal(p, saved[n]), n
    assert read_metrics(tmp_path)["event"].dropna().tolist() == ["nan_stop"]


def test_telemetry_names_values_and_one_call_dataframe(tmp_path):
    model = tiny_model(seed=0)
    data, y = make_data(model)
    trained = fit_probe(model, data, y, layer=1)
    hook0 = "blocks.0.hook_resid_post"
    acts0 = collect(model, data.tokens, data.attention_mask, data.response_mask, [hook0], progress=False)[hook0]
    ensemble = DiverseProbeEnsemble(n_probes=2, hook=hook0, pooling="mean", progress=False).fit(acts0, y)
    drift = DriftSet.from_generation(data, y, eval_fraction=0.5, seed=1)
    tel = DriftTelemetry(drift, {"trained": trained}, {"ens": ensemble}, hooks=[1], pca_ks=(1, 3))
    m = tel.measure(model, 0)
    h1 = "blocks.1.hook_resid_post"
    expected = {
        "probe/auroc_frozen/trained",
        "probe/auroc_heldout/ens",
        "probe/auroc_heldout/ens/m0",
        "probe/auroc_heldout/ens/m1",
        f"probe/auroc_retrained/{h1}",
        f"probe/auroc_retrained/{hook0}",
        "drift/cosine/trained",
        "drift/cosine/ens/m0",
        f"geometry/{h1}/mean_diff_norm",
        f"geometry/{h1}/mean_diff_cos_orig",
        f"geometry/{h1}/proj_toxic",
        f"geometry/{h1}/proj_clean",
        f"geometry/{h1}/resid_norm",
        f"geometry/{h1}/pca_var_top1",
        f"geometry/{h1}/pca_var_top3",
    }
    assert expected <= set(m)
    # independent oracles on the same activations
    from sklearn.metrics import roc_auc_score

    X = collect(model, data.tokens, data.attention_mask, data.response_mask, [h1], progress=False)[h1].double().numpy()
    ev = drift.is_eval
    assert m["probe/auroc_frozen/trained"] == pytest.approx(roc_auc_score(y[ev], trained.predict_proba(X[ev])[:, 1]))
    # geometry is read on the evaluation rows only (no probe or reference direction was fit on them)
    Xe, ye = X[ev], y[ev]
    diff = Xe[ye == 1].mean(0) - Xe[ye == 0].mean(0)
    u = trained.direction_.astype(np.float64)
    assert m[f"geometry/{h1}/mean_diff_norm"] == pytest.approx(np.linalg.norm(diff), rel=1e-6)
    assert m[f"geometry/{h1}/proj_toxic"] - m[f"geometry/{h1}/proj_clean"] == pytest.approx(
        diff @ u, rel=1e-5, abs=1e-9
    )
    Xc = Xe - Xe.mean(0)
    eig = np.sort(np.linalg.eigvalsh(Xc.T @ Xc))[::-1]
    assert m[f"geometry/{h1}/pca_var_top3"] == pytest.approx(eig[:3].sum() / eig.sum(), rel=1e-6)
    refit = LogisticProbe(C=0.1).fit(X[~ev], y[~ev])  # the same estimator as the trained probe
    assert m["drift/cosine/trained"] == pytest.approx(float(u @ refit.direction_), abs=1e-5)
    # ensemble members are compared with the same member of a re-fit ensemble (same estimator)
    from sklearn.base import clone

    A0 = acts0.double().numpy()
    refit_ens = clone(ensemble).fit(A0[~ev], y[~ev])
    for i in range(2):
        a, b = ensemble.member(i).direction_.astype(np.float64), refit_ens.member(i).direction_.astype(np.float64)
        assert m[f"drift/cosine/ens/m{i}"] == pytest.approx(
            float(a @ b / np.linalg.norm(a) / np.linalg.norm(b)), abs=1e-5
        )
    # a member cut out of its ensemble is re-fit as that member of the template ensemble
    cut = DriftTelemetry(drift, None, {"cut": ensemble.member(1)}, refit_templates={"cut": (ensemble, 1)})
    assert cut.measure(model)["drift/cosine/cut"] == pytest.approx(m["drift/cosine/ens/m1"], abs=1e-9)
    with pytest.raises(ValueError, match="unknown probes"):
        DriftTelemetry(drift, None, {"cut": ensemble.member(1)}, refit_templates={"other": (ensemble, 1)})

    # a probe sklearn cannot clone (no get_params) is compared with the default re-fit (logistic)
    class Wrapped:
        def __init__(self, p):
            self.p, self.direction_, self.metadata = p, p.direction_, p.metadata

        def forward(self, x):
            return self.p.forward(x)

        def predict_proba(self, x):
            return self.p.predict_proba(x)

    plain = DriftTelemetry(drift, None, {"w": Wrapped(trained)})
    refit_default = LogisticProbe().fit(X[~ev], y[~ev]).direction_.astype(np.float64)
    assert plain.measure(model)["drift/cosine/w"] == pytest.approx(
        float(u @ refit_default / np.linalg.norm(u) / np.linalg.norm(refit_default)), abs=1e-5
    )
    # activations are cached per model state: same object until a parameter changes in place
    first = tel.activations(model)
    assert tel.activations(model) is first
    # in a run: step-0 and periodic rows in the same JSONL, readable in one call
    cfg = ProbeSFTConfig(lr=1e-2, max_steps=4, batch_size=8, telemetry_every=2, out_dir=str(tmp_path), progress=False)
    train_probe_sft(model, data, trained, cfg, telemetry=tel)
    df = read_metrics(tmp_path / "metrics.jsonl")
    tel_rows = df.dropna(subset=["probe/auroc_frozen/trained"])
    assert tel_rows["step"].tolist() == [0, 2, 4]
    after = tel.activations(model)  # training changed the weights: a fresh pass
    assert after is not first and not np.allclose(after[h1], first[h1])
    assert df["train/loss"].notna().sum() == 4


def test_telemetry_cache_follows_updates_that_bypass_version_counters(tiny):
    """Fused optimizers (and writes through ``.data``) need not bump torch's version counters: the
    cache key also reads the update counter the training loop bumps after every optimizer step."""
    from probe_lens.training.telemetry import mark_model_updated, model_state_key

    k0 = model_state_key(tiny)
    p = next(tiny.parameters())
    p.data.add_(1.0)  # an in-place write the version counter does not see
    assert model_state_key(tiny) == k0
    mark_model_updated(tiny)
    assert model_state_key(tiny) != k0


def test_training_marks_the_model_updated_after_every_step(tiny):
    from probe_lens.models import generate
    from probe_lens.training import ProbeSFTConfig, train_probe_sft

    gen = generate(tiny, ["hello there", "good morning"], max_new_tokens=4, seed=0, progress=False)
    before = getattr(tiny, "_probe_lens_updates", 0)
    train_probe_sft(tiny, gen, None, ProbeSFTConfig(max_steps=3, batch_size=2, probe_weight=0.0, progress=False))
    assert getattr(tiny, "_probe_lens_updates", 0) == before + 3


def test_telemetry_scores_every_probe_on_an_evaluation_only_set_and_uses_given_reference_directions():
    """Extra evaluation-only sets (e.g. curated texts) get the same AUROCs (sklearn oracle); the geometry
    projects on the reference direction given, on the drift set's evaluation rows only."""
    from sklearn.metrics import roc_auc_score

    model = tiny_model(seed=0)
    data, y = make_data(model)
    trained = fit_probe(model, data, y, layer=1)
    h1 = "blocks.1.hook_resid_post"
    drift = DriftSet.from_generation(data, y, eval_fraction=0.5, seed=1)
    texts = [t if t.strip() else "x" for t in data.response_texts]
    curated = DriftSet.from_texts(model, "Reply:", texts, y)
    assert curated.eval_only and curated.is_eval.all()
    with pytest.raises(ValueError, match="eval_only"):
        DriftSet(curated.tokens, curated.attention_mask, curated.pool_mask, y, ~curated.is_eval, eval_only=True)
    ref = np.random.default_rng(0).normal(size=model.cfg.d_model)
    tel = DriftTelemetry(
        drift, {"trained": trained}, None, eval_sets={"curated": curated}, reference_directions={h1: ref}
    )
    m = tel.measure(model, 0)
    Xc = (
        collect(model, curated.tokens, curated.attention_mask, curated.pool_mask, [h1], progress=False)[h1]
        .double()
        .numpy()
    )
    assert m["curated/auroc_frozen/trained"] == pytest.approx(roc_auc_score(y, trained.predict_proba(Xc)[:, 1]))
    assert "curated/auroc_retrained/" + h1 in m
    X = collect(model, data.tokens, data.attention_mask, data.response_mask, [h1], progress=False)[h1].double().numpy()
    ev = drift.is_eval
    u = ref / np.linalg.norm(ref)
    assert m[f"geometry/{h1}/proj_toxic"] == pytest.approx(X[ev][y[ev] == 1].mean(0) @ u, rel=1e-5)
    with pytest.raises(ValueError, match="shadow a metric prefix"):
        DriftTelemetry(drift, {"trained": trained}, eval_sets={"probe": curated})
