"""probe_lens.interventions on the tiny model: steer/ablate, causal curves, attribution, geometry, figures."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from transformer_lens import HookedTransformer, HookedTransformerConfig

from probe_lens import LogisticProbe, MassMeanProbe, capture, collect, generate
from probe_lens.interventions import (
    ablate,
    angle_degrees,
    attribution_gap,
    between_class_components,
    causal_metrics,
    component_gap,
    direction_vector,
    probe_attribution,
    probe_attributions,
    signal_decomposition,
    steer,
    steering_curve,
    steering_slope,
)
from probe_lens.models.fast_sampling import FastSampling, fast_path_logits
from probe_lens.plots import fig_attribution_heatmap, fig_signal_decomposition, fig_steering_curves
from probe_lens.probes.metrics import auroc
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_tokenizer

PROMPTS = ["hello world", "hi", "a much longer prompt", "x", "the cat sat on", "Once upon"]
FP32_FAST = FastSampling(half_unembed=False, half_mlp=False, half_attention=False)
H0 = "blocks.0.hook_resid_post"


def _grid(n: int, length: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random byte tokens with BOS, rows i and i + n/2 identical; pool over the last half."""
    g = torch.Generator().manual_seed(seed)
    half = torch.randint(3, 259, (n // 2, length), generator=g)
    tokens = torch.cat([half, half])
    tokens[:, 0] = 1
    mask = torch.ones_like(tokens)
    pool_mask = torch.zeros_like(tokens)
    pool_mask[:, length // 2 :] = 1
    return tokens, mask, pool_mask


def _logits(model, tokens):
    return model(tokens, attention_mask=torch.ones_like(tokens))


# ------------------------------------------------------------------------------------ steer / ablate
def test_steer_alpha_zero_is_identity(tiny):
    tokens, _, _ = _grid(4)
    ref = _logits(tiny, tokens)
    with steer(tiny, torch.randn(32), 0.0, 0):
        assert torch.equal(_logits(tiny, tokens), ref)
    with steer(tiny, torch.randn(32), 3.0, 0):
        assert not torch.allclose(_logits(tiny, tokens), ref)
    assert torch.equal(_logits(tiny, tokens), ref)  # hooks removed on exit


def test_steer_adds_alpha_unit_direction_at_masked_positions(tiny):
    tokens, _, pool_mask = _grid(4)
    v = torch.randn(32) * 7
    u = v / v.norm()
    with capture(tiny, H0) as plain:
        _logits(tiny, tokens)
    with steer(tiny, v, 2.5, H0, positions=pool_mask), capture(tiny, H0) as steered:
        _logits(tiny, tokens)
    expected = plain[H0] + 2.5 * pool_mask[..., None] * u
    assert torch.allclose(steered[H0], expected, atol=1e-5)
    assert torch.equal(steered[H0][:, :6], plain[H0][:, :6])  # unmasked positions untouched


def test_nested_steer_then_ablate_leaves_no_component(tiny):
    tokens, _, _ = _grid(4)
    v = torch.randn(32)
    with steer(tiny, v, 10.0, H0), ablate(tiny, v, H0), capture(tiny, H0) as acts:
        _logits(tiny, tokens)
    assert (acts[H0] @ (v / v.norm())).abs().max() < 1e-5


def test_bad_inputs(tiny):
    with pytest.raises(ValueError, match="d_model"):
        direction_vector(torch.ones(5), 32)
    with pytest.raises(ValueError, match="non-zero"):
        direction_vector(torch.zeros(32))
    bad_positions = "prompt"
    with pytest.raises(ValueError, match="positions"), steer(tiny, torch.ones(32), 1.0, 0, positions=bad_positions):
        pass
    with pytest.raises(ValueError, match="hook"), steer(tiny, torch.ones(32), 1.0):
        pass
    with pytest.raises(ValueError, match="mask"), steer(tiny, torch.ones(32), 1.0, 0, positions=torch.ones(2, 3)):
        _logits(tiny, _grid(4)[0])


def test_probe_direction_is_the_raw_space_weight():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 8)) * np.array([100, 1, 1, 0.01, 5, 1, 1, 1])
    y = (X[:, 0] / 100 + X[:, 3] / 0.01 + rng.normal(size=300) > 0).astype(int)
    probe = LogisticProbe(C=1.0, standardize=True).fit(X, y)
    scaler = StandardScaler().fit(X)
    sk = LogisticRegression(C=1.0, tol=1e-10, max_iter=10_000).fit(scaler.transform(X), y)
    raw = sk.coef_[0] / scaler.scale_  # the independent oracle: sklearn's weight mapped to raw space
    assert float(direction_vector(probe) @ torch.as_tensor(raw / np.linalg.norm(raw), dtype=torch.float32)) > 0.9999
    std_space = probe.coef_raw_ * probe.scale_
    assert abs(float(direction_vector(probe).numpy() @ (std_space / np.linalg.norm(std_space)))) < 0.99


@pytest.mark.parametrize("probe_cls", [LogisticProbe, MassMeanProbe])
def test_ablate_removes_a_planted_direction(tiny, probe_cls):
    tokens, mask, pool_mask = _grid(40)
    y = np.repeat([0, 1], 20)
    plant = torch.as_tensor(y)[:, None].expand_as(tokens)
    v = torch.randn(32, generator=torch.Generator().manual_seed(3))

    def acts():
        return collect(tiny, tokens, mask, pool_mask, H0, batch_size=40, progress=False)[H0]

    with steer(tiny, v, 4.0, H0, positions=plant):
        X = acts()
        probe = probe_cls(hook=H0, pooling="mean").fit(X, y)
        assert probe.score(X, y) == 1.0  # the planted direction separates the paired rows
        with ablate(tiny, probe):
            ablated = acts()
    logits = probe.decision_function(ablated)
    assert np.abs(logits - probe.bias_).max() < 1e-4
    assert auroc(y, np.round(logits, 4)) == 0.5


def test_gradients_flow_through_ablate(tiny):
    tokens, _, _ = _grid(4)
    u = direction_vector(torch.randn(32))
    r = torch.randn(32)
    with ablate(tiny, u, H0), capture(tiny, H0) as acts:
        _logits(tiny, tokens)
    along = (acts[H0] @ u).sum()
    (grad_along,) = torch.autograd.grad(along, tiny.embed.W_E, retain_graph=True)
    (grad_other,) = torch.autograd.grad((acts[H0] @ r).sum(), tiny.embed.W_E)
    assert grad_along.abs().max() < 1e-4  # d/dx of the ablated direction's component is 0
    assert grad_other.abs().max() > 1e-3


# ------------------------------------------------------------------------------------ generation
@pytest.mark.parametrize("fast", [True, FP32_FAST])
def test_generation_under_steer_fast_path_honours_the_hook(tiny, fast):
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))
    kw = {"max_new_tokens": 8, "do_sample": False, "progress": False}
    plain = generate(tiny, PROMPTS, **kw)
    with steer(tiny, v, 40.0, H0):
        ref = generate(tiny, PROMPTS, **kw)
        out = generate(tiny, PROMPTS, fast=fast, **kw)
        tokens = ref.tokens
        ref_logits = tiny(tokens, attention_mask=ref.attention_mask)
        fast_logits = fast_path_logits(tiny, tokens, ref.attention_mask, fast if fast is not True else None)
    assert not torch.equal(ref.tokens, plain.tokens)  # the steering matters
    assert torch.equal(out.tokens, ref.tokens)
    assert (fast_logits - ref_logits)[ref.attention_mask.bool()].abs().max() < 1e-2


