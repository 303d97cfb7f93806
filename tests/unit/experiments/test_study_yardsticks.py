"""Curated yardsticks in a study (issue 23): the lexical baselines computed once per curated set and printed
in headline.md, the lexically hard set scored for every tracked probe in every cell and at every telemetry
step, AUROC per row kind; checked against scikit-learn's roc_auc_score on the rows the study saved."""

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from probe_lens.behaviours import Behaviour, register_behaviour
from probe_lens.data.curated import load_curated
from probe_lens.experiments.study_data import curated_rows
from probe_lens.experiments.yardsticks import BASELINES, lexical_baselines
from probe_lens.testing import non_ascii_scorer, run_tiny_study, tiny_study_config
from probe_lens.training.metric_keys import MetricKey, causal_key, evasion_key, kind_auroc, tracked_auroc

FAST = dict(probes={"noise_floor_resamples": 2}, eval={"n_telemetry_prompts": 4, "n_curated": 24})


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    cfg = tiny_study_config(cells=["base", "probe_sft_1"], **FAST)
    return run_tiny_study(cfg, tmp_path_factory.mktemp("yardsticks"))


def _rows_by_id(name="toxicity"):
    return {r.id: r for r in load_curated(name, version=2)}


def test_lexical_baselines_are_computed_once_per_set_and_shown_in_the_headline(study):
    records = json.loads((study.out / "yardsticks.json").read_text())
    assert set(records) == {"curated", "curated_hard"}
    rows = _rows_by_id()
    headline = (study.out / "headline.md").read_text()
    assert "## Curated yardsticks" in headline and "A bag of words still separates the hard rows" in headline
    for which, rec in records.items():
        assert set(rec["baselines"]) == set(BASELINES) and rec["rows"] == len(rec["ids"]) == 24
        mine = [rows[i] for i in rec["ids"]]
        y = [r.label for r in mine]
        # independent oracles for the two baselines that need no fitting
        assert rec["baselines"]["length"] == pytest.approx(roc_auc_score(y, [len(r.text) for r in mine]))
        assert rec["baselines"]["classifier"] == pytest.approx(
            roc_auc_score(y, non_ascii_scorer().score([r.text for r in mine]))
        )
        for v in rec["baselines"].values():
            assert f"{v:.3f}" in headline
    assert all(
        rows[i].kind in {"implicit_toxic", "second_person_toxic", "lexical_trap", "matched_negative"}
        for i in records["curated_hard"]["ids"]
    )
    assert {rows[i].kind for i in records["curated"]["ids"]} == {"toxic", "clean", "hard_negative"}  # v1, as before


def test_the_baselines_are_read_back_not_recomputed(study):
    class Refuses:
        def score(self, texts):
            raise AssertionError("the cached baselines were recomputed")

    again = lexical_baselines(study.out, study.curated_rows, Refuses(), "toxicity")
    assert again == json.loads((study.out / "yardsticks.json").read_text())


def test_every_tracked_probe_has_a_curated_hard_auroc_in_every_cell(study):
    results = pd.read_csv(study.out / "results.csv")
    metrics = pd.read_parquet(study.out / "metrics.parquet")
    assert set(results["cell"]) == {"base", "probe_sft_1"}
    for probe in study.tracked_probes():
        key = str(tracked_auroc("curated_hard", probe))
        assert results[key].between(0, 1).all(), key
        measured = metrics[str(tracked_auroc("curated", probe))].notna()  # the telemetry rows (not loss-only ones)
        assert measured.sum() >= 3 and metrics.loc[measured, key].notna().all(), key  # every step of every cell
        assert results[str(MetricKey.parse(key).with_interval("ci_low"))].notna().all()
    for _, row in results.iterrows():  # the AUROC is the one of the saved scores (sklearn as the oracle)
        saved = json.loads((study.out / "cells" / row["cell"] / "seed0" / "probe_scores.json").read_text())[
            "curated_hard"
        ]
        for probe in study.tracked_probes():
            assert row[f"probe/curated_hard_auroc/{probe}"] == pytest.approx(
                roc_auc_score(saved["__y__"], saved[probe])
            )
    con = pd.read_csv(study.out / "contrasts_curated_hard.csv")
    assert set(con["metric"]) >= {"probe/curated_hard_auroc/logistic_L2", "probe/curated_hard_auroc/massmean_L2"}


