"""The study as one process vs as a task graph: ``--executor inprocess`` beside ``--executor local`` at 1 and
2 workers, on the same study, each run in a fresh folder, one after the other (never at once).

For each run: wall time of the whole ``probe-lens reproduce`` command (model loads and the graph's
``prepare`` / ``finalise`` included), the largest peak RSS of any one of its processes, and how far its
``results.csv`` is from the in-process run's (the largest absolute difference of any number: worker threads
change reduction orders, so a few units in the last decimals are expected at 2 vs 1 torch threads). The CPU
model is printed beside the numbers.

    .venv/bin/python benchmarks/bench_executors.py --study tiny
    .venv/bin/python benchmarks/bench_executors.py --study quick --set 'seeds=[0]' \\
        --set 'cells=[base,probe_sft_1,classifier_sft]'
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RUNS = (("inprocess", 1), ("local", 1), ("local", 2))


def _tiny_study(folder: Path) -> list[str]:
    """The launch tests' tiny study (:func:`probe_lens.testing.write_launch_study`): its ``reproduce`` arguments."""
    from probe_lens.testing import write_launch_study

    plugin, study = write_launch_study(folder, "tiny.yaml")
    return ["--config", str(study), "--plugin", str(plugin)]


def _command(study: list[str], out: Path, executor: str, workers: int, sets: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "probe_lens.cli", "reproduce", *study, "--out", str(out), "--no-progress"]
    cmd += ["--executor", executor] + (["--workers", str(workers)] if executor == "local" else [])
    for s in sets:
        cmd += ["--set", s]
    return cmd


_PEAK = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[1:]); "
    "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(rc)"
)
"""Runs a command and prints the largest peak RSS of any of its processes (waited-for descendants included)."""


def _max_diff(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """The largest absolute difference between the numeric columns both tables hold (rows by cell, seed)."""
    keys = [c for c in ("cell", "seed") if c in a.columns]
    a, b = a.sort_values(keys).reset_index(drop=True), b.sort_values(keys).reset_index(drop=True)
    cols = [c for c in a.select_dtypes("number").columns if c in b.columns]
    diff = (a[cols].astype(float) - b[cols].astype(float)).abs().to_numpy()
    return float(np.nanmax(diff)) if diff.size else 0.0


def main(argv: list[str] | None = None) -> None:
    from probe_lens._cpu import cpu_info

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", default="tiny", help="'tiny' (the launch tests' study) or a preset name")
    ap.add_argument("--set", action="append", default=[], dest="sets", help="a study override, as for reproduce")
    ap.add_argument("--keep", type=Path, default=None, help="keep the run folders here (default: a temp folder)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        study = _tiny_study(root) if args.study == "tiny" else ["--preset", args.study]
        rows, reference = [], None
        for executor, workers in RUNS:
            out = root / f"{executor}{workers}"
            t0 = time.perf_counter()
            cmd = [sys.executable, "-c", _PEAK, *_command(study, out, executor, workers, args.sets)]
            done = subprocess.run(cmd, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if done.returncode != 0:
                raise SystemExit(f"{executor} x{workers} failed (rc {done.returncode}):\n{done.stderr[-3000:]}")
            rss = int(done.stderr.rsplit("peak_rss_kib", 1)[1].split()[0]) / 2**20
            results = pd.read_csv(out / "results.csv")
            reference = results if reference is None else reference
            rows.append(
                {
                    "executor": executor,
                    "workers": workers,
                    "wall_s": round(wall, 1),
                    "vs_inprocess": round(wall / rows[0]["wall_s"], 2) if rows else 1.0,
                    "peak_rss_gib": round(rss, 2),
                    "max_abs_diff_vs_inprocess": _max_diff(reference, results),
                }
            )
            print(rows[-1], flush=True)
    info = cpu_info()
    print(f"\nstudy: {args.study} {' '.join(args.sets)}; CPU: {info.get('model')}, {os.cpu_count()} cores")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
