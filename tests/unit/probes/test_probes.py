"""Probe zoo: estimator API, oracles (sklearn / numpy), ensembles, torch forward, save/load, analysis."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probe_lens.probes import (
    DiverseProbeEnsemble,
    LogisticProbe,
    MassMeanProbe,
    ProbeMetadata,
    cosine_matrix,
    layer_sweep,
    load_probe,
    probe_report,
    save_probe,
)

HOOK = "blocks.1.hook_resid_post"


def make_data(n=800, d=48, seed=0, noise=1.0):
    """Anisotropic, shifted, correlated Gaussian activations; labels from a noisy linear rule."""
    rng = np.random.default_rng(seed)
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    X = rng.normal(size=(n, d)) @ mix * rng.uniform(0.3, 5.0, size=d) + rng.normal(size=d) * 4
    w = rng.normal(size=d)
    s = X @ w
    y = ((s - s.mean()) / s.std() + noise * rng.logistic(size=n) > 0).astype(np.int64)
    return X, y


def dominant_direction_data(n=1200, d=40, seed=0):
    """Class signal mostly along one direction, weaker along a few others (then rotated)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    sign = (2 * y - 1).astype(float)
    X = rng.normal(size=(n, d))
    X[:, 0] += 2.5 * sign
    X[:, 1:4] += np.array([0.8, 0.5, 0.3]) * sign[:, None]
    R = np.linalg.qr(rng.normal(size=(d, d)))[0]
    return X @ R + rng.normal(size=d), y


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def data():
    return make_data()


# ---------------------------------------------------------------------------------------------
# LogisticProbe vs sklearn
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("C", [0.01, 1.0, 100.0])
def test_logistic_matches_sklearn(data, C):
    X, y = data
    probe = LogisticProbe(C=C).fit(X, y)
    assert probe.converged_
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=1e-10, max_iter=20_000)).fit(X, y)
    ref_raw = ref[-1].coef_[0] / ref[0].scale_  # sklearn's weight mapped back to raw space
    auc_ours = roc_auc_score(y, probe.decision_function(X))
    auc_ref = roc_auc_score(y, ref.decision_function(X))
    assert abs(auc_ours - auc_ref) < 0.005
    assert cos(probe.direction_, ref_raw) > 0.99
    # agreement is in fact much tighter than the spec asks
    assert cos(probe.direction_, ref_raw) > 0.9999
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(X), atol=1e-3)


def test_logistic_without_standardization_matches_sklearn(data):
    X, y = data
    X = X / 10.0
    probe = LogisticProbe(C=0.5, standardize=False).fit(X, y)
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=20_000).fit(X, y)
    assert cos(probe.coef_raw_, ref.coef_[0]) > 0.9999
    np.testing.assert_array_equal(probe.mean_, 0.0)
    np.testing.assert_array_equal(probe.scale_, 1.0)
    assert probe.bias_ == pytest.approx(ref.intercept_[0], abs=1e-3)


def test_class_weighted_logistic_matches_sklearn_class_weight(data):
    """class_weight='balanced' on imbalanced rows: the same fit as sklearn's, and not the unweighted one."""
    X, y = data
    keep = np.concatenate([np.flatnonzero(y == 0), np.flatnonzero(y == 1)[: max(5, int((y == 1).sum()) // 4)]])
    X, y = X[keep], y[keep]
    probe = LogisticProbe(C=0.5, class_weight="balanced").fit(X, y)
    ref = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.5, class_weight="balanced", tol=1e-10, max_iter=20_000)
    ).fit(X, y)
    np.testing.assert_allclose(probe.predict_proba(X), ref.predict_proba(X), atol=1e-3)
    assert cos(probe.direction_, ref[-1].coef_[0] / ref[0].scale_) > 0.9999
    unweighted = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, tol=1e-10, max_iter=20_000)).fit(X, y)
    assert np.abs(probe.predict_proba(X) - unweighted.predict_proba(X)).max() > 1e-2  # the weights mattered
    raw = LogisticProbe(C=0.5, standardize=False, class_weight="balanced").fit(X / 10, y)
    ref_raw = LogisticRegression(C=0.5, class_weight="balanced", tol=1e-10, max_iter=20_000).fit(X / 10, y)
    assert raw.bias_ == pytest.approx(ref_raw.intercept_[0], abs=1e-3)
    with pytest.raises(ValueError, match="class_weight must be None, 'balanced'"):
        LogisticProbe(class_weight="auto").fit(X, y)


