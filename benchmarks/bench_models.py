"""Foundation figures on the embedded Gemma-3-270M, measured side by side in one run.

    python benchmarks/bench_models.py [--new-tokens 24] [--skip-load | --only-load] [--repeats 3]

- load: cold (conversion from the GGUF into a fresh cache) and warm (from the cache) load time and peak
  RSS, each in its own subprocess;
- generation: tokens/s of probe_lens.generate vs HF ``generate`` on the same weights, same prompts,
  batch 1 and 16, greedy and sampling (T=1), interleaved;
- activations: probe_lens.collect (3 hooks, pooled) vs a plain no-grad forward of the same batches.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time

import torch

LOAD_SNIPPET = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from probe_lens import load_model
m = load_model(cache_dir=sys.argv[1], device="cpu")
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}))
"""

PROMPTS = [
    "I can't believe you would say something so",
    "The recipe calls for two cups of",
    "Honestly, the people in this thread are",
    "Our train was delayed again this morning because",
    "Shut up, you absolute",
    "The best way to learn a new language is",
    "My neighbour keeps parking his stupid truck",
    "Today the city council voted to",
] * 2


def load_figures(cache_root: str) -> dict:
    out = {}
    for label in ("cold", "warm"):
        r = subprocess.run([sys.executable, "-c", LOAD_SNIPPET, cache_root], capture_output=True, text=True, check=True)
        out[label] = json.loads(r.stdout.strip().splitlines()[-1])
    return out


def tok_per_s(fn, n_tokens_fn, repeats: int = 2) -> float:
    best = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t0
        best = max(best, n_tokens_fn(res) / dt)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--skip-load", action="store_true")
    ap.add_argument("--only-load", action="store_true", help="cold and warm load figures only")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of ours and HF per setting (best of each)")
    args = ap.parse_args()
    report: dict = {"torch_threads": torch.get_num_threads()}
    if not args.skip_load:
        with tempfile.TemporaryDirectory() as cache:
            report["load"] = load_figures(cache)
    if args.only_load:
        print(json.dumps(report, indent=2))
        return
    from probe_lens import collect, generate, load_model
    from probe_lens.models import load_embedded_hf

    model = load_model(device="cpu")
    hf, tok = load_embedded_hf()
    tok.padding_side = "left"
    n_new = args.new_tokens
    gen_rows = []
    for batch in (1, 16):
        prompts = PROMPTS[:batch]
        for mode, kw in (("greedy", dict(do_sample=False)), ("sample T=1", dict(do_sample=True, temperature=1.0))):
            enc = tok(prompts, return_tensors="pt", padding=True)

            def hf_run():
                with torch.no_grad():
                    return hf.generate(
                        **enc,
                        max_new_tokens=n_new,
                        min_new_tokens=n_new,
                        top_k=None,
                        top_p=None,
                        pad_token_id=tok.pad_token_id,
                        **kw,
                    )

            ours = theirs = 0.0
            for _ in range(args.repeats):  # interleaved, so background load hits both alike; best of each
                ours = max(
                    ours,
                    tok_per_s(
                        lambda: generate(
                            model,
                            prompts,
                            max_new_tokens=n_new,
                            seed=0,
                            batch_size=batch,
                            stop_at_eos=False,
                            progress=False,
                            **kw,
                        ),
                        lambda g: int(g.response_mask.sum()),
                        repeats=1,
                    ),
                )
                theirs = max(
                    theirs, tok_per_s(hf_run, lambda o: (o.shape[1] - enc.input_ids.shape[1]) * o.shape[0], repeats=1)
                )
            gen_rows.append(
                {"batch": batch, "mode": mode, "probe_lens_tok_s": ours, "hf_tok_s": theirs, "ratio": ours / theirs}
            )
    report["generation"] = gen_rows
    g = generate(model, PROMPTS * 4, max_new_tokens=n_new, seed=0, batch_size=16, progress=False)
    hooks = ["blocks.6.hook_resid_post", "blocks.9.hook_resid_post", "blocks.12.hook_resid_post"]

    def plain():
        with torch.no_grad():
            for i in range(0, len(g), 16):
                model(g.tokens[i : i + 16], attention_mask=g.attention_mask[i : i + 16], return_type=None)

    def ours():
        collect(model, g.tokens, g.attention_mask, g.response_mask, hooks, batch_size=16, progress=False)

    def best(fn, r=3):
        times = []
        for _ in range(r):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    t_plain, t_collect = best(plain), best(ours)
    report["collect"] = {
        "n_seqs": len(g),
        "plain_forward_s": t_plain,
        "collect_s": t_collect,
        "ratio": t_collect / t_plain,
        "note": "collect stops after the last needed layer (12 of 18) and skips the unembedding",
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
