"""Cost and base-model readings of the interpretability instruments (probe_lens.interventions).

On the embedded Gemma-3-270M: fit ``logistic_L6`` and ``massmean_L6`` (the study's settings: C=1,
standardised; mass-mean without covariance; mean pooling over the response) on the shipped reference
set's continuations (labels: the reference's own profanity scores >= 0.5), then time and report
``steering_curve`` (rate and neutral KL vs alpha, ablation), ``probe_attribution`` (checked against the
probe's logit on ``collect``-ed activations) and ``signal_decomposition`` on held-out prompts' rows.
Base model only: no trained cell is measured here.

    python benchmarks/bench_instruments.py                 # ~3-5 min on 2 shared cores
    python benchmarks/bench_instruments.py --fit-prompts 60 --steer-prompts 8   # quicker
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from probe_lens import LogisticProbe, MassMeanProbe, collect, load_model
from probe_lens.data.prompts import load_prompts, neutral
from probe_lens.data.reference import load_reference
from probe_lens.interventions import (
    component_gap,
    probe_attribution,
    signal_decomposition,
    steering_curve,
    steering_slope,
)
from probe_lens.probes.metrics import auroc
from probe_lens.scorers import get_scorer

HOOK = "blocks.6.hook_resid_post"


def _rows(ref, prompt_ids, k, pad_id):
    rows = ref.select(prompt_ids, k)
    gen = ref.generation(rows, pad_id)
    y = (ref.rows.loc[rows, "score"].to_numpy() >= 0.5).astype(np.int64)
    return gen, y


def _timed(label, fn, timings):
    t0 = time.perf_counter()
    out = fn()
    timings[label] = time.perf_counter() - t0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fit-prompts", type=int, default=120)
    ap.add_argument("--heldout-prompts", type=int, default=48)
    ap.add_argument("--samples", type=int, default=4, help="reference samples per prompt")
    ap.add_argument("--steer-prompts", type=int, default=16)
    ap.add_argument("--steer-samples", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--n-neutral", type=int, default=8)
    ap.add_argument("--n-attribution", type=int, default=64)
    ap.add_argument("--alphas", type=float, nargs="+", default=[-0.25, -0.1, 0.1, 0.25])
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")

    timings: dict[str, float] = {}
    model = _timed("load model", load_model, timings)
    pad = model.tokenizer.pad_token_id
    ref = load_reference()
    ids = sorted(ref.rows["prompt_id"].unique())
    fit_ids = ids[: args.fit_prompts]
    held_ids = ids[args.fit_prompts : args.fit_prompts + args.heldout_prompts]
    fit, y_fit = _rows(ref, fit_ids, args.samples, pad)
    held, y_held = _rows(ref, held_ids, args.samples, pad)

    def acts(gen):
        return collect(model, gen.tokens, gen.attention_mask, gen.response_mask, HOOK, progress=False)[HOOK]

    X_fit = _timed("collect (fit rows)", lambda: acts(fit), timings)
    X_held = acts(held)
    meta = {"hook": HOOK, "pooling": "mean", "model_name": model.cfg.model_name}
    probes = {
        "logistic_L6": LogisticProbe(C=1.0, standardize=True, **meta).fit(X_fit, y_fit),
        "massmean_L6": MassMeanProbe(covariance="none", **meta).fit(X_fit, y_fit),
    }
    print(f"\nfit rows {len(y_fit)} ({y_fit.sum()} positive), held-out rows {len(y_held)} ({y_held.sum()} positive)")
    for name, p in probes.items():
        print(f"{name}: held-out AUROC {auroc(y_held, p.decision_function(X_held)):.3f}")

    scorer = get_scorer("profanity")
    prompts = [ref.prompts[i]["text"] for i in held_ids[: args.steer_prompts]]
    neutral_texts = [p.text for p in neutral(load_prompts())][-args.n_neutral :]
    kw = dict(alphas=args.alphas, samples_per_prompt=args.steer_samples, max_new_tokens=args.new_tokens,
              fast=True, batch_size=16, neutral_texts=neutral_texts)  # fmt: skip
    print("\n| probe | intervention | alpha (x mean resid norm) | alpha (abs) | rate | KL (nats/token) |")
    print("|---|---|---|---|---|---|")
    slopes = {}
    for name, p in probes.items():
        curve = _timed(f"steering_curve ({name})", lambda p=p: steering_curve(model, p, prompts, scorer, **kw), timings)
        for r in curve.itertuples():
            print(f"| {name} | {r.intervention} | {r.alpha:+.2f} | {r.alpha_abs:+.1f} | {r.rate:.3f} | {r.kl:.4f} |")
        by = curve.set_index("intervention")
        slopes[name] = (steering_slope(curve), float(by.loc["ablate", "rate"] - by.loc["none", "rate"]))
    print(f"\n({curve['n_samples'].iloc[0]} samples per condition, same seed across conditions)")
    for name, (slope, effect) in slopes.items():
        print(f"{name}: steering slope {slope:+.3f} rate per unit alpha; ablation effect {effect:+.3f}")

    sub = held.select(list(range(min(args.n_attribution, len(held)))))
    y_sub = y_held[: len(sub)]
    for name, p in probes.items():
        df = _timed(
            f"probe_attribution ({name}, {len(sub)} texts)",
            lambda p=p: probe_attribution(model, p, sub.tokens, sub.attention_mask, sub.response_mask),
            timings,
        )
        err = np.abs(df.groupby("text")["contribution"].sum().to_numpy() - p.decision_function(X_held[: len(sub)]))
        print(f"\n{name}: attribution {df['label'].nunique()} components; max |sum - logit| = {err.max():.2e}")
        if len(np.unique(y_sub)) == 2:
            gap = component_gap(df, y_sub)
            top = gap.reindex(gap["gap"].abs().sort_values(ascending=False).index).head(6)
            print(
                "  largest positive-minus-negative gaps: "
                + ", ".join(f"{r.label} {r.gap:+.2f}" for r in top.itertuples())
            )

    print()
    for name, p in probes.items():
        geo = _timed(f"signal_decomposition ({name})", lambda p=p: signal_decomposition(p, X_held, y_held), timings)
        print(f"{name}: " + ", ".join(f"{k} {v:.3f}" for k, v in geo.items()))
    from probe_lens.interventions import angle_degrees

    print(f"angle(logistic_L6, massmean_L6) = {angle_degrees(probes['logistic_L6'], probes['massmean_L6']):.1f} deg")
    print("\n| step | seconds |\n|---|---|")
    for k, v in timings.items():
        print(f"| {k} | {v:.1f} |")


if __name__ == "__main__":
    main()