def test_estimator_api(data):
    X, y = data
    probe = LogisticProbe(C=0.3, hook=HOOK, model_name="m", pooling="mean")
    assert probe.fit(X, y) is probe
    d = X.shape[1]
    assert probe.direction_.dtype == np.float32 and probe.direction_.shape == (d,)
    assert np.linalg.norm(probe.direction_) == pytest.approx(1.0, abs=1e-6)
    # raw-space affine form, and the sklearn-style aliases
    np.testing.assert_allclose(probe.decision_function(X), X @ probe.coef_raw_ + probe.bias_)
    np.testing.assert_array_equal(probe.coef_, probe.coef_raw_)
    assert probe.intercept_ == probe.bias_
    np.testing.assert_allclose(probe.mean_, X.mean(0))
    np.testing.assert_allclose(probe.scale_, X.std(0))
    P = probe.predict_proba(X)
    assert P.shape == (len(y), 2)
    np.testing.assert_allclose(P.sum(1), 1.0)
    np.testing.assert_allclose(P[:, 1], probe.proba(X))
    np.testing.assert_array_equal(probe.predict(X), (P[:, 1] > 0.5).astype(int))
    assert probe.score(X, y) == pytest.approx(roc_auc_score(y, P[:, 1]))
    assert probe.accuracy(X, y) == pytest.approx(np.mean(probe.predict(X) == y))
    # torch input gives the same numbers
    np.testing.assert_allclose(probe.proba(torch.tensor(X)), P[:, 1])
    # metadata
    meta = probe.metadata
    assert isinstance(meta, ProbeMetadata)
    assert (meta.model_name, meta.hook, meta.pooling, meta.d_model, meta.label) == ("m", HOOK, "mean", d, "positive")
    assert (meta.n_fit, meta.n_positive, meta.probe_type) == (len(y), int(y.sum()), "LogisticProbe")
    assert meta.layer == 1 and meta.library_version
    json.dumps(meta.to_dict())
    # sklearn cloning keeps params only
    c = clone(probe)
    assert c.get_params() == probe.get_params() and not hasattr(c, "coef_raw_")
    probe.set_metadata(hook="blocks.0.hook_resid_post", label="insult")
    assert probe.metadata.hook == "blocks.0.hook_resid_post" and probe.metadata.layer == 0
    with pytest.raises(TypeError, match="d_model"):
        probe.set_metadata(d_model=3)
    with pytest.raises(ValueError, match="pooling"):
        probe.set_metadata(pooling="median")


def test_logistic_cv_picks_c_by_held_out_score(data):
    X, y = data
    probe = LogisticProbe(C="cv", Cs=(1e-4, 1e-2, 1.0), cv=3).fit(X, y)
    assert probe.cv_scores_.shape == (3,)
    np.testing.assert_allclose(probe.cv_Cs_, [1e-4, 1e-2, 1.0])
    assert probe.cv_Cs_[np.argmax(probe.cv_scores_)] == probe.C_
    # C=1e-4 on standardised data is crushed towards the prior: clearly the worst log-loss
    assert np.argmin(probe.cv_scores_) == 0
    # the final probe is the fixed-C probe at the chosen C
    fixed = LogisticProbe(C=probe.C_).fit(X, y)
    np.testing.assert_allclose(probe.coef_raw_, fixed.coef_raw_)
    with pytest.raises(ValueError, match="'cv'"):
        LogisticProbe(C="auto").fit(X, y)
    with pytest.raises(ValueError, match="positive"):
        LogisticProbe(C=-1.0).fit(X, y)


# ---------------------------------------------------------------------------------------------
# MassMeanProbe
# ---------------------------------------------------------------------------------------------


