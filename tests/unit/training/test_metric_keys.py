"""Metric keys: every key the library writes reads back as what it says (probe_lens.training.metric_keys)."""

import pytest

from probe_lens.training import metric_keys as K
from probe_lens.training.metric_keys import MetricKey

HOOK = "blocks.6.hook_resid_post"

# (key as written in metrics.jsonl / results.csv, family, name, subject, member, interval)
KEYS = [
    ("probe/auroc_frozen/logistic_L6", "probe", "auroc_frozen", "logistic_L6", None, None),
    ("probe/auroc_heldout/ensemble3_L6/m2", "probe", "auroc_heldout", "ensemble3_L6/m2", 2, None),
    (f"curated/auroc_retrained/{HOOK}", "curated", "auroc_retrained", HOOK, None, None),
    ("drift/cosine/ensemble3_L6/m0", "drift", "cosine", "ensemble3_L6/m0", 0, None),
    ("drift/cosine_floor/massmean_L6", "drift", "cosine_floor", "massmean_L6", None, None),
    (f"geometry/{HOOK}/proj_toxic", "geometry", "proj_toxic", HOOK, None, None),
    (f"geometry/{HOOK}/pca_var_top5", "geometry", "pca_var_top5", HOOK, None, None),
    ("probe/onpolicy_auroc/logistic_L9", "probe", "onpolicy_auroc", "logistic_L9", None, None),
    (f"probe/curated_auroc_retrained/{HOOK}", "probe", "curated_auroc_retrained", HOOK, None, None),
    ("probe/onpolicy_auroc/logistic_L9/ci_low", "probe", "onpolicy_auroc", "logistic_L9", None, "ci_low"),
    ("probe/curated_auroc_trained_against", "probe", "curated_auroc_trained_against", None, None, None),
    ("eval/toxicity_rate", "eval", "toxicity_rate", None, None, None),
    ("baseline/auroc_prompt_topic", "baseline", "auroc_prompt_topic", None, None, None),
    ("step", "", "step", None, None, None),
]


@pytest.mark.parametrize(("key", "family", "name", "subject", "member", "interval"), KEYS)
def test_every_key_parses_into_its_parts_and_back(key, family, name, subject, member, interval):
    k = MetricKey.parse(key)
    assert (k.family, k.name, k.subject, k.member, k.interval) == (family, name, subject, member, interval)
    assert str(k) == key


def test_builders_write_the_documented_keys():
    assert str(K.telemetry_auroc("drift", "frozen", "p")) == "probe/auroc_frozen/p"
    assert str(K.telemetry_auroc("curated", "retrained", HOOK)) == f"curated/auroc_retrained/{HOOK}"
    assert str(K.cosine(K.member_name("ens", 1))) == "drift/cosine/ens/m1"
    assert str(K.geometry(HOOK, "resid_norm")) == f"geometry/{HOOK}/resid_norm"
    assert str(K.tracked_auroc("onpolicy", "p").with_interval("ci_high")) == "probe/onpolicy_auroc/p/ci_high"
    assert str(K.study_summary("onpolicy", "heldout_avg")) == "probe/onpolicy_auroc_heldout_avg"
    with pytest.raises(ValueError, match="AUROC kind"):
        K.telemetry_auroc("drift", "stale", "p")
    with pytest.raises(ValueError, match="interval bound"):
        K.cosine("p").with_interval("ci_mid")
    with pytest.raises(ValueError, match="non-empty string"):
        MetricKey.parse("")


def test_what_a_key_says():
    assert MetricKey.parse("probe/auroc_heldout/ens/m3").auroc_kind == "heldout"
    assert MetricKey.parse("probe/onpolicy_auroc/p").auroc_kind is None
    assert MetricKey.parse("probe/onpolicy_auroc/ens/m3").tracked_set == "onpolicy"
    assert MetricKey.parse("probe/onpolicy_auroc/ens/m3").probe == "ens"
    assert MetricKey.parse("probe/onpolicy_auroc_retrained/h").tracked_set is None
    assert MetricKey.parse("probe/onpolicy_auroc_trained_against").tracked_set is None
    assert K.member_index("ens/m12") == 12 and K.member_index("m1") is None and K.member_index("ens/mx") is None
    assert K.parent_probe("ens/m0") == "ens" and K.parent_probe("logistic_L6") == "logistic_L6"


def test_telemetry_keys_become_a_studys_role_free_names():
    frozen, heldout = MetricKey.parse("probe/auroc_frozen/p"), MetricKey.parse("curated/auroc_heldout/ens/m1")
    assert str(K.as_tracked(frozen, "onpolicy")) == "probe/onpolicy_auroc/p"
    assert str(K.as_tracked(heldout, "onpolicy")) == "probe/curated_auroc/ens/m1"
    retrained = MetricKey.parse(f"probe/auroc_retrained/{HOOK}")
    assert str(K.as_tracked(retrained, "onpolicy")) == f"probe/onpolicy_auroc_retrained/{HOOK}"
    geometry = MetricKey.parse(f"geometry/{HOOK}/resid_norm")
    assert K.as_tracked(geometry, "onpolicy") is geometry


def test_score_table_names():
    assert K.retrained_hook(K.retrained_score_name(HOOK)) == HOOK
    assert K.retrained_hook("logistic_L6") is None
    assert str(K.score_key("drift", "p", trained={"p"})) == "probe/auroc_frozen/p"
    assert str(K.score_key("curated", "q", trained={"p"})) == "curated/auroc_heldout/q"
    assert str(K.score_key("drift", K.retrained_score_name(HOOK))) == f"probe/auroc_retrained/{HOOK}"
