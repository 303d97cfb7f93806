"""Training-loop speed and memory, measured side by side in one run (CPU, embedded Gemma-3-270M).

    python benchmarks/bench_training.py [--steps 3] [--batch 4] [--skip-trl] [--skip-1b | --only-1b]

Prints, for the same model, batch and sequence lengths:
  * probe-SFT step vs plain LM-SFT step (target ratio <= 1.15);
  * our DPO step (precomputed reference) vs TRL's DPOTrainer step (target ratio <= 1.0);
  * achieved FLOP/s as a fraction of this machine's measured fp32 matmul peak;
  * peak RSS; and, in fresh subprocesses, the peak RSS of one probe-SFT and one DPO step of a
    random-init Gemma-3-1B-shaped model (TransformerLens config, built offline).
Step times are medians over steps 2.. of each call (step 1 allocates the AdamW state). Methods are
interleaved so background load hits them alike. Writes JSON to --out if given.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

PROMPTS = [
    "Write a short reply to the following comment: people who disagree with me are",
    "Continue the story: the neighbours had been shouting all night, so I",
    "Complete the sentence: the worst thing about my coworkers is",
    "Reply to this forum post about the referee's terrible decision:",
]
RESPONSES = [
    " honestly just misinformed, and I think we should talk about it calmly instead of fighting over it.",
    " knocked on their door and asked them to keep it down, but they slammed the door in my face again.",
    " that they never answer emails on time, which makes every project late and everyone frustrated.",
    " the referee clearly missed the foul, but blaming one person for the whole match is not fair either.",
    " idiots who should shut up and stop wasting everyone's time with their stupid opinions, seriously.",
    " screamed back at them until the whole street woke up and someone finally called the police on us.",
    " they are lazy, useless and complain about everything all day long, I can't stand any of them.",
    " what a clown, he should be banned for life, absolute garbage officiating from start to finish.",
]


def rss_gb() -> float:
    """Peak RSS of this process. VmHWM, not ru_maxrss: a subprocess's ru_maxrss starts at its parent's
    RSS at fork time (Linux keeps it across exec), which would hide a smaller worker's own peak."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def matmul_peak_flops(n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def matmul_params(model) -> int:
    """Parameters that enter a matmul per token (everything but the embedding lookup)."""
    return sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embed."))


def step_times(result) -> list[float]:
    return [r["train/step_seconds"] for r in result.history if "train/step_seconds" in r][1:]


