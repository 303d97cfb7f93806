"""The shipped reference continuations of the embedded Gemma-3-270M: counts, provenance, the CPU they were sampled on, and regeneration from their row seeds (exact on that CPU kind, within a near-tie bound elsewhere)."""

from __future__ import annotations

import json

import numpy as np
import torch

from probe_lens._cpu import cpu_info, same_cpu_kind
from probe_lens.data import load_prompts
from probe_lens.data.reference import (
    SHIPPED_REFERENCE,
    load_reference,
    provenance_path,
    row_seed,
)
from probe_lens.models.fast_sampling import fast_path_logits
from probe_lens.models.generation import generate


def test_shipped_set_has_the_promised_counts_and_provenance():
    ref = load_reference()
    c = ref.counts()
    cfg = ref.config
    assert cfg.max_new_tokens >= 24
    assert c["n_full_length"] >= 4000, c  # continuations of at least 24 tokens
    assert c["n_positive"] >= 450, c
    # every provocative prompt (any study's probe pool or on-policy rows draw from them) has its samples
    provocative = {p.id for p in load_prompts() if p.tag == "provocative"}
    assert provocative <= set(ref.prompts)
    per_prompt = ref.rows.groupby("prompt_id").size()
    assert (per_prompt == cfg.samples_per_prompt).all()
    # token ids decode to the stored texts' tokens; scores are probabilities
    assert ((ref.rows["score"] >= 0) & (ref.rows["score"] <= 1)).all()
    assert ref.rows["ids"].map(len).max() == cfg.max_new_tokens
    prov = json.loads(provenance_path(SHIPPED_REFERENCE).read_text())
    assert prov["command"].startswith("probe-lens build-reference")
    assert prov["commit"] and prov["scorer"]["name"] and prov["scorer"]["version"]
    assert prov["sha256"] == ref.meta["sha256"], "the shipped file is not the one its provenance describes"
    assert prov["counts"] == c
    assert SHIPPED_REFERENCE.stat().st_size < 8 * 2**20