def test_mass_mean_direction_is_difference_of_means(data):
    X, y = data
    probe = MassMeanProbe().fit(X, y)
    diff = X[y == 1].mean(0) - X[y == 0].mean(0)
    np.testing.assert_allclose(probe.direction_, diff / np.linalg.norm(diff), atol=1e-6)
    np.testing.assert_allclose(probe.class_means_, [X[y == 0].mean(0), X[y == 1].mean(0)])


def test_mass_mean_is_calibrated(data):
    X, y = data
    probe = MassMeanProbe().fit(X, y)
    s = X @ probe.direction_.astype(np.float64)
    # Platt oracle: sklearn 1-D logistic regression (almost no regularisation) on the projection
    ref = LogisticRegression(C=1e8, tol=1e-12, max_iter=10_000).fit(s[:, None], y)
    np.testing.assert_allclose(probe.proba(X), ref.predict_proba(s[:, None])[:, 1], atol=2e-4)
    # calibrated: mean predicted probability equals the base rate (logistic-regression identity)
    assert probe.proba(X).mean() == pytest.approx(y.mean(), abs=1e-3)


@pytest.mark.parametrize("shrinkage", [None, 0.2, "auto"])
def test_tied_covariance_matches_sklearn_lda(data, shrinkage):
    X, y = data
    probe = MassMeanProbe("tied", shrinkage=shrinkage).fit(X, y)
    lda = LinearDiscriminantAnalysis(solver="lsqr", shrinkage=shrinkage).fit(X, y)
    assert cos(probe.direction_, lda.coef_[0]) > 0.99999


def test_tied_covariance_numpy_oracle(data):
    X, y = data
    probe = MassMeanProbe("tied", shrinkage=None).fit(X, y)
    X0, X1 = X[y == 0], X[y == 1]
    pooled = (len(X0) * np.cov(X0.T, bias=True) + len(X1) * np.cov(X1.T, bias=True)) / len(X)
    w = np.linalg.solve(pooled, X1.mean(0) - X0.mean(0))
    assert cos(probe.direction_, w) > 0.99999
    # on anisotropic data LDA beats the plain mass-mean direction
    assert probe.score(X, y) > MassMeanProbe().fit(X, y).score(X, y)


# ---------------------------------------------------------------------------------------------
# Ensembles
# ---------------------------------------------------------------------------------------------


def _offdiag_abs_max(directions):
    c = cosine_matrix(directions).to_numpy()
    return float(np.abs(c - np.eye(len(c))).max())


def test_nullspace_ensemble_orthogonal_and_weakening():
    X, y = dominant_direction_data()
    ens = DiverseProbeEnsemble(6, "nullspace", base=LogisticProbe(C=0.1), progress=False).fit(X, y)
    assert ens.directions_.shape == (6, X.shape[1])
    assert _offdiag_abs_max(ens.directions_) < 1e-5
    # float32 directions as stored, checked in float32 too
    D = ens.directions_
    assert np.abs(D @ D.T - np.eye(6)).max() < 1e-5
    aucs = ens.member_scores(X, y)
    np.testing.assert_allclose(aucs, ens.member_train_auroc_)
    # one dominant direction: the first member takes it, later members are weaker
    assert aucs[0] > 0.95
    assert aucs[-1] < aucs[0] - 0.15
    assert aucs[:4].tolist() == sorted(aucs[:4].tolist(), reverse=True)
    # the first member is the plain probe on the unprojected data
    first = LogisticProbe(C=0.1).fit(X, y)
    np.testing.assert_allclose(ens.member(0).coef_raw_, first.coef_raw_)


def test_nullspace_ensemble_with_lda_base():
    X, y = dominant_direction_data(seed=1)
    ens = DiverseProbeEnsemble(3, base="lda", progress=False).fit(X, y)
    assert _offdiag_abs_max(ens) < 1e-5
    assert all(isinstance(m, MassMeanProbe) for m in ens.members_)
    # plain mass-mean has no second direction after projecting out the first: clear error
    with pytest.raises(ValueError, match="class means are identical"):
        DiverseProbeEnsemble(2, base="mass_mean", progress=False).fit(X, y)


