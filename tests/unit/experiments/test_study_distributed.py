"""A tiny study under torchrun (2 CPU processes, gloo) gives one process's results, and only rank 0 writes.

The driver (written to tmp_path) runs ``Study.run()`` on the tiny model; on ranks other than 0 it records
every file-system write under the run folder (opens for writing, renames, mkdir, deletes).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

CELLS = ["base", "probe_sft_1", "probe_dpo_1"]

DRIVER = """
import builtins, io, json, os, shutil, sys
from pathlib import Path

import torch

torch.set_num_threads(1)
out, log_dir = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
rank = int(os.environ.get("RANK", "0"))
writes = []


def under(p):
    return isinstance(p, (str, bytes, os.PathLike)) and Path(os.fsdecode(p)).resolve().is_relative_to(out)


def watch(mod, name, writes_if=lambda a, k: True, nargs=1):
    orig = getattr(mod, name)

    def wrapper(*a, **k):
        if writes_if(a, k) and any(under(x) for x in a[:nargs]):
            writes.append(f"{name} {os.fsdecode(a[0])}")
        return orig(*a, **k)

    setattr(mod, name, wrapper)


if rank != 0:
    mode = lambda a, k: a[1] if len(a) > 1 else k.get("mode", "r")
    watch(io, "open", lambda a, k: any(c in mode(a, k) for c in "wax+"))
    builtins.open = io.open
    flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT
    watch(os, "open", lambda a, k: (a[1] if len(a) > 1 else k.get("flags", 0)) & flags)
    watch(os, "replace", nargs=2)
    watch(os, "rename", nargs=2)
    watch(os, "mkdir", lambda a, k: not os.path.exists(a[0]))
    for name in ("unlink", "remove", "rmdir"):
        watch(os, name)
    watch(shutil, "rmtree")

from probe_lens.experiments import Study
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config
from probe_lens.training import distributed as D

cfg = tiny_study_config(cells=%r)
study = Study(cfg, out, model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False)
summary = study.run()
try:  # a step that fails on rank 0 fails on every rank (none waits for it)
    study._on_main(lambda: 1 / 0)
except Exception as e:
    failed = type(e).__name__
log_dir.mkdir(parents=True, exist_ok=True)
(log_dir / f"rank{rank}.json").write_text(json.dumps({"world_size": study.dist.world_size, "writes": writes,
                                                      "summary_cells": sorted(summary["cell"]), "failed": failed}))
D.cleanup()
""" % (CELLS,)


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_two_process_study_matches_one_process(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore", CUDA_VISIBLE_DEVICES="")
    repo = Path(__file__).resolve().parents[3]
    runs = {
        "one": [sys.executable, str(driver)],
        "two": [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(driver)],
    }
    for name, cmd in runs.items():
        proc = subprocess.run(
            cmd + [str(tmp_path / name), str(tmp_path / f"log_{name}")],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            cwd=repo,
        )
        assert proc.returncode == 0, f"{name}:\n" + proc.stdout[-3000:] + proc.stderr[-5000:]
    one, two = tmp_path / "one", tmp_path / "two"

    logs = [json.loads((tmp_path / "log_two" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [g["world_size"] for g in logs] == [2, 2]
    assert logs[1]["writes"] == [], logs[1]["writes"][:20]  # only rank 0 writes
    assert logs[0]["summary_cells"] == logs[1]["summary_cells"] == sorted(CELLS)  # every rank gets the summary
    assert [g["failed"] for g in logs] == ["ZeroDivisionError", "RankFailed"]
    assert _files(one) == _files(two)
    # training ran data-parallel: the study's batch is the global one, split over the ranks
    for cell, section in (("probe_sft_1", "probe_sft"), ("probe_dpo_1", "dpo")):
        tdir = f"cells/{cell}/seed0/train"
        assert json.loads((two / tdir / "run_info.json").read_text())["world_size"] == 2
        b1 = json.loads((one / tdir / "config.json").read_text())["batch_size"]
        assert json.loads((two / tdir / "config.json").read_text())["batch_size"] * 2 == b1

    r1, r2 = pd.read_csv(one / "results.csv"), pd.read_csv(two / "results.csv")
    assert list(r1.columns) == list(r2.columns) and list(r1["cell"]) == list(r2["cell"])
    # the cell that does not train is rank 0's work alone: bit for bit one process's
    assert r1[r1["cell"] == "base"].equals(r2[r2["cell"] == "base"])
    # training cells: DDP averages the two half-batches' gradients, the single-process gradient of the whole
    # batch up to float reassociation, so weights (and what is measured on them) agree to float noise
    # (seen: <= 3e-7 absolute, 6e-7 relative for perplexity ~345), not bit for bit
    numeric = [c for c in r1.columns if pd.api.types.is_numeric_dtype(r1[c])]
    assert len(numeric) > 50
    for c in r1.columns:
        if c in numeric:
            np.testing.assert_allclose(
                r2[c].to_numpy(float), r1[c].to_numpy(float), rtol=1e-5, atol=1e-5, equal_nan=True, err_msg=c
            )
        else:
            assert r1[c].equals(r2[c]), c
    m1, m2 = (pd.read_parquet(d / "metrics.parquet").sort_values(["cell", "step"]) for d in (one, two))
    for c in ("train/loss", "train/grad_norm", "probe/onpolicy_auroc/logistic_L2", "drift/cosine/logistic_L2"):
        np.testing.assert_allclose(
            m2[c].to_numpy(float), m1[c].to_numpy(float), rtol=0, atol=1e-5, equal_nan=True, err_msg=c
        )
    assert m1["train/loss"].notna().sum() == 4  # 2 steps in each training cell