def test_response_positions_leave_the_prefill_alone(tiny):
    v = torch.randn(32, generator=torch.Generator().manual_seed(1))
    kw = {"max_new_tokens": 6, "do_sample": False, "progress": False}
    plain = generate(tiny, PROMPTS, **kw)
    with steer(tiny, v, 40.0, H0, positions="response"):
        g = generate(tiny, PROMPTS, **kw)
    first = g.prompt_len
    assert torch.equal(g.tokens[:, first], plain.tokens[:, first])  # sampled from the unsteered prefill
    assert not torch.equal(g.tokens[:, first + 1 :], plain.tokens[:, first + 1 :])


# ------------------------------------------------------------------------------------ causal
def test_steering_curve_returns_the_grid(tiny):
    gen = generate(tiny, PROMPTS, max_new_tokens=6, seed=0, progress=False)
    X = collect(tiny, gen.tokens, gen.attention_mask, gen.response_mask, 1, progress=False)["blocks.1.hook_resid_post"]
    probe = LogisticProbe(hook="blocks.1.hook_resid_post").fit(X, np.arange(len(X)) % 2)
    kw = {"neutral_texts": ["some neutral text", "another one"], "alphas": (-2, -1, 0, 1, 2), "max_new_tokens": 4}
    curve = steering_curve(tiny, probe, PROMPTS[:3], non_ascii_scorer(), threshold=0.5, **kw)
    assert curve["intervention"].tolist() == ["none", "steer", "steer", "steer", "steer", "ablate"]
    assert curve["alpha"].iloc[1:5].tolist() == [-2, -1, 1, 2]
    assert curve.loc[0, "kl"] == 0.0 and (curve["kl"].iloc[1:] > 0).all()
    assert curve["kl"].iloc[4] > curve["kl"].iloc[3]  # a larger step moves the model more
    assert (curve["n_samples"] == 3).all()
    assert np.isfinite(steering_slope(curve))
    metrics = causal_metrics(tiny, probe, PROMPTS[:3], non_ascii_scorer(), **kw)
    assert set(metrics) == {
        "steer_slope",
        "rate_unsteered",
        "rate_ablated",
        "ablation_effect",
        "kl_ablated",
        "kl_max_steer",
    }
    assert metrics["steer_slope"] == steering_slope(curve)  # same seeds: same samples