def _last_chunk(ref) -> list[int]:
    """Row positions of the builder's last chunk (one ``generate`` call, which sorts its prompts by length
    into batches: regenerating the chunk whole reproduces the batches, so the padding and the shapes)."""
    chunk_rows = ref.config.chunk_prompts * ref.config.samples_per_prompt
    return list(range((len(ref.rows) - 1) // chunk_rows * chunk_rows, len(ref.rows)))


MIN_SHARE_ELSEWHERE = 0.90
"""On another CPU kind (or in other batches) at least this share of rows must regenerate token for token."""


NEAR_TIE = 1e-3
"""A divergent row's first differing token must be a rounding flip: the row's uniform draw lies within this
distance (in probability) of the CDF boundary between the stored and the regenerated token."""


def _regenerate(model, ref, rows, *, batch_size=None, seed_offset=0) -> list[list[int]]:
    cfg = ref.config
    gen = generate(
        model,
        [ref.prompts[p]["text"] for p in rows["prompt_id"]],
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        row_seeds=[s + seed_offset for s in rows["row_seed"]],
        batch_size=batch_size or cfg.batch_size,
        progress=False,
        fast=cfg.fast,
    )
    return [
        gen.tokens[i, gen.prompt_len :][gen.response_mask[i, gen.prompt_len :].bool()].tolist() for i in range(len(gen))
    ]


def _draw_to_boundary(model, ref, row, got: list[int]) -> float:
    """For a row whose regeneration ``got`` differs from its stored ids: how far the row's uniform draw at the
    first difference lies from the CDF boundary between the two tokens, under this machine's logits
    (teacher-forced on the shared prefix). A flip by rounding lies at ~0; a broken sampler anywhere."""
    want = list(row["ids"])
    t = next(i for i, (a, b) in enumerate(zip(want, got)) if a != b)
    gen = torch.Generator().manual_seed(int(row["row_seed"]))
    u = [float(torch.rand((1, 1), generator=gen)) for _ in range(t + 1)][t]  # one draw per step, as generate
    ids = torch.tensor([ref.prompts[row["prompt_id"]]["ids"] + want[:t]])
    with torch.no_grad():  # the sampler's own numerics: the fast path's when the set was sampled through it
        out = fast_path_logits(model, ids, torch.ones_like(ids)) if ref.config.fast else model(ids)
    logits = out[0, -1].float() / ref.config.temperature
    cdf = torch.softmax(logits, dim=-1).cumsum(dim=-1)
    return abs(u - float(cdf[min(want[t], got[t])] / cdf[-1]))


def _regeneration_failure(model, ref, rows, got, *, exact: bool) -> str | None:
    """None when ``got`` regenerates ``rows`` as a correct sampler must (every row when ``exact``, else at least
    MIN_SHARE_ELSEWHERE of them, each other row diverging at a near-tie); else what went wrong."""
    same = [g == list(w) for g, w in zip(got, rows["ids"])]
    share = float(np.mean(same))
    where = f"{share:.1%} of {len(same)} rows identical (sampled on {ref.cpu}; this CPU: {cpu_info()})"
    if exact:
        return None if all(same) else f"{where}; on the same CPU kind every row must regenerate"
    if share < MIN_SHARE_ELSEWHERE:
        return f"{where}; at least {MIN_SHARE_ELSEWHERE:.0%} must"
    dist = {
        int(rows.index[i]): _draw_to_boundary(model, ref, rows.iloc[i], got[i]) for i in np.flatnonzero(~np.array(same))
    }
    print(f"{where}; draw to boundary at the first difference: {dist}")
    far = {i: d for i, d in dist.items() if d >= NEAR_TIE}
    return f"{where}; rows diverging away from a near-tie (draw to boundary): {far}" if far else None


def test_shipped_rows_regenerate_from_their_seeds(embedded_model):
    """Sampled in the chunk they were built in (same batches, padding and shapes), the rows regenerate token for
    token from their recorded seeds on the CPU kind they were sampled on. Another CPU kind rounds products
    differently and can flip a near-tie token, after which the continuation diverges: there at least 90% of the
    rows must be identical and every other one must diverge at a near-tie. The shipped file stays the reference."""
    ref = load_reference()
    rows = ref.rows.iloc[_last_chunk(ref)]
    assert rows["row_seed"].tolist() == [
        row_seed(ref.config.seed, p, s) for p, s in zip(rows["prompt_id"], rows["sample"])
    ]
    got = _regenerate(embedded_model, ref, rows)
    failure = _regeneration_failure(embedded_model, ref, rows, got, exact=bool(ref.cpu_matches()))
    assert failure is None, failure


def test_the_cross_cpu_bound_holds_for_other_batches_and_fails_for_a_broken_sampler(embedded_model):
    """The bound used on another CPU kind, checked here where its rounding change is another batch layout
    (other padding widths, as another CPU's kernels): it holds; with the wrong row seeds it fails."""
    ref = load_reference()
    rows = ref.rows.iloc[_last_chunk(ref)[:96]]
    other_batches = _regenerate(embedded_model, ref, rows, batch_size=7)
    assert (failure := _regeneration_failure(embedded_model, ref, rows, other_batches, exact=False)) is None, failure
    wrong_seeds = _regenerate(embedded_model, ref, rows.iloc[:32], seed_offset=1)
    failure = _regeneration_failure(embedded_model, ref, rows.iloc[:32], wrong_seeds, exact=False)
    assert failure is not None and "at least 90%" in failure, failure


def test_reference_records_the_cpu_and_says_whether_this_one_matches():
    ref = load_reference()
    assert ref.cpu["model"] and ref.cpu["flags"], ref.cpu  # the shipped set's CPU, flags included
    assert ref.cpu_matches() is same_cpu_kind(ref.cpu)
    assert same_cpu_kind({"model": "AMD EPYC", "flags": ["avx2"]}, {"model": "AMD EPYC", "flags": ["avx2"]})
    assert not same_cpu_kind(
        {"model": "AMD EPYC", "flags": ["avx2"]}, {"model": "AMD EPYC", "flags": ["avx2", "amx_bf16"]}
    )
    assert not same_cpu_kind("Intel(R) Xeon(R) Platinum 8480+", {"model": "AMD EPYC", "flags": []})
    assert same_cpu_kind(None) is None
