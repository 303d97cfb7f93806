"""Equality check for refactors: a tiny study over the built-in cells (2 seeds) and the quick and standard
presets' resolved configs, written into OUT (argv[1]). Run it before and after a change on the same machine
and compare: ``cmp`` results.csv, headline.md, contrasts.csv, quick.yaml, standard.yaml (session 7's house
refactor kept all five byte-identical on an AMD EPYC).

    PYTHONPATH=. .venv/bin/python benchmarks/refactor_equality.py /tmp/eq_before
"""

import shutil
import subprocess
import sys
from pathlib import Path

import torch

from probe_lens.experiments import Study
from probe_lens.testing import non_ascii_scorer, tiny_model, tiny_study_config

out = Path(sys.argv[1])
shutil.rmtree(out, ignore_errors=True)
out.mkdir(parents=True)
torch.manual_seed(0)
cfg = tiny_study_config(
    cells=["base", "probe_sft_1", "probe_sft_ens", "probe_dpo_1", "classifier_dpo", "classifier_sft"],
    seeds=[0, 1],
)
study = Study(
    cfg, out / "study", model=tiny_model(n_layers=4), scorer=non_ascii_scorer(), progress=False, export_png=False
)
study.run()
shutil.copy(out / "study" / "results.csv", out / "results.csv")
shutil.copy(out / "study" / "headline.md", out / "headline.md")
shutil.copy(out / "study" / "contrasts.csv", out / "contrasts.csv")
q = subprocess.run(
    [sys.executable, "-m", "probe_lens.cli", "config", "--preset", "quick"], capture_output=True, text=True, check=True
)
(out / "quick.yaml").write_text(q.stdout)
s = subprocess.run(
    [sys.executable, "-m", "probe_lens.cli", "config", "--preset", "standard"],
    capture_output=True,
    text=True,
    check=True,
)
(out / "standard.yaml").write_text(s.stdout)
print("wrote", sorted(p.name for p in out.iterdir()))
