"""The README's code blocks run (issue 25: the quickstart must not drift again).

Every fenced ``python``/``bash``/``yaml`` block of the README is either run here or listed in ``SKIPPED``
with the reason it cannot run offline and quickly in CI; a new block fails
:func:`test_every_block_is_run_or_skipped_for_a_reason` until it is one or the other. Python blocks run in a
fresh interpreter (so what they register does not leak into other tests), on the tiny random model where
they name the embedded one (``TINY``: explicit, commented substitutions)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TEXT = README.read_text()


def _blocks() -> list[tuple[str, str, str]]:
    """(section title, language, code) of every fenced block, in order."""
    out, section = [], ""
    for m in re.finditer(r"^## ([^\n]*)$|^```(\w*)\n(.*?)^```", TEXT, flags=re.M | re.S):
        if m.group(1) is not None:
            section = m.group(1).strip()
        else:
            out.append((section, m.group(2), m.group(3)))
    return out


BLOCKS = [b for b in _blocks() if b[1] in ("python", "bash", "yaml")]


def _key(block: tuple[str, str, str]) -> str:
    section, lang, code = block
    return f"{section} / {lang} / {code.strip().splitlines()[0][:60].rstrip()}"


# Blocks that cannot run offline and quickly in CI, each with why (the key: section / language / first line).
SKIPPED = {
    # installs the package and runs the whole demo and the whole test suite: what CI itself is
    "Set-up: two commands / bash / # 1. the main job: install everything into .venv, then run t": "CI is this",
    # a demo study of the whole grid on the embedded model (minutes); tests/unit/experiments/test_behaviour_study.py
    # runs the sentiment behaviour end to end on the tiny model
    "Behaviours / bash / .venv/bin/probe-lens reproduce --behaviour sentiment --prese": "embedded study",
    # two demo studies from behaviour files on the embedded model; test_behaviour_study.py runs both files
    "Behaviours / bash / .venv/bin/probe-lens reproduce --behaviour-file examples/beh": "embedded study",
    # a fragment continuing the API block: `labels` and `live_acts` are placeholders for the reader's data;
    # tests/unit/probes/ fit and save both token probes
    "Programmatic API / python / from probe_lens.activations import collect_tokens": "fragment",
    # a demo study of a custom behaviour on the embedded model; test_behaviour_study.py runs Behaviour.from_jsonl
    # with a scorer object end to end on the tiny model
    "Behaviours / python / from probe_lens.behaviours import Behaviour, register_behavi": "embedded study",
    # a fragment continuing the API block (`model`, `prompts`, `probe` are the reader's); tests/unit/training/
    # test_rloo.py runs train_rloo with both rewards on the tiny model
    "Programmatic API / python / import copy": "fragment",
    # RLOO studies on the embedded model (tens of minutes); test_rloo_study.py runs both RLOO cells on the tiny model
    "Programmatic API / bash / .venv/bin/probe-lens reproduce --preset quick --out runs/rlo": "embedded study",
    # a study file's Slurm section: test_launch.py checks the scripts submitit writes from such settings
    "Running on a cluster / yaml / launch:": "needs Slurm",
    # submits to a Slurm cluster / runs the paper grid; test_launch.py runs the local executor on the tiny model
    "Running on a cluster / bash / # the paper's grid on Slurm: 3 seeds x 8 cells = 24 tasks (2": "needs Slurm",
}

# The study commands' lines that run here (the others start studies of minutes to hours): the plan of the
# headline study (loads no weights) and a study file written by `config`.
STUDY_LINES = ("reproduce --preset standard --dry-run", "config --preset quick > study.yaml")

# The API block on the tiny random model (10 layers, so hooks 6 and 9 exist) with the tiny tests' scorer
# (a random model's continuations are mostly clean to a toxicity scorer: the probe would have one class).
TINY = [
    ("pl.load_model()", 'pl.load_model("probe-lens-tiny:10")'),
    ('get_scorer("auto")', "non_ascii_scorer()"),
    ('make_config("demo", overrides=', 'make_config("demo", model="probe-lens-tiny:10", overrides='),
    ('Study(cfg, "runs/my_study")', 'Study(cfg, "runs/my_study", scorer=non_ascii_scorer())'),
    (".show()", ""),  # no browser in CI
    ("split_prompts().probe_fit,", "split_prompts().probe_fit[:48],"),  # 48 prompts: seconds, not minutes
]


def _run_python(code: str, cwd: Path) -> None:
    run = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]


def _cli(line: str, cwd: Path) -> None:
    cmd = line.split("#")[0].strip().replace(".venv/bin/probe-lens", f"{sys.executable} -m probe_lens.cli")
    run = subprocess.run(cmd, shell=True, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{line}\n{run.stderr[-3000:]}"


def _one(section: str, lang: str, first: str = "") -> str:
    found = [c for s, la, c in BLOCKS if s == section and la == lang and c.lstrip().startswith(first)]
    assert len(found) == 1, f"expected one {lang} block in '{section}' starting {first!r}, found {len(found)}"
    return found[0]


ARCHITECTURE_BLOCKS = [c for s, la, c in BLOCKS if s == "Architecture" and la == "python"]
RUN_HERE = {
    *(f"Architecture / python / {c.strip().splitlines()[0][:60].rstrip()}" for c in ARCHITECTURE_BLOCKS),
    "The study / bash / .venv/bin/probe-lens reproduce --preset standard",
    "Programmatic API / python / import probe_lens as pl",
    "Behaviours / yaml / # examples/behaviours/service_complaints.yaml (paths relativ",
}


def test_every_block_is_run_or_skipped_for_a_reason():
    keys = [_key(b) for b in BLOCKS]
    unknown = [k for k in keys if k not in SKIPPED and k not in RUN_HERE]
    assert not unknown, "run these README blocks in this test, or add them to SKIPPED with why:\n" + "\n".join(unknown)
    stale = [k for k in [*SKIPPED, *RUN_HERE] if k not in keys]
    assert not stale, f"no README block matches: {stale}"


def test_the_architecture_section_shows_four_extensions():
    kinds = [re.search(r"register_(objective|behaviour|probe_class|scorer)\b", b) for b in ARCHITECTURE_BLOCKS]
    assert sorted(k.group(1) for k in kinds if k) == ["behaviour", "objective", "probe_class", "scorer"]


@pytest.mark.parametrize("block", ARCHITECTURE_BLOCKS, ids=lambda b: re.search(r"register_\w+", b).group(0))
def test_architecture_block_runs(block, tmp_path):
    _run_python(block, tmp_path)


def test_the_study_commands_that_run_offline(tmp_path):
    lines = [ln for ln in _one("The study", "bash").splitlines() if any(s in ln for s in STUDY_LINES)]
    assert len(lines) == len(STUDY_LINES), lines
    for line in lines:
        _cli(line, tmp_path)
    written = yaml.safe_load((tmp_path / "study.yaml").read_text())
    assert written["preset"] == "quick" and written["cells"]


def test_the_behaviour_yaml_shows_the_shipped_file():
    block = _one("Behaviours", "yaml")
    shipped = ROOT / "examples" / "behaviours" / "service_complaints.yaml"
    shown, real = yaml.safe_load(block), yaml.safe_load(shipped.read_text())
    assert shown and {k: real.get(k) for k in shown} == shown, "the README's YAML differs from the shipped file"


def test_the_quickstart_build_dataset_call_finishes_fast():
    """The README's build_dataset call passes sizes that end (issue 25 item 5: the defaults, min_minority=300
    and max_rounds=4, ran for minutes without finishing on the tiny model)."""
    call = re.search(r"BuildConfig\(([^)]*)\)", _one("Programmatic API", "python", "import probe_lens"))
    assert call and "max_rounds=1" in call.group(1) and "min_minority=0" in call.group(1), call


@pytest.mark.slow
def test_the_programmatic_api_block_runs_on_the_tiny_model(tmp_path):
    code = _one("Programmatic API", "python", "import probe_lens")
    for old, new in TINY:
        assert old in code, f"the README's API block no longer holds {old!r}: update TINY"
        code = code.replace(old, new)
    _run_python("from probe_lens.testing import non_ascii_scorer\n" + code, tmp_path)
    assert (tmp_path / "runs" / "my_study" / "headline.md").is_file()
