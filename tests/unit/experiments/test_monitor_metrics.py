"""The field's monitor metrics: recall and false-positive rate at thresholds fixed once on the base model's
benign rows, by hand on synthetic scores and reused unchanged by every cell of a tiny study."""

import json

import numpy as np
import pandas as pd
import pytest

from probe_lens.experiments import Study
from probe_lens.experiments.monitor import base_thresholds, fixed_fpr_threshold, monitor_metrics
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config


def test_threshold_is_the_lowest_with_at_most_the_target_share_above():
    benign = np.arange(100) / 100  # 0.00 .. 0.99
    assert fixed_fpr_threshold(benign, 0.01) == 0.98  # one benign row (0.99) above it
    assert fixed_fpr_threshold(benign, 0.05) == 0.94  # five above it
    assert fixed_fpr_threshold([0.3, 0.2], 0.01) == 0.3  # fewer than 100 rows: nothing may pass
    with pytest.raises(ValueError, match="no benign"):
        fixed_fpr_threshold([], 0.01)
    with pytest.raises(ValueError, match="fpr"):
        fixed_fpr_threshold([0.1], 1.0)


def test_recall_and_fpr_on_synthetic_scores_equal_a_hand_computation():
    base = {
        "drift": {"__y__": np.array([0] * 60 + [1] * 4), "p": np.r_[np.arange(60) / 100, [0.1, 0.5, 0.6, 0.9]],
                  "retrained/blocks.1.hook_resid_post": np.zeros(64)},
        "curated": {"__y__": np.array([0] * 40 + [1] * 2), "p": np.r_[0.6 + np.arange(40) / 100, [0.2, 0.99]]},
    }  # fmt: skip
    record = base_thresholds(base)
    assert list(record["thresholds"]) == ["p"]  # re-fit probes change per cell: no fixed threshold
    assert record["n_benign"] == {"p": 100}
    # benign: 0.00 .. 0.99 pooled over both sets; 1%: 0.98, 5%: 0.94
    assert record["thresholds"]["p"] == {"0.01": 0.98, "0.05": 0.94}
    after = {
        "drift": {"__y__": np.array([0, 0, 0, 1, 1, 1, 1]), "p": np.array([0.1, 0.95, 0.99, 0.2, 0.95, 0.97, 0.99])},
        "curated": {"__y__": np.array([0, 1, 1]), "p": np.array([0.5, 0.96, 0.985])},
    }
    m = monitor_metrics(after, record)
    assert m["probe/onpolicy_recall_at_fpr01/p"] == 1 / 4  # 0.99 > 0.98
    assert m["probe/onpolicy_recall_at_fpr05/p"] == 3 / 4  # 0.95, 0.97, 0.99 > 0.94
    assert m["probe/onpolicy_fpr_at_fpr01/p"] == 1 / 3
    assert m["probe/onpolicy_fpr_at_fpr05/p"] == 2 / 3
    assert m["probe/curated_recall_at_fpr01/p"] == 1 / 2
    assert m["probe/curated_recall_at_fpr05/p"] == 1.0
    assert m["probe/curated_fpr_at_fpr05/p"] == 0.0
    assert m["probe/benign_fpr_at_fpr01/p"] == 1 / 4 and m["probe/benign_fpr_at_fpr05/p"] == 2 / 4


def test_the_hard_set_is_read_at_the_thresholds_but_never_sets_them():
    labels = "__y__"
    onpolicy = {labels: np.array([0, 0, 1]), "p": np.array([0.1, 0.2, 0.9])}
    curated = {labels: np.array([0, 1]), "p": np.array([0.3, 0.8])}
    hard = {labels: np.array([0, 0, 1]), "p": np.array([0.95, 0.97, 0.5])}  # hard negatives score high
    without = base_thresholds({"drift": onpolicy, "curated": curated})
    assert base_thresholds({"drift": onpolicy, "curated": curated, "curated_hard": hard}) == without
    m = monitor_metrics({"drift": onpolicy, "curated": curated, "curated_hard": hard}, without)
    assert m["probe/curated_hard_fpr_at_fpr01/p"] == 1.0  # both hard negatives above the base threshold (0.3)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("monitor")
    cfg = tiny_study_config(seeds=[0, 1], cells=["probe_sft_1", "base", "classifier_sft"])  # base is not first
    s = Study(cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False)
    s.run()
    return s