def test_penalty_ensemble_nearly_orthogonal():
    X, y = dominant_direction_data(n=800, d=32, seed=2)
    ens = DiverseProbeEnsemble(4, "penalty", base=LogisticProbe(C=0.1), progress=False).fit(X, y)
    assert _offdiag_abs_max(ens.directions_) < 0.05
    aucs = ens.member_scores(X, y)
    assert aucs.tolist() == sorted(aucs.tolist(), reverse=True)  # sorted strongest first (train)
    assert aucs.min() > 0.6  # every member still carries signal
    # a LogisticProbe with unfitted C="cv" cannot be fit jointly
    with pytest.raises(ValueError, match="float C"):
        DiverseProbeEnsemble(2, "penalty", base=LogisticProbe(C="cv"), progress=False).fit(X, y)


def test_ensemble_aggregation_members_and_subset(data):
    X, y = data
    ens = DiverseProbeEnsemble(3, progress=False, hook=HOOK).fit(X, y)
    member_p = np.stack([ens.member(i).proba(X) for i in range(3)], axis=1)
    np.testing.assert_allclose(ens.member_proba(X), member_p)
    np.testing.assert_allclose(ens.proba(X), member_p.mean(1))
    ens.set_params(aggregate="max")
    np.testing.assert_allclose(ens.predict_proba(X)[:, 1], member_p.max(1))
    acts = torch.tensor(X[:5], dtype=torch.float32)
    np.testing.assert_allclose(ens.forward(acts).numpy(), member_p[:5].max(1), atol=1e-6)
    ens.set_params(aggregate="mean")
    np.testing.assert_allclose(ens.forward(acts).numpy(), member_p[:5].mean(1), atol=1e-6)
    # members are complete probes with the ensemble's metadata
    m = ens.member(2)
    assert isinstance(m, LogisticProbe) and m.metadata.hook == HOOK
    assert m.score(X, y) == pytest.approx(roc_auc_score(y, member_p[:, 2]))
    sub = ens.subset([0, 2])
    assert len(sub) == 2 and len(ens) == 3
    np.testing.assert_allclose(sub.proba(X), member_p[:, [0, 2]].mean(1))
    np.testing.assert_array_equal(sub.directions_, ens.directions_[[0, 2]])
    with pytest.raises(IndexError):
        ens.member(3)
    with pytest.raises(ValueError, match="aggregate"):
        DiverseProbeEnsemble(2, aggregate="median").fit(X, y)


# ---------------------------------------------------------------------------------------------
# torch forward
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: LogisticProbe(C=0.3), lambda: MassMeanProbe("tied")], ids=["logistic", "lda"])
def test_forward_equals_predict_proba_and_is_differentiable(data, make):
    X, y = data
    probe = make().fit(X, y)
    acts = torch.tensor(X[:64], dtype=torch.float32, requires_grad=True)
    p = probe.forward(acts)
    assert p.shape == (64,) and p.dtype == torch.float32
    np.testing.assert_allclose(p.detach().numpy(), probe.predict_proba(X[:64])[:, 1], atol=2e-6, rtol=1e-5)
    p.sum().backward()
    assert acts.grad is not None and torch.isfinite(acts.grad).all() and acts.grad.abs().sum() > 0
    # d p / d acts = p (1 - p) w (hand-computed)
    expected = (p * (1 - p)).detach()[:, None] * torch.tensor(probe.coef_raw_, dtype=torch.float32)
    torch.testing.assert_close(acts.grad, expected, rtol=1e-4, atol=1e-7)
    # frozen parameters: the module's weights get no gradient
    module = probe.as_module()
    acts2 = torch.tensor(X[:8], requires_grad=True)
    module(acts2).sum().backward()
    assert all(not q.requires_grad and q.grad is None for q in module.parameters())
    assert acts2.grad is not None
    # any leading shape, float64 and bfloat16 inputs
    batch = torch.tensor(X[:12]).reshape(3, 4, -1)
    out64 = probe(batch)
    assert out64.shape == (3, 4) and out64.dtype == torch.float64
    np.testing.assert_allclose(out64.numpy().reshape(-1), probe.proba(X[:12]), rtol=1e-12)
    out16 = probe(batch.to(torch.bfloat16))
    assert out16.dtype == torch.bfloat16
    np.testing.assert_allclose(out16.float().numpy().reshape(-1), probe.proba(X[:12]), atol=0.05)


