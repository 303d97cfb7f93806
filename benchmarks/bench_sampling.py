"""Sampling throughput and quality: ``generate(fast=False)`` (reference) vs ``generate(fast=True)``.

Speed: continuations per minute of both paths, interleaved (ref, fast, ref, fast, ...) in one process on
the same prompts, seed and batch size, so machine noise hits both alike; the ratio is per repeat.
With ``--ablation``, rows that switch parts of the fast path off: fp32 attention projections; TL's own
attention (the previous fast path: every cached key re-rotated and each KV head copied per query head
at every step); all products in fp32 (shared prefill, rotated-key cache and in-place sampling only).

Quality, on the embedded Gemma-3-270M:
- next-token distributions and perplexity on held-out neutral texts (teacher-forced): KL(ref ||
  candidate), top-1 agreement, max |logit difference| and perplexity for the fast path as kept (its
  prefill through a rotated-key cache, ``fast_path_logits``), with fp32 attention, the previous fast
  path (fp16 unembedding and MLP only), and int8 products with per-row activation scales (the
  rejected candidate, defined here); the reference perplexity is cross-checked against
  ``probe_lens.experiments.metrics.perplexity``;
- toxicity rate (``get_scorer("profanity")``, threshold 0.5) of the speed runs' samples, same seeds,
  with 95% Wilson intervals;
- greedy decoding: prompts whose 24 greedy tokens are identical under both paths.

    .venv/bin/python benchmarks/bench_sampling.py --n-prompts 32 --samples 2 --batch-size 64 --repeats 2 \
        --n-greedy 16 --n-neutral 24
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
import types
import warnings

import torch

warnings.filterwarnings("ignore")


def _wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def _int8_matmul(x: torch.Tensor, w8: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Rejected candidate: int8 weights (per output column) x int8 activations (per row), int32 accumulation."""
    x2d = x.reshape(-1, x.shape[-1]).float()
    row = x2d.abs().amax(1, keepdim=True).clamp_min(1e-12) / 127
    acc = torch._int_mm(torch.round(x2d / row).to(torch.int8), w8).float()
    return (acc * row * scale).view(*x.shape[:-1], w8.shape[1])


