"""A study's plan without running it: continuations, training steps, tokens, FLOPs and memory per process.

``estimate_plan(config)`` reads only the config and the model's *architecture* (a TransformerLens
config, built in for official names, or passed in), builds the model on the ``meta`` device to count
its parameters exactly, and never loads weights. ``probe-lens reproduce --dry-run`` prints
:func:`format_plan` of it.

What is estimated, and how:

- continuations: probe data (once per study; up to ``data.max_rounds`` rounds, one round when
  ``data.min_minority`` is 0), training samples, evaluation and telemetry samples (per seed).
- tokens: prompts are counted at the embedded prompt set's mean length (characters / 4 + BOS) unless
  ``prompt_tokens`` is given; generated tokens at ``max_new_tokens`` each (an upper bound: EOS stops early).
- FLOPs: ``2 * N`` per forward token, where N counts every weight matrix a token passes through
  (the unembedding included, the embedding lookup not), plus the attention scores; a prefill unembeds
  only its last position. Training adds ``2 * N`` (activation gradients) ``+ 2 * N_trainable``
  (weight gradients) per token: ``6 * N`` when everything trains.
- memory per process: parameters (+ the runner's CPU copy of the base weights, + the CPU-only cached
  transposed copies of the unembedding and MLP weights that fast batched decoding reads) + gradients
  of the trainable parameters + AdamW's two moments (both in the weights' dtype) + activations kept for backward
  (per token and layer ``17 d_model + 4 d_mlp + 6 n_heads d_head + 6 n_kv d_head + 3 n_heads T``
  elements, counted from what TransformerLens saves for a Gemma-style block) + ``3 * d_vocab`` fp32
  per training token for the logits, their log-softmax and its gradient; generation holds the KV cache
  and a few ``batch x d_vocab`` buffers. The peak is the larger of the training and the generation phase.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

import torch

from probe_lens.experiments.adapters import study_settings

GIB = 1024**3
_RUNTIME_BYTES = int(0.45 * GIB)
"""Python, torch, the tokenizer and the scorer resident in a study process before any weights
(measured ~0.4-0.5 GB RSS on CPU); counted in ``memory['runtime']``."""


@dataclasses.dataclass
class StudyPlan:
    """What a study will do and roughly what it costs; see the module docstring for the formulas."""

    preset: str
    model: str
    dtype: str
    device: str
    n_seeds: int
    cells: list[str]
    n_params: int
    n_trainable: dict[str, int]
    """Trainable parameters per training objective."""
    continuations: dict[str, int]
    """Sampled continuations per seed (``probe_data`` is per study, shared by the seeds)."""
    continuations_total: int
    train_steps: dict[str, int]
    """Optimizer steps per training cell (per seed)."""
    tokens: dict[str, int]
    """Whole-study token counts: ``forward`` (every token a forward pass sees), ``backward``, ``generated``."""
    flops: dict[str, float]
    """Whole-study FLOPs per phase and ``total``."""
    memory: dict[str, int]
    """Bytes per process: each component, ``training_peak``, ``generation_peak`` and ``peak``."""
    notes: list[str] = dataclasses.field(default_factory=list)
    wall_s: float = 0.0
    """Estimated wall time on 2 CPU cores like the one :data:`CPU_RATES` was calibrated on (seconds)."""
    budget_s: float | None = None
    """The preset's wall-time budget (:data:`~probe_lens.experiments.presets.PRESET_BUDGET_S`), if it has one."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Arch:
    n_layers: int
    d_model: int
    d_mlp: int
    n_heads: int
    n_kv: int
    d_head: int
    d_vocab: int
    n_params: int
    n_embed: int
    names: tuple[tuple[str, int], ...]


# ------------------------------------------------------------------------------- architecture
def _model_config(config: Any, model_cfg: Any):
    if model_cfg is not None:
        return model_cfg
    from probe_lens.models import model_config

    name = getattr(config, "model", None)
    try:
        return model_config(name)
    except ValueError as e:  # a local folder of an unknown architecture, or a name TL has no built-in config for
        raise ValueError(f"{e}; pass model_cfg=a HookedTransformerConfig of its architecture") from e


