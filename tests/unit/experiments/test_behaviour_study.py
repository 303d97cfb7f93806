"""Studies of other behaviours on the tiny model: the built-in sentiment behaviour, your own from JSONL
(prompts + any Scorer object, or a spec file), pre-labelled rows with no scorer; toxicity's keys unchanged.

The tiny model writes random bytes, which neither toxicity nor sentiment scorers split into two classes:
where a study must label fresh samples, the non-ASCII test scorer stands in (as in tests/test_study.py),
and the test checks that every key and word still comes from the behaviour.
"""

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from probe_lens.behaviours import (
    BEHAVIOURS,
    Behaviour,
    BehaviourFileError,
    get_behaviour,
    load_behaviour_file,
    register_behaviour,
)
from probe_lens.cli import main
from probe_lens.data import BuildConfig
from probe_lens.experiments import Study, StudyConfig, make_config, report as R
from probe_lens.experiments.adapters import cell_settings
from probe_lens.experiments.metrics import evaluate_generation, expected_max_score, positive_rate, toxicity_rate
from probe_lens.experiments.runner import StudyFolderError, _prompt_plan
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config
from probe_lens.training.config import ClassifierSFTConfig

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "behaviours"
TOPICS = ("food", "travel", "work", "home")
FAST = dict(probes={"noise_floor_resamples": 2}, eval={"n_telemetry_prompts": 4})


@pytest.fixture
def registry(registries):
    """The behaviour registry, restored after the test."""
    return BEHAVIOURS


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _prompt_rows(n_provocative=80, n_neutral=20):
    """Enough prompts for the tiny study's plan (8 + 4 evaluation, a 60-prompt pool, 8 training prompts)."""
    rows = [
        {"text": f"Tell me what went wrong with {TOPICS[i % 4]} order {i}:", "tag": "invites", "topic": TOPICS[i % 4]}
        for i in range(n_provocative)
    ]
    rows += [
        {"text": f"Describe the weather on day {i}.", "tag": "plain", "topic": TOPICS[i % 4]} for i in range(n_neutral)
    ]
    return rows


def _curated_rows():
    bad = [
        "This was a disaster from start to finish.",
        "Worst service I have ever had.",
        "I am furious about it.",
        "Never again, a total waste of money.",
        "It broke on day one and nobody helped.",
        "Awful, just awful.",
    ]
    good = [
        "It arrived on time and works well.",
        "Thanks, that was helpful.",
        "The room was clean and quiet.",
        "Not bad at all, I would go again.",
        "The staff were friendly.",
        "Everything was fine.",
    ]
    return [{"text": t, "label": 1, "topic": TOPICS[i % 4]} for i, t in enumerate(bad)] + [
        {"text": t, "label": 0, "topic": TOPICS[i % 4]} for i, t in enumerate(good)
    ]


def _labelled_rows():
    """Pre-labelled (prompt, response, label) rows: two replies per provocative prompt, one per neutral one."""
    rude, polite = (
        [" Not my problem, stop whining.", " Go away, idiot."],
        [" Sorry about that, I will fix it.", " Thanks, glad to help."],
    )
    rows = []
    for i, p in enumerate(_prompt_rows()):
        if p["tag"] == "plain":
            rows.append(
                {"prompt": p["text"], "response": " Mild and sunny.", "label": 0, "tag": "neutral", "topic": p["topic"]}
            )
            continue
        rows.append({"prompt": p["text"], "response": rude[i % 2], "label": 1, "topic": p["topic"]})
        rows.append(
            {
                "prompt": p["text"],
                "response": polite[i % 2] if i % 3 else rude[(i + 1) % 2],
                "label": 0 if i % 3 else 1,
                "topic": p["topic"],
            }
        )
    return rows


# ---- the built-in sentiment behaviour ------------------------------------------------------------


@pytest.fixture(scope="module")
def sentiment_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("sentiment")
    cfg = tiny_study_config(behaviour="sentiment", cells=["base", "probe_sft_1", "classifier_dpo"], **FAST)
    study = Study(cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False)
    study.run()
    return study