def test_ensemble_forward_gradients(data):
    X, y = data
    ens = DiverseProbeEnsemble(3, progress=False).fit(X, y)
    acts = torch.tensor(X[:16], dtype=torch.float32, requires_grad=True)
    p = ens(acts)
    np.testing.assert_allclose(p.detach().numpy(), ens.proba(X[:16]), atol=2e-6, rtol=1e-5)
    p.sum().backward()
    assert acts.grad.abs().sum() > 0
    module = ens.as_module()
    module(torch.tensor(X[:4])).sum()
    assert all(not q.requires_grad for q in module.parameters())


@pytest.mark.parametrize("kind", ["logistic", "ensemble"])
def test_forward_is_fp32_under_bf16_autocast(kind):
    """A large common offset (norm ~100) that the standardisation cancels: bf16 would round the
    matmul and the bias to ~3 significant digits and move P(y=1) by ~0.1; fp32 must hold."""
    rng = np.random.default_rng(0)
    n, d = 400, 64
    y = rng.integers(0, 2, n)
    X = 100.0 / np.sqrt(d) + 0.05 * rng.normal(size=(n, d))  # every row has norm ~100
    X[:, :4] += 0.05 * (2 * y - 1)[:, None]
    probe = (
        LogisticProbe(C=1.0)
        if kind == "logistic"
        else DiverseProbeEnsemble(2, base=LogisticProbe(C=1.0), progress=False)
    ).fit(X, y)
    acts = torch.tensor(X[:64], dtype=torch.float32, requires_grad=True)
    ref = probe(acts).detach()
    assert ref.dtype == torch.float32
    np.testing.assert_allclose(ref.numpy(), probe.proba(X[:64]), atol=1e-4)  # float64 oracle
    assert ref.std() > 0.1  # the scores really vary: the cancellation matters
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = probe(acts)
        if kind == "logistic":
            logits = probe.logits(acts)
        else:
            members = probe.member_forward(acts)
    assert out.dtype == torch.float32
    assert (out.detach() - ref).abs().max().item() < 1e-5
    if kind == "logistic":
        assert logits.dtype == torch.float32
        np.testing.assert_allclose(logits.detach().numpy(), probe.decision_function(X[:64]), atol=1e-3)
    else:
        assert members.dtype == torch.float32
        np.testing.assert_allclose(members.detach().numpy(), probe.member_proba(X[:64]), atol=1e-4)
    out.sum().backward()  # still differentiable w.r.t. the activations
    assert torch.isfinite(acts.grad).all() and acts.grad.abs().sum() > 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_forward_on_gpu(data):
    X, y = data
    probe = LogisticProbe().fit(X, y)
    acts = torch.tensor(X[:32], device="cuda", dtype=torch.float16, requires_grad=True)
    p = probe(acts)
    assert p.device.type == "cuda" and p.dtype == torch.float16
    np.testing.assert_allclose(p.float().cpu().detach().numpy(), probe.proba(X[:32]), atol=5e-3)
    p.sum().backward()
    assert acts.grad is not None


def test_forward_rejects_wrong_width(data):
    X, y = data
    probe = LogisticProbe().fit(X, y)
    with pytest.raises(ValueError, match="d_model=48"):
        probe(torch.zeros(2, 47))
    with pytest.raises(TypeError, match="torch.Tensor"):
        probe.forward(X[:2])


# ---------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------


def _fitted_probes(X, y):
    return {
        "logistic": LogisticProbe(C="cv", Cs=(0.01, 1.0), cv=2, hook=HOOK, model_name="tiny", pooling="mean").fit(X, y),
        "mass_mean": MassMeanProbe(hook=HOOK).fit(X, y),
        "lda": MassMeanProbe("tied", shrinkage=0.1, hook=HOOK).fit(X, y),
        "nullspace": DiverseProbeEnsemble(3, hook=HOOK, aggregate="max", progress=False).fit(X, y),
        "penalty": DiverseProbeEnsemble(2, "penalty", hook=HOOK, progress=False).fit(X[:300], y[:300]),
    }


