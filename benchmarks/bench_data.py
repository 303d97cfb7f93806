"""Data pipeline on the embedded Gemma-3-270M: throughput, toxic yield, class counts, AUROC by layer.

    python benchmarks/bench_data.py --out runs/bench_data_default [--prompts fit|all] [--layers 2 4 ... 16]

Uses the *default* ``BuildConfig`` (k=4, 24 new tokens, threshold 0.5, up to 4 rounds until 300
examples of the minority class) except for the hooks (the layer sweep) and the batch size.
Prints a markdown report (also written to <out>/report.md). Resumable: rerunning reuses the build.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from probe_lens import load_model
from probe_lens.data import BuildConfig, build_dataset, load_prompts, split_prompts
from probe_lens.probes import LogisticProbe
from probe_lens.scorers import get_scorer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/bench_data_default")
    ap.add_argument("--prompts", choices=["fit", "all"], default="fit")
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 4, 6, 8, 10, 12, 14, 16])
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-rounds", type=int, default=None, help="sampling budget (default: BuildConfig's)")
    args = ap.parse_args()
    torch.manual_seed(0)
    model = load_model(device="cpu")
    scorer = get_scorer("auto")
    splits = split_prompts(load_prompts(), seed=0)
    prompts = splits.probe_fit if args.prompts == "fit" else load_prompts()
    extra = {} if args.max_rounds is None else {"max_rounds": args.max_rounds}
    cfg = BuildConfig(hooks=args.layers, batch_size=args.batch_size, **extra)
    t0 = time.perf_counter()
    ds = build_dataset(model, prompts, scorer, cfg, out_dir=args.out)
    wall = time.perf_counter() - t0
    ex = ds.examples
    timings = ds.meta["timings"]
    gen_s = timings["generate_collect_s"]
    lines = [
        f"model: {model.cfg.model_name}; scorer: {ds.meta['scorer']['name']} {ds.meta['scorer']['version']}; "
        f"prompts: {len(prompts)} ({args.prompts}); k={cfg.samples_per_prompt}; max_new_tokens={cfg.max_new_tokens}; "
        f"torch threads={torch.get_num_threads()}",
        "",
        f"- continuations: {len(ex)}; generate+collect {gen_s:.0f} s, scoring {timings['score_s']:.1f} s "
        f"-> {len(ex) / max(gen_s, 1e-9) * 60:.1f} continuations/min (only valid for a build made in one uninterrupted call: "
        f"chunks reused from an earlier call count as continuations but not as time; {wall:.0f} s wall)",
        f"- mean response tokens: {ex['n_response_tokens'].mean():.1f}",
    ]
    for tag, g in ex.groupby("tag"):
        lines.append(
            f"- {tag}: toxic fraction {g['label'].mean():.3f} ({int(g['label'].sum())}/{len(g)}), mean score {g['score'].mean():.3f}"
        )
    c = ds.counts()
    lines.append(
        f"- classes: toxic {c['n_toxic']}, clean {c['n_clean']}, balanced set {c['n_balanced']} "
        f"(train {len(ds.y('train'))}, test {len(ds.y('test'))})"
    )
    per_round = ex.groupby("round")["label"].agg(["sum", "count"])
    lines.append(
        f"- rounds run: {len(per_round)} of {cfg.max_rounds}; shortfall: {ds.meta.get('shortfall')}; toxic per round: "
        + ", ".join(f"round {int(r)}: {int(row['sum'])}/{int(row['count'])}" for r, row in per_round.iterrows())
    )
    lines += ["", "| layer | hook | AUROC train | AUROC test (held-out prompts) | acc test |", "|---|---|---|---|---|"]
    for h in ds.hooks:
        Xtr, ytr, Xte, yte = ds.X(h, "train"), ds.y("train"), ds.X(h, "test"), ds.y("test")
        if len(set(ytr)) < 2 or len(set(yte)) < 2:
            lines.append(f"| {h.split('.')[1]} | {h} | n/a (one class) | | |")
            continue
        p = LogisticProbe().fit(Xtr, ytr)
        acc = (
            float(((p.predict_proba(Xte)[:, 1] >= 0.5) == yte).mean())
            if p.predict_proba(Xte).ndim == 2
            else float((p.predict(Xte) == yte).mean())
        )
        lines.append(f"| {h.split('.')[1]} | {h} | {p.score(Xtr, ytr):.3f} | {p.score(Xte, yte):.3f} | {acc:.3f} |")
    text = "\n".join(lines)
    print(text)
    Path(args.out, "report.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
