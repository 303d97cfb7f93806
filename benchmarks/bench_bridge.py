"""Sampling throughput and peak memory of the two model backends on the embedded Gemma-3-270M.

Each backend runs in its own process (so its peak RSS is its own): load the model, then sample the same
prompts with the same seed and batch size ``--repeats`` times; continuations/min from the median
repeat. Rows: ``hooked`` (HookedTransformer, reference path), ``hooked-fast`` (``fast=True``) and
``bridge`` (TransformerBridge, which always samples on the reference path through HF's KV cache).

    .venv/bin/python benchmarks/bench_bridge.py --n-prompts 16 --new-tokens 16 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PROMPTS = [
    "The weather today is", "My neighbour keeps shouting at", "Here is a recipe for", "The worst thing about people is",
    "In the meeting, the manager said", "Honestly, you are such a", "The history of the city begins", "I can't stand it when",
]  # fmt: skip
ROWS = {"hooked": ("hooked", False), "hooked-fast": ("hooked", True), "bridge": ("bridge", False)}


def one(row: str, n_prompts: int, new_tokens: int, repeats: int) -> dict:
    """Load, then time ``repeats`` sampling runs of one row (in this process)."""
    import torch

    from probe_lens import load_model
    from probe_lens.models import generate

    warnings.filterwarnings("ignore")
    backend, fast = ROWS[row]
    t = time.perf_counter()
    model = load_model(device="cpu", backend=backend)
    load_s = time.perf_counter() - t
    prompts = [PROMPTS[i % len(PROMPTS)] + ("" if i < len(PROMPTS) else f" ({i})") for i in range(n_prompts)]
    secs = []
    for _ in range(repeats):
        t = time.perf_counter()
        generate(model, prompts, max_new_tokens=new_tokens, seed=0, batch_size=n_prompts, progress=False, fast=fast)
        secs.append(time.perf_counter() - t)
    sec = statistics.median(secs)
    return {
        "row": row,
        "load_s": round(load_s, 1),
        "sample_s": [round(s, 2) for s in secs],
        "continuations_per_min": round(60 * n_prompts / sec, 1),
        "new_tokens_per_s": round(n_prompts * new_tokens / sec, 1),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-prompts", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated, from {', '.join(ROWS)}")
    ap.add_argument("--one", choices=list(ROWS), help=argparse.SUPPRESS)  # internal: run one row, print JSON
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.n_prompts, args.new_tokens, args.repeats)))
        return
    print("| row | load (s) | sampling runs (s) | continuations/min | new tokens/s | peak RSS (GB) |")
    print("|---|---|---|---|---|---|")
    for row in args.rows.split(","):
        cmd = [sys.executable, __file__, "--one", row, "--n-prompts", str(args.n_prompts),
               "--new-tokens", str(args.new_tokens), "--repeats", str(args.repeats)]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"| {r['row']} | {r['load_s']} | {r['sample_s']} | {r['continuations_per_min']} | "
              f"{r['new_tokens_per_s']} | {r['peak_rss_gb']} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
