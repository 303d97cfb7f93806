"""Headline statistics over seeds: random effects (DL tau², HKSJ interval), I², the exact sign-flip test and
Holm's correction against independent implementations; primary contrasts in the config and the headline."""

import itertools
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from probe_lens.experiments import StudyConfig
from probe_lens.experiments.headline import contrasts, fixed_across_seeds, primary_specs
from probe_lens.experiments.stats import holm, mean_ci, random_effects, sign_flip_p
from probe_lens.testing import tiny_study_config

meta = pytest.importorskip("statsmodels.stats.meta_analysis")

HETEROGENEOUS = (np.array([0.10, -0.15, 0.30, 0.12, 0.05]), np.array([0.001, 0.002, 0.0015, 0.0005, 0.003]))
HOMOGENEOUS = (np.array([0.10, 0.11, 0.09, 0.105]), np.array([0.01, 0.02, 0.015, 0.01]))


def _statsmodels(y, v):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns about the per-study intervals, which are not compared
        res = meta.combine_effects(y, v, method_re="dl", use_t=True)
        return res, res.summary_frame()


def test_random_effects_equals_statsmodels_hksj_row():
    y, v = HETEROGENEOUS
    res, frame = _statsmodels(y, v)
    ours = random_effects(y, v)
    row = frame.loc["random effect wls"]
    assert ours.method == "DL+HKSJ" and ours.k == 5
    np.testing.assert_allclose(
        [ours.estimate, ours.se, ours.ci_low, ours.ci_high], [row["eff"], row["sd_eff"], row["ci_low"], row["ci_upp"]],
        rtol=1e-10,
    )  # fmt: skip
    np.testing.assert_allclose([ours.tau2, ours.i2, ours.q], [res.tau2, res.i2, res.q], rtol=1e-10)


def test_homogeneous_seeds_give_tau2_zero_and_the_fixed_effect_hksj_row():
    y, v = HOMOGENEOUS
    res, frame = _statsmodels(y, v)
    assert res.q < len(y) - 1  # statsmodels leaves tau² negative here; DerSimonian-Laird truncates at 0
    ours = random_effects(y, v)
    row = frame.loc["fixed effect wls"]
    assert ours.tau2 == 0.0 and ours.i2 == 0.0
    np.testing.assert_allclose([ours.estimate, ours.ci_low, ours.ci_high], [row["eff"], row["ci_low"], row["ci_upp"]])


def test_i2_by_the_hand_formula():
    y, v = HETEROGENEOUS
    w = 1 / v
    mu = (w * y).sum() / w.sum()
    q = (w * (y - mu) ** 2).sum()
    assert random_effects(y, v).i2 == pytest.approx((q - (len(y) - 1)) / q, rel=1e-12)
    assert random_effects(y, v, confidence=0.9).ci_high < random_effects(y, v).ci_high


