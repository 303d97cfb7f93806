"""``probe-lens`` through ``main([...])``: every subcommand's happy path and error path, on the tiny model.

The study runs on ``--model probe-lens-tiny:4`` (the random-init tiny model) with the non-ASCII test
scorer standing in for the output classifier (patched in: study files only name real scorers).
"""

import io
import json
import shutil
from contextlib import redirect_stdout

import pandas as pd
import pytest
import yaml

from probe_lens import cli
from probe_lens.cli import main
from probe_lens.testing import non_ascii_scorer, tiny_study_config

CELLS = ["base", "probe_sft_1"]


@pytest.fixture(scope="module", autouse=True)
def _test_scorer():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("probe_lens.experiments.runner.get_scorer", lambda name="auto", **kw: non_ascii_scorer())
        yield


# the tiny study, cut further: the CLI is under test here, not the study (tests/test_study.py)
FAST = dict(
    cells=CELLS,
    telemetry_every=0,
    probe_sft={"max_steps": 1},
    probes={"noise_floor_resamples": 2},
    eval={"n_curated": 8, "n_telemetry_prompts": 2, "n_provocative": 4},
    data={"samples_per_prompt": 3},  # per-seed pools: 2 leave seed 0's on-policy rows without a positive
)


def _study_file(folder, **overrides):
    d = tiny_study_config(**{**FAST, **overrides}).to_dict()
    d["model"] = "probe-lens-tiny:4"
    f = folder / "study.yaml"
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(f)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished tiny study made by `probe-lens reproduce`; returns (study file, run folder, stdout)."""
    root = tmp_path_factory.mktemp("cli")
    f, out = _study_file(root, keep_checkpoints=True), root / "run"
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["reproduce", "--config", f, "--out", str(out), "--no-progress"])
    assert rc == 0, buf.getvalue()
    return f, out, buf.getvalue()


def _err(capsys):
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


# ------------------------------------------------------------------ happy paths


def test_reproduce_runs_the_study(finished):
    f, out, stdout = finished
    results = pd.read_csv(out / "results.csv")
    assert sorted(results["cell"]) == sorted(CELLS)
    assert "report:" in stdout and (out / "report.html").exists()


def test_config_prints_a_study_file(capsys, tmp_path):
    assert main(["config", "--preset", "demo", "--set", "probe_sft.max_steps=3"]) == 0
    d = yaml.safe_load(capsys.readouterr().out)
    assert d["preset"] == "demo" and d["probe_sft"]["max_steps"] == 3


def test_demo_on_a_finished_folder_only_reports(finished, capsys):
    f, out, _ = finished
    stamp = {p: p.stat().st_mtime_ns for p in out.glob("cells/*/seed0/eval.json")}
    assert main(["demo", "--config", f, "--out", str(out), "--no-progress"]) == 0
    assert "probe pool:" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in out.glob("cells/*/seed0/eval.json")} == stamp


def test_build_data_and_fit_probes_on_a_run_folder(finished, capsys):
    _, out, _ = finished
    assert main(["build-data", "--out", str(out)]) == 0  # the folder's own study.json: no flags needed
    counts = json.loads(capsys.readouterr().out)
    assert counts["n_examples"] > 0 and (out / "data") in __import__("pathlib").Path(counts["folder"]).parents
    assert main(["fit-probes", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("probes/seed0:") and "logistic_L2" in printed


def test_train_prints_each_cell(finished, capsys):
    _, out, _ = finished
    assert main(["train", "--out", str(out), "--cell", "base", "--seed", "0"]) == 0
    assert capsys.readouterr().out.startswith("base seed 0: toxicity rate 0.")


def test_train_prints_a_missing_value_as_na(finished, capsys, monkeypatch):
    _, out, _ = finished
    monkeypatch.setattr(
        "probe_lens.experiments.runner.Study.run_cell", lambda self, cell, seed: {"eval/toxicity_rate": None}
    )
    assert main(["train", "--out", str(out), "--cell", "base"]) == 0
    assert "base seed 0: toxicity rate n/a" in capsys.readouterr().out


def test_evaluate_picks_up_a_cell_whose_evaluation_did_not_finish(finished, capsys, tmp_path):
    _, out, _ = finished
    run = tmp_path / "run"
    shutil.copytree(out, run)
    cell = run / "cells" / "probe_sft_1" / "seed0"
    before = json.loads((cell / "eval.json").read_text())
    geometry = json.loads((cell / "geometry.json").read_text())
    (cell / "eval.json").unlink()
    (cell / "geometry.json").unlink()
    assert main(["evaluate", "--out", str(run), "--no-progress"]) == 0
    assert "evaluated 1 cell(s)" in capsys.readouterr().out
    after = json.loads((cell / "eval.json").read_text())
    # evaluated from the final checkpoint: the same numbers as the uninterrupted evaluation, and the same
    # reference direction for the geometry
    for k, v in before.items():
        if isinstance(v, float) and (k.startswith(("probe/", "eval/", "drift/")) or "/mean_diff_cos_orig" in k):
            assert after[k] == pytest.approx(v, rel=1e-6, abs=1e-9, nan_ok=True), k
    again = json.loads((cell / "geometry.json").read_text())
    for part in ("before", "after"):
        for hook, pts in geometry[part].items():
            assert again[part][hook]["x_dir"] == pytest.approx(pts["x_dir"], rel=1e-6, abs=1e-6)


def test_report_on_a_run_folder(finished, capsys):
    _, out, _ = finished
    (out / "report.html").unlink()
    assert main(["report", "--out", str(out)]) == 0
    assert (out / "report.html").exists() and "report:" in capsys.readouterr().out


# ------------------------------------------------------------------ error paths


def test_config_errors(capsys, tmp_path):
    assert main(["config", "--set", "probes.C=abc"]) == 2
    err = _err(capsys)
    assert err.startswith("probe-lens config: error: bad value") and "probes.C" in err
    assert main(["config", "--set", "seeds=[0,"]) == 2
    assert "cannot parse a --set value as YAML" in _err(capsys)
    assert main(["config", "--preset", "fast"]) == 2
    assert "unknown preset 'fast'" in _err(capsys)
    bad_yaml, bad_json = tmp_path / "s.yaml", tmp_path / "s.json"
    bad_yaml.write_text("probes: [1, 2\n")
    bad_json.write_text('{"probes": ')
    assert main(["config", "--config", str(bad_yaml)]) == 2
    assert f"cannot parse {bad_yaml} as YAML" in _err(capsys)
    assert main(["config", "--config", str(bad_json)]) == 2
    assert f"{bad_json} is not valid JSON" in _err(capsys)
    assert main(["config", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "no config file" in _err(capsys)


def test_reproduce_refuses_a_folder_holding_another_study(finished, capsys):
    f, out, _ = finished
    assert main(["reproduce", "--config", f, "--out", str(out), "--set", "probe_sft.max_steps=3"]) == 2
    err = _err(capsys)
    assert "holds a different study" in err and "--overwrite" in err


def test_reproduce_with_an_unreachable_model_is_one_error_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(
        [
            "reproduce",
            "--preset",
            "demo",
            "--model",
            "google/gemma-3-1b-pt",
            "--out",
            str(tmp_path / "g"),
            "--no-progress",
        ]
    )
    assert rc == 2
    err = _err(capsys)
    assert err.startswith("probe-lens reproduce: error: could not load 'google/gemma-3-1b-pt'")
    assert "--model embedded" in err


def test_demo_bad_flag_value(capsys, tmp_path):
    assert main(["demo", "--seeds", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--seeds must be >= 1" in _err(capsys)


def test_build_data_missing_config_file(capsys, tmp_path):
    assert main(["build-data", "--config", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "b")]) == 2
    assert "no config file" in _err(capsys)


def test_fit_probes_names_a_truncated_probe_file(finished, capsys, tmp_path):
    _, out, _ = finished
    run = tmp_path / "run"
    shutil.copytree(out, run)
    probe_json = next((run / "probes").glob("**/probe.json"))
    probe_json.write_text(probe_json.read_text()[:40])
    assert main(["fit-probes", "--out", str(run)]) == 2
    err = _err(capsys)
    assert str(probe_json) in err and "not valid JSON" in err


def test_train_unknown_cell_or_seed_lists_the_valid_ones(finished, capsys):
    _, out, _ = finished
    assert main(["train", "--out", str(out), "--cell", "probe_ppo"]) == 2
    assert "unknown --cell probe_ppo; this study's cells are: base, probe_sft_1" in _err(capsys)
    assert main(["train", "--out", str(out), "--seed", "7"]) == 2
    assert "--seed 7 is not a seed of this study; its seeds are: 0" in _err(capsys)


@pytest.mark.parametrize("command", ["evaluate", "report"])
def test_later_steps_on_a_folder_without_a_study(command, capsys, tmp_path):
    out = tmp_path / "never_ran"
    assert main([command, "--out", str(out)]) == 2
    assert f"{out} holds no study (no study.json), so there is nothing to {command}" in _err(capsys)
    assert not out.exists()  # nothing was created


# ------------------------------------------------------------------ interrupts, internal errors, --debug


def test_ctrl_c_exits_130_and_says_how_to_resume(capsys, monkeypatch):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_reproduce", interrupted)
    assert main(["reproduce"]) == 130
    assert "probe-lens reproduce: interrupted; rerun the same command with --resume to continue" in _err(capsys)
    with pytest.raises(KeyboardInterrupt):
        main(["reproduce", "--debug"])


def test_an_internal_bug_is_reported_as_one_not_hidden(capsys, monkeypatch):
    def buggy(args):
        return {}["missing"].value

    monkeypatch.setattr(cli, "cmd_report", buggy)
    assert main(["report", "--out", "x"]) == 1  # (report reads the study in --out: it needs one)
    err = _err(capsys)
    assert "probe-lens report: internal error (please report): KeyError: 'missing'" in err and "--debug" in err
    with pytest.raises(KeyError):
        main(["report", "--out", "x", "--debug"])
    monkeypatch.setenv("PROBE_LENS_DEBUG", "1")
    with pytest.raises(KeyError):
        main(["report", "--out", "x"])


def test_a_full_disk_is_a_user_error(capsys, monkeypatch):
    import errno

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cli, "cmd_build_data", full)
    assert main(["build-data"]) == 2
    assert "the disk is full" in _err(capsys)


def test_set_probes_C_cv_builds_and_runs_a_study(tmp_path):
    """`--set probes.C=cv` (a TypeError in config validation before the study redesign) runs a tiny study."""
    f, out = _study_file(tmp_path), tmp_path / "run"
    buf = io.StringIO()
    with redirect_stdout(buf):
        # 5-fold CV needs 5 positives among the fit rows: the tiny model at threshold 0.5 gives them
        args = ["--set", "probes.C=cv", "--set", "data.threshold=0.5", "--set", "data.samples_per_prompt=4"]
        rc = main(["reproduce", "--config", f, *args, "--out", str(out), "--no-progress"])
    assert rc == 0, buf.getvalue()
    assert json.loads((out / "study.json").read_text())["probes"]["C"] == "cv"
    assert json.loads((out / "probes" / "seed0" / "logistic_L2" / "probe.json").read_text())["params"]["C"] == "cv"
    assert pd.read_csv(out / "results.csv")["probe/curated_auroc/logistic_L2"].notna().all()


def test_resume_reads_the_folders_study(finished, capsys):
    """`reproduce --out X --resume` continues X's own study (its study.json), as `train --out X` does."""
    _, out, _ = finished
    assert main(["reproduce", "--out", str(out), "--resume", "--no-progress"]) == 0
    assert "report:" in capsys.readouterr().out