def test_sentiment_study_takes_its_keys_from_the_behaviour(sentiment_study):
    out, keys = sentiment_study.out, get_behaviour("sentiment").metric_keys
    results = pd.read_csv(out / "results.csv")
    for role in ("rate", "mean", "expected_max", "probability", "probe_p"):
        assert results[keys[role]].notna().all(), keys[role]
    assert keys["rate"] == "eval/negativity_rate" and keys["probe_p"] == "eval/probe_p_negative"
    assert not [c for c in results.columns if "toxic" in c]
    assert (results["behaviour"] == "sentiment").all()
    metrics = pd.read_parquet(out / "metrics.parquet")
    assert "geometry/blocks.2.hook_resid_post/proj_negative" in metrics.columns
    assert "geometry/blocks.2.hook_resid_post/proj_not_negative" in metrics.columns
    assert metrics[keys["rate"]].notna().any() and not [c for c in metrics.columns if "toxic" in c]
    split = json.loads((out / "seeds" / "0" / "split.json").read_text())
    assert {"n_fit_negative", "n_onpolicy_negative"} <= set(split) and "n_fit_toxic" not in split
    meta = json.loads((out / "data" / "probe_pool" / "meta.json").read_text())
    assert meta["behaviour"]["name"] == "sentiment" and {"n_negative", "n_not_negative"} <= set(meta["counts"])
    for probe in ("logistic_L2", "ensemble2_L2", "massmean_L2"):  # the behaviour supplies the probes' word
        record = json.loads((out / "probes" / "seed0" / probe / "probe.json").read_text())
        assert record["metadata"]["label"] == "negative", probe
    # the study file and the run folder name the behaviour; its curated set is the sentiment one
    saved = json.loads((out / "study.json").read_text())
    assert saved["behaviour"] == "sentiment" and saved["eval"]["curated"] == "sentiment"
    assert json.loads((out / "behaviour.json").read_text())["metric_keys"] == keys
    assert results["probe/curated_auroc/logistic_L2"].between(0, 1).all()
    contrasts = pd.read_csv(out / "contrasts.csv")
    assert keys["rate"] in set(contrasts["metric"])


def test_sentiment_report_and_headline_use_the_behaviours_words(sentiment_study):
    out = sentiment_study.out
    page = (out / "report.html").read_text()
    assert 'id="fig-negativity"' in page and 'id="fig-toxicity"' not in page
    assert "<th>Negativity scorer</th>" in page and "Toxicity scorer" not in page
    assert "negative mean" in page and "not negative mean" in page and "toxic mean" not in page
    assert "negativity labels" in page and "toxicity labels" not in page  # figure subtitles
    headline = (out / "headline.md").read_text()
    assert "| negativity rate |" in headline and "probe-fit rows (negative)" in headline
    assert "toxic" not in headline
    # a report-only call, from the saved study file, renders the same words
    again = Study(
        StudyConfig.load(out / "study.json"),
        out,
        resume=True,
        scorer=non_ascii_scorer(),
        progress=False,
        export_png=False,
    )
    again.report()
    assert 'id="fig-negativity"' in (out / "report.html").read_text()


# ---- bring your own: prompts + any Scorer object --------------------------------------------------


def test_own_behaviour_from_jsonl_with_a_scorer_object_runs_a_study(tmp_path, registry):
    prompts = _write_jsonl(tmp_path / "prompts.jsonl", _prompt_rows())
    curated = _write_jsonl(tmp_path / "curated.jsonl", _curated_rows())
    scorer = non_ascii_scorer()
    own = Behaviour.from_jsonl(
        "complaints",
        prompts,
        positive_label="complaint",
        negative_label="no complaint",
        scorer=scorer,
        curated_path=curated,
        provocative_tag="invites",
        neutral_tag="plain",
    )
    register_behaviour(own)
    cfg = tiny_study_config(behaviour="complaints", cells=["base", "probe_sft_1"], **FAST)
    assert cfg.eval.curated == "complaints"
    study = Study(cfg, tmp_path / "run", model=tiny_model(n_layers=4), progress=False, export_png=False)
    assert study.scorer is scorer  # the behaviour's own scorer, no scorer= needed
    study.run()
    results = pd.read_csv(study.out / "results.csv")
    assert results["eval/complaints_rate"].notna().all() and results["eval/probe_p_complaint"].notna().all()
    assert results["probe/curated_auroc/logistic_L2"].between(0, 1).all()
    assert results["scorer"].str.contains("non-ascii-share").all()
    assert not [c for c in results.columns if "toxic" in c]
    # a report read back where the behaviour is not registered: the words come from behaviour.json
    BEHAVIOURS.unregister("complaints")
    record = json.loads((study.out / "behaviour.json").read_text())
    page = R.write_report(
        tmp_path / "again",
        results=results,
        metrics=pd.read_parquet(study.out / "metrics.parquet"),
        geometry=None,
        config={"behaviour": record},
    ).read_text()
    assert 'id="fig-complaints"' in page and "<th>Complaints scorer</th>" in page and "complaint mean" in page


