"""Execute the tutorial notebooks in place and leave outputs a code host can show.

    .venv/bin/python tutorials/execute.py                    # every notebook, on the embedded model
    .venv/bin/python tutorials/execute.py 04_bring_your_own_behaviour.ipynb --model tiny

Each notebook runs top to bottom in a fresh kernel on this interpreter, from ``tutorials/`` (where
Jupyter would run it; its ``runs/tutorialNN`` folder is deleted first unless ``--reuse``), with
``PROBE_LENS_TUTORIAL_MODEL`` set from ``--model``. Then its outputs are made fit to commit:

* plotly figures become static PNGs (kaleido), without the interactive JSON, so GitHub shows them and
  the file stays small (a notebook that would pass ~1.9 MB gets its figures re-rendered smaller);
* progress bars, widget outputs and warnings raised inside third-party packages are dropped;
* machine paths (this checkout, the virtual environment, home, temporary folders) are rewritten to
  relative paths or placeholders (``<venv>``, ``<tmp>``, ``~``), and anything path-like left is reported.

A notebook that fails is not overwritten: the executed copy, with the error, goes to
``tutorials/runs/<name>.failed.ipynb``. The exit status is 1 if any notebook failed, kept a machine
path, or is over the size limit; each notebook's size and run time are printed.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

TUTORIALS = Path(__file__).resolve().parent
REPO = TUTORIALS.parent
MAX_BYTES = 2_000_000
PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")
# what the test forbids in committed outputs (tests/test_tutorials.py)
MACHINE_PATH = re.compile(r"/work/|/tmp/|/root/|/home/|/Users/|[A-Za-z]:\\\\Users")
PROGRESS = re.compile(r"\r|\d+%\|[^|]*\||\d+(?:\.\d+)?(?:it|s)/(?:s|it)\]")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\r\x08]")  # terminal colours and cursor moves
# a warning raised inside a third-party package (after scrubbing), with the source line Python prints under it
LIBRARY_WARNING = re.compile(r"^<site-packages>/\S+:\d+: \w*Warning: .*\n(?:[ \t]+.*\n)?", re.MULTILINE)


def _kernel_specs(root: Path):
    """A kernelspec that starts an ipykernel on this very interpreter (whatever venv runs this script)."""
    from jupyter_client.kernelspec import KernelSpecManager

    spec = root / "probe-lens-tutorials"
    spec.mkdir(parents=True, exist_ok=True)
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


# ---- paths ------------------------------------------------------------------------------------


def _replacements() -> list[tuple[str, str]]:
    """(machine path, what a reader sees instead), longest first; the notebooks run from tutorials/."""
    pairs: dict[str, str] = {}

    def add(path: str | Path | None, to: str) -> None:
        if not path:
            return
        for p in {str(path).rstrip("/"), os.path.realpath(path).rstrip("/")}:
            if len(p) > 1:  # never "" or "/"
                pairs.setdefault(p, to)

    import sysconfig

    add(sysconfig.get_paths().get("purelib"), "<site-packages>")
    add(sys.prefix, "<venv>")
    add(sys.base_prefix, "<python>")
    add(TUTORIALS, ".")
    add(REPO, "..")
    add(Path.home(), "~")
    add(tempfile.gettempdir(), "<tmp>")
    add("/tmp", "<tmp>")
    return sorted(pairs.items(), key=lambda kv: -len(kv[0]))


def _scrub(text: str, pairs: list[tuple[str, str]]) -> str:
    for path, to in pairs:
        # "<tutorials>/runs/x" -> "runs/x" rather than "./runs/x"
        if to == ".":
            text = text.replace(path + "/", "")
        text = text.replace(path, to)
    return text


# ---- outputs ----------------------------------------------------------------------------------


def _figure_size(spec: dict, width: int, height: int) -> tuple[int, int]:
    layout = spec.get("layout") or {}
    return int(layout.get("width") or width), int(layout.get("height") or height)


def _render_pngs(specs: list[dict], *, width: int, height: int, scale: float) -> list[bytes]:
    """PNG bytes of plotly figure dicts, rendered in one kaleido session."""
    if not specs:
        return []
    import plotly.graph_objects as go
    import plotly.io as pio

    figures = [go.Figure({k: v for k, v in s.items() if k in ("data", "layout", "frames")}) for s in specs]
    sizes = [_figure_size(s, width, height) for s in specs]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"{i}.png" for i in range(len(figures))]
        pio.write_images(
            figures, paths, format="png", scale=scale, width=[w for w, _ in sizes], height=[h for _, h in sizes]
        )
        return [p.read_bytes() for p in paths]


def _scrub_output(out, pairs: list[tuple[str, str]]) -> None:
    if "text" in out:
        out["text"] = _scrub(out["text"], pairs)
    if "traceback" in out:
        out["traceback"] = [_scrub(t, pairs) for t in out["traceback"]]
    if "evalue" in out:
        out["evalue"] = _scrub(out["evalue"], pairs)
    for mime, value in list(out.get("data", {}).items()):
        if mime == PLOTLY_MIME or not (mime.startswith("text/") or mime.endswith("json")):
            continue
        if isinstance(value, str):
            out["data"][mime] = _scrub(value, pairs)
        elif isinstance(value, list):
            out["data"][mime] = [_scrub(v, pairs) if isinstance(v, str) else v for v in value]
        else:  # a JSON value: scrub its serialisation
            out["data"][mime] = json.loads(_scrub(json.dumps(value), pairs))


def _is_noise(out) -> bool:
    """Progress bars (carriage returns, cursor moves, tqdm's ``|####|`` and ``it/s``) and empty stderr."""
    if out.get("output_type") != "stream" or out.get("name") != "stderr":
        return False
    text = out.get("text", "")
    return bool(PROGRESS.search(text)) or not CONTROL.sub("", text).strip()


def clean_outputs(
    nb, *, width: int = 1200, height: int = 500, scale: float = 1.0, max_bytes: int | None = None
) -> dict[str, float]:
    """Make ``nb``'s outputs fit to commit, in place: no progress bars or widgets, no machine paths, plotly
    figures as PNG. With ``max_bytes``, figures are re-rendered at smaller scales (down to 0.55 x ``scale``)
    until the notebook fits. Returns what was done: ``figures``, ``dropped`` outputs, the ``scale`` used."""
    pairs = _replacements()
    counts: dict[str, float] = {"figures": 0, "dropped": 0, "scale": scale}
    figures: list[tuple[dict, dict]] = []  # (output, plotly spec)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)
        kept = []
        for out in cell.outputs:
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                out["text"] = LIBRARY_WARNING.sub("", _scrub(out["text"], pairs))
            data = out.get("data", {})
            if _is_noise(out) or any(m in data for m in WIDGET_MIMES):
                counts["dropped"] += 1
                continue
            _scrub_output(out, pairs)
            if PLOTLY_MIME in data:
                spec = data[PLOTLY_MIME]
                figures.append((out, json.loads(spec if isinstance(spec, str) else json.dumps(spec))))
            kept.append(out)
        cell.outputs = kept
    factors = (1.0, 0.85, 0.7, 0.55) if max_bytes else (1.0,)
    for factor in factors:
        counts["scale"] = round(scale * factor, 3)
        pngs = _render_pngs([s for _, s in figures], width=width, height=height, scale=counts["scale"])
        for (out, spec), png in zip(figures, pngs):
            title = ((spec.get("layout") or {}).get("title") or {}).get("text") or "figure"
            out["data"] = {
                "image/png": base64.b64encode(png).decode("ascii"),
                "text/plain": f"<plotly figure: {_scrub(re.sub(r'<[^>]+>', ' ', str(title)).strip(), pairs)}>",
            }
            out.setdefault("metadata", {})
        if not figures or max_bytes is None or len(nbformat.writes(nb).encode()) <= max_bytes:
            break
    counts["figures"] = len(figures)
    return counts


def machine_paths(nb) -> list[str]:
    """Path-like leftovers in ``nb``'s outputs (lines that hold one), for the report."""
    venv = re.escape(sys.prefix)
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        for out in cell.outputs:
            texts = [out.get("text", ""), out.get("evalue", ""), *out.get("traceback", [])]
            texts += [
                v if isinstance(v, str) else json.dumps(v) for k, v in out.get("data", {}).items() if k != "image/png"
            ]
            for t in texts:
                for line in str(t).splitlines():
                    if MACHINE_PATH.search(line) or re.search(venv, line):
                        found.append(f"cell {i}: {line.strip()[:160]}")
    return found


# ---- running ----------------------------------------------------------------------------------


def _first_error(nb) -> str:
    """``cell <i>: <exception>: <message>`` and the failing line, from the first error output."""
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if out.get("output_type") == "error":
                lines = ANSI.sub("", "\n".join(out.get("traceback", []))).splitlines()
                where = next((line.strip() for line in lines if line.lstrip().startswith("---->")), "")
                return f"cell {i}: {out.get('ename')}: {out.get('evalue')}" + (f"\n    {where}" if where else "")
    return "a cell failed"


def execute(path: Path, *, timeout: int, reuse: bool, specs) -> tuple[object, str | None, float]:
    """Run ``path`` from tutorials/; returns (executed notebook, error or None, seconds)."""
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    kernelspec = dict(nb.metadata.get("kernelspec", {}))
    if not reuse:  # the notebook's own run folders (runs/tutorialNN): a stale one would be resumed
        source = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
        for rel in sorted(set(re.findall(r"runs/tutorial\d+", source))):
            shutil.rmtree(TUTORIALS / rel, ignore_errors=True)
    km = KernelManager(kernel_name="probe-lens-tutorials", kernel_spec_manager=specs)
    client = NotebookClient(
        nb,
        km=km,
        timeout=timeout,
        allow_errors=False,
        record_timing=False,
        resources={"metadata": {"path": str(TUTORIALS)}},
    )
    t0 = time.monotonic()
    error = None
    try:
        client.execute()
    except CellExecutionError:
        error = _first_error(nb)
    except Exception as exc:  # noqa: BLE001 - a timeout or a dead kernel: report it, go on with the next
        error = f"{type(exc).__name__}: {exc}"
    if kernelspec:
        nb.metadata["kernelspec"] = kernelspec
    return nb, error, time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", help="names in tutorials/ (default: every *.ipynb there)")
    ap.add_argument(
        "--model",
        default=os.environ.get("PROBE_LENS_TUTORIAL_MODEL", "embedded"),
        help="PROBE_LENS_TUTORIAL_MODEL for the notebooks: embedded (default), tiny, or a model name",
    )
    ap.add_argument("--timeout", type=int, default=3600, help="seconds one cell may run (default 3600)")
    ap.add_argument("--reuse", action="store_true", help="keep the notebooks' runs/ folders (a study resumes)")
    ap.add_argument("--width", type=int, default=1200, help="px, for a figure that sets none (as the report)")
    ap.add_argument("--scale", type=float, default=1.0, help="PNG scale factor")
    args = ap.parse_args(argv)

    names = args.notebooks or sorted(p.name for p in TUTORIALS.glob("*.ipynb"))
    paths = [TUTORIALS / Path(n).name for n in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        ap.error(f"no such notebook in {TUTORIALS.name}/: {missing}")

    os.environ["PROBE_LENS_TUTORIAL_MODEL"] = args.model
    os.environ.pop("PROBE_LENS_RUN_DIR", None)  # notebook 03: run its own study, not a folder from the shell
    os.environ["PLOTLY_RENDERER"] = "plotly_mimetype"  # figure JSON only (made PNG below), not plotly.js
    os.environ["TQDM_DISABLE"] = "1"

    failed = False
    with tempfile.TemporaryDirectory() as kernels:
        specs = _kernel_specs(Path(kernels))
        for path in paths:
            print(f"{path.name}: running on {args.model} ...", flush=True)
            nb, error, seconds = execute(path, timeout=args.timeout, reuse=args.reuse, specs=specs)
            counts = clean_outputs(nb, width=args.width, scale=args.scale, max_bytes=MAX_BYTES - 100_000)
            leftovers = machine_paths(nb)
            if error is not None:
                failed = True
                dest = TUTORIALS / "runs" / f"{path.stem}.failed.ipynb"
                dest.parent.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, dest)
                print(
                    f"  FAILED after {seconds:.0f} s: {error}\n  executed copy: {dest.relative_to(REPO)}"
                    f" ({path.name} left as it was)"
                )
                continue
            nbformat.write(nb, path)
            size = path.stat().st_size
            print(
                f"  {seconds:.0f} s, {counts['figures']} figures as PNG (scale {counts['scale']}), "
                f"{counts['dropped']} progress/stderr outputs dropped, {size / 1e6:.2f} MB"
                + ("  OVER THE 2 MB LIMIT" if size > MAX_BYTES else "")
            )
            for line in leftovers:
                print(f"  machine path left: {line}")
            failed |= size > MAX_BYTES or bool(leftovers)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