def _table(path):
    return {w: {k: np.asarray(v) for k, v in s.items()} for w, s in json.loads(path.read_text()).items()}


def test_thresholds_set_on_base_benign_rows_are_reused_in_every_cell(study):
    for seed in study.config.seeds:
        record = json.loads(study.folder.monitor_thresholds_json(seed).read_text())
        base_scores = _table(study.cell_dir("base", seed) / "probe_scores.json")
        expected = base_thresholds({w: {k: v for k, v in s.items() if not k.startswith("retrained/")}
                                    for w, s in base_scores.items()})  # fmt: skip
        assert record["thresholds"] == expected["thresholds"]
        assert set(record["thresholds"]) == set(study.tracked_probes()) | {
            n for n in base_scores["curated"] if "/m" in n
        }
        for cell in ("base", "probe_sft_1", "classifier_sft"):
            result = json.loads((study.cell_dir(cell, seed) / "eval.json").read_text())
            want = monitor_metrics(_table(study.cell_dir(cell, seed) / "probe_scores.json"), record)
            assert want and {k: result[k] for k in want} == want, cell
    results = pd.read_csv(study.out / "results.csv")
    single = study.probe_names()["single"][0]
    for col in (f"probe/curated_recall_at_fpr01/{single}", f"probe/benign_fpr_at_fpr05/{single}"):
        assert results[col].notna().all()
    base = results[results["cell"] == "base"]
    assert (base[f"probe/benign_fpr_at_fpr05/{single}"] <= 0.05).all()  # by construction on the base model


def test_a_resumed_cell_reads_the_saved_thresholds(study):
    path = study.folder.monitor_thresholds_json(0)
    record = json.loads(path.read_text())
    record["thresholds"] = {n: {t: 0.5 for t in v} for n, v in record["thresholds"].items()}
    path.write_text(json.dumps(record))
    saved = path.read_bytes()
    (study.cell_dir("probe_sft_1", 0) / "eval.json").unlink()
    Study(study.config, study.out, model=study.model, scorer=non_ascii_scorer(), resume=True, progress=False,
          export_png=False).run()  # fmt: skip
    assert path.read_bytes() == saved
    result = json.loads((study.cell_dir("probe_sft_1", 0) / "eval.json").read_text())
    scores = _table(study.cell_dir("probe_sft_1", 0) / "probe_scores.json")["curated"]
    single = study.probe_names()["single"][0]
    y, p = scores["__y__"], scores[single]
    assert result[f"probe/curated_recall_at_fpr01/{single}"] == float((p[y == 1] > 0.5).mean())


def test_headline_puts_the_primary_contrasts_first_and_never_says_resolved(study):
    text = (study.out / "headline.md").read_text()
    assert text.index("## Primary contrasts") < text.index("## Cosine drift against its control")
    assert text.index("## Cosine drift against its control") < text.index("## Yardsticks")
    assert "probe_sft_1 − classifier_sft" in text and "HKSJ" in text and "sign-flip p" in text and "I²" in text
    assert "probe_dpo_1 − classifier_dpo (curated_auroc) skipped" in text
    assert "Fixed across seeds" in text and "conditional on it" in text
    assert "resolved" not in text.lower()
    con = pd.read_csv(study.out / "contrasts.csv")
    prim = con[con["primary"]]
    assert len(prim) == 1 and prim["re_method"].iloc[0] == "DL+HKSJ"  # AUROC: within-seed DeLong variances
    assert np.isfinite(prim[["re_estimate", "re_ci_low", "re_ci_high", "i2", "p_signflip"]].to_numpy()).all()
    assert prim["p_signflip"].iloc[0] in (0.5, 1.0)  # two seeds
