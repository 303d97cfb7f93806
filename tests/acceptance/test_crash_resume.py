"""Crash and resume of the whole study (issue 15): SIGKILLed at a handful of points, resumed, identical.

``benchmarks/crash_sweep.py --ci`` runs the tiny study (base, probe-SFT, DPO and filtered-SFT cells,
a checkpoint after every step) once uninterrupted, then once more killed with SIGKILL at seven points
one after another (inside a data chunk write, before the probes' report, inside a probe-SFT checkpoint
write before its rename, at a DPO checkpoint, inside the final filtered-SFT checkpoint before
``latest.json``, between a cell's geometry and its ``eval.json``, and between ``results.csv`` and the
rest of the report), each attempt resuming the previous one's leftovers, and resumes it to the end.
The full sweep (about forty points, one study each) is ``benchmarks/crash_sweep.py`` (RESULTS.md).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

SWEEP = Path(__file__).resolve().parents[2] / "benchmarks" / "crash_sweep.py"


def _sweep_module():
    if "crash_sweep" not in sys.modules:  # benchmarks/ is no package: load the script as a module
        spec = importlib.util.spec_from_file_location("crash_sweep", SWEEP)
        mod = importlib.util.module_from_spec(spec)
        sys.modules["crash_sweep"] = mod
        spec.loader.exec_module(mod)
    return sys.modules["crash_sweep"]


@pytest.fixture(scope="module")
def ci_sweep(tmp_path_factory):
    """The CI sweep's outcome (its JSON) and its work folder (the reference run is kept there)."""
    work = tmp_path_factory.mktemp("crash")
    out = work / "outcome.json"
    r = subprocess.run(
        [sys.executable, str(SWEEP), "--ci", "--work", str(work / "runs"), "--keep", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.exists(), f"the sweep did not finish (exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return json.loads(out.read_text()), work / "runs", r.stdout


def test_killed_study_resumes_to_identical_results(ci_sweep):
    outcome, _, stdout = ci_sweep
    mod = _sweep_module()
    assert outcome["n_points"] == len(mod.CI_CHAIN) >= 5
    for o in outcome["outcomes"]:
        assert not o["problems"], "\n".join(o["problems"])
    # every attempt was killed (the point was reached), the last one finished, and the results match
    assert outcome["n_killed"] == outcome["n_points"], stdout
    assert outcome["n_resumed"] == outcome["n_identical"] == outcome["n_points"], stdout
    stages = {p["stage"] for o in outcome["outcomes"] for p in o["points"]}
    assert {"data", "probes", "checkpoint", "train dpo", "evaluate", "report"} <= stages


def _copy(ref: Path, dst: Path) -> Path:
    shutil.copytree(ref, dst)
    return dst


def test_comparison_sees_every_kind_of_difference(ci_sweep, tmp_path):
    """The comparison behind "identical" fails on a changed metric row, probe file or result, and not on timings."""
    _, runs, _ = ci_sweep
    mod = _sweep_module()
    ref = runs / "reference"
    assert mod.compare_runs(ref, _copy(ref, tmp_path / "same")) == []

    # timings differ between any two runs: left out
    got = _copy(ref, tmp_path / "timing")
    f = next(got.glob("cells/probe_sft_1/seed0/train/metrics.jsonl"))
    rows = [json.loads(l) for l in f.read_text().splitlines()]
    for r in rows:
        if "train/step_seconds" in r:
            r["train/step_seconds"] += 1.0
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert mod.compare_runs(ref, got) == []

    # a training metric off by more than 1e-9
    got = _copy(ref, tmp_path / "metric")
    f = got / "cells/classifier_dpo/seed0/train/metrics.jsonl"
    rows = [json.loads(l) for l in f.read_text().splitlines()]
    row = next(r for r in rows if "train/loss" in r)
    row["train/loss"] += 1e-6
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert any("classifier_dpo" in p and "train/loss" in p for p in mod.compare_runs(ref, got))

    # a metrics row missing (a resume that lost a step)
    got = _copy(ref, tmp_path / "row")
    f = got / "cells/classifier_sft/seed0/train/metrics.jsonl"
    f.write_text("".join(l + "\n" for l in f.read_text().splitlines()[:-1]))
    assert any("classifier_sft" in p and "rows" in p for p in mod.compare_runs(ref, got))

    # a probe file
    got = _copy(ref, tmp_path / "probe")
    st = next(got.glob("probes/seed0/*/*.safetensors"))
    data = bytearray(st.read_bytes())
    data[-1] ^= 1
    st.write_bytes(bytes(data))
    assert any(str(st.relative_to(got)) in p for p in mod.compare_runs(ref, got))

    # a result
    got = _copy(ref, tmp_path / "result")
    res = pd.read_csv(got / "results.csv")
    res.loc[0, "eval/toxicity_rate"] = res.loc[0, "eval/toxicity_rate"] + 0.01
    res.to_csv(got / "results.csv", index=False)
    assert any("eval/toxicity_rate" in p for p in mod.compare_runs(ref, got))


def test_kill_point_specs():
    mod = _sweep_module()
    assert mod.parse_point("os:replace@a.b:f@c:G.h~/.step_#3") == ("os:replace", ("a.b:f", "c:G.h"), "/.step_", 3)
    for bad in ("os:replace", "os:replace#0", "os:replace#x"):
        with pytest.raises(ValueError, match="kill point"):
            mod.parse_point(bad)
    names = [p.name for p in mod.POINTS]
    assert len(names) == len(set(names)) and all(n in names for n, _ in mod.CI_CHAIN)
    p = mod.Point("x", "m:f", n="last-1")
    assert p.resolve({"m:f": 5}) == 4 and p.resolve({}) is None
    assert mod.Point("x", "m:f", n="mid").resolve({"m:f": 5}) == 3
    assert mod.Point("x", "m:f", n=7).resolve({"m:f": 5}) is None


# ------------------------------------------------------------------ files a crash (or a full disk) can leave behind


def _study(out, **kw):
    from probe_lens.experiments.runner import Study
    from probe_lens.testing import non_ascii_scorer

    return Study(
        _sweep_module().study_config(_sweep_module().CI_CELLS),
        out,
        scorer=non_ascii_scorer(),
        progress=False,
        export_png=False,
        **kw,
    )


def test_a_corrupt_study_json_is_named(tmp_path):
    from probe_lens.experiments.runner import StudyFolderError

    out = tmp_path / "run"
    out.mkdir()
    (out / "study.json").write_text('{"preset": "tiny", "seeds": [0')  # truncated
    (out / "keep.txt").write_text("x")
    with pytest.raises(StudyFolderError, match=r"study\.json is corrupt.*--overwrite"):
        _study(out, resume=True)
    assert (out / "keep.txt").exists()  # nothing deleted without --overwrite
    (out / "study.json").write_text("[1, 2]")  # valid JSON, not a study
    with pytest.raises(StudyFolderError, match="not a study"):
        _study(out, resume=True)
    _study(out, overwrite=True)  # --overwrite starts again
    assert not (out / "keep.txt").exists() and json.loads((out / "study.json").read_text())["preset"] == "tiny"


def test_corrupt_derived_files_are_rebuilt(ci_sweep, tmp_path):
    """A truncated split.json / noise_floor.json / training scores file is rebuilt, the same as before."""
    _, runs, _ = ci_sweep
    ref = runs / "reference"
    got = _copy(ref, tmp_path / "run")
    files = ["seeds/0/split.json", "seeds/0/noise_floor.json", "seeds/0/train_data/scores.json"]
    for f in files:
        text = (got / f).read_text()
        (got / f).write_text(text[: len(text) // 2])
    import torch

    from probe_lens.testing import tiny_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the kernels of the reference run (its samples are redrawn below)
    try:
        study = _study(got, resume=True, model=tiny_model(n_layers=4))
        study.report()  # reads the split and the noise floor: rebuilt from the saved data and probes
        study.train_data(0)  # the training samples and their scores: rebuilt
    finally:
        torch.set_num_threads(threads)
    for f in files:
        assert _sweep_module()._close(json.loads((got / f).read_text()), json.loads((ref / f).read_text()), 1e-9), f


def test_probe_data_of_one_class_is_a_user_error(tmp_path):
    from probe_lens.experiments.runner import Study, StudyDataError
    from probe_lens.scorers.base import Scorer
    from probe_lens.testing import tiny_model, tiny_study_config

    class Clean(Scorer):
        name, version = "always-clean", "test"

        def _score(self, texts):
            return [0.0] * len(texts)

    cfg = tiny_study_config(cells=["base"], n_probe_prompts=8)
    study = Study(cfg, tmp_path / "run", model=tiny_model(n_layers=4), scorer=Clean(), progress=False, export_png=False)
    with pytest.raises(StudyDataError, match="one class only") as e:
        study.seed_split(0)
    assert isinstance(e.value, ValueError)  # the CLI reports ValueErrors as user errors (exit 2)
