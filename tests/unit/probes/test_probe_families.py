"""Probe families that read tokens: max-pooled logistic and attention-pooled probes, token collection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probe_lens.activations import collect, collect_tokens, gather_tokens, pool
from probe_lens.models import generate
from probe_lens.probes import (
    AttentionProbe,
    LogisticProbe,
    MaxPooledLogisticProbe,
    TokenProbe,
    auroc,
    load_probe,
    probe_classes,
    save_probe,
)

FAMILIES = {
    "max_pooled": lambda: MaxPooledLogisticProbe(C=1.0),
    "attention": lambda: AttentionProbe(C=1.0),
}


def one_token_task(n, *, T=48, d=16, alpha=4.5, seed=0):
    """n sequences of T/2..T Gaussian tokens (NaN-padded); in positives one real token gets alpha * e_0."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, T, d))
    y = rng.integers(0, 2, n)
    lengths = rng.integers(T // 2, T + 1, n)
    planted = (rng.random(n) * lengths).astype(int)
    X[np.arange(n), planted, 0] += alpha * y
    X[np.arange(T)[None, :] >= lengths[:, None]] = np.nan
    return X, y


def nan_mean(X):
    return np.nanmean(X, axis=1)


# ---- pooling and collection --------------------------------------------------------------------


def test_max_pool_equals_a_manual_max_over_masked_positions():
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(4, 7, 3, generator=gen)
    mask = torch.rand(4, 7, generator=gen) > 0.5
    mask[:, 2] = True
    got = pool(acts, mask, "max")
    for i in range(4):
        for j in range(3):
            expect = max(float(acts[i, t, j]) for t in range(7) if mask[i, t])
            assert float(got[i, j]) == expect


def test_gather_tokens_left_aligns_masked_positions():
    acts = torch.arange(2 * 4 * 1, dtype=torch.float32).reshape(2, 4, 1)
    mask = torch.tensor([[0, 1, 0, 1], [1, 1, 1, 0]])
    got = gather_tokens(acts, mask)
    assert got.shape == (2, 3, 1)
    assert got[0, :2, 0].tolist() == [1.0, 3.0] and torch.isnan(got[0, 2]).all()
    assert got[1, :, 0].tolist() == [4.0, 5.0, 6.0]
    assert gather_tokens(acts, mask, width=5, fill=0.0)[0, :, 0].tolist() == [1.0, 3.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="smaller than the longest"):
        gather_tokens(acts, mask, width=2)
    with pytest.raises(ValueError, match="must be"):
        gather_tokens(acts, mask[:, :3])


def test_collect_tokens_are_the_response_positions_and_max_pool_like_collect(tiny):
    gen = generate(tiny, ["hello there", "a", "some longer prompt text"], max_new_tokens=5, seed=0, progress=False)
    hooks = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
    grid = (gen.tokens, gen.attention_mask, gen.response_mask)
    acts, mask = collect_tokens(tiny, *grid, hooks, batch_size=2, progress=False)
    pooled = collect(tiny, *grid, hooks, pooling="max", batch_size=2, progress=False)
    _, cache = tiny.run_with_cache(gen.tokens, attention_mask=gen.attention_mask)
    counts = gen.response_mask.sum(dim=1)
    assert mask.dtype == torch.bool and mask.sum(dim=1).tolist() == counts.tolist()
    for h in hooks:
        assert acts[h].shape == (3, int(counts.max()), tiny.cfg.d_model)
        for i in range(3):
            positions = [t for t in range(gen.tokens.shape[1]) if gen.response_mask[i, t]]
            torch.testing.assert_close(acts[h][i, : len(positions)], cache[h][i, positions], atol=1e-5, rtol=1e-5)
            assert torch.isnan(acts[h][i, len(positions) :]).all()
            manual_max = torch.stack([cache[h][i, t] for t in positions]).max(dim=0).values
            torch.testing.assert_close(pooled[h][i], manual_max, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(acts[h][i, mask[i]].max(dim=0).values, manual_max, atol=1e-5, rtol=1e-5)


def test_collect_tokens_refuses_empty_responses(tiny):
    gen = generate(tiny, ["hello", "a"], max_new_tokens=3, seed=0, progress=False)
    response = gen.response_mask.clone()
    response[1] = 0
    with pytest.raises(ValueError, match=r"rows \[1\] have no masked positions"):
        collect_tokens(tiny, gen.tokens, gen.attention_mask, response, [0], progress=False)


# ---- the families beat mean pooling where one token carries the label ------------------------------


def test_token_families_beat_mean_pooling_when_one_token_carries_the_label():
    Xtr, ytr = one_token_task(400, seed=0)
    Xte, yte = one_token_task(400, seed=1)
    mean_auroc = auroc(yte, LogisticProbe().fit(nan_mean(Xtr), ytr).decision_function(nan_mean(Xte)))
    max_auroc = MaxPooledLogisticProbe().fit(Xtr, ytr).score(Xte, yte)
    attention_auroc = AttentionProbe().fit(Xtr, ytr).score(Xte, yte)
    assert mean_auroc < 0.75, mean_auroc
    assert max_auroc > 0.9, max_auroc
    assert attention_auroc > 0.9, attention_auroc


# ---- max-pooled: a per-token logistic probe, scored by its largest token -------------------------


def test_max_pooled_probe_is_sklearn_logistic_on_tokens_then_max():
    X, y = one_token_task(120, d=6, seed=2)
    probe = MaxPooledLogisticProbe(C=0.5, tol=1e-10).fit(X, y)
    real = ~np.isnan(X).all(axis=2)
    oracle = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, tol=1e-12, max_iter=10_000))
    oracle.fit(X[real], np.broadcast_to(y[:, None], real.shape)[real])
    token_logits = oracle.decision_function(X[real])
    starts = np.concatenate([[0], np.cumsum(real.sum(axis=1))])
    expect = np.array([token_logits[a:b].max() for a, b in zip(starts[:-1], starts[1:])])
    np.testing.assert_allclose(probe.decision_function(X), expect, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.nanmax(probe.token_decision_function(X), axis=1), probe.decision_function(X))
    assert probe.n_fit_ == 120 and probe.n_tokens_fit_ == int(real.sum())


