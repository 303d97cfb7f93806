"""The tutorial notebooks: executed top to bottom on the tiny model (any cell error fails), committed clean.

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

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
EXPECTED = ["01_probe_zoo.ipynb", "02_training_against_probes.ipynb", "03_drift_visualizations.ipynb"]
CELL_TIMEOUT_S = 300
KERNEL = "probe-lens-tutorials"


def _read(name: str):
    return nbformat.read(TUTORIALS / name, as_version=4)


def _code(nb) -> list[str]:
    return [c.source for c in nb.cells if c.cell_type == "code"]


def test_the_three_tutorials_exist():
    assert sorted(p.name for p in TUTORIALS.glob("*.ipynb")) == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_without_outputs(name):
    nb = _read(name)
    nbformat.validate(nb)
    stale = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not stale, f"{name}: code cells {stale} hold outputs; strip them before committing"


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


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory) -> KernelSpecManager:
    """A kernelspec that starts an ipykernel on this very interpreter (whatever venv runs pytest)."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "probe_lens tutorials",
        "language": "python",
    }))
    return KernelSpecManager(kernel_dirs=[str(root)])


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_on_the_tiny_model(name, kernel_specs, tmp_path, monkeypatch):
    monkeypatch.setenv("PROBE_LENS_TUTORIAL_MODEL", "tiny")
    monkeypatch.delenv("PROBE_LENS_RUN_DIR", raising=False)
    nb = _read(name)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    client = NotebookClient(
        nb, km=km, timeout=CELL_TIMEOUT_S, allow_errors=False,
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError (with the cell and traceback) on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert (tmp_path / "runs").is_dir(), "the notebook should write its run folder under the working directory"