def make_data(model, batch: int):
    from probe_lens.models import tokenize_pairs

    """2*batch rows: a clean (even rows) and a toxic (odd rows) response to each prompt; labels 1 = toxic."""
    prompts = [PROMPTS[(i // 2) % 4] for i in range(2 * batch)]
    responses = [RESPONSES[(i // 2) % 4 + 4 * (i % 2)] for i in range(2 * batch)]
    return tokenize_pairs(model, prompts, responses, add_eos=True), np.arange(2 * batch) % 2


def bench_ours(args, out: dict) -> None:
    from probe_lens import load_model
    from probe_lens.activations import collect
    from probe_lens.probes import LogisticProbe
    from probe_lens.training import DPOConfig, ProbeSFTConfig, build_pairs, train_dpo, train_probe_sft

    t = time.perf_counter()
    model = load_model(device="cpu")
    print(f"loaded embedded model in {time.perf_counter() - t:.1f}s; RSS peak {rss_gb():.2f} GB", flush=True)
    data, y = make_data(model, args.batch)  # 2*batch rows; an SFT step takes `batch` of them
    hook = f"blocks.{model.cfg.n_layers * 2 // 3}.hook_resid_post"
    acts = collect(model, data.tokens, data.attention_mask, data.response_mask, [hook], progress=False)[hook]
    probe = LogisticProbe(hook=hook, pooling="mean").fit(acts, y)
    pairs = build_pairs(data, probe.predict_proba(acts)[:, 1], k=2)  # `batch` pairs: one DPO step
    width = data.tokens.shape[1]
    n_mm = matmul_params(model)
    common = dict(lr=1e-7, max_steps=args.steps, batch_size=args.batch, progress=False, max_grad_norm=1.0)
    sft_t, lm_t, dpo_t = [], [], []
    for rnd in range(args.rounds):
        r = train_probe_sft(model, data, probe, ProbeSFTConfig(probe_weight=1.0, **common))
        sft_t += step_times(r)
        r = train_probe_sft(model, data, probe, ProbeSFTConfig(probe_weight=0.0, **common))  # plain LM SFT
        lm_t += step_times(r)
        r = train_dpo(model, pairs, DPOConfig(beta=0.1, **common))
        dpo_t += step_times(r)
        print(f"round {rnd}: probe-SFT {sft_t[-1]:.2f}s  LM-SFT {lm_t[-1]:.2f}s  DPO {dpo_t[-1]:.2f}s", flush=True)
    med = {k: statistics.median(v) for k, v in (("probe_sft", sft_t), ("lm_sft", lm_t), ("dpo", dpo_t))}
    sft_tokens, dpo_tokens = args.batch * width, 2 * args.batch * width
    out.update(
        model="embedded Gemma-3-270M (TransformerLens, fp32)",
        batch=args.batch,
        seq_len=width,
        probe_hook=hook,
        step_seconds=med,
        step_seconds_all={"probe_sft": sft_t, "lm_sft": lm_t, "dpo": dpo_t},
        ratio_probe_sft_over_lm_sft=med["probe_sft"] / med["lm_sft"],
        flops_per_step={"sft": 6 * n_mm * sft_tokens, "dpo": 6 * n_mm * dpo_tokens},
    )
    out["achieved_flops"] = {
        "probe_sft": 6 * n_mm * sft_tokens / med["probe_sft"],
        "lm_sft": 6 * n_mm * sft_tokens / med["lm_sft"],
        "dpo": 6 * n_mm * dpo_tokens / med["dpo"],
    }
    out["dpo_pairs"] = pairs.summary()
    out["peak_rss_gb_after_ours"] = rss_gb()
    del model


def bench_trl(args, out: dict) -> None:
    """TRL's DPOTrainer on the same weights (HF), batch and texts; live reference (TRL's default)."""
    try:
        import trl
        from datasets import Dataset
        from transformers import TrainerCallback
    except ImportError as e:
        out["trl_error"] = f"TRL not importable: {e!r}"
        return
    from probe_lens.models import load_embedded_hf

    hf, tok = load_embedded_hf()
    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, a, s, c, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, a, s, c, **kw):
            times.append(time.perf_counter() - self.t)

    rows = [
        {
            "prompt": PROMPTS[p % 4],
            "chosen": RESPONSES[p % 4] + tok.eos_token,
            "rejected": RESPONSES[p % 4 + 4] + tok.eos_token,
        }
        for p in range(args.batch)
    ]
    steps = args.steps * args.rounds
    ds = Dataset.from_list(rows * steps)
    cfg = trl.DPOConfig(
        output_dir=args.trl_dir,
        per_device_train_batch_size=args.batch,
        max_steps=steps,
        learning_rate=1e-7,
        beta=0.1,
        use_cpu=True,
        report_to="none",
        logging_steps=1000,
        save_strategy="no",
        max_length=512,
        precompute_ref_log_probs=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
        gradient_checkpointing=False,  # TRL 1.x turns it on by default; ours does not recompute
    )
    try:
        trainer = trl.DPOTrainer(model=hf, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Timer()])
        trainer.train()
    except Exception as e:  # noqa: BLE001 - report exactly why TRL could not run
        out["trl_error"] = f"{type(e).__name__}: {e}"
        return
    per_call = [times[i] for i in range(len(times)) if i % args.steps != 0] or times[1:]
    out["trl_version"] = trl.__version__
    out["trl_dpo_step_seconds"] = statistics.median(times[1:])
    out["trl_dpo_step_seconds_all"] = times
    out["ratio_dpo_ours_over_trl"] = out["step_seconds"]["dpo"] / out["trl_dpo_step_seconds"]
    out["peak_rss_gb_after_trl"] = rss_gb()
    del per_call


# ---- Gemma-3-1B shape (random init), one step per fresh process --------------------------------


def gemma1b_worker(method: str, trainable: str) -> None:
    import psutil
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_pretrained_model_config

    from probe_lens.models import apply_fast_cpu_patches, tokenize_pairs
    from probe_lens.probes import LogisticProbe
    from probe_lens.testing import tiny_tokenizer
    from probe_lens.training import DPOConfig, ProbeSFTConfig, build_pairs, train_dpo, train_probe_sft

    cfg = get_pretrained_model_config("google/gemma-3-1b-pt", device="cpu")
    # Memory guard (this machine is shared): weights ~5.2 GB fp32 (TL unties embed/unembed) plus
    # ~0.33 GB per trained block (grad + 2 AdamW moments) plus ~2 GB working set. If the requested
    # set does not fit in 70% of the free memory, train the largest block range ending at the
    # probe layer (20) that does, and say so in the output.
    avail = psutil.virtual_memory().available / 2**30
    per_block, fixed = 0.33, 5.2 + 2.0
    need = fixed + (26 * per_block if trainable != "all" else 21.0 - 5.2)
    if need > 0.7 * avail:
        b = int((0.7 * avail - fixed) / per_block)
        if b < 1:
            print(
                json.dumps(
                    {
                        "method": method,
                        "skipped": f"only {avail:.1f} GB free; a 1B-shape step needs > {fixed / 0.7:.1f} GB",
                    }
                )
            )
            return
        trainable = f"blocks:{max(0, 21 - b)}-20"
    t = time.perf_counter()
    model = apply_fast_cpu_patches(HookedTransformer(cfg, tokenizer=tiny_tokenizer(), default_padding_side="left"))
    n_params = sum(p.numel() for p in model.parameters())
    base_rss = rss_gb()
    data = tokenize_pairs(model, [PROMPTS[0][:48]] * 2, [RESPONSES[0][:48], RESPONSES[4][:48]], add_eos=True)
    hook = "blocks.20.hook_resid_post"
    rng = np.random.default_rng(0)
    probe = LogisticProbe(hook=hook, pooling="mean").fit(rng.normal(size=(16, cfg.d_model)), np.arange(16) % 2)
    common = dict(lr=1e-7, max_steps=1, batch_size=1, progress=False, trainable=trainable)
    t = time.perf_counter()
    if method == "sft":
        train_probe_sft(model, data.select([0]), probe, ProbeSFTConfig(**common))
    else:
        train_dpo(model, build_pairs(data, [0.0, 1.0], k=2), DPOConfig(**common))
    print(
        json.dumps(
            {
                "method": method,
                "n_params": n_params,
                "trainable": trainable,
                "seq_len": int(data.tokens.shape[1]),
                "rss_after_build_gb": base_rss,
                "peak_rss_gb": rss_gb(),
                "step_seconds": time.perf_counter() - t,
                "d_model": cfg.d_model,
                "n_layers": cfg.n_layers,
                "available_gb_at_start": avail,
            }
        )
    )


def bench_gemma1b(args, out: dict) -> None:
    import psutil

    avail = psutil.virtual_memory().available / 2**30
    # full fp32 AdamW fine-tuning of the 1.3B TL parameters (untied embed/unembed) needs ~21 GB;
    # train the 26 blocks (embedding/unembedding frozen) when that does not fit.
    trainable = "all" if avail > 26 else "blocks:0-25"
    out["gemma1b"] = {"available_gb_at_start": avail}
    for method in ("sft", "dpo"):
        cmd = [sys.executable, __file__, "--gemma1b-worker", method, "--trainable", trainable]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout_1b)
        except subprocess.TimeoutExpired:
            out["gemma1b"][method] = f"timed out after {args.timeout_1b}s"
            continue
        last = [l for l in p.stdout.splitlines() if l.startswith("{")]
        out["gemma1b"][method] = (
            json.loads(last[-1]) if (p.returncode == 0 and last) else f"failed rc={p.returncode}: {p.stderr[-800:]}"
        )
        print(f"Gemma-3-1B shape {method}: {out['gemma1b'][method]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=3, help="steps per call (the first is not timed)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of the three methods")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--skip-trl", action="store_true")
    ap.add_argument("--skip-1b", action="store_true")
    ap.add_argument("--only-1b", action="store_true", help="only the Gemma-3-1B-shape memory figures")
    ap.add_argument("--timeout-1b", type=int, default=900)
    ap.add_argument("--trl-dir", default="/tmp/probe_lens_bench_trl")
    ap.add_argument("--out", default=None)
    ap.add_argument("--gemma1b-worker", choices=["sft", "dpo"], help=argparse.SUPPRESS)
    ap.add_argument("--trainable", default="all", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.gemma1b_worker:
        gemma1b_worker(args.gemma1b_worker, args.trainable)
        return
    out: dict = {"torch": torch.__version__, "threads": torch.get_num_threads(), "loadavg_start": os.getloadavg()}
    if args.only_1b:
        bench_gemma1b(args, out)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(out, f, indent=2, default=str)
        return
    out["matmul_peak_flops_fp32"] = matmul_peak_flops()
    bench_ours(args, out)
    if not args.skip_trl:
        bench_trl(args, out)
    out["matmul_peak_flops_fp32_end"] = matmul_peak_flops()
    peak = max(out["matmul_peak_flops_fp32"], out["matmul_peak_flops_fp32_end"])
    out["flops_fraction_of_peak"] = {k: v / peak for k, v in out["achieved_flops"].items()}
    out["peak_rss_gb"] = rss_gb()
    if not args.skip_1b:
        bench_gemma1b(args, out)
    out["loadavg_end"] = os.getloadavg()
    print("\n=== training benchmark (one run, same machine) ===")
    s = out["step_seconds"]
    print(f"batch {out['batch']} x {out['seq_len']} tokens, {out['model']}")
    print(
        f"probe-SFT step {s['probe_sft']:.2f}s vs LM-SFT step {s['lm_sft']:.2f}s -> ratio {out['ratio_probe_sft_over_lm_sft']:.3f} (target <= 1.15)"
    )
    if "trl_dpo_step_seconds" in out:
        print(
            f"DPO step (precomputed ref) {s['dpo']:.2f}s vs TRL {out['trl_version']} DPOTrainer {out['trl_dpo_step_seconds']:.2f}s -> ratio {out['ratio_dpo_ours_over_trl']:.3f} (target <= 1.0)"
        )
    else:
        print(f"DPO step {s['dpo']:.2f}s; TRL: {out.get('trl_error', 'skipped')}")
    print(
        f"matmul peak {peak / 1e9:.0f} GFLOP/s; achieved: "
        + ", ".join(
            f"{k} {v / 1e9:.1f} GFLOP/s ({out['flops_fraction_of_peak'][k]:.0%})"
            for k, v in out["achieved_flops"].items()
        )
    )
    print(f"peak RSS {out['peak_rss_gb']:.2f} GB; load average start {out['loadavg_start']} end {out['loadavg_end']}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2, default=str)


if __name__ == "__main__":
    main()