def test_steering_slope_is_least_squares():
    import pandas as pd

    curve = pd.DataFrame(
        {
            "intervention": ["none", "steer", "steer", "ablate"],
            "alpha": [0, -1, 1, np.nan],
            "rate": [0.5, 0.2, 0.9, 0.0],
        }
    )
    assert steering_slope(curve) == pytest.approx(np.polyfit([0, -1, 1], [0.5, 0.2, 0.9], 1)[0])


# ------------------------------------------------------------------------------------ attribution
def _model_with(**overrides) -> HookedTransformer:
    base = {
        "n_layers": 3,
        "d_model": 32,
        "d_head": 8,
        "n_heads": 4,
        "d_mlp": 64,
        "d_vocab": 259,
        "n_ctx": 64,
        "act_fn": "gelu",
        "normalization_type": "LN",
        "seed": 0,
        "device": "cpu",
    }
    cfg = HookedTransformerConfig(**(base | overrides))
    torch.manual_seed(0)
    model = HookedTransformer(cfg, tokenizer=tiny_tokenizer(), default_padding_side="left")
    for name, p in model.named_parameters():  # non-zero biases so b_O terms are exercised
        if name.endswith("b_O") or name.endswith("b_out"):
            p.data.normal_(0, 0.1)
    return model.eval()


ARCHES = {
    "tiny-gqa": lambda: tiny_model(0, n_layers=3, n_heads=4),
    "gpt2-like": lambda: _model_with(positional_embedding_type="standard"),
    "gemma-post-norm": lambda: _model_with(
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_dim=8,
        n_key_value_heads=2,
        gated_mlp=True,
        use_normalization_before_and_after=True,
        act_fn="gelu_pytorch_tanh",
    ),
}