@pytest.mark.parametrize("kind", ["logistic", "mass_mean", "lda", "nullspace", "penalty"])
def test_save_load_round_trip_is_exact(tmp_path, data, kind):
    X, y = data
    probe = _fitted_probes(X, y)[kind]
    path = save_probe(probe, tmp_path / kind)
    assert sorted(p.name for p in path.iterdir()) == ["probe.json", "tensors.safetensors"]
    loaded = load_probe(path, expect_d_model=X.shape[1], expect_hook=HOOK)
    assert type(loaded) is type(probe)
    assert loaded.get_params().keys() == probe.get_params().keys()
    assert repr(loaded) == repr(probe)
    assert loaded.metadata == probe.metadata
    np.testing.assert_array_equal(loaded.predict_proba(X), probe.predict_proba(X))
    acts = torch.tensor(X[:4], dtype=torch.float32)
    assert torch.equal(loaded(acts), probe(acts))
    if isinstance(probe, DiverseProbeEnsemble):
        np.testing.assert_array_equal(loaded.directions_, probe.directions_)
        for a, b in zip(loaded.members_, probe.members_):
            np.testing.assert_array_equal(a.coef_raw_, b.coef_raw_)
            assert a.bias_ == b.bias_ and a.metadata == b.metadata
    else:
        for attr in ("coef_raw_", "direction_", "mean_", "scale_"):
            np.testing.assert_array_equal(getattr(loaded, attr), getattr(probe, attr))
        assert loaded.bias_ == probe.bias_
    if kind == "logistic":
        np.testing.assert_array_equal(loaded.cv_scores_, probe.cv_scores_)
        assert loaded.C_ == probe.C_