def _architecture(cfg: Any) -> _Arch:
    """Exact parameter names and sizes from a ``meta``-device build (no memory, no weights)."""
    from transformer_lens import HookedTransformer

    from probe_lens.models.compat import quiet_tl_deprecation

    d = dict(cfg.to_dict())  # a copy: TL's to_dict returns the config's own __dict__
    d.update(tokenizer_name=None, device="meta", n_devices=1)
    meta_cfg = type(cfg).from_dict(d)
    with quiet_tl_deprecation(), torch.device("meta"):
        model = HookedTransformer(meta_cfg, move_to_device=False)
    names = tuple((n, p.numel()) for n, p in model.named_parameters())
    n_embed = sum(n_ for name, n_ in names if name.startswith(("embed.", "pos_embed.")))
    return _Arch(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        d_mlp=cfg.d_mlp or 4 * cfg.d_model,
        n_heads=cfg.n_heads,
        n_kv=getattr(cfg, "n_key_value_heads", None) or cfg.n_heads,
        d_head=cfg.d_head,
        d_vocab=cfg.d_vocab,
        n_params=sum(n_ for _, n_ in names),
        n_embed=n_embed,
        names=names,
    )


def _trainable(arch: _Arch, spec: str) -> int:
    """Parameters selected by a ``trainable`` spec, as ``training.trainer.select_trainable`` selects them."""
    from probe_lens.training.config import block_range

    if spec == "all":
        return arch.n_params
    rng = block_range(spec)
    if rng is not None:
        a, b = rng
        return sum(
            n for name, n in arch.names if (m := re.match(r"blocks\.(\d+)\.", name)) and a <= int(m.group(1)) <= b
        )
    pattern = re.compile(spec)
    return sum(n for name, n in arch.names if pattern.search(name))


# ------------------------------------------------------------------------------- counts
def _cells(config: Any) -> list[tuple[str, str]]:
    """(name, objective) per cell; objective ``none`` trains nothing."""
    specs = getattr(config, "cell_specs", None)
    if specs is not None:
        return [(c.name, c.objective) for c in specs]
    legacy = {"base": "none", "classifier_sft": "filtered_sft"}
    return [(c, legacy.get(c, "dpo" if "dpo" in c else "probe_sft")) for c in config.cells]


def _rloo_rows(tc: Any) -> int:
    """Sequences an RLOO step trains on: its prompts times their k samples."""
    return int(tc.batch_size * tc.grad_accum_steps * tc.samples_per_prompt)


def _train_config(config: Any, objective: str) -> Any:
    """The training settings of an ``objective`` cell (its study adapter's section of ``config``)."""
    return study_settings(config, objective)


def _mean_prompt_tokens(config: Any = None) -> float:
    """Mean prompt length in tokens (~4 characters each, + BOS) of the study's behaviour's prompts."""
    spec = getattr(config, "behaviour_spec", None)
    if spec is not None:
        prompts = spec.load_prompts()
    else:
        from probe_lens.data import load_prompts

        prompts = load_prompts()
    return 1.0 + sum(len(p.text) for p in prompts) / max(1, len(prompts)) / 4.0


def _n_probe_prompts(config: Any) -> int:
    """Prompts the probe-pool dataset holds (every seed's pool prompts): the runner's own draws when they can be
    computed, else an approximation."""
    try:
        from probe_lens.experiments.prompt_plan import pool_union

        return len(pool_union(config))
    except Exception:  # the runner's split changed shape: approximate it (pool minus evaluation and training reserve)
        from probe_lens.data import load_prompts

        ev, td = config.eval, config.train_data
        tags = set(getattr(getattr(config, "sampling", None), "probe_tags", ("provocative", "neutral")))
        pool = sum(1 for p in load_prompts() if p.tag in tags)
        return max(4, pool - ev.n_provocative - ev.n_fluency_texts - 2 * td.n_prompts)


def _reference_continuations(config: Any) -> int:
    """Continuations per prompt of the reference set the study reads (the pool dataset holds them all)."""
    from probe_lens.data.reference import load_reference

    src = getattr(config, "data_source", "auto")
    try:
        return int(load_reference(None if src in ("auto", "reference") else src).config.samples_per_prompt)
    except (FileNotFoundError, ValueError):
        return int(config.data.samples_per_prompt)


def _telemetry_points(steps: int, every: int) -> int:
    return 0 if every <= 0 else steps // every + 2  # step 0, every N steps, and the end


# ------------------------------------------------------------------------------- cost model
def _forward_weights(arch: _Arch) -> int:
    """Weights a token's forward passes through: everything but the embedding lookups."""
    return arch.n_params - arch.n_embed