# ---- bring your own: a spec file; pre-labelled rows with no scorer ---------------------------------


def _labelled_spec(tmp_path):
    _write_jsonl(tmp_path / "rows.jsonl", _labelled_rows())
    spec = tmp_path / "rude.yaml"
    spec.write_text(
        yaml.safe_dump(
            {"name": "rudeness", "positive_label": "rude", "negative_label": "polite", "labelled": "rows.jsonl"}
        )
    )
    return spec


def test_prelabelled_behaviour_from_a_spec_file_runs_what_it_can(tmp_path):
    spec = _labelled_spec(tmp_path)
    cfg = tiny_study_config(behaviour_file=str(spec), cells=["base", "probe_dpo_1", "probe_filtered_sft"], **FAST)
    assert cfg.behaviour == "rudeness" and cfg.eval.curated is None and cfg.behaviour_spec.prelabelled
    study = Study(cfg, tmp_path / "run", model=tiny_model(n_layers=4), progress=False, export_png=False)
    study.run()
    out = study.out
    meta = json.loads((out / "data" / "probe_pool" / "meta.json").read_text())
    assert meta["source"]["labelled"].endswith("rows.jsonl") and meta["scorer"]["name"] == "labelled"
    assert {"n_rude", "n_polite"} <= set(meta["counts"]) and meta["counts"]["n_examples"] == 120  # 60 prompts x 2
    results = pd.read_csv(out / "results.csv")
    keys = cfg.behaviour_spec.metric_keys
    assert keys["rate"] not in results.columns and keys["mean"] not in results.columns  # nothing labels fresh samples
    assert results[keys["probe_p"]].notna().all()
    assert results["probe/onpolicy_auroc/logistic_L2"].between(0, 1).all()
    assert set(results["cell"]) == {"base", "probe_dpo_1", "probe_filtered_sft"}  # the probe ranks, the probe filters
    page = (out / "report.html").read_text()
    assert 'id="fig-rudeness"' in page and "no eval/rudeness_rate" in page


def test_prelabelled_behaviour_refuses_what_needs_a_scorer(tmp_path):
    spec = _labelled_spec(tmp_path)
    with pytest.raises(ValueError, match=r"pre-labelled.*classifier_dpo.*Drop them \(--set cells="):
        Study(tiny_study_config(behaviour_file=str(spec)), tmp_path / "a", progress=False)
    with pytest.raises(ValueError, match="data_source must be 'auto'"):
        Study(
            tiny_study_config(behaviour_file=str(spec), cells=["base"], data_source="fresh"),
            tmp_path / "b",
            progress=False,
        )
    # a named scorer labels fresh samples: then every cell runs as for any behaviour
    Study(tiny_study_config(behaviour_file=str(spec), scorer="vader"), tmp_path / "c", progress=False)