def test_max_pooled_probe_on_pooled_rows_is_a_logistic_probe():
    X, y = one_token_task(200, d=6, seed=3)
    rows = nan_mean(X)
    probe = MaxPooledLogisticProbe(C=0.3).fit(rows, y)
    ref = LogisticProbe(C=0.3).fit(rows, y)
    np.testing.assert_array_equal(probe.coef_raw_, ref.coef_raw_)
    np.testing.assert_array_equal(probe.decision_function(rows), ref.decision_function(rows))
    np.testing.assert_allclose(probe.decision_function(rows[:, None, :]), ref.decision_function(rows), rtol=1e-12)


# ---- attention: a learned query, softmax over real tokens, linear readout ----------------------


def test_attention_probe_matches_a_numpy_formula_and_ignores_padding_and_order():
    X, y = one_token_task(150, d=5, seed=4)
    probe = AttentionProbe(random_state=3).fit(X, y)
    expect = []
    for row in X:
        real = row[~np.isnan(row).all(axis=1)]
        s = real @ probe.query_
        a = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        expect.append((a @ real) @ probe.coef_raw_ + probe.bias_)
    np.testing.assert_allclose(probe.decision_function(X), expect, rtol=1e-10, atol=1e-10)
    weights = probe.attention(X)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert (weights[np.isnan(X).all(axis=2)] == 0).all()
    wider = np.concatenate([X, np.full((150, 3, 5), np.nan)], axis=1)
    shuffled = X[:, ::-1]
    np.testing.assert_allclose(probe.decision_function(wider), probe.decision_function(X), rtol=1e-12)
    np.testing.assert_allclose(probe.decision_function(shuffled), probe.decision_function(X), rtol=1e-10)
    rows = X[:, 0]  # one token per row: the linear readout
    np.testing.assert_allclose(probe.decision_function(rows), rows @ probe.coef_raw_ + probe.bias_)


def test_attention_probe_is_deterministic_given_random_state():
    X, y = one_token_task(100, d=4, seed=5)
    a = AttentionProbe(random_state=7).fit(X, y)
    b = AttentionProbe(random_state=7).fit(torch.from_numpy(X), torch.from_numpy(y))
    np.testing.assert_array_equal(a.query_, b.query_)
    np.testing.assert_array_equal(a.predict_proba(X), b.predict_proba(X))
    assert a.converged_ and a.n_iter_ > 0