def _quant(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = w.detach().abs().amax(0).clamp_min(1e-12) / 127
    return torch.round(w.detach() / s).to(torch.int8).contiguous(), s


@contextlib.contextmanager
def _int8_products(model):
    """The int8 candidate swapped into Unembed and GatedMLP (no-grad only; for the quality figure)."""
    from transformer_lens.components import Unembed
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    saved = []
    for mod in model.modules():
        if type(mod) is Unembed:
            w8, s = _quant(mod.W_U)

            def fwd(self, r, w8=w8, s=s):
                return _int8_matmul(r, w8, s) + self.b_U
        elif type(mod) is GatedMLP:
            q = {n: _quant(getattr(mod, n)) for n in ("W_gate", "W_in", "W_out")}

            def fwd(self, x, q=q):
                pre = _int8_matmul(x, *q["W_gate"])
                lin = _int8_matmul(x, *q["W_in"])
                return _int8_matmul(self.act_fn(pre) * lin + self.b_in, *q["W_out"]) + self.b_out
        else:
            continue
        saved.append((mod, mod.__dict__.get("forward")))
        mod.forward = types.MethodType(fwd, mod)
    try:
        yield
    finally:
        for mod, prev in saved:
            if prev is None:
                mod.__dict__.pop("forward", None)
            else:
                mod.forward = prev


def _next_token_quality(model, texts: list[str], candidate, chunk: int = 8) -> dict[str, float]:
    """KL(ref || candidate), top-1 agreement, max |logit diff| and both perplexities, teacher-forced.

    ``candidate(tokens, mask)`` returns every position's logits. Perplexity: exp of the mean NLL of every
    token after the first, pooled over texts (as ``probe_lens.experiments.metrics.perplexity``).
    """
    kls, agree, diff, n = [], 0, 0.0, 0
    nll = {"ref": 0.0, "cand": 0.0}
    n_pred = 0
    for i in range(0, len(texts), chunk):
        toks = model.to_tokens(texts[i : i + chunk])
        mask = (toks != model.tokenizer.pad_token_id).long()
        with torch.no_grad():
            ref = model(toks, attention_mask=mask)
            cand = candidate(toks, mask)
        pred = (mask[:, :-1] * mask[:, 1:]).bool()
        for name, lg in (("ref", ref), ("cand", cand)):
            lp = lg[:, :-1].log_softmax(-1).gather(-1, toks[:, 1:, None])[..., 0]
            nll[name] -= float(lp[pred].sum())
        n_pred += int(pred.sum())
        keep = mask.bool().reshape(-1)
        ref, cand = ref.reshape(-1, ref.shape[-1])[keep], cand.reshape(-1, cand.shape[-1])[keep]
        lr, lc = ref.log_softmax(-1), cand.log_softmax(-1)
        kls.append((lr.exp() * (lr - lc)).sum(-1))
        agree += int((ref.argmax(-1) == cand.argmax(-1)).sum())
        diff = max(diff, float((ref - cand).abs().max()))
        n += int(keep.sum())
    kl = torch.cat(kls)
    return {
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "top1_agree": agree / n,
        "max_abs_logit_diff": diff,
        "positions": n,
        "ppl_ref": math.exp(nll["ref"] / n_pred),
        "ppl_cand": math.exp(nll["cand"] / n_pred),
    }


def _in_context(model, ctx):
    def run(toks, mask):
        with torch.no_grad(), ctx():
            return model(toks, attention_mask=mask)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-prompts", type=int, default=64)
    ap.add_argument("--samples", type=int, default=2, help="samples per prompt (repeated prompts, as the study does)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=2, help="0: only the teacher-forced and greedy quality checks")
    ap.add_argument("--n-greedy", type=int, default=32)
    ap.add_argument("--n-neutral", type=int, default=50)
    ap.add_argument("--ablation", action="store_true", help="also time the fast path with parts of it switched off")
    args = ap.parse_args()

    import probe_lens
    from probe_lens.data import load_prompts
    from probe_lens.data.prompts import neutral, provocative
    from probe_lens.models.fast_sampling import FastSampling
    from probe_lens.models.generation import generate

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    model = probe_lens.load_model()
    prompts = load_prompts()
    prov = [p.text for p in provocative(prompts)][: args.n_prompts]
    texts = [p for p in prov for _ in range(args.samples)]
    neutral_texts = _last(neutral(prompts), args.n_neutral)
    kw = dict(max_new_tokens=args.new_tokens, seed=0, batch_size=args.batch_size, progress=False)
    paths = {"reference": False, "fast": True}
    if args.ablation:
        paths["fast, fp32 attention"] = FastSampling(half_attention=False)
        paths["fast, TL attention (previous fast path)"] = FastSampling(cached_rotary_keys=False)
        paths["fast, fp32 products"] = FastSampling(half_unembed=False, half_mlp=False, half_attention=False)
    generate(model, texts[:4], **{**kw, "batch_size": 4}, fast=True)  # warm-up: builds the fp16 copies once
    if args.repeats > 0:
        _speed_and_toxicity(model, texts, prov, paths, kw, args)
    _quality(model, neutral_texts, _last(provocative(prompts), args.n_greedy), args)


def _last(prompts, n: int) -> list[str]:
    """The texts of the last ``n`` prompts (held out from the speed runs' first prompts); none for 0."""
    return [p.text for p in prompts][len(prompts) - n :] if n > 0 else []


def _speed_and_toxicity(model, texts, prov, paths, kw, args) -> None:
    from probe_lens.models.generation import generate
    from probe_lens.scorers import get_scorer

    rates: dict[str, list[float]] = {k: [] for k in paths}
    samples = {}
    for r in range(args.repeats):
        for name, fast in paths.items():
            t0 = time.perf_counter()
            g = generate(model, texts, **kw, fast=fast)
            dt = time.perf_counter() - t0
            rates[name].append(len(texts) / dt * 60)
            samples[name] = g
            print(f"repeat {r} {name:<22} {rates[name][-1]:7.1f} continuations/min ({dt:.1f} s)", flush=True)

    print(
        f"\n## speed: {len(texts)} continuations ({len(prov)} prompts x {args.samples}), {args.new_tokens} new tokens, "
        f"batch {args.batch_size}, {args.repeats} interleaved repeats"
    )
    print("| path | continuations/min (median) | per repeat | ratio to reference (median of per-repeat ratios) |")
    print("|---|---|---|---|")
    for name in paths:
        ratios = [a / b for a, b in zip(rates[name], rates["reference"])]
        print(
            f"| {name} | {statistics.median(rates[name]):.1f} | {', '.join(f'{x:.1f}' for x in rates[name])} | "
            f"{statistics.median(ratios):.2f}x |"
        )

    scorer = get_scorer("profanity")
    print("\n## toxicity of the speed runs' samples (same prompts and seed), profanity scorer, threshold 0.5")
    print("| path | toxic / n | rate | 95% Wilson interval |")
    print("|---|---|---|---|")
    for name in ("reference", "fast"):
        s = torch.tensor(scorer.score(samples[name].response_texts))
        k, n = int((s >= 0.5).sum()), len(s)
        lo, hi = _wilson(k, n)
        print(f"| {name} | {k} / {n} | {k / n:.3f} | [{lo:.3f}, {hi:.3f}] |")
    same = sum(torch.equal(a, b) for a, b in zip(samples["reference"].tokens, samples["fast"].tokens))
    print(f"samples token-identical to the reference's (same seed): {same} / {len(texts)}")
    _paired_toxicity(scorer, samples["reference"].response_texts, samples["fast"].response_texts)


def _paired_toxicity(scorer, ref_texts: list[str], fast_texts: list[str]) -> None:
    """Exact McNemar test: the two paths' samples share their prompt and seed, so compare them as pairs."""
    from scipy.stats import binomtest

    a = torch.tensor(scorer.score(ref_texts)) >= 0.5
    b = torch.tensor(scorer.score(fast_texts)) >= 0.5
    only_ref, only_fast = int((a & ~b).sum()), int((~a & b).sum())
    n = only_ref + only_fast
    p = binomtest(only_ref, n, 0.5).pvalue if n else 1.0
    print(
        f"paired (same prompt and seed): toxic only under the reference {only_ref}, only under fast {only_fast}; "
        f"exact McNemar p = {p:.3f}"
    )


def _quality(model, neutral_texts, greedy, args) -> None:
    from probe_lens.models.fast_sampling import FastSampling, fast_path_logits, half_weight_products

    candidates = {
        "fast path (kept): fp16 weights incl. attention, rotated-key cache": lambda t, m: fast_path_logits(model, t, m),
        "fast path, fp32 attention": lambda t, m: fast_path_logits(model, t, m, FastSampling(half_attention=False)),
        "fp16 unembed + MLP only (previous fast path)": _in_context(model, lambda: half_weight_products(model)),
        "int8 per-row (rejected)": _in_context(model, lambda: _int8_products(model)),
    }
    if neutral_texts:
        _next_token_table(model, neutral_texts, candidates)
    if greedy:
        _greedy(model, greedy, args)


def _next_token_table(model, neutral_texts, candidates) -> None:
    from probe_lens.experiments.metrics import perplexity

    print(f"\n## next-token distributions on {len(neutral_texts)} held-out neutral texts (teacher-forced)")
    print(
        "| products | mean KL(ref‖cand) | max KL | top-1 agreement | max abs logit diff | perplexity ref → cand | positions |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, fn in candidates.items():
        q = _next_token_quality(model, neutral_texts, fn)
        print(
            f"| {name} | {q['kl_mean']:.2e} | {q['kl_max']:.2e} | {q['top1_agree']:.4f} | {q['max_abs_logit_diff']:.3f} | "
            f"{q['ppl_ref']:.4f} → {q['ppl_cand']:.4f} ({(q['ppl_cand'] / q['ppl_ref'] - 1) * 100:+.3f}%) | {q['positions']} |"
        )
    with torch.no_grad():
        oracle = perplexity(model, neutral_texts, batch_size=16)
    print(
        f"\nreference perplexity by probe_lens.experiments.metrics.perplexity (cross-check of the column above): {oracle:.4f}"
    )


def _greedy(model, greedy, args) -> None:
    from probe_lens.models.generation import generate

    g0 = generate(
        model, greedy, max_new_tokens=args.new_tokens, do_sample=False, batch_size=args.batch_size, progress=False
    )
    g1 = generate(
        model,
        greedy,
        max_new_tokens=args.new_tokens,
        do_sample=False,
        batch_size=args.batch_size,
        progress=False,
        fast=True,
    )
    same = [torch.equal(a, b) for a, b in zip(g0.tokens, g1.tokens)]
    first = [int((a != b).nonzero()[0]) - g0.prompt_len for a, b, s in zip(g0.tokens, g1.tokens, same) if not s]
    print(
        f"greedy, {args.new_tokens} tokens: {sum(same)} / {len(same)} prompts identical"
        + (f"; the others diverge at generated token {sorted(first)}" if first else "")
    )


if __name__ == "__main__":
    main()