def test_behaviour_file_forms_and_errors(tmp_path, registry):
    _write_jsonl(tmp_path / "prompts.jsonl", _prompt_rows())
    _write_jsonl(tmp_path / "curated.jsonl", _curated_rows())
    spec = {
        "name": "complaints",
        "positive_label": "complaint",
        "negative_label": "no complaint",
        "prompts": "prompts.jsonl",
        "scorer": "vader",
        "curated": "curated.jsonl",
        "threshold": 0.6,
        "provocative_tag": "invites",
        "neutral_tag": "plain",
    }
    (tmp_path / "b.json").write_text(json.dumps(spec))
    b = load_behaviour_file(tmp_path / "b.json")  # paths are relative to the spec's folder
    assert (b.name, b.scorer, b.threshold, len(b.load_curated())) == ("complaints", "vader", 0.6, 12)
    assert len(b.load_prompts()) == 100
    cfg = StudyConfig(behaviour_file=str(tmp_path / "b.json"))
    assert cfg.behaviour == "complaints" and cfg.eval.threshold == 0.6 and cfg.eval.curated == "complaints"
    assert StudyConfig.from_dict(cfg.to_dict()).behaviour_spec.name == "complaints"
    bad = {
        "extra key": ({**spec, "colour": "red"}, "unknown key"),
        "both forms": ({**spec, "labelled": "rows.jsonl"}, "not both"),
        "no scorer": ({k: v for k, v in spec.items() if k != "scorer"}, "needs a 'scorer'"),
        "scorer typo": ({**spec, "scorer": "vadr"}, "did you mean 'vader'"),
        "bad threshold": ({**spec, "threshold": 2}, "threshold"),
        "missing file": ({**spec, "prompts": "nope.jsonl"}, "no such file"),
    }
    for what, (d, match) in bad.items():
        (tmp_path / "x.yaml").write_text(yaml.safe_dump(d))
        with pytest.raises((BehaviourFileError, FileNotFoundError), match=match):
            load_behaviour_file(tmp_path / "x.yaml")
    (tmp_path / "x.yaml").write_text("name: [unclosed\n")
    with pytest.raises(BehaviourFileError, match="not valid YAML"):
        load_behaviour_file(tmp_path / "x.yaml")
    (tmp_path / "taken.json").write_text(json.dumps({**spec, "name": "sentiment"}))
    with pytest.raises(ValueError, match="name of a registered behaviour"):
        StudyConfig(behaviour_file=str(tmp_path / "taken.json"))
    with pytest.raises(ValueError, match="defines 'complaints'"):
        StudyConfig(behaviour="sentiment", behaviour_file=str(tmp_path / "b.json"))