def _forward_flops(arch: _Arch, tokens: float, ctx: float, *, unembed_tokens: float | None = None) -> float:
    """2 N per token (+ attention scores); ``unembed_tokens`` < ``tokens`` for prefills (last position only)."""
    unembed = arch.d_model * arch.d_vocab
    body = _forward_weights(arch) - unembed
    ut = tokens if unembed_tokens is None else unembed_tokens
    attn = 4 * arch.n_layers * arch.n_heads * arch.d_head * ctx  # QK^T and pattern @ V
    return 2 * body * tokens + 2 * unembed * ut + attn * tokens


def _activation_bytes(arch: _Arch, rows: int, seq: int, act_bytes: int) -> int:
    per_token_layer = (
        17 * arch.d_model
        + 4 * arch.d_mlp
        + 6 * arch.n_heads * arch.d_head
        + 6 * arch.n_kv * arch.d_head
        + 3 * arch.n_heads * seq
    )
    tokens = rows * seq
    return int(tokens * (arch.n_layers * per_token_layer * act_bytes + 3 * arch.d_vocab * 4))


def _generation_bytes(arch: _Arch, batch: int, seq: int, act_bytes: int) -> int:
    kv = 2 * arch.n_layers * batch * seq * arch.n_kv * arch.d_head * act_bytes
    return int(2 * kv + 3 * batch * arch.d_vocab * 4)  # the cache is grown by concatenation: old + new


def _reference_note(config: Any) -> str:
    """Whether the study reads its probe pool from a reference set (as ``Study.reference_set`` decides,
    less the tokenizer check, which needs the model), in words."""
    src = getattr(config, "data_source", "fresh")
    spec = getattr(config, "behaviour_spec", None)
    if spec is not None and spec.prelabelled and config.scorer == "auto":
        return f"probe data comes from behaviour {spec.name!r}'s labelled rows: no sampling, one teacher-forced pass"
    if src == "fresh":
        return "probe data is sampled (data_source: fresh)"
    from probe_lens.data.reference import load_reference, settings_mismatch
    from probe_lens.experiments.prompt_plan import pool_union
    from probe_lens.models.loading import EMBEDDED_ALIASES, EMBEDDED_MODEL_NAME

    try:
        ref = load_reference(None if src in ("auto", "reference") else src)
    except (FileNotFoundError, ValueError) as e:
        return f"probe data is sampled ({e})"
    # TransformerLens names a model by the last part of its official name (cfg.model_name)
    name = (
        EMBEDDED_MODEL_NAME if config.model is None or config.model in EMBEDDED_ALIASES else str(config.model)
    ).split("/")[-1]
    why = settings_mismatch(ref, name, [p.id for p in pool_union(config)], config.data)
    if why is None:
        return (
            f"probe data comes from the reference set {ref.meta['file']}: no sampling, one teacher-forced pass over "
            f"all {ref.config.samples_per_prompt} continuations of each pool prompt"
        )
    return f"probe data is sampled: the reference set does not cover this study ({why})"