@pytest.mark.parametrize("arch", list(ARCHES))
@pytest.mark.parametrize("layer", [0, 2])
def test_attribution_sums_to_the_probe_logit(arch, layer):
    model = ARCHES[arch]()
    gen = generate(model, PROMPTS * 2, max_new_tokens=6, seed=0, progress=False)
    hook = f"blocks.{layer}.hook_resid_post"
    X = collect(model, gen.tokens, gen.attention_mask, gen.response_mask, hook, progress=False)[hook]
    probe = LogisticProbe(hook=hook, pooling="mean").fit(X, np.arange(len(X)) % 2)
    df = probe_attribution(model, probe, gen.tokens, gen.attention_mask, gen.response_mask, batch_size=5)
    total = df.groupby("text")["contribution"].sum().to_numpy()
    assert np.abs(total - probe.decision_function(X)).max() < 1e-4  # oracle: the probe on collected acts
    heads = df[(df["text"] == 0) & (df["component"] == "head")]
    assert len(heads) == 4 * (layer + 1) and heads["head"].tolist() == [0, 1, 2, 3] * (layer + 1)
    per_text = df[df["text"] == 0]["component"].value_counts()
    assert per_text["mlp"] == layer + 1 and per_text["attn_bias"] == layer + 1
    assert ("pos_embed" in per_text) == (arch == "gpt2-like")


@pytest.mark.parametrize("arch", list(ARCHES))
def test_several_probes_in_one_pass_sum_to_each_probe_logit(arch):
    model = ARCHES[arch]()
    gen = generate(model, PROMPTS * 2, max_new_tokens=6, seed=0, progress=False)
    hooks = ["blocks.1.hook_resid_post", "blocks.2.hook_resid_mid"]
    X = collect(model, gen.tokens, gen.attention_mask, gen.response_mask, hooks, progress=False)
    y = np.arange(len(gen.tokens)) % 2
    probes = {
        "logistic": LogisticProbe(hook=hooks[0]).fit(X[hooks[0]], y),
        "massmean": MassMeanProbe(hook=hooks[0]).fit(X[hooks[0]], y),
        "other_hook": MassMeanProbe(hook=hooks[1]).fit(X[hooks[1]], y),
    }
    tables = probe_attributions(model, probes, gen.tokens, gen.attention_mask, gen.response_mask, batch_size=5)
    assert list(tables) == list(probes)
    for name, probe in probes.items():
        total = tables[name].groupby("text")["contribution"].sum().to_numpy()
        assert np.abs(total - probe.decision_function(X[probe.hook])).max() < 1e-4  # oracle: collected acts
        single = probe_attribution(model, probe, gen.tokens, gen.attention_mask, gen.response_mask, batch_size=5)
        np.testing.assert_allclose(tables[name]["contribution"], single["contribution"], atol=1e-10)


def test_attribution_at_resid_pre_and_mid(tiny4):
    gen = generate(tiny4, PROMPTS, max_new_tokens=5, seed=0, progress=False)
    for hook, n_mlp in (("blocks.2.hook_resid_pre", 2), ("blocks.2.hook_resid_mid", 2)):
        X = collect(tiny4, gen.tokens, gen.attention_mask, gen.response_mask, hook, progress=False)[hook]
        probe = MassMeanProbe(hook=hook).fit(X, np.arange(len(X)) % 2)
        df = probe_attribution(tiny4, probe, gen.tokens, gen.attention_mask, gen.response_mask)
        assert np.allclose(df.groupby("text")["contribution"].sum(), probe.decision_function(X), atol=1e-4)
        assert (df[df["text"] == 0]["component"] == "mlp").sum() == n_mlp
    with pytest.raises(ValueError, match="residual-stream"):
        probe_attribution(tiny4, probe, gen.tokens, gen.attention_mask, gen.response_mask, hook="blocks.1.hook_mlp_out")


