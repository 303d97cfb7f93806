"""The tutorial notebooks: executed top to bottom on the tiny model (any cell error, a failed assert
included, fails), and their committed outputs (from ``tutorials/execute.py`` on the embedded model) fit
to show on a code host.

Each notebook runs in a fresh kernel on *this* interpreter (so it sees the installed probe_lens), with
``PROBE_LENS_TUTORIAL_MODEL=tiny`` and a temporary working directory (the notebooks write ``runs/``).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
TUTORIALS = ROOT / "tutorials"
EXPECTED = [
    "01_probe_zoo.ipynb",
    "02_training_against_probes.ipynb",
    "03_drift_visualizations.ipynb",
    "04_bring_your_own_behaviour.ipynb",
    "05_where_did_it_hide.ipynb",
]
CELL_TIMEOUT_S = 300
KERNEL = "probe-lens-tutorials"
MAX_BYTES = 2_000_000
# paths of the machine that ran a notebook: they say nothing to a reader, and leak where it ran
MACHINE_PATHS = ["/work/", "/tmp/", "/root/", "/home/", "/Users/", sys.prefix]
# outputs a code host cannot show, or that bloat the file: interactive plotly JSON, widgets
UNSHOWABLE = ["application/vnd.plotly.v1+json", "application/vnd.jupyter.widget-view+json"]


def _read(name: str):
    return nbformat.read(TUTORIALS / name, as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def _output_texts(out) -> list[str]:
    texts = [out.get("text", ""), out.get("ename", ""), out.get("evalue", ""), *out.get("traceback", [])]
    for mime, value in out.get("data", {}).items():
        if not mime.startswith("image/"):
            texts.append(value if isinstance(value, str) else json.dumps(value))
    return texts


def test_the_tutorials_exist():
    assert sorted(p.name for p in TUTORIALS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_outputs_fit_to_show(name):
    """Outputs are optional; those committed come from a clean run and show on a code host."""
    nb = _read(name)
    nbformat.validate(nb)
    assert (TUTORIALS / name).stat().st_size < MAX_BYTES, f"{name} is over {MAX_BYTES / 1e6:.0f} MB"
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            if out.output_type == "error":
                problems.append(f"cell {i}: an error output ({out.get('ename')})")
            problems += [f"cell {i}: {m} output" for m in UNSHOWABLE if m in out.get("data", {})]
            for text in _output_texts(out):
                problems += [f"cell {i}: machine path {p!r} in an output" for p in MACHINE_PATHS if p in text]
    assert not problems, f"{name}: re-run tutorials/execute.py, or strip the outputs:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", EXPECTED)
def test_structure_and_public_api_only(name):
    nb = _read(name)
    assert nb.cells[0].cell_type == "markdown", "a tutorial opens with the question it answers"
    first = _code(nb)[0]
    assert 'MODEL = os.environ.get("PROBE_LENS_TUTORIAL_MODEL", "embedded")' in first
    assert "SCALE" in first
    source = "\n".join(_code(nb))
    private = re.findall(r"probe_lens(?:\.\w+)*\._\w+|from probe_lens\S* import _\w+", source)
    assert not private, f"{name} reaches into private names: {private}"
    assert "probe_lens.experiments.report" not in source, f"{name}: import the figures from probe_lens.plots"


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec that starts an ipykernel on this very interpreter (whatever venv runs pytest)."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "probe_lens tutorials",
                "language": "python",
            }
        )
    )
    return KernelSpecManager(kernel_dirs=[str(root)])


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_on_the_tiny_model(name, kernel_specs, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_LENS_TUTORIAL_MODEL", "tiny")
    monkeypatch.setenv("PROBE_LENS_EXAMPLES", str(ROOT / "examples" / "behaviours"))  # 04 reads them from tutorials/
    monkeypatch.delenv("PROBE_LENS_RUN_DIR", raising=False)
    nb = _read(name)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        nb,
        km=km,
        timeout=CELL_TIMEOUT_S,
        allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any error or failed assert
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert (tmp_path / "runs").is_dir(), "the notebook should write its run folder under the working directory"