def test_cli_behaviour_flags(tmp_path, capsys):
    assert main(["config", "--preset", "demo", "--behaviour", "sentiment"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["behaviour"] == "sentiment" and printed["eval"]["curated"] == "sentiment"
    spec = _labelled_spec(tmp_path)
    assert main(["config", "--behaviour-file", str(spec)]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["behaviour"] == "rudeness" and printed["behaviour_file"] == str(spec)
    for argv, match in (
        (["--behaviour", "sentimnt"], "did you mean 'sentiment'"),
        (["--behaviour-file", str(tmp_path / "missing.yaml")], "no such file"),
        (["--behaviour", "sentiment", "--behaviour-file", str(spec)], "defines 'rudeness'"),
    ):
        assert main(["config", *argv]) == 2
        err = capsys.readouterr().err
        assert err.startswith("probe-lens config: error:") and match in err and "Traceback" not in err
    (tmp_path / "broken.yaml").write_text("name: x\n")
    assert main(["reproduce", "--behaviour-file", str(tmp_path / "broken.yaml"), "--out", str(tmp_path / "r")]) == 2
    assert "missing key(s) ['positive_label', 'negative_label']" in capsys.readouterr().err


# ---- settings that follow the behaviour; toxicity unchanged ---------------------------------------


def test_threshold_and_curated_follow_the_behaviour(registry):
    own = Behaviour(
        name="strict",
        positive_label="bad",
        negative_label="good",
        scorer="vader",
        threshold=0.7,
        prompt_loader=get_behaviour("sentiment").load_prompts,
    )
    register_behaviour(own)
    cfg = StudyConfig(behaviour="strict")
    assert cfg.eval.threshold == 0.7 and cfg.eval.curated is None  # it has no curated set
    # the probe data's labels and the classifier-SFT filter use it too (not a fixed 0.5)
    assert cfg.data.threshold == 0.7 and cfg.data.decision_threshold == 0.7
    assert cell_settings(cfg, cfg.cell("classifier_sft")).decision_threshold == 0.7
    assert cell_settings(cfg, cfg.cell("probe_filtered_sft")).threshold == cfg.probe_filter_threshold
    assert StudyConfig.from_dict({"behaviour": "strict", "eval": {"threshold": 0.4}}).eval.threshold == 0.4
    mine = StudyConfig.from_dict(
        {"behaviour": "strict", "data": {"threshold": 0.3}, "classifier_sft": {"threshold": 0.2}}
    )
    assert (mine.data.threshold, mine.classifier_sft.threshold, mine.eval.threshold) == (0.3, 0.2, 0.7)
    assert StudyConfig.from_dict(cfg.to_dict()).data.threshold == 0.7  # saved resolved in study.json
    assert (
        BuildConfig().decision_threshold == 0.5 and ClassifierSFTConfig().decision_threshold == 0.5
    )  # outside studies
    with pytest.raises(ValueError, match="eval.curated must be 'auto' or null"):
        StudyConfig.from_dict({"behaviour": "strict", "eval": {"curated": "toxicity"}})
    with pytest.raises(ValueError, match="'auto' or 'sentiment'"):
        StudyConfig.from_dict({"behaviour": "sentiment", "eval": {"curated": "toxicity"}})
    with pytest.raises(ValueError, match="did you mean 'sentiment'"):
        StudyConfig(behaviour="sentimnt")


def test_toxicity_is_the_default_and_keeps_todays_names(tmp_path):
    cfg = StudyConfig()
    d = cfg.to_dict()
    assert (d["behaviour"], d["behaviour_file"], d["eval"]["curated"], d["eval"]["threshold"]) == (
        "toxicity",
        None,
        "toxicity",
        0.5,
    )
    out = evaluate_generation([0.9, 0.1, 0.6, 0.2], ["a b", "c d", "e f", "g h"], 2, "test")
    assert {
        "eval/toxicity_rate",
        "eval/mean_toxicity",
        "eval/expected_max_toxicity",
        "eval/toxicity_probability",
    } <= set(out)
    assert toxicity_rate is positive_rate and R.fig_toxicity_vs_step is R.fig_rate_vs_step
    assert expected_max_score([0.9, 0.1, 0.6, 0.2], 2) == pytest.approx(0.75)
    assert R.rate_metrics() == R.TOXICITY_METRICS
    # a run folder written before behaviours (no behaviour keys in study.json) is the same toxicity study
    Study(cfg, tmp_path, progress=False)
    saved = json.loads((tmp_path / "study.json").read_text())
    del saved["behaviour"], saved["behaviour_file"]
    (tmp_path / "study.json").write_text(json.dumps(saved))
    Study(cfg, tmp_path, resume=True, progress=False)
    with pytest.raises(StudyFolderError, match="differs in: .*behaviour"):
        Study(StudyConfig(behaviour="sentiment"), tmp_path, resume=True, progress=False)


@pytest.mark.parametrize(
    "spec, extra", [("service_complaints.yaml", []), ("rude_replies.yaml", ["cells=[base, probe_sft_1, probe_dpo_1]"])]
)
def test_example_behaviours_fit_the_demo_preset_as_the_readme_runs_them(spec, extra, tmp_path):
    cfg = make_config("demo", overrides=[f"behaviour_file={EXAMPLES / spec}", "n_probe_prompts=null", *extra])
    b = cfg.behaviour_spec
    assert cfg.behaviour == spec.removesuffix(".yaml") and b.description
    plan = _prompt_plan(cfg)
    # (>= 20: the 16 training prompts are all provocative now, train_data.neutral_share 0, and 20 are reserved)
    assert len(plan.pool) >= 20 and len(plan.eval_provocative) == 24 and len(plan.eval_neutral) == 16
    if b.prelabelled:
        assert len(b.scorer) == 152 and cfg.eval.curated is None
    else:
        assert b.scorer == "vader" and cfg.eval.curated == "service_complaints" and len(b.load_curated()) == 24
    Study(cfg, tmp_path / "run", progress=False)  # opens: nothing refused up front


def test_a_behaviour_with_too_few_prompts_for_the_sizes_is_refused_up_front(tmp_path):
    with pytest.raises(ValueError, match=r"n_probe_prompts=240 but only \d+ of behaviour 'sentiment'"):
        Study(make_config("quick", overrides=["behaviour=sentiment"]), tmp_path / "q", progress=False)
    with pytest.raises(ValueError, match="only 0 are left for the probe pool"):
        Study(make_config("paper", overrides=["behaviour=sentiment"]), tmp_path / "p", progress=False)
    assert not (tmp_path / "q").exists()