def test_without_within_seed_variances_the_interval_is_the_t_interval():
    y = [0.2, -0.1, 0.4]
    for v in (None, [np.nan, 0.01, 0.01], [0.0, 0.01, 0.01]):
        re = random_effects(y, v)
        assert re.method == "t over seeds" and np.isnan(re.tau2) and np.isnan(re.i2)
        np.testing.assert_allclose([re.estimate, re.ci_low, re.ci_high], mean_ci(y), rtol=1e-12)
    one = random_effects([0.3], [0.01])
    assert one.estimate == 0.3 and np.isnan(one.ci_low)
    assert np.isnan(random_effects([]).estimate)
    with pytest.raises(ValueError, match="one per seed"):
        random_effects([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="NaN"):
        random_effects([0.1, np.nan])


def _brute_force_sign_flip(d):
    d = np.asarray(d, dtype=float)
    obs = abs(d.mean())
    flips = [abs((np.array(s) * d).mean()) >= obs - 1e-12 for s in itertools.product([1, -1], repeat=len(d))]
    return float(np.mean(flips))


@pytest.mark.parametrize(
    "diffs", [[0.1, 0.2, 0.3], [0.1, -0.05, 0.2, 0.07], [0.3, -0.3], [0.0, 0.0, 0.0], list(np.linspace(-0.2, 1, 9))]
)
def test_sign_flip_p_equals_enumeration(diffs):
    assert sign_flip_p(diffs) == pytest.approx(_brute_force_sign_flip(diffs), abs=1e-15)


def test_sign_flip_p_floor_and_limits():
    assert sign_flip_p([0.1, 0.2, 0.3]) == 0.25  # three seeds can never go below 2/2^3
    assert sign_flip_p(np.arange(1, 11) / 10) == pytest.approx(2 / 2**10)
    assert np.isnan(sign_flip_p([]))
    with pytest.raises(ValueError, match="more than"):
        sign_flip_p(np.ones(23))


def test_holm_by_hand():
    p = [0.01, 0.04, np.nan, 0.03, 0.5]
    # sorted 0.01, 0.03, 0.04, 0.5 with m = 4: 0.04, 0.09, max(0.09, 0.08), max(., 0.5)
    np.testing.assert_allclose(holm(p), [0.04, 0.09, np.nan, 0.09, 0.5])
    assert np.isnan(holm([np.nan])).all()
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        holm([1.5])


# ---- the config's primary contrasts ------------------------------------------------------------
NAMES = {"single": ["logistic_L2"], "ensemble": ["ensemble2_L2"], "heldout": ["massmean_L2"], "heldout_members": []}


def test_primary_contrasts_default_and_validation():
    cfg = tiny_study_config(seeds=[0, 1])
    assert [(c["a"], c["b"], c["metric"]) for c in cfg.primary_contrasts] == [
        ("probe_sft_1", "classifier_sft", "curated_auroc"),
        ("probe_dpo_1", "classifier_dpo", "curated_auroc"),
    ]
    assert StudyConfig.from_dict(cfg.to_dict()).primary_contrasts == cfg.primary_contrasts
    bad = [
        ([{"a": "x", "b": "x", "metric": "curated_auroc"}], "itself"),
        ([{"a": "x", "b": "y"}], "exactly the keys"),
        ([{"a": "x", "b": "y", "metric": "auroc"}], "results column"),
        ("probe_sft_1 - classifier_sft", "list"),
        ([{"a": "x", "b": "y", "metric": "eval/ppl"}] * 2, "twice"),
    ]
    for value, match in bad:
        with pytest.raises((ValueError, TypeError), match=match):
            tiny_study_config(primary_contrasts=value)


def test_primary_specs_resolve_the_trained_against_probe_and_note_missing_cells():
    cfg = tiny_study_config(seeds=[0, 1])
    specs, notes = primary_specs(cfg, NAMES, {"base", "probe_sft_1", "classifier_sft"})
    assert specs == [("probe/curated_auroc/logistic_L2", "probe_sft_1", "classifier_sft")]
    assert len(notes) == 1 and "probe_dpo_1" in notes[0] and "skipped" in notes[0]
    no_curated = tiny_study_config(seeds=[0], eval={"curated": None})
    assert primary_specs(no_curated, NAMES, {"probe_sft_1", "classifier_sft"})[0][0][0] == (
        "probe/onpolicy_auroc/logistic_L2"
    )
    wrong = tiny_study_config(primary_contrasts=[{"a": "classifier_sft", "b": "base", "metric": "curated_auroc"}])
    assert "trains against no probe" in primary_specs(wrong, NAMES, {"classifier_sft", "base"})[1][0]


def _results(seeds=(0, 1, 2, 3)):
    rng = np.random.default_rng(0)
    rows = []
    for cell in ("base", "probe_sft_1", "classifier_sft"):
        for s in seeds:
            rows.append({
                "cell": cell, "seed": s,
                "probe/curated_auroc/logistic_L2": rng.uniform(0.6, 0.9),
                "probe/onpolicy_auroc/logistic_L2": rng.uniform(0.6, 0.9),
                "probe/curated_auroc/massmean_L2": rng.uniform(0.6, 0.9),
                "drift/cosine/logistic_L2": 1.0 if cell == "base" else rng.uniform(0.8, 1.0),
                "eval/toxicity_rate": rng.uniform(0, 0.3),
                "eval/perplexity_neutral": rng.uniform(10, 20),
            })  # fmt: skip
    return pd.DataFrame(rows)


def test_contrasts_carry_statistics_over_seeds_and_holm_per_family():
    cfg = tiny_study_config(seeds=[0, 1, 2, 3], cells=["base", "probe_sft_1", "classifier_sft"])
    res = _results()
    con = contrasts(res, cfg, NAMES)
    prim = con[con["primary"]]
    assert list(zip(prim["metric"], prim["a"], prim["b"])) == [
        ("probe/curated_auroc/logistic_L2", "probe_sft_1", "classifier_sft")
    ]
    for row in con.itertuples():
        a = res[res["cell"] == row.a].set_index("seed")[row.metric]
        b = res[res["cell"] == row.b].set_index("seed")[row.metric]
        d = (a - b).to_numpy()
        assert row.p_signflip == pytest.approx(_brute_force_sign_flip(d))
        # no probe scores on disk: no within-seed variances, so equal weights (the t interval)
        assert row.re_method == "t over seeds" and row.re_estimate == pytest.approx(row.mean_diff)
    # a single primary: Holm leaves it alone; the others are one family
    assert float(prim["p_holm"].iloc[0]) == float(prim["p_signflip"].iloc[0])
    sec = con[~con["primary"]]
    np.testing.assert_allclose(sec["p_holm"], holm(sec["p_signflip"].to_numpy()))
    cos = con[con["metric"] == "drift/cosine/logistic_L2"]
    assert list(zip(cos["a"], cos["b"])) == [("probe_sft_1", "classifier_sft")]


def test_fixed_across_seeds_names_the_shared_sets():
    # by default (real studies; the tiny config fixes one draw) each seed draws its own evaluation prompts,
    # pool and training pool: they are not fixed
    text = " ".join(fixed_across_seeds(tiny_study_config(seeds=[0, 1], eval={"prompts_per_seed": True})))
    for word in ("the model", "neutral texts", "curated set", "output classifier", "reference continuations"):
        assert word in text
    for word in ("evaluation prompts", "probe-pool prompts", "training-prompt pool"):
        assert word not in text
    # eval.prompts_per_seed: false restores one fixed prompt draw, and the headline says so
    fixed = " ".join(fixed_across_seeds(tiny_study_config(seeds=[0, 1], eval={"prompts_per_seed": False})))
    for word in ("evaluation prompts", "probe-pool prompts", "training-prompt pool"):
        assert word in fixed
    assert "curated" not in " ".join(fixed_across_seeds(tiny_study_config(eval={"curated": None})))
    assert "sampled once" in " ".join(fixed_across_seeds(tiny_study_config(data_source="fresh")))


def test_intervals_use_the_t_quantile_with_k_minus_1_df():
    y, v = HETEROGENEOUS
    re = random_effects(y, v)
    assert (re.ci_high - re.estimate) / re.se == pytest.approx(st.t.ppf(0.975, len(y) - 1))


def test_differences_of_differences_between_objectives_by_hand():
    """(probe_sft_1 − classifier_sft) − (probe_rloo_1 − classifier_rloo), per seed, on the trained-against
    probe's AUROC, the held-out mass-mean probe's and the rate; a cell trained against another probe, or one
    without its own objective's control, forms none."""
    from probe_lens.experiments.headline import interactions_markdown
    from probe_lens.experiments.interactions import interaction_contrasts

    cells = ["base", "probe_sft_1", "classifier_sft", "probe_rloo_1", "classifier_rloo", "probe_dpo_1", "probe_sft_max"]
    cfg = tiny_study_config(seeds=[0, 1, 2, 3], cells=cells)
    rng = np.random.default_rng(1)
    cols = ["probe/curated_auroc/logistic_L2", "probe/curated_auroc/massmean_L2", "eval/toxicity_rate"]
    res = pd.DataFrame(
        [{"cell": c, "seed": s, **{k: rng.uniform(0.2, 0.9) for k in cols}} for c in cells for s in range(4)]
    )
    res = res.drop(index=res.index[(res["cell"] == "classifier_rloo") & (res["seed"] == 3)])  # a missing seed
    names = {**NAMES, "token": ["maxpool_L2", "attention_L2"]}
    df = interaction_contrasts(res, cfg, names)
    assert set(df["contrast"]) == {"(probe_sft_1 − classifier_sft) − (probe_rloo_1 − classifier_rloo)"}
    assert list(df["metric"]) == cols
    t = res.set_index(["cell", "seed"])
    for row in df.itertuples():
        by_hand = [
            (t.loc[("probe_sft_1", s), row.metric] - t.loc[("classifier_sft", s), row.metric])
            - (t.loc[("probe_rloo_1", s), row.metric] - t.loc[("classifier_rloo", s), row.metric])
            for s in (0, 1, 2)
        ]
        assert row.n_seeds == 3
        assert (row.mean_diff, row.ci_low, row.ci_high) == pytest.approx(mean_ci(by_hand))
        assert row.p_signflip == pytest.approx(_brute_force_sign_flip(np.asarray(by_hand)))
    np.testing.assert_allclose(df["p_holm"], holm(df["p_signflip"].to_numpy()))
    assert "probe_rloo_1" in interactions_markdown(df)
    # one objective only: nothing to compare
    one = tiny_study_config(seeds=[0, 1], cells=["base", "probe_sft_1", "classifier_sft"])
    assert interaction_contrasts(res, one, names).empty
    assert "no two probe-trained cells" in interactions_markdown(interaction_contrasts(res, one, names))