def test_auroc_per_kind_matches_sklearn(study):
    records = json.loads((study.out / "yardsticks.json").read_text())
    rows = _rows_by_id()
    results = pd.read_csv(study.out / "results.csv").set_index("cell")
    saved = json.loads((study.out / "cells" / "probe_sft_1" / "seed0" / "probe_scores.json").read_text())
    for which in ("curated", "curated_hard"):
        kinds = np.array([rows[i].kind for i in records[which]["ids"]])
        y, s = np.array(saved[which]["__y__"]), np.array(saved[which]["massmean_L2"])
        for kind in set(kinds):
            mine = kinds == kind
            keep = mine | (y != y[mine][0]) if len(set(y[mine])) == 1 else mine
            got = results.loc["probe_sft_1", str(kind_auroc(which, kind, "massmean_L2"))]
            assert got == pytest.approx(roc_auc_score(y[keep], s[keep])), (which, kind)


# ---- which rows, without a study ---------------------------------------------------------------------


def test_curated_rows_default_version_and_hard_set():
    cfg = tiny_study_config(eval={"n_curated": None})
    sets = curated_rows(cfg, cfg.behaviour_spec)
    assert [r.id for r in sets["curated"]] == [r.id for r in load_curated("toxicity")]  # v1: numbers unchanged
    assert [r.id for r in sets["curated_hard"]] == [r.id for r in load_curated("toxicity", version=2, subset="hard")]
    cfg2 = tiny_study_config(eval={"n_curated": None, "curated_version": 2, "curated_hard": False})
    sets2 = curated_rows(cfg2, cfg2.behaviour_spec)
    assert list(sets2) == ["curated"] and len(sets2["curated"]) == len(load_curated("toxicity", version=2))


def test_a_behaviour_files_own_kinds_form_its_hard_set(tmp_path, registries):
    topics = ("a", "b", "c")
    rows = [{"text": f"plainly bad thing {i}", "label": 1, "topic": topics[i % 3]} for i in range(6)]
    rows += [{"text": f"fine thing {i}", "label": 0, "topic": topics[i % 3]} for i in range(6)]
    rows += [{"text": f"quietly cruel {i}", "label": 1, "kind": "implicit", "topic": topics[i % 3]} for i in range(4)]
    rows += [
        {"text": f"the word bad, quoted {i}", "label": 0, "kind": "lexical_trap", "topic": topics[i % 3]}
        for i in range(4)
    ]
    curated = tmp_path / "curated.jsonl"
    curated.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "".join(json.dumps({"text": f"Say something {i}:", "tag": "provocative"}) + "\n" for i in range(4))
    )
    register_behaviour(
        Behaviour.from_jsonl(
            "mine",
            prompts,
            positive_label="bad",
            negative_label="fine",
            scorer=non_ascii_scorer(),
            curated_path=curated,
        ),
        replace=True,
    )
    cfg = tiny_study_config(behaviour="mine", eval={"n_curated": None})
    sets = curated_rows(cfg, cfg.behaviour_spec)
    assert len(sets["curated"]) == 20 and {r.kind for r in sets["curated_hard"]} == {"implicit", "lexical_trap"}
    with pytest.raises(ValueError, match="has no version 2"):
        tiny_study_config(behaviour="mine", eval={"curated_version": 2})
    with pytest.raises(ValueError, match="curated_version must be 1 or 2"):
        tiny_study_config(eval={"curated_version": 3})


def test_new_keys_round_trip_and_say_what_they_are():
    hard = tracked_auroc("curated_hard", "logistic_L2")
    assert str(hard) == "probe/curated_hard_auroc/logistic_L2" and hard.tracked_set == "curated_hard"
    by_kind = kind_auroc("curated_hard", "lexical_trap", "ensemble3_L6/m0")
    assert MetricKey.parse(str(by_kind)).curated_kind == ("curated_hard", "lexical_trap")
    assert by_kind.tracked_set is None and by_kind.member == 0
    for key in (by_kind, causal_key("steer_slope", "massmean_L6", base=True), evasion_key("share_on_probe", "x/m1")):
        assert str(MetricKey.parse(str(key))) == str(key)
    assert causal_key("steer_slope", "p", base=True).on_base and not causal_key("steer_slope", "p").on_base