def estimate_plan(
    config: Any, *, model_cfg: Any = None, dtype: torch.dtype | str | None = None, prompt_tokens: float | None = None
) -> StudyPlan:
    """The plan of ``config`` (a ``StudyConfig``) for its model (or ``model_cfg``) in ``dtype`` (default fp32)."""
    cfg = _model_config(config, model_cfg)
    arch = _architecture(cfg)
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else (dtype or torch.float32)
    w_bytes = torch.empty((), dtype=dtype).element_size()
    device = getattr(config, "device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    p_tok = float(prompt_tokens) if prompt_tokens is not None else _mean_prompt_tokens(config)
    notes: list[str] = []
    n_seeds = len(config.seeds)
    data, td, ev = config.data, config.train_data, config.eval
    cells = _cells(config)

    # ---- continuations
    rounds = 1 if getattr(data, "min_minority", 0) == 0 else getattr(data, "max_rounds", 1)
    if rounds > 1:
        notes.append(
            f"probe data counted at its budget of {rounds} rounds (fewer run once the minority class reaches data.min_minority)"
        )
    n_probe = _n_probe_prompts(config)
    source_note = _reference_note(config)
    uses_shipped = source_note.startswith("probe data comes from")
    per_prompt = _reference_continuations(config) if uses_shipped else data.samples_per_prompt * rounds
    probe_conts = 0 if uses_shipped else n_probe * per_prompt
    notes.append(source_note)
    train_conts = td.n_prompts * td.samples_per_prompt
    training_cells = [(c, o) for c, o in cells if o != "none"]
    steps = {c: int(_train_config(config, o).max_steps) for c, o in training_cells}
    eval_conts = len(cells) * ev.n_provocative * ev.samples_per_prompt
    every = int(getattr(config, "telemetry_every", 0) or 0)
    tele_points = sum(_telemetry_points(s, every) for s in steps.values()) + (1 if every else 0) * (
        len(cells) - len(training_cells)
    )
    tele_conts = tele_points * ev.n_telemetry_prompts
    n_fit = int(round(n_probe * config.sampling.fit_fraction))
    n_fit = min(n_fit, getattr(ev, "fresh_refit_prompts", None) or n_fit)
    fresh_conts = len(cells) * n_fit * ev.fresh_refit_samples if getattr(ev, "fresh_refit", False) else 0
    continuations = {
        "probe_data": probe_conts,
        "train_samples": train_conts,
        "evaluation": eval_conts,
        "telemetry": tele_conts,
        "fresh_refit": fresh_conts,  # probes re-fit on fresh samples of each cell's model
    }
    # RLOO cells sample k fresh continuations per prompt at every step
    rloo_conts = sum(_rloo_rows(_train_config(config, o)) * steps[c] for c, o in training_cells if o == "rloo")
    if rloo_conts:
        continuations["rloo_samples"] = rloo_conts
    per_seed = train_conts + eval_conts + tele_conts + fresh_conts + rloo_conts
    total_conts = probe_conts + n_seeds * per_seed

    # ---- tokens and FLOPs (whole study)
    def gen_cost(n: int, new: int) -> tuple[float, float]:
        tokens = n * (p_tok + new)
        return tokens, _forward_flops(arch, n * p_tok, p_tok + new / 2, unembed_tokens=0) + _forward_flops(
            arch, n * new, p_tok + new / 2
        )

    flops: dict[str, float] = {}
    fwd_tokens = bwd_tokens = gen_tokens = 0.0
    for phase, n, new in (
        ("generate_probe_data", probe_conts, data.max_new_tokens),
        ("generate_train_samples", n_seeds * train_conts, td.max_new_tokens),
        ("generate_evaluation", n_seeds * eval_conts, ev.max_new_tokens),
        ("generate_telemetry", n_seeds * tele_conts, ev.max_new_tokens),
        ("generate_fresh_refit", n_seeds * fresh_conts, ev.max_new_tokens),
    ):
        t, f = gen_cost(n, new)
        fwd_tokens += t
        gen_tokens += n * new
        flops[phase] = f
    if rloo_conts:
        new = max(int(_train_config(config, o).max_new_tokens) for _, o in training_cells if o == "rloo")
        t, f = gen_cost(n_seeds * rloo_conts, new)
        fwd_tokens, gen_tokens, flops["generate_rloo_samples"] = (
            fwd_tokens + t,
            gen_tokens + n_seeds * rloo_conts * new,
            f,
        )
    # teacher-forced passes: probe-data activations, probe scores of the training samples (2 probes)
    act_rows = n_probe * per_prompt
    seq_probe, seq_train = p_tok + data.max_new_tokens, p_tok + td.max_new_tokens
    tf_tokens = act_rows * seq_probe + n_seeds * 2 * train_conts * seq_train
    fwd_tokens += tf_tokens
    flops["teacher_forced"] = _forward_flops(arch, tf_tokens, seq_probe)
    if getattr(config.probes, "token_probes", None):
        # token probes: the pool's response tokens once, then each seed's on-policy set at every telemetry point
        # (step 0 shared by a seed's cells): a pass of its own beside the pooled one, stopped after the probes'
        # layer, no unembedding (the curated sets' passes and the probe fits are not counted)
        points = max(tele_points - len(cells) + 1, 0)
        tok_tokens = act_rows * seq_probe + n_seeds * points * n_probe * data.samples_per_prompt * seq_probe
        depth = min((config.probes.layer + 1) / arch.n_layers, 1.0)
        fwd_tokens += tok_tokens
        flops["token_probes"] = depth * _forward_flops(arch, tok_tokens, seq_probe, unembed_tokens=0)
    train_flops, n_trainable, train_mem = 0.0, {}, 0
    for _cell, obj in training_cells:
        tc = _train_config(config, obj)
        rows = _rloo_rows(tc) if obj == "rloo" else tc.batch_size * tc.grad_accum_steps * (2 if obj == "dpo" else 1)
        tokens = tc.max_steps * rows * seq_train
        n_tr = _trainable(arch, tc.trainable)
        n_trainable[obj] = n_tr
        f = _forward_flops(arch, tokens, seq_train)
        train_flops += n_seeds * (2 * f + 2 * n_tr * tokens)  # forward + activation grads (~forward) + weight grads
        fwd_tokens += n_seeds * tokens
        bwd_tokens += n_seeds * tokens
        if obj == "dpo" and getattr(tc, "precompute_reference", True):
            ref_tokens = n_seeds * td.n_prompts * 2 * seq_train
            fwd_tokens += ref_tokens
            train_flops += _forward_flops(arch, ref_tokens, seq_train)
        if obj == "rloo" and getattr(tc, "beta", 0) > 0:  # the live reference's forward over every sample
            fwd_tokens += n_seeds * tokens
            train_flops += n_seeds * f
        act_bytes = 2 if getattr(tc, "bf16", False) else w_bytes
        train_mem = max(
            train_mem,
            _activation_bytes(arch, rows // tc.grad_accum_steps, int(math.ceil(seq_train)), act_bytes),
        )
    flops["training"] = train_flops
    ppl_tokens = n_seeds * len(cells) * ev.n_fluency_texts * p_tok * 2  # neutral texts: ~2 prompts long
    fwd_tokens += ppl_tokens
    flops["perplexity"] = _forward_flops(arch, ppl_tokens, p_tok * 2)
    flops["total"] = sum(flops.values())

    # ---- memory per process
    max_trainable = max(n_trainable.values(), default=0)
    needs_live_ref = any(
        (o == "dpo" and not getattr(_train_config(config, o), "precompute_reference", True))
        or (o == "probe_sft" and getattr(_train_config(config, o), "kl_weight", 0) > 0)
        or (o == "rloo" and getattr(_train_config(config, o), "beta", 0) > 0)
        for _, o in training_cells
    )
    memory = {
        "runtime": _RUNTIME_BYTES,
        "parameters": arch.n_params * w_bytes,
        "base_weights_copy": arch.n_params * w_bytes,
        "reference_model": arch.n_params * w_bytes if needs_live_ref else 0,
        "cpu_transposed_copies": (arch.d_model * arch.d_vocab + 3 * arch.n_layers * arch.d_model * arch.d_mlp) * w_bytes
        if device == "cpu"
        else 0,
        "gradients": max_trainable * w_bytes,  # torch keeps gradients and AdamW moments in the parameters' dtype
        "adamw_moments": 2 * max_trainable * w_bytes,
        "activations": train_mem,
        "generation_kv_and_logits": _generation_bytes(
            arch,
            data.batch_size,
            int(p_tok + max(data.max_new_tokens, td.max_new_tokens, ev.max_new_tokens)) + 8,
            w_bytes,
        ),
    }
    resident = sum(
        memory[k] for k in ("runtime", "parameters", "base_weights_copy", "reference_model", "cpu_transposed_copies")
    )
    memory["training_peak"] = resident + memory["gradients"] + memory["adamw_moments"] + memory["activations"]
    memory["generation_peak"] = resident + memory["generation_kv_and_logits"]
    memory["peak"] = max(memory["training_peak"], memory["generation_peak"])
    return StudyPlan(
        preset=getattr(config, "preset", "custom"),
        model=getattr(cfg, "model_name", "?"),
        dtype=str(dtype).replace("torch.", ""),
        device=device,
        n_seeds=n_seeds,
        cells=[c for c, _ in cells],
        n_params=arch.n_params,
        n_trainable=n_trainable,
        continuations=continuations,
        continuations_total=int(total_conts),
        train_steps=steps,
        tokens={"forward": int(fwd_tokens), "backward": int(bwd_tokens), "generated": int(gen_tokens)},
        flops=flops,
        memory=memory,
        notes=notes,
        wall_s=estimate_wall_s(flops, n_seeds, len(cells)),
        budget_s=_budget_s(config),
    )


CPU_RATES: dict[str, Any] = {
    "cpu": "AMD EPYC, 2 cores",
    "train_flops_per_s": 4.6e10,
    "generate_flops_per_s": 1.1e11,
    "forward_flops_per_s": 5.4e11,
    "fixed_s": 60.0,
    "per_cell_seed_s": 50.0,
}
"""Effective rates of each phase, calibrated on the quick preset (3 seeds x 5 cells, 12 min 51 s on a 2-core
AMD EPYC: ~40 s of training per trained cell-seed, ~5 s of evaluation sampling and ~8 s of evaluation per
cell-seed) and, for ``per_cell_seed_s``, on the contrast preset's first seeds (session 8: ~8.5 min a seed,
where the quick-calibrated rates said ~4.6: the fresh-sample re-fit, the behaviour-vs-representation pass
and the monitor statistics add ~47 s to every cell-seed); ``fixed_s``: loading, probe fits, reports. The
causal instruments (``eval.causal``) are not counted: on the same CPU they add ~60-90 s per cell-seed.
Another CPU (or a GPU) is faster or slower in proportion."""


def estimate_wall_s(flops: dict[str, float], n_seeds: int, n_cells: int) -> float:
    """Wall seconds of a study with phase ``flops`` (:class:`StudyPlan.flops`) at :data:`CPU_RATES`."""
    r = CPU_RATES
    generate = sum(v for k, v in flops.items() if k.startswith("generate_"))
    forward = flops.get("teacher_forced", 0.0) + flops.get("perplexity", 0.0) + flops.get("token_probes", 0.0)
    return float(
        flops.get("training", 0.0) / r["train_flops_per_s"]
        + generate / r["generate_flops_per_s"]
        + forward / r["forward_flops_per_s"]
        + r["fixed_s"]
        + r["per_cell_seed_s"] * n_seeds * n_cells
    )


def _budget_s(config: Any) -> float | None:
    from probe_lens.experiments.presets import PRESET_BUDGET_S

    return PRESET_BUDGET_S.get(getattr(config, "preset", ""))


def _minutes(s: float) -> str:
    return f"{s / 60:.0f} min" if s < 5400 else f"{s / 3600:.1f} h"


def wall_lines(plan: StudyPlan) -> list[str]:
    """The dry run's wall-time estimate and, for a preset with a budget, whether the study keeps to it."""
    where = f"2 CPU cores ({CPU_RATES['cpu']}, the calibration machine)"
    lines = [f"estimated wall time: ~{_minutes(plan.wall_s)} on {where}"]
    if plan.device != "cpu":
        lines[0] += f"; on {plan.device} expect less"
    if plan.budget_s is not None:
        budget = _minutes(plan.budget_s)
        if plan.wall_s <= plan.budget_s:
            lines.append(f"within the {plan.preset} preset's budget of {budget} on 2 CPU cores")
        else:
            lines.append(
                f"WARNING: over the {plan.preset} preset's budget of {budget} on 2 CPU cores; lower the seeds, "
                "cells or sizes you raised with --set"
            )
    return lines


def _gb(n: float) -> str:
    return f"{n / GIB:.2f} GiB"


def format_plan(plan: StudyPlan) -> str:
    """A human-readable plan: counts, steps, tokens, FLOPs and memory per process."""
    c = plan.continuations
    lines = [
        f"plan: preset {plan.preset}, model {plan.model} ({plan.n_params / 1e6:.1f}M parameters), {plan.dtype} on {plan.device}",
        f"seeds: {plan.n_seeds}; cells: {', '.join(plan.cells)}",
        "continuations sampled:",
        f"  probe data (once per study)   {c['probe_data']:>9,}",
        f"  training samples (per seed)   {c['train_samples']:>9,}",
        f"  evaluation (per seed)         {c['evaluation']:>9,}",
        f"  telemetry (per seed)          {c['telemetry']:>9,}",
        f"  total                         {plan.continuations_total:>9,}",
        "training steps per cell and seed: " + (", ".join(f"{k} {v}" for k, v in plan.train_steps.items()) or "none"),
        "trainable parameters: " + (", ".join(f"{k} {v / 1e6:.1f}M" for k, v in plan.n_trainable.items()) or "none"),
        f"tokens: forward {plan.tokens['forward']:,}, backward {plan.tokens['backward']:,}, generated {plan.tokens['generated']:,}",
        "estimated FLOPs: "
        + ", ".join(f"{k} {v:.2e}" for k, v in plan.flops.items() if k != "total")
        + f"; total {plan.flops['total']:.2e}",
        "memory per process:",
    ]
    for k, v in plan.memory.items():
        if k in ("training_peak", "generation_peak", "peak") or v == 0:
            continue
        lines.append(f"  {k:<27} {_gb(v):>11}")
    m = plan.memory
    lines.append(f"  peak (training phase)       {_gb(m['training_peak']):>11}")
    lines.append(f"  peak (generation phase)     {_gb(m['generation_peak']):>11}")
    lines.append(f"  peak                        {_gb(m['peak']):>11}")
    lines += wall_lines(plan)
    lines += [f"note: {n}" for n in plan.notes]
    return "\n".join(lines)
