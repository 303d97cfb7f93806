"""``probe-lens``: the study from the command line.

    probe-lens demo                                  # a small slice of the study (< 10 min on 2 CPU cores)
    probe-lens reproduce --preset quick|paper [--model NAME] [--seeds N] [--out DIR] [--resume]
    probe-lens build-data | fit-probes | train | evaluate | report   (the steps on their own)
    probe-lens config --preset quick > study.yaml    # a study file to edit and pass back with --config
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time


def _add_study_args(p: argparse.ArgumentParser, *, default_preset: str = "quick", default_out: str | None = None) -> None:
    p.add_argument("--preset", default=None, help=f"demo | quick | paper (default: {default_preset}, or the --config file alone)")
    p.add_argument("--config", dest="config_file", default=None, help="a YAML/JSON study file (keys as in `probe-lens config`)")
    p.add_argument("--model", default=None, help="TransformerLens name or local HF folder; 'embedded' = Gemma-3-270M")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
    p.add_argument("--out", default=default_out, help="run folder (default: runs/<preset>)")
    p.add_argument("--resume", action="store_true", help="continue the study in --out; finished cells are kept")
    p.add_argument("--overwrite", action="store_true", help="delete --out first if it holds a different study")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one field, e.g. --set probe_sft.max_steps=20 (repeatable)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(default_preset=default_preset)


def _study(args, *, resume: bool | None = None):
    from probe_lens.experiments import Study, make_config

    preset = args.preset or (None if args.config_file else args.default_preset)
    cfg = make_config(preset, config_file=args.config_file, model=args.model, seeds=args.seeds, overrides=args.overrides)
    if args.device:
        cfg.device = args.device
    out = args.out or f"runs/{cfg.preset}"
    return Study(cfg, out, resume=args.resume if resume is None else resume, overwrite=args.overwrite,
                 progress=not args.no_progress)


def _print_summary(study, summary, t0: float) -> None:
    from probe_lens.experiments.stats import format_table

    print()
    print(format_table(summary, columns=_KEY_COLUMNS))
    print(f"\nscorer: {study.scorer.describe().get('name')} {study.scorer.describe().get('version')}; "
          f"seeds: {study.config.seeds}; wall time {time.perf_counter() - t0:.0f} s")
    print(f"report: {study.out / 'report.html'}  table: {study.out / 'results.csv'}")


_KEY_COLUMNS = [
    "eval/toxicity_rate",
    "eval/expected_max_toxicity",
    "eval/perplexity_neutral",
    "eval/distinct_2",
]


def cmd_demo(args) -> int:
    t0 = time.perf_counter()
    args.preset = args.preset or "demo"
    study = _study(args, resume=True)
    ds = study.build_data()
    c = ds.counts()
    print(f"\nprobe data: {c['n_examples']} continuations, {c['n_toxic']} toxic / {c['n_clean']} clean "
          f"(scorer {ds.meta['scorer']['name']}); balanced set {c['n_balanced']}")
    for h in ds.hooks:
        X = ds.acts[h]
        print(f"  {h}: pooled activation norm mean {X.norm(dim=1).mean():.1f}, "
              f"toxic-clean mean difference norm {(X[ds.examples['label'].to_numpy() == 1].mean(0) - X[ds.examples['label'].to_numpy() == 0].mean(0)).norm():.2f}"
              if c["n_toxic"] and c["n_clean"] else f"  {h}: pooled activation norm mean {X.norm(dim=1).mean():.1f}")
    summary = study.run()
    _print_summary(study, summary, t0)
    return 0


def cmd_reproduce(args) -> int:
    t0 = time.perf_counter()
    study = _study(args)
    summary = study.run()
    _print_summary(study, summary, t0)
    return 0


def cmd_build_data(args) -> int:
    study = _study(args, resume=True)
    ds = study.build_data()
    print(json.dumps({"folder": str(study.out / "data" / "probe_fit"), **ds.counts(), "shortfall": ds.meta.get("shortfall")}, indent=2))
    return 0


def cmd_fit_probes(args) -> int:
    import pandas as pd

    study = _study(args, resume=True)
    study.fit_probes()
    print(pd.read_csv(study.out / "probes" / "report.csv").to_string(index=False))
    return 0


def cmd_train(args) -> int:
    study = _study(args, resume=True)
    cells = args.cell or study.config.cells
    seeds = args.seed if args.seed else study.config.seeds
    for seed in seeds:
        for cell in cells:
            r = study.run_cell(cell, seed)
            print(f"{cell} seed {seed}: toxicity rate {r.get('eval/toxicity_rate'):.3f}")
    return 0


def cmd_evaluate(args) -> int:
    study = _study(args, resume=True)
    n = study.evaluate_pending()
    print(f"evaluated {n} cell(s) whose training had finished without an evaluation")
    return 0


def cmd_report(args) -> int:
    t0 = time.perf_counter()
    study = _study(args, resume=True)
    summary = study.report()
    _print_summary(study, summary, t0)
    return 0


def cmd_config(args) -> int:
    import yaml

    from probe_lens.experiments import make_config

    cfg = make_config(args.preset or "quick", config_file=args.config_file, model=args.model, seeds=args.seeds, overrides=args.overrides)
    sys.stdout.write(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="probe-lens", description="Fine-tune against probes; see whether they keep working.")
    sub = parser.add_subparsers(dest="command", required=True)
    specs = [
        ("demo", cmd_demo, "a small slice of the study on the embedded model (< 10 min on 2 CPU cores)", "demo"),
        ("reproduce", cmd_reproduce, "the whole study: data, probes, every cell and seed, table and report", "quick"),
        ("build-data", cmd_build_data, "step 1: the labelled activation set from the base model", "quick"),
        ("fit-probes", cmd_fit_probes, "step 2: trained-against and held-out probes", "quick"),
        ("train", cmd_train, "step 3: training cells (each is evaluated when it finishes)", "quick"),
        ("evaluate", cmd_evaluate, "step 4: evaluate cells whose training finished but not their evaluation", "quick"),
        ("report", cmd_report, "step 5: results table, summary with CIs, report.html", "quick"),
        ("config", cmd_config, "print a preset as a study file (YAML)", "quick"),
    ]
    for name, fn, help_, default in specs:
        p = sub.add_parser(name, help=help_, description=help_)
        _add_study_args(p, default_preset=default)
        if name == "train":
            p.add_argument("--cell", action="append", default=[], help="cell(s) to run (default: all in the study)")
            p.add_argument("--seed", type=int, action="append", default=[], help="seed(s) to run (default: all)")
        p.set_defaults(func=fn)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from probe_lens.experiments.runner import StudyFolderError

    try:
        return args.func(args)
    except (StudyFolderError, ValueError, FileNotFoundError) as e:
        print(f"probe-lens {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
