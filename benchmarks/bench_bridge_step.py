"""A probe-SFT optimizer step on the two model backends, side by side, on the embedded Gemma-3-270M.

Each backend runs in its own process (its peak RSS is its own): load the model, fit a logistic probe at
layer 6 on the pooled activations of the batch, then train probe-SFT for ``--steps`` steps on that batch
(fp32, AdamW); seconds per step from the median of the steps after the first.

    .venv/bin/python benchmarks/bench_bridge_step.py --batch 8 --steps 4
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPTS = ["The weather today is", "My neighbour keeps shouting at", "Here is a recipe for", "Honestly, you are such a"]
RESPONSES = [" sunny and warm, a good day to walk", " the dog every night, it is awful", " bread with flour and water",
             " kind person, thank you for helping"]  # fmt: skip


def one(backend: str, batch: int, steps: int) -> dict:
    import numpy as np

    from probe_lens import LogisticProbe, ProbeSFTConfig, collect, load_model, tokenize_pairs, train_probe_sft

    model = load_model(backend=backend, device="cpu")
    n = batch
    data = tokenize_pairs(model, (PROMPTS * n)[:n], (RESPONSES * n)[:n])
    hook = "blocks.6.hook_resid_post"
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [hook], progress=False)[hook].numpy()
    probe = LogisticProbe(hook=hook).fit(acts, np.arange(n) % 2)
    times: list[float] = []
    last = [time.perf_counter()]

    def on_step(*_args, **_kw) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    with tempfile.TemporaryDirectory() as out:
        cfg = ProbeSFTConfig(max_steps=steps, batch_size=n, lr=1e-5, out_dir=out, progress=False, telemetry_every=0)
        last[0] = time.perf_counter()
        train_probe_sft(model, data, probe, cfg, on_step=on_step)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"backend": backend, "s_per_step": statistics.median(times[1:] or times), "steps": len(times),
            "peak_rss_gb": round(rss_gb, 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--one", choices=["hooked", "bridge"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.batch, args.steps)))
        return
    for backend in ("hooked", "bridge"):
        cmd = [sys.executable, __file__, "--one", backend, "--batch", str(args.batch), "--steps", str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(
            f"{r['backend']:>7}: {r['s_per_step']:.2f} s per probe-SFT step ({r['steps']} steps), peak RSS {r['peak_rss_gb']} GB"
        )


if __name__ == "__main__":
    main()
