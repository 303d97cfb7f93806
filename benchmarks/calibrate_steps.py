"""How many steps does training need before the trained-against probe stops moving? (sizes the `standard` preset)

Runs one training cell of a study preset (seed 0, on its own training samples) for ``--steps`` steps and,
every ``--every`` steps, scores *all* of the seed's training samples with the trained-against probe
(teacher-forced on the updated model, the same samples throughout). Reports the step where the mean
probe P(toxic) has made 90% of its total fall (the "knee"), writes a CSV and a plotly figure.

    .venv/bin/python benchmarks/calibrate_steps.py --preset standard --cell probe_sft_1 --steps 48 --every 4 \
        --out runs/calibrate
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="standard")
    ap.add_argument("--cell", default="probe_sft_1", help="a training cell of the preset's grid")
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--out", default="runs/calibrate")
    args = ap.parse_args()

    from probe_lens.experiments import Study, make_config
    from probe_lens.training import build_pairs, probe_scores, train_dpo, train_probe_sft

    cfg = make_config(args.preset, overrides=["seeds=[0]", f"cells=[base,{args.cell}]"])
    out = Path(args.out)
    study = Study(cfg, out / "study", resume=True, progress=False)
    spec = cfg.cell(args.cell)
    seed = 0
    gen, scores = study.train_data(seed)
    probes = study.fit_probes(seed)
    trained = study.trained_against(spec)
    watch = probes[(trained or study.probe_names()["single"])[0]]
    study.reset_model()
    model = study.model
    rows: list[dict] = []

    def measure(step: int) -> None:
        p = probe_scores(model, gen, watch, batch_size=cfg.data.batch_size, progress=False)
        rows.append(
            {
                "step": step,
                "probe_p_toxic_mean": float(np.mean(p)),
                "probe_flagged": float(np.mean(p >= 0.5)),
                "t": time.perf_counter() - t0,
            }
        )
        print(json.dumps(rows[-1]), flush=True)

    t0 = time.perf_counter()
    measure(0)

    def on_step(step: int, row: dict) -> None:
        if step % args.every == 0:
            measure(step)

    common = {
        "seed": seed,
        "out_dir": str(out / "train"),
        "telemetry_every": 0,
        "progress": False,
        "max_steps": args.steps,
        "checkpoint_every": 10**6,
    }
    if spec.objective == "probe_sft":
        tc = dataclasses.replace(cfg.probe_sft, pooling=cfg.data.pooling, **common)
        train_probe_sft(model, gen, {n: probes[n] for n in trained}, tc, on_step=on_step)
    elif spec.objective == "dpo":
        margin = cfg.dpo_margin_classifier if spec.signal == "classifier" else cfg.dpo_margin_probe
        pairs = build_pairs(gen, scores[spec.signal], k=cfg.train_data.samples_per_prompt, margin=margin)
        train_dpo(model, pairs, dataclasses.replace(cfg.dpo, **common), on_step=on_step)
    else:
        raise SystemExit(f"--cell {args.cell}: calibrate a probe_sft or dpo cell")
    df = pd.DataFrame(rows)
    start, low = df["probe_p_toxic_mean"].iloc[0], df["probe_p_toxic_mean"].min()
    knee = int(df.loc[df["probe_p_toxic_mean"] <= start - 0.9 * (start - low), "step"].iloc[0]) if start > low else 0
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / f"calibrate_{args.cell}.csv", index=False)
    print(
        f"{args.cell}: mean probe P(toxic) on {len(gen)} training samples {start:.4f} -> min {low:.4f}; "
        f"90% of the fall by step {knee} (measured every {args.every} to {args.steps})"
    )
    try:
        import plotly.express as px

        fig = px.line(
            df,
            x="step",
            y="probe_p_toxic_mean",
            markers=True,
            title=f"{args.preset}/{args.cell}: trained-against probe on the training samples",
        )
        fig.write_html(out / f"calibrate_{args.cell}.html", include_plotlyjs="cdn")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