@pytest.mark.parametrize("kind", FAMILIES)
def test_torch_forward_equals_predict_proba_and_differentiates_acts_only(kind):
    X, y = one_token_task(80, d=4, seed=6)
    probe = FAMILIES[kind]().fit(X, y)
    mask = torch.from_numpy(~np.isnan(X).all(axis=2))
    acts = torch.from_numpy(np.nan_to_num(X, nan=123.0)).requires_grad_(True)  # padding is never read
    p = probe.forward(acts, mask)
    np.testing.assert_allclose(p.detach().numpy(), probe.predict_proba(X)[:, 1], rtol=1e-10, atol=1e-12)
    p.sum().backward()
    assert acts.grad is not None and acts.grad[~mask].abs().sum() == 0 and acts.grad.abs().sum() > 0
    assert all(not q.requires_grad for q in probe.as_module().parameters())
    p32 = probe(acts.detach().float(), mask)
    assert p32.dtype == torch.float32
    torch.testing.assert_close(p32.double(), p.detach(), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(probe.forward(acts.detach()[:, 0]).numpy(), probe.predict_proba(X[:, 0])[:, 1])


# ---- both families: the probe API, save/load, registration, errors -------------------------------


@pytest.mark.parametrize("kind", FAMILIES)
def test_save_load_round_trips(kind, tmp_path):
    X, y = one_token_task(80, d=4, seed=7)
    labels = np.array(["clean", "toxic"])[y]
    probe = FAMILIES[kind]().set_metadata(hook="blocks.1.hook_resid_post", label="toxic").fit(X, labels)
    loaded = load_probe(save_probe(probe, tmp_path / kind), expect_hook=1)
    assert type(loaded) is type(probe) and loaded.get_params() == probe.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(X), probe.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict(X), probe.predict(X))
    assert loaded.n_tokens_fit_ == probe.n_tokens_fit_ and loaded.metadata.label == "toxic"
    if kind == "attention":
        np.testing.assert_array_equal(loaded.query_, probe.query_)


@pytest.mark.parametrize("kind", FAMILIES)
def test_family_shares_the_probe_api(kind):
    X, y = one_token_task(120, d=4, seed=8)
    probe = FAMILIES[kind]().fit(X, y)
    assert isinstance(probe, TokenProbe) and probe.reads_tokens and not LogisticProbe.reads_tokens
    assert probe_classes()[type(probe).__name__] is type(probe)
    assert probe.direction_.shape == (4,) and np.isclose(np.linalg.norm(probe.direction_), 1.0, atol=1e-6)
    assert probe.member_probes() == [probe] and probe.directions_.shape == (1, 4)
    assert probe.score(X, y) == pytest.approx(auroc(y, probe.decision_function(X)))
    np.testing.assert_array_equal(probe.predict(X), (probe.predict_proba(X)[:, 1] > 0.5).astype(int))
    assert probe.n_fit_ == 120 and probe.n_positive_ == int(y.sum())
    search = GridSearchCV(FAMILIES[kind](), {"C": [0.1, 1.0]}, cv=3, scoring="roc_auc").fit(X, y)
    assert search.best_score_ > 0.8  # sklearn's model selection splits sequences, not tokens


@pytest.mark.parametrize("kind", FAMILIES)
def test_bad_token_input_is_refused_clearly(kind):
    X, y = one_token_task(60, d=4, seed=9)
    probe = FAMILIES[kind]().fit(X, y)
    empty = X.copy()
    empty[3] = np.nan
    with pytest.raises(ValueError, match=r"rows \[3\] have no tokens"):
        probe.decision_function(empty)
    with pytest.raises(ValueError, match=r"rows \[3\] have no tokens"):
        FAMILIES[kind]().fit(empty, y)
    partial = X.copy()
    partial[2, 0, 1] = np.nan
    with pytest.raises(ValueError, match="padding position must be NaN in every feature"):
        probe.predict(partial)
    with pytest.raises(ValueError, match="expecting 4"):
        probe.decision_function(X[..., :3])
    with pytest.raises(ValueError, match="must be 2-D"):
        probe.decision_function(X[None])
    with pytest.raises(ValueError, match="different lengths"):
        FAMILIES[kind]().fit(X, y[:-1])
    with pytest.raises(ValueError, match="single class"):
        FAMILIES[kind]().fit(X, np.zeros_like(y))
    acts = torch.from_numpy(np.nan_to_num(X))
    with pytest.raises(ValueError, match="mask must be"):
        probe.forward(acts, torch.ones(60, 5, dtype=torch.bool))
    no_tokens = torch.ones(60, X.shape[1], dtype=torch.bool)
    no_tokens[5] = False
    with pytest.raises(ValueError, match=r"rows \[5\] have no masked positions"):
        probe.forward(acts, no_tokens)
    with pytest.raises(ValueError, match="takes no mask"):
        probe.forward(acts[:, 0], no_tokens)


def test_family_specific_parameter_errors():
    X, y = one_token_task(60, d=4, seed=10)
    with pytest.raises(ValueError, match="GridSearchCV"):
        MaxPooledLogisticProbe(C="cv").fit(X, y)
    assert MaxPooledLogisticProbe(C="cv", cv=3).fit(X[:, 0], y).C_ > 0  # pooled rows: LogisticProbe's CV
    for bad in ({"C": 0.0}, {"C": "cv"}, {"max_iter": 0}):
        with pytest.raises(ValueError, match="C must be|max_iter"):
            AttentionProbe(**bad).fit(X, y)