def test_attribution_gap_for_two_models():
    base, trained = tiny_model(0, n_layers=2), tiny_model(1, n_layers=2)
    gen = generate(base, PROMPTS * 2, max_new_tokens=5, seed=0, progress=False)
    y = np.arange(len(PROMPTS) * 2) % 2
    X = collect(base, gen.tokens, gen.attention_mask, gen.response_mask, 1, progress=False)["blocks.1.hook_resid_post"]
    probe = LogisticProbe(hook="blocks.1.hook_resid_post").fit(X, y)
    gap = attribution_gap(base, trained, probe, gen.tokens, gen.attention_mask, gen.response_mask, y)
    logits = probe.decision_function(X)
    assert gap["base"].sum() == pytest.approx(logits[y == 1].mean() - logits[y == 0].mean(), abs=1e-5)
    assert np.allclose(gap["difference"], gap["trained"] - gap["base"])
    assert gap.loc[gap["component"] == "bias", "base"].abs().max() < 1e-12  # the bias cancels in a gap
    own = component_gap(probe_attribution(trained, probe, gen.tokens, gen.attention_mask, gen.response_mask), y)
    assert np.allclose(own["gap"], gap["trained"])
    assert fig_attribution_heatmap(gap).data.__len__() == 3


# ------------------------------------------------------------------------------------ geometry
def test_signal_decomposition_on_a_known_signal():
    rng = np.random.default_rng(0)
    d = 16
    u, w = np.eye(d)[0], np.eye(d)[1]
    y = np.repeat([0, 1], 500)
    X = rng.normal(size=(1000, d)) * 0.1
    X[y == 1] += 3.0 * u + 4.0 * w
    X[y == 1] -= X[y == 1].mean(0) - (3.0 * u + 4.0 * w) - X[y == 0].mean(0)  # exact class-mean difference
    geo = signal_decomposition(torch.as_tensor(u), X, y, retrained=torch.as_tensor(w + u))
    assert geo["signal_norm"] == pytest.approx(5.0)
    assert geo["on_probe"] == pytest.approx(3.0) and geo["off_probe"] == pytest.approx(4.0)
    assert geo["share_on_probe"] == pytest.approx(9 / 25)
    assert geo["angle_deg"] == pytest.approx(45.0)
    assert angle_degrees(torch.as_tensor(u), torch.as_tensor(-u)) == pytest.approx(180.0)
    assert fig_signal_decomposition({"base": geo}).data.__len__() == 2


def test_between_class_components_drops_when_the_separation_is_low_rank():
    rng = np.random.default_rng(1)
    d, n = 20, 2000
    y = rng.integers(0, 2, n)
    scales = np.linspace(3.0, 1.0, d)
    spread = rng.normal(size=(n, d)) * scales
    spread[y == 1] += 0.3  # a small shift along every axis: spread over all components
    low_rank = rng.normal(size=(n, d)) * scales
    low_rank[y == 1, 0] += 6.0  # a large shift along the top component
    assert between_class_components(low_rank, y) == 1
    assert between_class_components(spread, y) > 10
    assert between_class_components(spread, y, share=1.0) <= d


def test_figures_refuse_empty_input():
    import pandas as pd

    for fig in (fig_steering_curves, fig_attribution_heatmap):
        with pytest.raises(ValueError):
            fig(pd.DataFrame())
    with pytest.raises(ValueError):
        fig_signal_decomposition({})


def test_steering_figure_draws_each_series():
    import pandas as pd

    one = pd.DataFrame(
        {
            "intervention": ["none", "steer", "ablate"],
            "alpha": [0.0, 1.0, np.nan],
            "rate": [0.1, 0.3, 0.0],
            "kl": [0.0, 0.2, 0.1],
        }
    )
    both = pd.concat([one.assign(series="base"), one.assign(series="trained")])
    assert len(fig_steering_curves(both).data) == 8  # 2 series x (line + ablation) x (rate, KL)