def test_save_is_pickle_free_and_atomic(tmp_path, data):
    X, y = data
    probe = LogisticProbe(hook=HOOK).fit(X, y)
    path = save_probe(probe, tmp_path / "p")
    raw = (path / "tensors.safetensors").read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    json.loads(raw[8 : 8 + header_len])  # a safetensors header, not a pickle
    record = json.loads((path / "probe.json").read_text())
    assert record["class"] == "LogisticProbe" and record["metadata"]["hook"] == HOOK
    # overwriting a probe folder works when asked (issue 25: not by default); unrelated files are never replaced
    with pytest.raises(FileExistsError, match="already holds a probe; pass overwrite=True"):
        save_probe(MassMeanProbe(hook=HOOK).fit(X, y), path)
    assert isinstance(load_probe(path), LogisticProbe)
    save_probe(MassMeanProbe(hook=HOOK).fit(X, y), path, overwrite=True)
    assert isinstance(load_probe(path), MassMeanProbe)
    assert [p.name for p in tmp_path.iterdir()] == ["p"]  # no temp folders left behind
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a probe folder"):
        save_probe(probe, tmp_path / "notes.txt")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_probe(probe, path, overwrite=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        save_probe(LogisticProbe(), tmp_path / "q")


def test_load_refuses_mismatch(tmp_path, data, tiny):
    X, y = data
    path = save_probe(LogisticProbe(hook=HOOK).fit(X, y), tmp_path / "p")
    with pytest.raises(ValueError, match=r"d_model=48 activations but the target has d_model=64"):
        load_probe(path, expect_d_model=64)
    with pytest.raises(ValueError, match=r"reads hook 'blocks.1.hook_resid_post' but 'blocks.0.hook_resid_post'"):
        load_probe(path, expect_hook=0)
    with pytest.raises(ValueError, match="d_model=32"):  # the tiny model is 32 wide
        load_probe(path, model=tiny)
    # a 32-wide probe at a hook the 2-layer tiny model lacks
    Xs = X[:, :32]
    far = save_probe(LogisticProbe(hook="blocks.7.hook_resid_post").fit(Xs, y), tmp_path / "far")
    with pytest.raises(ValueError, match="does not exist in this model"):
        load_probe(far, model=tiny)
    ok = save_probe(LogisticProbe(hook=HOOK).fit(Xs, y), tmp_path / "ok")
    assert load_probe(ok, model=tiny, expect_hook=1).d_model == 32
    # no recorded hook: warn, do not guess
    anon = save_probe(LogisticProbe().fit(X, y), tmp_path / "anon")
    with pytest.warns(UserWarning, match="no recorded hook"):
        load_probe(anon, expect_hook=HOOK)
    # tampering is detected
    tensors = path / "tensors.safetensors"
    blob = bytearray(tensors.read_bytes())
    blob[-1] ^= 0xFF
    tensors.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="checksum"):
        load_probe(path)
    with pytest.raises(FileNotFoundError, match="pass the folder"):
        load_probe(tmp_path / "ok" / "probe.json")


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "make",
    [LogisticProbe, MassMeanProbe, lambda: DiverseProbeEnsemble(2, progress=False)],
    ids=["logistic", "mass_mean", "ensemble"],
)
def test_bad_input_errors(data, make):
    X, y = data
    with pytest.raises(ValueError, match="single class"):
        make().fit(X, np.ones_like(y))
    Xn = X.copy()
    Xn[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN/inf"):
        make().fit(Xn, y)
    Xi = X.copy()
    Xi[7, 0] = np.inf
    with pytest.raises(ValueError, match="NaN/inf"):
        make().fit(torch.tensor(Xi), y)
    with pytest.raises(ValueError, match="different lengths"):
        make().fit(X, y[:-1])
    with pytest.raises(ValueError, match="Only binary classification"):
        make().fit(X, y + (np.arange(len(y)) % 3 == 0))  # three classes
    with pytest.raises(ValueError, match="Unknown label type"):
        make().fit(X, y + 0.5)  # continuous targets
    with pytest.raises(ValueError, match="2-D"):
        make().fit(X[0], y[:1])
    probe = make().fit(X, y)
    with pytest.raises(ValueError, match="47 features.*d_model=48"):
        probe.predict_proba(X[:, :47])
    with pytest.raises(ValueError, match="NaN/inf"):
        probe.predict_proba(Xn)
    with pytest.raises(RuntimeError, match="not fitted"):
        make().predict_proba(X)
    with pytest.raises(ValueError, match="single class"):
        probe.score(X[y == 1], y[y == 1])


# ---------------------------------------------------------------------------------------------
# Analysis helpers
# ---------------------------------------------------------------------------------------------


def test_probe_report_and_cosine_matrix(data):
    X, y = data
    probes = {
        "lr": LogisticProbe(hook=HOOK).fit(X, y),
        "mm": MassMeanProbe(hook=HOOK).fit(X, y),
        "ens": DiverseProbeEnsemble(2, progress=False).fit(X, y),
    }
    report = probe_report(probes, X, y)
    assert list(report["probe"]) == ["lr", "mm", "ens", "ens/m0", "ens/m1"]
    assert {"auroc", "accuracy", "n", "hook", "type"} <= set(report.columns)
    row = report.set_index("probe").loc["mm"]
    assert row["auroc"] == pytest.approx(roc_auc_score(y, X @ probes["mm"].direction_.astype(float)))
    assert row["accuracy"] == pytest.approx(np.mean(probes["mm"].predict(X) == y))
    cm = cosine_matrix(probes)
    assert list(cm.index) == ["lr", "mm", "ens/m0", "ens/m1"]
    np.testing.assert_allclose(np.diag(cm), 1.0)
    np.testing.assert_allclose(cm.to_numpy(), cm.to_numpy().T)
    assert cm.loc["lr", "mm"] == pytest.approx(cos(probes["lr"].coef_raw_, probes["mm"].coef_raw_))
    assert cm.loc["lr", "ens/m0"] == pytest.approx(1.0)  # first nullspace member = the plain probe
    assert abs(cm.loc["ens/m0", "ens/m1"]) < 1e-6
    with pytest.raises(ValueError, match="different d_model"):
        cosine_matrix({"a": np.ones(3), "b": np.ones(4)})


def test_layer_sweep_finds_the_informative_layer():
    rng = np.random.default_rng(0)
    n, d = 400, 24
    y = rng.integers(0, 2, n)
    signal = {0: 0.0, 1: 0.4, 2: 1.5}
    acts = {}
    for layer, strength in signal.items():
        X = rng.normal(size=(n, d))
        X[:, 0] += strength * (2 * y - 1)
        acts[f"blocks.{layer}.hook_resid_post"] = torch.tensor(X, dtype=torch.float32)
    acts = dict(reversed(list(acts.items())))  # input order does not matter
    df, fitted = layer_sweep(acts, y, test_size=0.25, seed=1, progress=False, return_probes=True)
    assert list(df.columns) == ["hook", "layer", "auroc_train", "auroc_test", "accuracy_test", "n_train", "n_test"]
    assert df["layer"].tolist() == [0, 1, 2]
    assert (df["n_train"] == 300).all() and (df["n_test"] == 100).all()
    assert df["auroc_test"].iloc[0] < 0.65 and df["auroc_test"].iloc[2] > 0.9
    assert int(df.loc[df["auroc_test"].idxmax(), "layer"]) == 2
    assert fitted["blocks.2.hook_resid_post"].metadata.hook == "blocks.2.hook_resid_post"
    assert isinstance(df, pd.DataFrame)
    df2 = layer_sweep(acts, y, probe_factory=lambda: MassMeanProbe("tied"), progress=False)
    assert df2["auroc_test"].iloc[2] > 0.9
    with pytest.raises(ValueError, match="rows, expected"):
        layer_sweep(
            {"blocks.0.a": acts["blocks.0.hook_resid_post"], "blocks.1.b": acts["blocks.1.hook_resid_post"][:10]},
            y,
            progress=False,
        )


def test_layer_sweep_groups_keep_a_source_on_one_side():
    """Labels that belong to the prompt, not to anything general: a per-example split lets the probe
    memorise prompts (high test AUROC); a split by prompt shows there is nothing to learn."""
    rng = np.random.default_rng(0)
    n_groups, per_group, d = 60, 8, 64
    groups = np.repeat(np.arange(n_groups), per_group)
    y = np.repeat(rng.integers(0, 2, n_groups), per_group)
    X = rng.normal(size=(n_groups, d))[groups] + 0.1 * rng.normal(size=(len(groups), d))
    acts = {"blocks.0.hook_resid_post": X}
    leaky = layer_sweep(acts, y, probe_factory=lambda: LogisticProbe(C=1.0), seed=0, progress=False)
    grouped = layer_sweep(acts, y, probe_factory=lambda: LogisticProbe(C=1.0), seed=0, groups=groups, progress=False)
    assert leaky["auroc_test"].iloc[0] > 0.95
    assert grouped["auroc_test"].iloc[0] < 0.75
    assert int(grouped["n_train"].iloc[0] + grouped["n_test"].iloc[0]) == len(y)
    assert int(grouped["n_test"].iloc[0]) % per_group == 0  # whole groups only
    with pytest.raises(ValueError, match="one id per example"):
        layer_sweep(acts, y, groups=groups[:-1], progress=False)
    with pytest.raises(ValueError, match="at least 2"):
        layer_sweep(acts, y, groups=np.zeros(len(y)), progress=False)


def test_layer_sweep_on_tiny_model(tiny4):
    """End to end on a real (random) HookedTransformer: collect pooled activations, sweep layers."""
    from probe_lens.activations import collect

    texts = [f"alpha {i} " * 3 for i in range(20)] + [f"zzz!! {i} " * 3 for i in range(20)]
    y = np.array([0] * 20 + [1] * 20)
    toks = tiny4.to_tokens(texts, padding_side="left")
    am = (toks != tiny4.tokenizer.pad_token_id).long()
    hooks = [f"blocks.{L}.hook_resid_post" for L in range(4)]
    acts = collect(tiny4, toks, am, am, hooks, pooling="mean", progress=False)
    df = layer_sweep(acts, y, probe_factory=lambda: LogisticProbe(C=0.1), progress=False)
    assert df["layer"].tolist() == [0, 1, 2, 3]
    # byte-level tokens differ completely between the two groups: every layer separates them
    assert (df["auroc_test"] > 0.9).all()
