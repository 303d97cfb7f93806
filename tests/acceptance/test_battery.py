"""The hostile-input battery (issue 26, deliverable 1) as a test module: each case breaks a copy of a
finished tiny study (or the command line), runs the CLI, and checks the exit code, the words of the
message, that no traceback reached the user, and that the run folder's files are unchanged.

One tiny study (``probe-lens-tiny:4``, two cells, one step) is made once by ``probe-lens reproduce``;
every case works on its own copy. Cases the library catches without a run folder (probe files,
reference sets, labelled rows, generation arguments) are in ``test_library_inputs`` below.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import shutil
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

import pytest
import yaml

from probe_lens.cli import main
from probe_lens.experiments.run_folder import LOCK_NAME, unlock_folder
from probe_lens.testing import non_ascii_scorer, tiny_study_config

CELLS = ["base", "probe_sft_1"]
FAST = dict(
    cells=CELLS,
    telemetry_every=0,
    probe_sft={"max_steps": 1},
    probes={"noise_floor_resamples": 2},
    eval={"n_curated": 8, "n_telemetry_prompts": 2, "n_provocative": 4},
    data={"samples_per_prompt": 3},  # per-seed pools: 2 leave seed 0's on-policy rows without a positive
)


@pytest.fixture(scope="module", autouse=True)
def _test_scorer():
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("probe_lens.experiments.runner.get_scorer", lambda name="auto", **kw: non_ascii_scorer())
        mp.setenv("HF_HUB_OFFLINE", "1")  # an unknown model name is unknown here, as in CI
        yield


def _study_file(folder: Path, name: str = "study.yaml", **overrides) -> str:
    d = tiny_study_config(**{**FAST, **overrides}).to_dict()
    d["model"] = "probe-lens-tiny:4"
    f = folder / name
    f.write_text(yaml.safe_dump(d, sort_keys=False))
    return str(f)


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[str, Path]:
    """(study file, run folder) of a finished tiny study."""
    root = tmp_path_factory.mktemp("battery")
    f, out = _study_file(root), root / "run"
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["reproduce", "--config", f, "--out", str(out), "--no-progress"]) == 0, buf.getvalue()
    unlock_folder(out)
    return f, out


def _snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file() and p.name != LOCK_NAME
    }


@dataclasses.dataclass
class Case:
    """``argv`` with ``{study}``, ``{run}``, ``{new}``, ``{dir}`` filled in; ``breaks(run, dir)`` damages the copy first."""

    argv: list[str]
    words: list[str]
    code: int = 2
    breaks: Callable[[Path, Path], None] | None = None
    may_write: tuple[str, ...] = ()
    """Files the command may rewrite before it stops (a report's tables, rebuilt from the same results)."""


def _truncate(rel: str) -> Callable[[Path, Path], None]:
    def breaks(run: Path, _: Path) -> None:
        f = run / rel
        f.write_bytes(f.read_bytes()[: len(f.read_bytes()) // 2])

    return breaks


def _corrupt_metrics_middle(run: Path, _: Path) -> None:
    (f,) = run.glob("cells/probe_sft_1/seed0/train/metrics.jsonl")
    lines = f.read_text().splitlines()
    lines.insert(0, '{"step": 1, "lo')  # a cut-off line followed by whole ones: not a crash's last line
    f.write_text("\n".join(lines) + "\n")


def _write_config(name: str, **overrides) -> Callable[[Path, Path], None]:
    return lambda run, d: _study_file(d, name, **overrides) and None


REPORT_TABLES = ("results.csv", "results.parquet", "summary.csv", "summary.md", "headline.md", "contrasts.csv")

CASES: dict[str, Case] = {
    # row 1: a resume that would delete; an overwrite whose new study is invalid
    "resume with overwrite": Case(["reproduce", "--config", "{study}", "--out", "{run}", "--resume", "--overwrite"],
                                  ["--resume", "--overwrite"]),
    "overwrite with a layer the model lacks": Case(
        ["reproduce", "--config", "{dir}/bad.yaml", "--out", "{run}", "--overwrite"], ["has 4 layers"],
        breaks=_write_config("bad.yaml", probes={"layer": 5, "heldout_layers": [1, 3]}, data={"hooks": [1, 2, 3, 5]})),
    "overwrite with a model that cannot be found": Case(
        ["reproduce", "--config", "{study}", "--out", "{run}", "--overwrite", "--model", "no-such-org/no-such-model"],
        ["--overwrite would replace", "cannot be found"]),
    # row 13: every value checked before anything is written
    "negative temperature (overwrite)": Case(
        ["reproduce", "--config", "{study}", "--out", "{run}", "--overwrite", "--set", "data.temperature=-1"],
        ["temperature", "> 0"]),
    "top_p of 0 (new folder)": Case(["reproduce", "--config", "{study}", "--out", "{new}", "--set", "data.top_p=0"],
                                    ["top_p"]),
    # row 11: reserved cell names
    "a declared cell named base": Case(
        ["reproduce", "--config", "{study}", "--out", "{new}", "--set",
         "cells=[base, {{name: base, objective: probe_sft, signal: probe}}]"], ["'base' is reserved"]),
    # row 14 (and 5): files of the run folder named in the message
    "a truncated eval.json": Case(["report", "--out", "{run}", "--no-progress"],
                                  ["cells/base/seed0/eval.json", "corrupt", "--resume"],
                                  breaks=_truncate("cells/base/seed0/eval.json")),
    "a corrupt line inside metrics.jsonl": Case(["report", "--out", "{run}", "--no-progress"],
                                                ["metrics.jsonl", "line 1"], breaks=_corrupt_metrics_middle,
                                                may_write=REPORT_TABLES),
    # row 9: a truncated activation set
    "a truncated probe-pool activation file": Case(["build-data", "--out", "{run}", "--no-progress"],
                                                   ["activations.safetensors", "truncated or corrupt"],
                                                   breaks=_truncate("data/probe_pool/activations.safetensors")),
    # a study folder holding another study; a step on a mistyped folder
    "another study without overwrite": Case(
        ["reproduce", "--config", "{dir}/other.yaml", "--out", "{run}"], ["holds a different study", "--overwrite"],
        breaks=_write_config("other.yaml", probe_sft={"max_steps": 2})),
    "report on a folder with no study": Case(["report", "--out", "{new}"], ["holds no study"]),
}  # fmt: skip


@pytest.mark.parametrize("name", list(CASES))
def test_battery(name, finished, tmp_path, capsys):
    case = CASES[name]
    study, ref = finished
    run, new = tmp_path / "run", tmp_path / "new"
    shutil.copytree(ref, run)
    if case.breaks is not None:
        case.breaks(run, tmp_path)
    before = _snapshot(run)
    argv = [a.format(study=study, run=run, new=new, dir=tmp_path) for a in case.argv]
    with redirect_stdout(io.StringIO()):
        rc = main(argv)
    err = capsys.readouterr().err
    unlock_folder(run)
    assert rc == case.code, err
    assert "Traceback" not in err and "internal error" not in err, err
    said = " ".join(err.split())
    for w in case.words:
        assert w.replace("{run}", str(run)) in said, (w, err)
    after = {k: v for k, v in _snapshot(run).items() if k not in case.may_write}
    assert after == {k: v for k, v in before.items() if k not in case.may_write}, "a refused command changed the folder"
    assert not new.exists(), "a refused command created its --out"
    assert list(tmp_path.glob("run.old-*")) == []


# ------------------------------------------------------------------ the library's own checks


def _reference(tmp_path: Path, ids: list, score=0.5) -> Path:
    f = tmp_path / "ref.jsonl.gz"
    header = {"format": "probe_lens.reference/1", "meta": {"model_name": "x"},
              "prompts": {"p1": {"text": "Hi", "tag": "provocative", "topic": "t", "ids": [2, 10]}}}  # fmt: skip
    from probe_lens.data import reference

    header["format"] = reference.FORMAT
    row = {"prompt_id": "p1", "sample": 0, "row_seed": 1, "ids": ids, "response": "x", "score": score}
    with gzip.open(f, "wt") as g:
        g.write(json.dumps(header) + "\n" + json.dumps(row) + "\n")
    return f


@pytest.mark.parametrize(
    ("ids", "score", "words"),
    [([5, -7], 0.5, "integers >= 0"), ([], 0.5, "non-empty list"), ([5], float("nan"), "'score'"),
     ("abc", 0.5, "'ids'"), ([5], 1.5, "[0, 1]")],
)  # fmt: skip
def test_reference_rows_are_checked_on_load(tmp_path, ids, score, words):
    """Row 4 (negative ids) and 14 (empty ids, NaN scores): the file and line are named."""
    from probe_lens.data.reference import load_reference

    f = _reference(tmp_path, ids, score)
    with pytest.raises(ValueError) as e:
        load_reference(f)
    assert f"{f} line 2" in str(e.value) and words in str(e.value)


def test_reference_ids_past_the_vocabulary_are_refused(tmp_path):
    """Row 4: id 99999 in a model of 1,000 tokens names the file and row (was an IndexError)."""
    from probe_lens.data.reference import load_reference

    ref = load_reference(_reference(tmp_path, [5, 99999]))
    with pytest.raises(ValueError, match=r"ref\.jsonl\.gz: row 0 holds token id 99999.*1000 tokens"):
        ref.generation([0], pad_id=0, d_vocab=1000)
    assert ref.generation([0], pad_id=0, d_vocab=100_000).tokens.shape == (1, 4)


def test_a_long_labelled_line_is_refused_before_it_is_parsed(tmp_path):
    """Row 10: a 10 MB line never reaches the tokenizer."""
    from probe_lens.behaviours import Behaviour
    from probe_lens.behaviours._jsonl import BehaviourFileError

    f = tmp_path / "rows.jsonl"
    ok = json.dumps({"prompt": "Say", "response": "fine", "label": 0})
    f.write_text(ok + "\n" + json.dumps({"prompt": "Say", "response": "x" * 10_000_000, "label": 1}) + "\n")
    with pytest.raises(BehaviourFileError, match=r"rows\.jsonl:2: the line is 10,000,0\d\d characters"):
        Behaviour.from_labelled_jsonl("long", f, positive_label="rude", negative_label="polite")


def test_a_labelled_row_longer_than_the_limit_is_refused_naming_it(tiny):
    """Rows 9 and 10: a 2,000-character response (past 512 tokens) is refused before the forward pass."""
    from probe_lens.behaviours.labelled import LabelledRows
    from probe_lens.data.builder import BuildConfig, dataset_from_labelled

    rows = LabelledRows([("Say", "fine", 0), ("Say", "\u00e9" * 2000, 1)], source="rows.jsonl")
    with pytest.raises(ValueError, match=r"rows\.jsonl: the row with prompt 'Say'.* tokens, over the limit of"):
        dataset_from_labelled(tiny, ["Say"], rows, BuildConfig(hooks=[1], min_minority=0), progress=False)


def test_generate_refuses_a_fractional_token_count(tiny):
    """Row 17: a clear TypeError, not torch's."""
    from probe_lens.models import generate

    with pytest.raises(TypeError, match=r"max_new_tokens must be an integer, got 2\.5"):
        generate(tiny, ["Hi"], max_new_tokens=2.5)
