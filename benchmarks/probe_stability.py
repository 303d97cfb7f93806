"""Between-seed spread of the base cell's probe AUROCs: ``probes.fit_rows`` weighted vs balanced, side by side.

At base the model never changes, so a probe's curated AUROC varies across seeds only through its fit (which
prompts and continuations fit it, and how): the variance every contrast inherits. This runs the ``base`` cell
alone for N seeds in each mode (same preset, same seeds, each mode in its own run folder), writes one CSV row
per (mode, seed, probe) and prints each probe's mean and between-seed SD per mode, with the CPU model.

    python benchmarks/probe_stability.py --seeds 10 --out runs/probe_stability          # the measurement
    python benchmarks/probe_stability.py --seeds 2 --tiny --out /tmp/ps                 # smoke test (tiny model)

The modes share the probe-pool dataset (a reference read, identical for both: it does not depend on
``probes.fit_rows``): the second mode's run folder gets a copy of the first's instead of rebuilding it.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pandas as pd

from probe_lens._cpu import cpu_info
from probe_lens.experiments import Study
from probe_lens.experiments.presets import make_config
from probe_lens.experiments.run_folder import RunFolder

MODES = ("balanced", "weighted")


def _config(args: argparse.Namespace, mode: str):
    sets = ["cells=[base]", f"probes.fit_rows={mode}", *args.set]
    if args.tiny:
        from probe_lens.testing import tiny_study_config

        return tiny_study_config(seeds=list(range(args.seeds)), cells=["base"], probes={"fit_rows": mode})
    return make_config(args.preset, seeds=args.seeds, overrides=sets)


def _study(args: argparse.Namespace, mode: str, out: Path) -> Study:
    kw = {}
    if args.tiny:
        from probe_lens.testing import non_ascii_scorer, tiny_model

        kw = {"model": tiny_model(n_layers=4), "scorer": non_ascii_scorer()}
    return Study(_config(args, mode), out, resume=True, export_png=False, **kw)


def run(args: argparse.Namespace) -> pd.DataFrame:
    root = Path(args.out)
    rows = []
    for i, mode in enumerate(MODES):
        out = root / mode
        first, mine = RunFolder(root / MODES[0]).probe_pool, RunFolder(out).probe_pool
        if i > 0 and (first / "meta.json").exists() and not mine.exists():
            mine.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(first, mine)
        study = _study(args, mode, out)
        study.run()
        res = study.results()
        for name in study.tracked_probes():
            for _, r in res.iterrows():
                rows.append(
                    {
                        "mode": mode,
                        "seed": int(r["seed"]),
                        "probe": name,
                        "curated_auroc": r.get(f"probe/curated_auroc/{name}"),
                        "onpolicy_auroc": r.get(f"probe/onpolicy_auroc/{name}"),
                    }
                )
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and between-seed SD (ddof 1) of each probe's AUROCs per mode."""
    g = df.groupby(["probe", "mode"])
    return g.agg(
        n_seeds=("seed", "nunique"),
        curated_mean=("curated_auroc", "mean"),
        curated_sd=("curated_auroc", "std"),
        onpolicy_mean=("onpolicy_auroc", "mean"),
        onpolicy_sd=("onpolicy_auroc", "std"),
    ).reset_index()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds per mode (0..N-1)")
    ap.add_argument("--preset", default="contrast", help="sizes of the base cell (default: contrast)")
    ap.add_argument("--set", action="append", default=[], help="extra key.sub=value overrides")
    ap.add_argument("--tiny", action="store_true", help="the tiny random model (a smoke test, not a measurement)")
    ap.add_argument("--out", default="runs/probe_stability", help="run folders and probe_stability.csv go here")
    args = ap.parse_args()
    df = run(args)
    cpu = cpu_info().get("model")
    out = Path(args.out)
    df.assign(cpu=cpu).to_csv(out / "probe_stability.csv", index=False)
    summary = summarise(df)
    summary.to_csv(out / "probe_stability_summary.csv", index=False)
    (out / "probe_stability.json").write_text(json.dumps({"cpu": cpu, "seeds": args.seeds, "tiny": args.tiny}))
    print(f"CPU: {cpu}; {args.seeds} seeds per mode; base cell only ({'tiny model' if args.tiny else args.preset})")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.4f}"))


if __name__ == "__main__":
    main()
