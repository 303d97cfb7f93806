"""An RLOO optimizer step beside a probe-SFT and a DPO step on the same sequences, on the embedded Gemma-3-270M.

Every method sees ``--prompts`` prompts x ``--k`` responses of ``--tokens`` new tokens per step: probe-SFT
trains on those samples (drawn once, before timing), DPO on the pairs they make (one per prompt: its lowest- and
highest-scoring sample, so ``2 x prompts`` sequences a step), RLOO
draws its k fresh samples per prompt from the policy at every step (its step = sampling + the scoring and
reference forwards + the policy forward and backward). Each method runs in its own process (its peak RSS is
its own), fp32, AdamW, the CPU presets' trainable blocks; seconds per step from the median of the steps
after the first. The CPU's model is printed beside the numbers.

    .venv/bin/python benchmarks/bench_rloo_step.py --prompts 4 --k 4 --tokens 16 --steps 4
    .venv/bin/python benchmarks/bench_rloo_step.py --tiny --steps 2      # smoke test on the tiny model
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

METHODS = ("probe_sft", "dpo", "rloo")
PROMPTS = ["The weather today is", "My neighbour keeps shouting at", "Here is a recipe for", "Honestly, you are such a",
           "The meeting tomorrow will", "I can't believe that you", "Our team finally", "Shut up and"]  # fmt: skip
HOOK = "blocks.2.hook_resid_post"


def _model(tiny: bool):
    from probe_lens import load_model
    from probe_lens.testing import tiny_model

    return tiny_model(n_layers=4) if tiny else load_model(device="cpu")


def one(method: str, args: argparse.Namespace) -> dict:
    import numpy as np

    from probe_lens import LogisticProbe, collect, generate
    from probe_lens.training import (
        DPOConfig,
        ProbeSFTConfig,
        RLOOConfig,
        build_pairs,
        probe_reward,
        probe_scores,
        train_dpo,
        train_probe_sft,
        train_rloo,
    )

    model = _model(args.tiny)
    prompts = (PROMPTS * args.prompts)[: args.prompts]
    hook = HOOK if args.tiny else "blocks.6.hook_resid_post"
    data = generate(
        model, [p for p in prompts for _ in range(args.k)], max_new_tokens=args.tokens, seed=0, progress=False
    )
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [hook], progress=False)[hook].numpy()
    probe = LogisticProbe(hook=hook).fit(acts, np.arange(len(data)) % 2)
    trained = len(data)  # sequences a step trains on
    times: list[float] = []
    last = [0.0]

    def on_step(*_args, **_kw) -> None:
        now = time.perf_counter()
        times.append(now - last[0])
        last[0] = now

    common = dict(max_steps=args.steps, lr=1e-5, progress=False, telemetry_every=0, trainable=r"^(blocks|ln_final)\.")
    with tempfile.TemporaryDirectory() as out:
        last[0] = time.perf_counter()
        if method == "probe_sft":
            cfg = ProbeSFTConfig(batch_size=len(data), out_dir=out, **common)
            train_probe_sft(model, data, probe, cfg, on_step=on_step)
        elif method == "dpo":
            pairs = build_pairs(data, probe_scores(model, data, probe, progress=False), k=args.k)
            trained = 2 * len(pairs)
            cfg = DPOConfig(batch_size=len(pairs), out_dir=out, **common)
            train_dpo(model, pairs, cfg, on_step=on_step)
        else:
            from probe_lens.experiments.adapters.base import frozen_copy

            cfg = RLOOConfig(
                batch_size=len(prompts), samples_per_prompt=args.k, max_new_tokens=args.tokens, out_dir=out, **common
            )
            train_rloo(model, prompts, probe_reward(model, probe, cfg), cfg, reference_model=frozen_copy(model),
                       on_step=on_step)  # fmt: skip
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"method": method, "s_per_step": statistics.median(times[1:] or times), "steps": len(times),
            "sequences": trained, "peak_rss_gb": round(rss_gb, 2)}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--k", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=16)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--tiny", action="store_true", help="the tiny random model (a smoke test, not a measurement)")
    ap.add_argument("--one", choices=METHODS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args)))
        return
    from probe_lens._cpu import cpu_info

    print(f"CPU: {cpu_info()['model']}; {'tiny model' if args.tiny else 'embedded Gemma-3-270M'}, "
          f"{args.prompts} prompts x {args.k} samples x {args.tokens} new tokens per step")  # fmt: skip
    for method in METHODS:
        cmd = [sys.executable, __file__, "--one", method, "--prompts", str(args.prompts), "--k", str(args.k),
               "--tokens", str(args.tokens), "--steps", str(args.steps)] + (["--tiny"] if args.tiny else [])  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        r = json.loads(out)
        print(f"{r['method']:>9}: {r['s_per_step']:.2f} s per step ({r['steps']} steps, {r['sequences']} sequences), "
              f"peak RSS {r['peak_rss_gb']} GB")  # fmt: skip


if __name__ == "__main__":
    main()
